#!/usr/bin/env bash
# Runs `celerity plugin check` on every file in plugins/ (CI calls this after the tests).
# Each file says how it is checked in a comment line near its top:
#   # celerity-check: --task plugins.py_add --args [2,3] --slow-task plugins.py_sleep
#   # celerity-check: none (why: e.g. a helper library, not a plugin)
# The options are passed to `celerity plugin check` as they are (split at spaces, no quoting),
# followed by the program: python3 FILE for .py, node FILE for .js, ruby FILE for .rb, sh FILE
# for .sh, the executable compiled from FILE for .c (compiled first when older; the executable
# itself is skipped), the file itself otherwise.
# A file without such a line fails the run, so a new example cannot go unchecked. Plugins that
# fail on purpose belong in Tests/Fixtures/plugins/, not here.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CELERITY_BIN:-.build/debug/celerity}
[ -x "$bin" ] || swift build --product celerity

checked=0 skipped=0 failed=()
for file in plugins/*; do
    [ -f "$file" ] || continue
    case $file in *.md) continue ;; esac
    [ -f "$file.c" ] && continue   # a compiled C plugin: checked through its source, below
    line=$(grep -m 1 -o 'celerity-check:.*' "$file" || true)
    if [ -z "$line" ]; then
        echo "== $file: no 'celerity-check:' line (say how to check it, or 'none (why)')" >&2
        failed+=("$file")
        continue
    fi
    read -r -a opts <<< "${line#celerity-check:}"
    if [ "${opts[0]:-}" = none ]; then
        echo "== $file: not a plugin: ${opts[*]:1}"
        skipped=$((skipped + 1))
        continue
    fi
    case $file in
        *.py) program=(python3 "$file") ;;
        *.js) program=(node "$file") ;;
        *.rb) program=(ruby "$file") ;;
        *.sh) program=(sh "$file") ;;
        *.c)  # the executable beside it (`celerity plugin new --lang c`), compiled when older
            program=("${file%.c}")
            if [ ! -x "${file%.c}" ] || [ "$file" -nt "${file%.c}" ]; then
                cc -O2 -o "${file%.c}" "$file" || { failed+=("$file"); continue; }
            fi ;;
        *) program=("$file") ;;
    esac
    echo "== $file: celerity plugin check ${opts[*]} -- ${program[*]}"
    if "$bin" plugin check "${opts[@]}" -- "${program[@]}"; then
        checked=$((checked + 1))
    else
        failed+=("$file")
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "check-plugins: ${#failed[@]} failed: ${failed[*]}" >&2
    exit 1
fi
[ "$checked" -gt 0 ] || { echo "check-plugins: no plugin found in plugins/" >&2; exit 1; }
echo "all $checked example plugins pass ($skipped helper files skipped)"
