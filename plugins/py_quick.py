#!/usr/bin/env python3
# celerity-check: --task plugins.py_quick_add --args [2,3]
"""Celerity plugin for short Python tasks, pipelined (persistent mode).

plugins.py_quick_add(x, y)   x + y (exact for big integers)

One thread runs the calls one after another while the worker keeps up to 32 of them
queued in the process (max_inflight=32, threads=1): the process goes from one call to the
next without waiting for a round trip through the worker. Meant for tasks of a few
milliseconds at most: a queued call's time limit counts from when the worker sent it.
"""
from celerity_plugin import task, run


@task("plugins.py_quick_add", queue="plugins", mode="persistent", processes=1)
def add(x: float, y: float) -> float:
    """x + y (exact for big integers)."""
    return x + y


if __name__ == "__main__":
    run(name="py_quick", max_inflight=32, threads=1)
