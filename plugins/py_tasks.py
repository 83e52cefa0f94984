#!/usr/bin/env python3
# celerity-check: --task plugins.py_add --args [2,3] --slow-task plugins.py_sleep
"""Celerity plugin with small Python tasks used by the tests and examples.

plugins.py_add(x, y)        x + y (exact for big integers)
plugins.py_fail()           raises ValueError("boom")
plugins.py_echo(*a, **kw)   {"args": a, "kwargs": kw}
plugins.py_sleep(seconds)   sleeps, then returns seconds

The annotations and task() options are what the plugin says of itself to `describe`.
"""
import time

from celerity_plugin import task, run


@task("plugins.py_add", queue="plugins")
def add(x: float, y: float) -> float:
    """x + y (exact for big integers)."""
    return x + y


@task("plugins.py_fail", queue="plugins")
def fail(*args, **kwargs):
    """Raises ValueError("boom"), whatever it is given."""
    raise ValueError("boom")


@task("plugins.py_echo", queue="plugins")
def echo(*args, **kwargs) -> dict:
    """Returns {"args": args, "kwargs": kwargs}."""
    return {"args": list(args), "kwargs": kwargs}


@task("plugins.py_sleep", queue="plugins", time_limit=5, grace_period=1)
def sleep(seconds: float) -> float:
    """Sleeps for `seconds`, then returns them."""
    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    run(name="py_tasks")
