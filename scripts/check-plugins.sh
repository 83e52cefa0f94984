#!/usr/bin/env bash
# Runs `celerity plugin check` on every example plugin (CI calls this after the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${CELERITY_BIN:-.build/debug/celerity}
[ -x "$bin" ] || swift build --product celerity
check() { echo "== $*"; "$bin" plugin check "$@"; }
check --task plugins.py_add --args '[2, 3]' --slow-task plugins.py_sleep -- python3 plugins/py_tasks.py
check --task plugins.py_quick_add --args '[2, 3]' -- python3 plugins/py_quick.py
check --task plugins.add --args '[2, 3]' -- python3 plugins/tutorial_tasks.py
check --task plugins.mat_mul_numpy --args '[3, 3]' -- python3 plugins/matmul_numpy.py
check --task plugins.js_add --args '[2, 3]' -- node plugins/js_add.js
check --task plugins.js_factorial --args '[25]' -- node plugins/tutorial_tasks.js
check --mode oneshot --task plugins.sh_upper --args '["hi"]' -- plugins/sh_upper.sh
echo "all example plugins pass"
