#!/bin/sh
# celerity-check: --mode oneshot --task plugins.sh_upper --args ["hi"]
# Celerity one-shot plugin in POSIX sh (+ awk, no jq, no Python).
# Task plugins.sh_upper(text): returns its first positional argument upper-cased.
# Asked to describe itself (CELERITY_MODE=describe), it prints a fixed document: its task,
# queue and argument schema.
#
# awk finds "args" in the top-level request object and copies its first element if it is
# a string, keeping the JSON escapes as they are; letters outside escapes are upper-cased
# byte by byte in the C locale, so ASCII letters change and other characters pass through.

if [ "${CELERITY_MODE:-}" = describe ]; then
    cat >/dev/null    # the request: {"method": "describe", "protocol": 1}
    cat <<'EOF'
{"protocol": 1, "name": "sh_upper", "tasks": {"plugins.sh_upper": {"doc": "Upper-cases its argument (ASCII letters only).", "params": {"text": {"type": "string"}}, "returns": {"type": "string"}, "queue": "plugins", "mode": "oneshot"}}}
EOF
    exit 0
fi

if [ "${CELERITY_MODE:-oneshot}" != oneshot ]; then
    echo "sh_upper.sh only speaks one-shot mode (CELERITY_MODE=$CELERITY_MODE)" >&2
    exit 64
fi

LC_ALL=C
export LC_ALL

# Prints either "OK <upper-cased JSON string body>" or "ERR <type> <message>".
parsed=$(awk '
function skipws() {
    while (i <= n && index(" \t\r\n", substr(buf, i, 1)) > 0) i++
}
# i is at an opening quote; returns the raw string body, leaves i after the closing quote.
function readstr(   start, c) {
    start = ++i
    while (i <= n) {
        c = substr(buf, i, 1)
        if (c == "\\") { i += 2; continue }
        if (c == "\"") { i++; return substr(buf, start, i - 1 - start) }
        i++
    }
    bad = 1
    return ""
}
function upper(s,   out, j, c, m) {
    out = ""; j = 1; m = length(s)
    while (j <= m) {
        c = substr(s, j, 1)
        if (c == "\\") {
            if (substr(s, j + 1, 1) == "u") { out = out substr(s, j, 6); j += 6 }
            else { out = out substr(s, j, 2); j += 2 }
            continue
        }
        out = out toupper(c); j++
    }
    return out
}
{ buf = buf $0 "\n" }
END {
    n = length(buf); i = 1; depth = 0; keynext = 0; want = 0; bad = 0
    skipws()
    if (substr(buf, i, 1) != "{") { print "ERR InvalidRequest stdin is not a JSON object"; exit }
    while (i <= n) {
        c = substr(buf, i, 1)
        if (c == "\"") {
            s = readstr()
            if (depth == 1 && keynext) {
                keynext = 0
                if (s == "args") {
                    skipws(); if (substr(buf, i, 1) == ":") i++; skipws()
                    if (substr(buf, i, 1) != "[") { print "ERR TypeError args must be an array"; exit }
                    i++; skipws()
                    c = substr(buf, i, 1)
                    if (c == "\"") {
                        s = readstr()
                        if (bad) break
                        print "OK " upper(s); exit
                    }
                    if (c == "]") { print "ERR TypeError sh_upper needs one string argument, got none"; exit }
                    print "ERR TypeError the first argument must be a string"; exit
                }
            }
            continue
        }
        if (c == "{" || c == "[") { depth++; if (depth == 1) keynext = 1 }
        else if (c == "}" || c == "]") depth--
        else if (c == "," && depth == 1) keynext = 1
        i++
    }
    if (bad) print "ERR InvalidRequest unterminated string in the request"
    else print "ERR TypeError sh_upper needs one string argument, got none"
}')

case $parsed in
    "OK "*)
        printf '{"result": "%s"}\n' "${parsed#OK }"
        ;;
    "ERR "*)
        rest=${parsed#ERR }
        type=${rest%% *}
        message=${rest#* }
        printf '{"error": {"type": "%s", "message": "%s", "retryable": false, "traceback": null}}\n' \
            "$type" "$message"
        ;;
    *)
        echo "sh_upper.sh: awk failed" >&2
        exit 1
        ;;
esac
