#!/usr/bin/env bash
# Scale-out and growth: 1, 2, 4, 8 workers on one Redis, a queue of 1,000,000 messages, 1,000
# tasks in flight, recovering a dead worker that held 100,000, 1 MB results, 1,000 queues on
# one worker (docs/benchmarks.md, "Scale-out and growth").
#   scripts/bench-scale.sh                       # full run (about 20 minutes here)
#   scripts/bench-scale.sh --only workers,recover --rounds 5
#   scripts/bench-scale.sh --smoke               # small counts, every result checked (CI, < 2 min)
# A sibling of scripts/bench.sh, not a row of it: no Celery involved (Celery has no
# counterpart for most of these), and the full run is longer than all of bench.sh.
# Needs: redis-server, python3 with redis (scripts/install-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import redis" 2>/dev/null || {
    echo "bench-scale: needs the Python package redis: run scripts/install-deps.sh" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "bench-scale: needs redis-server: run scripts/install-deps.sh" >&2; exit 2; }
echo "building the release binary (swift build -c release --product celerity)…" >&2
swift build -c release --product celerity >&2
exec python3 bench/scale.py "$@"
