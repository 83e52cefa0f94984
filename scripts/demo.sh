#!/usr/bin/env bash
# The README's demo, for a fresh Debian bookworm machine with Swift installed:
#   1. installs what is missing (scripts/install-deps.sh: apt: redis-server, libhiredis-dev,
#      libopenblas-dev, zlib1g-dev, libbz2-dev, libssl-dev, openssl, nodejs; pip: celery[redis],
#      numpy),
#   2. builds the celerity command (release),
#   3. starts the worker groups of tasks.yaml with `celerity up` and a private redis-server
#      on a free port (your own Redis, if any, is not touched),
#   4. calls the tutorial's three tasks and three plugin tasks with `celerity call`, then
#      runs the tutorial's Python Celery clients against the same workers,
#   5. stops everything. Exits non-zero if any step fails; leaves nothing running.
set -euo pipefail

cd "$(dirname "$0")/.."
export LC_NUMERIC=C     # a '.' in $EPOCHREALTIME, whatever the locale

section() { printf '\n== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }
die() { printf 'demo: %s\n' "$*" >&2; exit 1; }

# --------------------------------------------------------------------------- 1. install

section "Checking prerequisites"
bash scripts/install-deps.sh

# --------------------------------------------------------------------------- 2. build

section "Building celerity (release)"
note "the first build fetches and compiles the dependencies: a minute or two"
swift build -c release --product celerity
CELERITY="$PWD/.build/release/celerity"
[ -x "$CELERITY" ] || die "the build did not produce $CELERITY"

# --------------------------------------------------------------------------- 3. start

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
BROKER="redis://127.0.0.1:$PORT/0"
# Workers and calls read these when no --broker/--result-backend is given; setting both
# keeps results on the private Redis even if tasks.yaml names another result backend.
export CELERITY_BROKER_URL="$BROKER" CELERITY_RESULT_BACKEND="$BROKER"

WORKDIR=$(mktemp -d "${TMPDIR:-/tmp}/celerity-demo.XXXXXX")
UP_LOG="$WORKDIR/up.log"
UP_PID=""
KEEP_LOG=0

# alive PID: the process exists and is not a zombie waiting to be reaped.
alive() {
    case $(ps -o stat= -p "$1" 2>/dev/null || true) in ""|Z*) return 1 ;; esac
}

# Every process `celerity up` started (its process tree), recorded before it is stopped.
descendants() {
    ps -e -o pid=,ppid= | awk -v root="$1" '
        { parent[$1] = $2 }
        END {
            found[root] = 1; changed = 1
            while (changed) {
                changed = 0
                for (p in parent) if (!(p in found) && (parent[p] in found)) { found[p] = 1; changed = 1 }
            }
            for (p in found) if (p != root) print p
        }'
}

stop_up() {
    [ -n "$UP_PID" ] || return 0
    local pid=$UP_PID status=0 tree=() left p i
    UP_PID=""
    mapfile -t tree < <(descendants "$pid" || true)
    kill -TERM "$pid" 2>/dev/null || true
    # A graceful stop finishes the tasks in flight (celerity up gives its workers 60 s);
    # after 75 s the whole process group goes.
    for ((i = 0; i < 750; i++)); do
        alive "$pid" || break
        sleep 0.1
    done
    if alive "$pid"; then
        printf 'demo: celerity up did not stop within 75 s; killing its process group\n' >&2
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || status=$?
    sleep 0.2       # let its children finish exiting before looking for stragglers
    left=""
    for p in $( { printf '%s\n' "${tree[@]}"; ps -e -o pid=,pgid= | awk -v g="$pid" '$2 == g { print $1 }'; } | sort -u); do
        if alive "$p"; then left="$left $p"; kill -KILL "$p" 2>/dev/null || true; fi
    done
    if [ -n "$left" ]; then
        printf 'demo: celerity up left processes running; killed:%s\n' "$left" >&2
        [ "$status" -ne 0 ] || status=1
    fi
    # The port was free when we picked it, so whatever answers there now is ours.
    if command -v redis-cli >/dev/null 2>&1 \
            && [ "$(redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = PONG ]; then
        printf 'demo: the private redis-server on port %s was still running; shutting it down\n' "$PORT" >&2
        redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1 || true
        [ "$status" -ne 0 ] || status=1
    fi
    return "$status"
}

cleanup() {
    local code=$?
    trap - EXIT INT TERM
    if [ -n "$UP_PID" ]; then
        section "Stopping (cleanup)"
        stop_up || true
    fi
    # Keep the log when something failed; an interrupt (130, 143) is no failure.
    if { [ "$code" -ne 0 ] && [ "$code" -ne 130 ] && [ "$code" -ne 143 ]; } || [ "$KEEP_LOG" -ne 0 ]; then
        if [ -s "$UP_LOG" ]; then
            printf '\n-- last lines of the celerity up log (%s):\n' "$UP_LOG" >&2
            tail -n 40 "$UP_LOG" >&2
        fi
    else
        rm -rf "$WORKDIR"
    fi
    exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

section "Starting the workers of tasks.yaml"
note "celerity up --manifest tasks.yaml --broker $BROKER   (log: $UP_LOG)"
# setsid gives `celerity up` a process group of its own, so the cleanup can end all of it.
if command -v setsid >/dev/null 2>&1; then
    setsid "$CELERITY" up --manifest tasks.yaml --broker "$BROKER" >"$UP_LOG" 2>&1 &
else
    "$CELERITY" up --manifest tasks.yaml --broker "$BROKER" >"$UP_LOG" 2>&1 &
fi
UP_PID=$!

CALL_OPTS=(--manifest tasks.yaml --broker "$BROKER" --result-backend "$BROKER")

deadline=$((SECONDS + 30))
until "$CELERITY" call "${CALL_OPTS[@]}" --timeout 2 add_module.tasks.add 1 1 >/dev/null 2>"$WORKDIR/ready.err"; do
    status=$?
    # 3: no answer in time, 4: Redis not reachable yet; 2 or 64: a usage or manifest error.
    if [ "$status" -eq 2 ] || [ "$status" -eq 64 ]; then
        cat "$WORKDIR/ready.err" >&2
        die "celerity call rejected its arguments or the manifest"
    fi
    alive "$UP_PID" || { wait "$UP_PID" || true; UP_PID=""; die "celerity up exited during start-up"; }
    if [ "$SECONDS" -ge "$deadline" ]; then
        cat "$WORKDIR/ready.err" >&2
        die "the workers did not answer add_module.tasks.add within 30 s"
    fi
    sleep 0.5
done
note "workers ready (pid $UP_PID)"

# --------------------------------------------------------------------------- 4. calls

# call TASK ARGS...: runs `celerity call`, leaves its JSON result in $RESULT, fails the demo
# (with the CLI's own error on stderr) if the call fails.
RESULT=""
call() {
    if ! RESULT=$("$CELERITY" call "${CALL_OPTS[@]}" --timeout 60 "$@"); then
        die "celerity call $* failed"
    fi
}

section "Tutorial tasks, called with celerity call"

call add_module.tasks.add 4 6
printf '   add(4, 6) = %s\n' "$RESULT"

started=$EPOCHREALTIME
call factorial_module.tasks.factorial 20000
elapsed=$(awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }')
printf '%s' "$RESULT" | python3 -c '
import math, sys
sys.set_int_max_str_digits(0)
text = sys.stdin.read().strip()
exact = text == str(math.factorial(20000))
print("   factorial(20000) = %s...%s (%d digits, %s; %s s round trip)"
      % (text[:20], text[-20:], len(text),
         "exact" if exact else "DIFFERS FROM math.factorial(20000)", sys.argv[1]))
sys.exit(0 if exact else 1)
' "$elapsed" || die "factorial(20000) came back wrong"

# matrix NAME JSON-on-stdin: prints the shape and the start of the first row.
matrix() {
    python3 -c '
import json, sys
rows = json.load(sys.stdin)
shape = "%dx%d" % (len(rows), len(rows[0]) if rows else 0)
head = ", ".join("%.4f" % v for v in rows[0][:4])
more = ", ..." if len(rows[0]) > 4 else ""
print("   %s = %s matrix, row 0: [%s%s]" % (sys.argv[1], shape, head, more))
' "$1"
}

call mat_mul_module.tasks.mat_mul 20 20
printf '%s' "$RESULT" | matrix "mat_mul(20, 20)"

section "Plugin tasks (Python + numpy, Node, POSIX sh)"

call plugins.mat_mul_numpy 3 3
printf '%s' "$RESULT" | matrix "mat_mul_numpy(3, 3)"

call plugins.js_add 2 40
printf '   js_add(2, 40) = %s\n' "$RESULT"

# Arguments are parsed as JSON when they are valid JSON, else taken as strings.
call plugins.sh_upper '"hello celerity"'
printf '   sh_upper("hello celerity") = %s\n' "$RESULT"

# --------------------------------------------------------------------------- 4b. Python

section "The tutorial's Python Celery clients, against the same workers"
CELERITY_BROKER_URL="$BROKER" CELERITY_RESULT_BACKEND="$BROKER" \
    python3 interop/tutorial_clients.py --timeout 60 \
    || die "the Python Celery clients failed"

# --------------------------------------------------------------------------- 5. stop

section "Stopping"
if stop_up; then
    note "celerity up stopped its workers and its redis-server; nothing is left running"
else
    status=$?
    KEEP_LOG=1
    die "celerity up did not stop cleanly (status $status)"
fi

section "Done"
