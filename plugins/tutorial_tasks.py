#!/usr/bin/env python3
# celerity-check: --task plugins.add --args [2,3]
"""Celerity plugin: the tutorial's three tasks in Python, both modes.

plugins.add(x, y)          x + y; exact for integers of any size
plugins.factorial(n)       n! exactly (math.factorial), for 0 <= n <= 1,000,000; the helper
                           lifts Python's 4,300-digit limit, so factorial(20000) goes out
                           with all its 77,338 digits
plugins.mat_mul(m, n)      the m×m product of a random m×n and a random n×m matrix
                           (numpy, uniform in [0, 1)), as a list of m lists of m floats

The checks and limits follow the built-in handlers (add, factorial, mat_mul). Note that
Python 3.11 turns a big int into decimal digits in quadratic time: factorial(100000)
(456,574 digits) takes about 3 s to write, factorial(1000000) several minutes.
numpy is imported by mat_mul only, so one-shot add and factorial start quickly.

The type annotations are the tasks' argument schemas (answered to `describe`): a call with
a string for n is refused before it is queued. The checks below stay for clients that do
not validate, and for the limits a type cannot say.
"""
import math

from celerity_plugin import task, run

FACTORIAL_LIMIT = 1_000_000
MATRIX_LIMIT = 16_000_000   # elements per matrix


def _kind(value):
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@task("plugins.add", queue="plugins")
def add(x: float, y: float) -> float:
    """x + y; exact for integers of any size."""
    if not (_is_number(x) and _is_number(y)):
        raise TypeError("add() needs two numbers, got %s and %s" % (_kind(x), _kind(y)))
    return x + y


@task("plugins.factorial", queue="plugins", time_limit=120)
def factorial(n: int) -> int:
    """n! exactly, for 0 <= n <= 1,000,000."""
    if not _is_int(n):
        raise TypeError("factorial() needs an integer n, got %s" % _kind(n))
    if n < 0:
        raise ValueError("factorial() not defined for negative values (n = %d)" % n)
    if n > FACTORIAL_LIMIT:
        raise ValueError("factorial(): n = %d is above the limit of 1,000,000" % n)
    return math.factorial(n)


@task("plugins.mat_mul", queue="plugins", time_limit=120)
def mat_mul(m: int, n: int) -> list[list[float]]:
    """The m×m product of a random m×n and a random n×m matrix (uniform in [0, 1))."""
    if not (_is_int(m) and _is_int(n)):
        raise TypeError("mat_mul() needs integers m and n, got %s and %s" % (_kind(m), _kind(n)))
    if m < 1 or n < 1:
        raise ValueError("mat_mul(): m and n must be >= 1 (got %d, %d)" % (m, n))
    if m * n > MATRIX_LIMIT or m * m > MATRIX_LIMIT:
        raise ValueError("mat_mul(): %d×%d is too large (at most 16M elements per matrix)" % (m, n))
    import numpy as np   # here, not at the top: it takes ~0.3 s, and one-shot add/factorial need not pay it
    rng = np.random.default_rng()
    a = rng.random((m, n))
    b = rng.random((n, m))
    return (a @ b).tolist()


if __name__ == "__main__":
    run(name="tutorial_tasks")
