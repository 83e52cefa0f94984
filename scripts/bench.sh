#!/usr/bin/env bash
# Celerity vs Celery, side by side on one private redis-server, in one run (docs/benchmarks.md).
#   scripts/bench.sh                 # full run: 100,000 tasks drained by each worker, ...
#   scripts/bench.sh --tasks 20000   # quicker; see --help for every option
# Needs: redis-server, python3 with celery[redis]==5.7.0 and numpy (scripts/install-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c "import celery, redis, numpy" 2>/dev/null || {
    echo "bench: needs Python packages celery[redis]==5.7.0 and numpy: run scripts/install-deps.sh" >&2; exit 2; }
command -v redis-server >/dev/null || { echo "bench: needs redis-server: run scripts/install-deps.sh" >&2; exit 2; }
echo "building release binaries (swift build -c release)…" >&2
swift build -c release --product celerity >&2
swift build -c release --product celerity-bench >&2
# Row i runs the dashboard; `--dashboard-rounds 0` skips the row and this build (Hummingbird:
# several minutes from a clean clone).
case " $* " in
    *" --dashboard-rounds 0 "*|*" --dashboard-rounds=0 "*) ;;
    *) swift build -c release --product celerity-dashboard >&2 ;;
esac
exec python3 bench/run.py "$@"
