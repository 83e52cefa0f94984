#!/usr/bin/env python3
"""A deliberately misbehaving one-shot Celerity plugin, for the worker's tests.

Standard library only, and on purpose not built on celerity_plugin. The first
positional argument of the request picks the misbehaviour:

  garbage    prints non-JSON to stdout, exits 0          -> protocol error, not retried
  nothing    prints nothing, exits 0                      -> protocol error, not retried
  exit3      writes "oops on stderr" to stderr, exits 3   -> failure, retried per policy
  tempfail   exits 75 (EX_TEMPFAIL) with empty stdout     -> failure that asks for a retry
  hang       ignores SIGTERM and sleeps forever           -> time limit, needs SIGKILL
  bigstderr  writes 5 MiB to stderr, then a valid result  -> stderr must be drained/capped
  crash      kills itself with SIGKILL                    -> crash, retried per policy
  hugeerror  an error answer with a 15,000,000-byte message, a 100,000-byte type and
             traceback                                    -> stored and logged cut short
  ok         a normal result ("ok")

Any other first argument (or none) gives a proper error response.
"""
import json
import os
import signal
import sys
import time

EX_TEMPFAIL = 75


def respond(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main():
    try:
        request = json.loads(sys.stdin.read())
        args = request.get("args") or []
    except (ValueError, AttributeError) as exc:
        respond({"error": {"type": "InvalidRequest", "message": str(exc),
                           "retryable": False, "traceback": None}})
        return 0
    mode = args[0] if args else None

    if mode == "garbage":
        sys.stdout.write("this is not JSON {{{\n")
        return 0
    if mode == "nothing":
        return 0
    if mode == "exit3":
        sys.stderr.write("oops on stderr\n")
        return 3
    if mode == "tempfail":
        sys.stderr.write("temporarily unavailable\n")
        return EX_TEMPFAIL
    if mode == "hang":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.stderr.write("hanging, ignoring SIGTERM (pid %d)\n" % os.getpid())
        sys.stderr.flush()
        while True:
            time.sleep(3600)
    if mode == "bigstderr":
        line = "x" * 1023 + "\n"               # 1 KiB per line
        for i in range(5 * 1024):              # 5 MiB in all
            sys.stderr.write(line)
        sys.stderr.flush()
        respond({"result": "bigstderr done"})
        return 0
    if mode == "crash":
        sys.stderr.write("about to SIGKILL myself\n")
        sys.stderr.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "hugeerror":
        respond({"error": {"type": "T" * 100_000, "message": "m" * 15_000_000,
                           "retryable": False, "traceback": "t" * 100_000}})
        return 0
    if mode == "ok":
        respond({"result": "ok"})
        return 0
    respond({"error": {"type": "ValueError",
                       "message": "unknown misbehaviour %r (garbage, nothing, exit3, tempfail, "
                                  "hang, bigstderr, crash, hugeerror, ok)" % (mode,),
                       "retryable": False, "traceback": None}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
