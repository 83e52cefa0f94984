#!/usr/bin/env python3
"""Run the tutorial's three clients against a Celerity worker and check the answers.

    add(4, 6)            -> 10
    factorial(20000)     -> math.factorial(20000), exactly (77,338 digits)
    mat_mul(20, 20)      -> a 20x20 list of lists of floats

Each task is sent with .apply_async(args) and awaited with .get(timeout=...). One line
per task says OK or FAIL; the exit status is 0 only if every task passed.
Broker/backend: CELERITY_BROKER_URL / CELERITY_RESULT_BACKEND (see tutorial_app.py).
"""
import sys

# Before anything else: the factorial result has 77,338 digits, far past Python's default
# 4,300-digit limit for int <-> str conversion, which json.loads would otherwise enforce.
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tutorial_app import app, add, factorial, mat_mul  # noqa: E402


def check_add(result, x, y):
    if isinstance(result, int) and not isinstance(result, bool) and result == x + y:
        return None, "%r" % result
    return "expected %r, got %r" % (x + y, result), None


def check_factorial(result, n):
    expected = math.factorial(n)
    if isinstance(result, int) and not isinstance(result, bool) and result == expected:
        return None, "exact, %d digits" % len(str(result))
    if isinstance(result, int) and not isinstance(result, bool):
        got = str(result)
        want = str(expected)
        return ("wrong value: %d digits (expected %d), starts %s..., ends ...%s"
                % (len(got), len(want), got[:20], got[-20:])), None
    text = repr(result)
    return "expected an int, got %s %s" % (type(result).__name__, text[:80]), None


def check_mat_mul(result, m, n):
    if not isinstance(result, list) or len(result) != m:
        return "expected a list of %d rows, got %s" % (m, _describe(result)), None
    as_ints = 0
    for i, row in enumerate(result):
        if not isinstance(row, list) or len(row) != m:
            return "row %d: expected %d numbers, got %s" % (i, m, _describe(row)), None
        for j, value in enumerate(row):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return "[%d][%d] is %s, not a float" % (i, j, _describe(value)), None
            if isinstance(value, int):
                as_ints += 1  # an integral double written as "3" by some encoders
            elif not math.isfinite(value):
                return "[%d][%d] is %r" % (i, j, value), None
    note = "%dx%d floats, [0][0]=%r" % (m, m, result[0][0])
    if as_ints:
        note += " (%d entries arrived as JSON integers)" % as_ints
    return None, note


def _describe(value):
    if isinstance(value, list):
        return "a list of %d" % len(value)
    return "%s %.60r" % (type(value).__name__, value)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds to wait for each result (default 60)")
    parser.add_argument("--only", action="append", choices=["add", "factorial", "mat_mul"],
                        help="run only this client (repeatable)")
    parser.add_argument("--factorial-n", type=int, default=20000, metavar="N",
                        help="argument of the factorial client (default 20000)")
    parser.add_argument("--mat-size", type=int, default=20, metavar="N",
                        help="mat_mul(N, N) (default 20)")
    options = parser.parse_args()

    clients = [
        ("add", add, (4, 6), lambda r: check_add(r, 4, 6)),
        ("factorial", factorial, (options.factorial_n,),
         lambda r: check_factorial(r, options.factorial_n)),
        ("mat_mul", mat_mul, (options.mat_size, options.mat_size),
         lambda r: check_mat_mul(r, options.mat_size, options.mat_size)),
    ]
    print("broker %s, result backend %s, timeout %gs"
          % (app.conf.broker_url, app.conf.result_backend, options.timeout))
    failures = 0
    for short, task, args, check in clients:
        if options.only and short not in options.only:
            continue
        call = "%s(%s)" % (task.name, ", ".join(map(repr, args)))
        started = time.monotonic()
        try:
            async_result = task.apply_async(args)
            result = async_result.get(timeout=options.timeout)
        except Exception as exc:  # timeouts, remote failures, connection errors
            failures += 1
            print("FAIL %s: %s: %s (%.2fs)"
                  % (call, type(exc).__name__, exc, time.monotonic() - started), flush=True)
            continue
        elapsed = time.monotonic() - started
        problem, summary = check(result)
        if problem:
            failures += 1
            print("FAIL %s: %s (%.2fs)" % (call, problem, elapsed), flush=True)
        else:
            print("OK   %s = %s (%.2fs)" % (call, summary, elapsed), flush=True)
    if failures:
        print("%d client(s) failed" % failures)
        return 1
    print("all clients passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
