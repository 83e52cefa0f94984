#!/usr/bin/env python3
"""Print what compose.yaml runs: each service's command (argv), environment and image.

    python3 scripts/compose_commands.py [--file compose.yaml] [--service NAME ...]

Prints one JSON object {service: {"command": [...], "environment": {...}, "image": "runtime" |
"python" | "<image>"}}, sorted by service. Variables are interpolated as Compose does for the
forms this project uses: ${VAR}, ${VAR:-default}, ${VAR-default} and $$, from this process's
environment. scripts/cluster.sh starts its hosts' processes from this output, and
scripts/check-docker.sh checks that it agrees with the Compose binary's own `config`.

A service whose command is a string (shell form) is refused: the netns cluster runs the very
same argv, and a string would have to be split the way Compose splits it.
"""
import argparse
import json
import os
import re
import sys

import yaml

VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(text, where, env):
    def one(m):
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, default = m.group(2), m.group(3)
        value = env.get(name)
        if op == ":-" and not value:
            return default
        if op == "-" and value is None:
            return default
        if value is None:
            sys.exit("compose_commands: %s: ${%s} is not set and has no default" % (where, name))
        return value
    return VAR.sub(one, text)


def load(path, env):
    try:
        with open(path) as f:
            doc = yaml.safe_load(f)          # SafeLoader resolves the `<<: *anchor` merges
    except (OSError, yaml.YAMLError) as e:
        sys.exit("compose_commands: %s: %s" % (path, e))
    services = (doc or {}).get("services")
    if not isinstance(services, dict) or not services:
        sys.exit("compose_commands: %s: no services" % path)
    out = {}
    for name, svc in sorted(services.items()):
        where = "%s: service %s" % (path, name)
        command = svc.get("command")
        if command is not None and not (isinstance(command, list) and all(isinstance(a, str) for a in command)):
            sys.exit("compose_commands: %s: command must be a list of strings (exec form), got %r" % (where, command))
        build = svc.get("build")
        if isinstance(build, dict):
            image = build.get("target", "runtime")
        else:
            image = svc.get("image", "?")
        environment = svc.get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment)
        out[name] = {
            "command": [interpolate(a, where, env) for a in command] if command is not None else None,
            "environment": {k: interpolate(str(v), where, env) for k, v in sorted(environment.items())},
            "image": image,
        }
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--file", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "compose.yaml"))
    parser.add_argument("--service", action="append", help="only this service (repeatable)")
    args = parser.parse_args()
    services = load(args.file, os.environ)
    if args.service:
        missing = [s for s in args.service if s not in services]
        if missing:
            sys.exit("compose_commands: %s: no service %s" % (args.file, ", ".join(missing)))
        services = {s: services[s] for s in args.service}
    json.dump(services, sys.stdout, indent=1, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
