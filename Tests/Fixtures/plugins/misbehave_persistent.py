#!/usr/bin/env python3
"""A deliberately misbehaving persistent-mode plugin, for Celerity's tests.

Speaks JSON-RPC 2.0 correctly for the handshake; each task/run call's first argument picks
how it misbehaves:
  ok          answers {"result": "ok"}
  pid         answers with its process id
  garbage     prints a non-JSON line on stdout
  logs        prints a log line on stdout, then the answer
  half        writes half a JSON line and exits
  huge        answers with a result larger than 20 MB on one line
  flood       writes 5 MB on stderr, then answers
  hang        never answers, ignores $/cancel (the worker must kill it)
  ignoreterm  like hang, and ignores SIGTERM too
  exit        exits with the call in flight
  orphan      starts a child in a session of its own that keeps stdout open, then exits
              with the call in flight
  wrongid     answers with an id that was never sent
  twice       answers the call twice
  hugeerror   an error answer with a 15,000,000-byte message, a 100,000-byte type and traceback
  crashinit   (as argv[1]) exits before answering initialize
"""
import json
import os
import signal
import sys
import time

if len(sys.argv) > 1 and sys.argv[1] == "crashinit":
    sys.exit(3)


def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


for raw in sys.stdin:
    msg = json.loads(raw)
    method = msg.get("method")
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": msg["id"], "result": {"protocol": 1, "name": "misbehave", "max_inflight": 1}})
        continue
    if method in ("$/cancel", "exit"):
        if method == "exit":
            sys.exit(0)
        continue
    if method == "shutdown":
        send({"jsonrpc": "2.0", "id": msg["id"], "result": {}})
        continue
    if method != "task/run":
        continue
    cid = msg["id"]
    args = msg["params"].get("args") or ["ok"]
    mode = args[0]
    if mode == "ok":
        send({"jsonrpc": "2.0", "id": cid, "result": "ok"})
    elif mode == "pid":
        send({"jsonrpc": "2.0", "id": cid, "result": os.getpid()})
    elif mode == "garbage":
        sys.stdout.write("this is not json\n")
        sys.stdout.flush()
    elif mode == "logs":
        sys.stdout.write("INFO doing the work\n")
        sys.stdout.flush()
        send({"jsonrpc": "2.0", "id": cid, "result": "ok"})
    elif mode == "half":
        sys.stdout.write('{"jsonrpc": "2.0", "id": "%s", "res' % cid)
        sys.stdout.flush()
        os._exit(1)
    elif mode == "huge":
        send({"jsonrpc": "2.0", "id": cid, "result": "x" * (20 * 1024 * 1024)})
    elif mode == "flood":
        line = "e" * 1023 + "\n"
        for _ in range(5 * 1024):
            sys.stderr.write(line)
        sys.stderr.flush()
        send({"jsonrpc": "2.0", "id": cid, "result": "flooded"})
    elif mode in ("hang", "ignoreterm"):
        if mode == "ignoreterm":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    elif mode == "exit":
        os._exit(2)
    elif mode == "orphan":
        import subprocess
        subprocess.Popen(["sleep", "15"], start_new_session=True)  # inherits stdout
        os._exit(2)
    elif mode == "wrongid":
        send({"jsonrpc": "2.0", "id": "not-" + str(cid), "result": "ok"})
    elif mode == "hugeerror":
        send({"jsonrpc": "2.0", "id": cid, "error": {"code": -32000, "message": "m" * 15_000_000,
              "data": {"type": "T" * 100_000, "retryable": False, "traceback": "t" * 100_000}}})
    elif mode == "twice":
        send({"jsonrpc": "2.0", "id": cid, "result": "first"})
        send({"jsonrpc": "2.0", "id": cid, "result": "second"})
