#!/usr/bin/env bash
# The dashboard's screenshots in docs/images (dashboard-overview.png, dashboard-dead.png,
# dashboard-task.png), taken from a live cluster:
#   a private redis-server on a free port, two workers (add+factorial, emails), traffic
#   (successes, a failure, dead letters, a delayed call, messages waiting on a queue no
#   worker consumes), the dashboard, and headless Chromium through
#   Tests/Fixtures/browser/dashboard_ui.py (window 1280x900).
# Needs the built binaries (CELERITY_BIN_DIR, default .build/debug: swift build) and what
# scripts/install-deps.sh installs (redis-server, chromium, chromium-driver, selenium).
# Leaves nothing running.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${CELERITY_BIN_DIR:-$ROOT/.build/debug}
OUT=${SCREENSHOTS_DIR:-$ROOT/docs/images}
UI="$ROOT/Tests/Fixtures/browser/dashboard_ui.py"

note() { printf '   %s\n' "$*"; }
die() { printf 'screenshots: %s\n' "$*" >&2; exit 1; }

for b in celerity celerity-dashboard; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: build it first (swift build --product $b), or set CELERITY_BIN_DIR"
done
command -v redis-server >/dev/null 2>&1 || die "no redis-server: run scripts/install-deps.sh"
[ -x /usr/bin/chromium ] || [ -n "${CHROMIUM_BIN:-}" ] || die "no chromium: run scripts/install-deps.sh"

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/celerity-screenshots.XXXXXX")
PIDS=()
REDIS_PORT=$(free_port)
cleanup() {
    local status=$? p
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$p" 2>/dev/null || true
    done
    redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
    [ $status -eq 0 ] || { printf 'screenshots: failed; logs in %s\n' "$WORK" >&2; return; }
    rm -rf "$WORK"
}
trap cleanup EXIT

# ------------------------------------------------------------------------------ cluster

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.05; done
export CELERITY_BROKER_URL="redis://127.0.0.1:$REDIS_PORT/0" CELERITY_RESULT_BACKEND="redis://127.0.0.1:$REDIS_PORT/0"

# emails.send: a plugin whose mail server never answers (exit 75: retry), retried once, then
# dead-lettered.
cat >"$WORK/send_mail.sh" <<'EOF'
#!/bin/sh
cat >/dev/null
echo "smtp.example.com:587: connection timed out" >&2
exit 75
EOF
chmod +x "$WORK/send_mail.sh"
cat >"$WORK/tasks.yaml" <<EOF
tasks:
  add_module.tasks.add:
    queue: add
    builtin: add
  factorial_module.tasks.factorial:
    queue: factorial
    builtin: factorial
  emails.send:
    queue: emails
    plugin: $WORK/send_mail.sh
    retries: 1
    retry_backoff: 0.2
  reports.render:              # nobody consumes 'reports' here: its messages wait
    queue: reports
    builtin: add
EOF
M=(--manifest "$WORK/tasks.yaml")
"$BIN/celerity" worker -Q add,factorial -n worker1@celerity-demo -c 4 "${M[@]}" >"$WORK/worker1.log" 2>&1 &
PIDS+=($!)
"$BIN/celerity" worker -Q emails -n worker2@celerity-demo -c 2 "${M[@]}" >"$WORK/worker2.log" 2>&1 &
PIDS+=($!)

# ------------------------------------------------------------------------------ traffic

call() { "$BIN/celerity" call "${M[@]}" --timeout 30 "$@"; }
note "traffic: successes, a failure, dead letters, a delayed call, waiting messages"
for i in $(seq 1 12); do call add_module.tasks.add "$i" $((i * 7)) >/dev/null; done
for n in 10 20 30; do call factorial_module.tasks.factorial "$n" >/dev/null; done
TASK_ID=$(call --no-wait factorial_module.tasks.factorial 25)
call add_module.tasks.add 1 2 3 >/dev/null 2>&1 && die "add(1, 2, 3) should have failed"
for to in ops@example.com billing@example.com; do call --no-wait emails.send "$to" >/dev/null; done
redis-cli -p "$REDIS_PORT" lpush add '{"not": "a task message"}' >/dev/null
call --no-wait --countdown 3600 add_module.tasks.add 100 200 >/dev/null
for i in $(seq 1 7); do call --no-wait reports.render "$i" 0 >/dev/null; done
call --no-wait --priority 9 reports.render 99 0 >/dev/null
call add_module.tasks.add 0 0 >/dev/null          # the bad message was handled by now
for _ in $(seq 100); do
    [ "$(redis-cli -p "$REDIS_PORT" llen celerity:dead)" -ge 3 ] && break
    sleep 0.1
done
[ "$(redis-cli -p "$REDIS_PORT" llen celerity:dead)" -ge 3 ] || die "expected 3 dead letters, see $WORK/worker2.log"

# ------------------------------------------------------------------------------ dashboard

DASH_PORT=$(free_port)
"$BIN/celerity-dashboard" --port "$DASH_PORT" "${M[@]}" >"$WORK/dashboard.log" 2>&1 &
PIDS+=($!)
URL="http://127.0.0.1:$DASH_PORT"
for _ in $(seq 100); do curl -sf --noproxy '*' "$URL/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf --noproxy '*' "$URL/metrics" >/dev/null     # the oldest message's age counts from here
sleep 4                                               # and a heartbeat with the tallies

mkdir -p "$OUT"
shot() { python3 "$UI" "$URL" screenshot --path "$1" --out "$OUT/$2" --wait "$3" >/dev/null; note "$OUT/$2"; }
python3 "$UI" "$URL" check-overview --worker worker1@celerity-demo --queue reports >/dev/null
shot / dashboard-overview.png '#workers tr[data-worker]'
shot /dead dashboard-dead.png '#dead tr[data-dead]'
shot "/tasks/$TASK_ID" dashboard-task.png '#result'
