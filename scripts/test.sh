#!/usr/bin/env bash
# The README's test command, for a fresh Debian bookworm machine with Swift installed:
# installs what is missing (scripts/install-deps.sh: nothing, and no network, when all is
# there), then runs `swift test` with this script's arguments, e.g.
#   scripts/test.sh --filter PluginTests
# The tests start their own redis-server processes on free ports; nothing else is started.
set -euo pipefail

cd "$(dirname "$0")/.."

printf '== Checking prerequisites\n'
bash scripts/install-deps.sh

printf '\n== swift test%s\n' "${*:+ $*}"
exec swift test "$@"
