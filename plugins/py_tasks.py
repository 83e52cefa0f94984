#!/usr/bin/env python3
# celerity-check: --task plugins.py_add --args [2,3] --slow-task plugins.py_sleep
"""Celerity plugin with small Python tasks used by the tests and examples.

plugins.py_add(x, y)        x + y (exact for big integers)
plugins.py_fail()           raises ValueError("boom")
plugins.py_echo(*a, **kw)   {"args": a, "kwargs": kw}
plugins.py_sleep(seconds)   sleeps, then returns seconds
"""
import time

from celerity_plugin import task, run


@task("plugins.py_add")
def add(x, y):
    return x + y


@task("plugins.py_fail")
def fail(*args, **kwargs):
    raise ValueError("boom")


@task("plugins.py_echo")
def echo(*args, **kwargs):
    return {"args": list(args), "kwargs": kwargs}


@task("plugins.py_sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


if __name__ == "__main__":
    run(name="py_tasks")
