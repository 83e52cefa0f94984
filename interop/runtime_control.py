#!/usr/bin/env python3
"""Sends Celery remote-control requests to one worker with Python Celery 5.7's own client
(`app.control.broadcast`, `app.control.inspect`) and prints each reply as one JSON line.

Usage:
    runtime_control.py --broker URL --node NODE STEP [STEP ...]

A STEP is `METHOD` or `METHOD=JSON-ARGUMENTS` for a control command (its arguments as a JSON
object, e.g. `pool_grow={"n": 2}`, `rate_limit={"task_name": "t", "rate_limit": "30/m"}`),
or `inspect:NAME` (active, stats, active_queues, ...). Before the first step it waits up to
20 s for the node to answer `ping`. Prints the node's reply per step (`null` when none came);
exits 2 when the node never answers ping.
"""
import argparse
import json
import sys
import time

from celery import Celery

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--broker", required=True)
p.add_argument("--node", required=True)
p.add_argument("--timeout", type=float, default=5.0)
p.add_argument("steps", nargs="+")
opts = p.parse_args()

app = Celery("runtime_control", broker=opts.broker)

deadline = time.time() + 20
while not (app.control.inspect(destination=[opts.node], timeout=1.0).ping() or {}).get(opts.node):
    if time.time() > deadline:
        print("no ping reply from %s" % opts.node, file=sys.stderr)
        sys.exit(2)

for step in opts.steps:
    method, _, raw = step.partition("=")
    if method.startswith("inspect:"):
        name = method[len("inspect:"):]
        replies = getattr(app.control.inspect(destination=[opts.node], timeout=opts.timeout), name)() or {}
        print(json.dumps(replies.get(opts.node)), flush=True)
        continue
    arguments = json.loads(raw) if raw else {}
    replies = app.control.broadcast(method, arguments=arguments, destination=[opts.node], reply=True, timeout=opts.timeout)
    merged = {}
    for r in replies or []:
        merged.update(r)
    print(json.dumps(merged.get(opts.node)), flush=True)
