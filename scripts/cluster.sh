#!/usr/bin/env bash
# A multi-host Celerity cluster on one Linux machine, without Docker: each "host" is a network
# namespace with its own address on a private bridge, and the worker hosts run compose.yaml's
# services with the very same argv and environment (docs/cluster.md walks through it).
#
#   sudo scripts/cluster.sh [--bin PATH] [--keep] [--print-commands]
#
#   hosts  (10.77.0.0/24 on a bridge in a switch namespace; "redis" resolves to the Redis host
#          through /etc/netns/<ns>/hosts, as Compose's DNS does)
#     redis   10.77.0.2   compose's redis command (append-only file, fsync always) + --dir
#     w1-w3   10.77.0.11-13  compose services worker-add, worker-factorial, worker-mat-mul each
#                         (one process per service per host, each with its own hostname, as
#                         a container has; w3 also runs worker-plugins and py-worker)
#     client  10.77.0.20  compose service `client` (the tutorial's Python Celery calls), then
#                         the workload with `celerity map --no-wait` and the checks
#
#   phases, each while thousands of add / factorial / mat_mul tasks are in flight (each fault
#   waits until the host it hits holds messages):
#     a. w1 is cut off the network for 30 s (its switch port goes down; longer, up to 90 s, if
#        the others have not yet done all it held); once back it must start none of them;
#     b. every process of w2 is SIGKILLed, then started again 5 s later (a restart policy);
#     c. Redis is restarted (SHUTDOWN writes the append-only file; started again 3 s later).
#   Then every task id sent must have the right SUCCESS (lost = 0, wrong = 0); no task may
#   start after its result was stored (Redis keyspace notifications time the stores); every
#   task started twice must have been started on the faulted host inside its fault window
#   (the at-least-once case), or on a worker the others took for dead without a fault of
#   ours (a stall, on a loaded machine: counted, allowed; --strict of cluster_check's verify
#   fails on it). Counts are printed; exit 1 on any failure. scripts/cluster_check.py counts.
#
# Runs as root (namespaces, /etc/netns). Names are unique per run (cel<pid>); an EXIT/INT/TERM
# trap kills every process in the run's namespaces, deletes them and their /etc/netns files.
# --bin: the celerity binary (default .build/debug/celerity, built if missing); --keep: keep
# the logs directory; --print-commands: print the argv each host would run, and exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
export LC_ALL=C.UTF-8

BIN="$ROOT/.build/debug/celerity"
KEEP=0
PRINT=0
while [ $# -gt 0 ]; do
    case $1 in
        --bin) BIN=$(realpath "$2"); shift 2 ;;
        --keep) KEEP=1; shift ;;
        --print-commands) PRINT=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "cluster.sh: unknown argument '$1' (see --help)" >&2; exit 64 ;;
    esac
done

# Which compose services run on which host. Log level: debug, for the "task started" and
# "task succeeded" lines the duplicate count reads (the services' ${CELERITY_LOGLEVEL:-info}).
export CELERITY_LOGLEVEL=debug
WORKER_HOSTS=(w1 w2 w3)
TUTORIAL_SERVICES=(worker-add worker-factorial worker-mat-mul)
W3_EXTRA=(worker-plugins py-worker)
CLIENT_SERVICE=client

services_of() {   # host -> the compose services it runs
    case $1 in
        w3) echo "${TUTORIAL_SERVICES[*]} ${W3_EXTRA[*]}" ;;
        w*) echo "${TUTORIAL_SERVICES[*]}" ;;
        client) echo "$CLIENT_SERVICE" ;;
    esac
}

SPEC=$(python3 scripts/compose_commands.py)   # {service: {command, environment, image}}
spec() {   # service field -> one value per line (command: the argv; environment: K=V)
    python3 -c '
import json, sys
spec = json.loads(sys.argv[1])
svc, field = sys.argv[2], sys.argv[3]
if svc not in spec: sys.exit("cluster.sh: compose.yaml has no service %s" % svc)
v = spec[svc][field]
if field == "environment": v = ["%s=%s" % kv for kv in sorted(v.items())]
print("\n".join(v) if isinstance(v, list) else v)' "$SPEC" "$1" "$2"
}

if [ "$PRINT" = 1 ]; then
    # One line per host and service: host service <tab> argv as JSON (what start_service runs).
    for host in "${WORKER_HOSTS[@]}" client; do
        for svc in $(services_of "$host"); do
            mapfile -t argv < <(spec "$svc" command)
            printf '%s %s\t%s\n' "$host" "$svc" "$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "${argv[@]}")"
        done
    done
    exit 0
fi

[ "$(id -u)" -eq 0 ] || { echo "cluster.sh: needs root (network namespaces)" >&2; exit 1; }
for tool in ip unshare redis-server redis-cli python3; do
    command -v "$tool" >/dev/null || { echo "cluster.sh: $tool is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
if [ ! -x "$BIN" ]; then
    echo "== building celerity (debug)"
    flock /tmp/celerity-build.lock swift build --product celerity
fi
BIN_DIR=$(dirname "$BIN")
[ "$(basename "$BIN")" = celerity ] || { echo "cluster.sh: --bin must name a file called celerity (the services run 'celerity')" >&2; exit 1; }

RUN="cel$$"
SW="$RUN-sw"
NET=10.77.0
WORK=$(mktemp -d "${TMPDIR:-/tmp}/celerity-cluster.XXXXXX")
mkdir -p "$WORK/logs" "$WORK/argv" "$WORK/batches" "$WORK/redis"
declare -A ADDR=([redis]=$NET.2 [w1]=$NET.11 [w2]=$NET.12 [w3]=$NET.13 [client]=$NET.20)
declare -A PORT=([redis]=1 [w1]=2 [w2]=3 [w3]=4 [client]=5)
HOSTS=(redis w1 w2 w3 client)
ns() { echo "$RUN-$1"; }

say() { printf '%s  %s\n' "$(date +%T)" "$*"; }
# A sleep that Ctrl-C or SIGTERM interrupts at once (bash runs a trap only between commands).
PAUSE_PID=""
pause() { sleep "$1" & PAUSE_PID=$!; wait "$PAUSE_PID"; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e               # every step below runs, whatever fails
    [ -n "$PAUSE_PID" ] && kill "$PAUSE_PID" 2>/dev/null
    for h in "${HOSTS[@]}"; do
        local pids
        pids=$(ip netns pids "$(ns "$h")" 2>/dev/null || true)
        [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
    done
    sleep 0.3
    for h in "${HOSTS[@]}"; do
        ip netns del "$(ns "$h")" 2>/dev/null || true
        rm -rf "/etc/netns/$(ns "$h")"
    done
    ip netns del "$SW" 2>/dev/null || true
    if [ "$KEEP" = 1 ] || [ "$rc" -ne 0 ]; then
        echo "logs kept in $WORK"
    else
        rm -rf "$WORK"
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------------------ the network
say "network: switch $SW, hosts ${HOSTS[*]} on $NET.0/24"
ip netns add "$SW"
ip -n "$SW" link add br0 type bridge
ip -n "$SW" link set br0 up
for h in "${HOSTS[@]}"; do
    n=$(ns "$h")
    ip netns add "$n"
    ip link add "${RUN}h${PORT[$h]}" type veth peer name "${RUN}s${PORT[$h]}"
    ip link set "${RUN}h${PORT[$h]}" netns "$n"
    ip link set "${RUN}s${PORT[$h]}" netns "$SW"
    ip -n "$n" link set "${RUN}h${PORT[$h]}" name eth0
    ip -n "$SW" link set "${RUN}s${PORT[$h]}" name "vs${PORT[$h]}"
    ip -n "$SW" link set "vs${PORT[$h]}" master br0
    ip -n "$SW" link set "vs${PORT[$h]}" up
    ip -n "$n" addr add "${ADDR[$h]}/24" dev eth0
    ip -n "$n" link set eth0 up
    ip -n "$n" link set lo up
    # `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc: "redis" resolves as in Compose.
    mkdir -p "/etc/netns/$n"
    {
        echo "127.0.0.1 localhost"
        for other in "${HOSTS[@]}"; do echo "${ADDR[$other]} $other"; done
        for svc in $(services_of "$h"); do echo "${ADDR[$h]} $svc-$h"; done
    } > "/etc/netns/$n/hosts"
done

# ------------------------------------------------------------------------------ processes
mkdir -p "$WORK/spec"
for svc in redis $(for h in "${WORKER_HOSTS[@]}" client; do services_of "$h"; done | tr ' ' '\n' | sort -u); do
    for field in command environment image; do spec "$svc" "$field" > "$WORK/spec/$svc.$field"; done
done
PIDS_FILE="$WORK/pids"   # host service pid, one line per start
: > "$PIDS_FILE"

# start_service HOST SERVICE: compose.yaml's argv and environment, in HOST's namespace, with
# a hostname of its own (a UTS namespace, as a container has: the worker's node name is
# celerity@<service>-<host>). Working directory: what the image's WORKDIR /app holds, i.e.
# the repo root for the Celerity image (tasks.yaml, plugins/) and interop/ for the Python one.
start_service() {
    local host=$1 svc=$2 cwd image
    local -a argv envs
    mapfile -t argv < "$WORK/spec/$svc.command"
    mapfile -t envs < "$WORK/spec/$svc.environment"
    image=$(cat "$WORK/spec/$svc.image")
    case $image in
        runtime) cwd=$ROOT ;;
        python) cwd=$ROOT/interop ;;
        *) echo "cluster.sh: service $svc runs image '$image', which has no host equivalent" >&2; return 1 ;;
    esac
    python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "${argv[@]}" > "$WORK/argv/$host-$svc.json"
    ip netns exec "$(ns "$host")" unshare --uts -- sh -c 'hostname "$1" && cd "$2" && shift 2 && exec "$@"' \
        sh "$svc-$host" "$cwd" env -i "PATH=$BIN_DIR:$PATH" "HOME=$WORK" "LC_ALL=C.UTF-8" "${envs[@]}" "${argv[@]}" \
        >> "$WORK/logs/$host-$svc.log" 2>&1 &
    echo "$host $svc $!" >> "$PIDS_FILE"
    disown "$!"          # no "Killed" notices from bash when phase b or the cleanup kills it
}

in_client() {   # a command on the client host, with the services' broker settings
    ip netns exec "$(ns client)" env "PATH=$BIN_DIR:$PATH" CELERITY_BROKER_URL=redis://redis:6379/0 \
        CELERITY_RESULT_BACKEND=redis://redis:6379/0 "$@"
}
check() {   # in the background, so that Ctrl-C or SIGTERM is handled at once (see pause)
    in_client python3 scripts/cluster_check.py --work "$WORK" "$@" &
    PAUSE_PID=$!
    wait "$PAUSE_PID"
}

start_redis() {   # compose's redis argv, plus what the redis image's defaults give a container
    local -a argv
    mapfile -t argv < "$WORK/spec/redis.command"
    # notify-keyspace-events K$: the test's witness of when each result was first stored.
    ip netns exec "$(ns redis)" "${argv[@]}" --protected-mode no --port 6379 --dir "$WORK/redis" \
        --notify-keyspace-events 'K$' \
        >> "$WORK/logs/redis.log" 2>&1 &
    echo "redis redis $!" >> "$PIDS_FILE"
    disown "$!"
    for _ in $(seq 100); do
        in_client redis-cli -h redis ping 2>/dev/null | grep -q PONG && return 0
        sleep 0.1
    done
    echo "cluster.sh: Redis did not answer on the redis host" >&2
    return 1
}

say "redis host: $(tr '\n' ' ' < "$WORK/spec/redis.command")--protected-mode no --port 6379 --dir <run dir> --notify-keyspace-events K\$"
start_redis
for h in "${WORKER_HOSTS[@]}"; do
    for svc in $(services_of "$h"); do start_service "$h" "$svc"; done
    say "host $h ($(ns "$h"), ${ADDR[$h]}): $(services_of "$h")"
done
check wait-workers --count $((${#WORKER_HOSTS[@]} * ${#TUTORIAL_SERVICES[@]} + 1)) --timeout 60
check cmdlines --pids "$PIDS_FILE"

say "client host: compose service '$CLIENT_SERVICE' (the tutorial's Python Celery calls)"
mapfile -t client_argv < "$WORK/spec/$CLIENT_SERVICE.command"
mapfile -t client_env < "$WORK/spec/$CLIENT_SERVICE.environment"
python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "${client_argv[@]}" > "$WORK/argv/client-$CLIENT_SERVICE.json"
ip netns exec "$(ns client)" sh -c 'cd "$1" && shift && exec "$@"' sh "$ROOT/interop" \
    env -i "PATH=$PATH" "HOME=$WORK" "LC_ALL=C.UTF-8" "${client_env[@]}" "${client_argv[@]}" | sed 's/^/   /'
say "interop: a plugin and the Python Celery worker, called with celerity call from the client host"
printf '   plugins.js_add(2, 40) = %s\n' "$(in_client celerity call plugins.js_add 2 40 --timeout 30)"
printf '   pyapp.mul(6, 7) on py-worker = %s\n' "$(in_client celerity call pyapp.mul 6 7 --queue pyq --timeout 30)"

# ------------------------------------------------------------------------------ workload
send_batch() {   # phase adds factorials matmuls [make-batch options]
    local phase=$1
    check make-batch --phase "$phase" --add "$2" --factorial "$3" --mat-mul "$4" "${@:5}"
    local task
    for task in add_module.tasks.add factorial_module.tasks.factorial mat_mul_module.tasks.mat_mul; do
        in_client celerity map "$task" --file "$WORK/batches/$phase-$task.args" --no-wait --no-progress \
            > "$WORK/batches/$phase-$task.ids"
    done
    say "phase $phase: sent $2 add, $3 factorial, $4 mat_mul from the client host"
}
offsets() {   # label host...: byte offsets of the hosts' logs now
    local label=$1 h f
    shift
    for h in "$@"; do
        for f in "$WORK"/logs/"$h"-*.log; do echo "$label $(basename "$f" .log) $(stat -c %s "$f")"; done
    done >> "$WORK/offsets"
}
: > "$WORK/offsets"
: > "$WORK/faults.tsv"
fault() { echo "$1 $(date +%s.%N)" >> "$WORK/faults.tsv"; }
# The client host records when each result is first stored (Redis keyspace notifications).
ip netns exec "$(ns client)" env CELERITY_BROKER_URL=redis://redis:6379/0 \
    python3 scripts/cluster_check.py --work "$WORK" watch-stores --out "$WORK/stores.tsv" &
disown "$!"
started=$SECONDS

# a. w1 cut off for 30 s
offsets a-begin w1
# Longer factorials here (28,000!-44,000!, 1-3 s each): w1 holds prefetched messages it
# cannot start within its lease, which must not start once it is back (others ran them).
send_batch a 3000 80 300 --factorial-from 28000 --factorial-to 44000
check wait-held --host w1 --min 4 --timeout 60    # (a fixed sleep fails on a busy machine)
pause 1
ip -n "$SW" link set "vs${PORT[w1]}" down
fault cut
cut_at=$SECONDS
offsets cut w1
check snapshot-held --host w1 --out "$WORK/held-w1.json"
say "phase a: w1 cut off the network (switch port down) for 30 s"
# Its lease on its processing lists ends at most 9 s after its last heartbeat (before the
# cut): a start on w1 after this mark of a task that also ran elsewhere is a failure.
pause 9.5
offsets lease w1
pause 18.5
# Everything it held must be done by the others before it is back: on a slow day, keep it
# cut off longer (up to 90 s in all) rather than bring it back early.
check held-done --held "$WORK/held-w1.json" --timeout 60
pause 2
offsets heal w1
ip -n "$SW" link set "vs${PORT[w1]}" up
fault heal
say "phase a: w1 back on the network after $((SECONDS - cut_at)) s"
check wait-results --phase a --timeout 150

# b. w2's processes SIGKILLed, restarted 5 s later
offsets b-begin w2
send_batch b 2000 80 200
check wait-held --host w2 --min 4 --timeout 60
pause 1
kill -9 $(ip netns pids "$(ns w2)")
fault kill
sleep 0.5
offsets kill w2
say "phase b: every process on w2 SIGKILLed"
pause 5
for svc in $(services_of w2); do start_service w2 "$svc"; done
fault restart
say "phase b: w2's services started again"
check wait-results --phase b --timeout 150

# c. Redis restarted
send_batch c 2000 80 200
check wait-held --host '' --min 8 --timeout 60
pause 1
in_client redis-cli -h redis shutdown >/dev/null 2>&1 || true
for _ in $(seq 100); do
    in_client redis-cli -h redis ping >/dev/null 2>&1 || break
    sleep 0.1
done
say "phase c: Redis shut down (append-only file written); starting it again in 3 s"
pause 3
start_redis
say "phase c: Redis back"
check wait-results --phase c --timeout 150
say "workload done in $((SECONDS - started)) s"

# ------------------------------------------------------------------------------ verdict
check cmdlines --pids "$PIDS_FILE" --running-only
check verify --faults "$WORK/offsets"
