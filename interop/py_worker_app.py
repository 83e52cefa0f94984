#!/usr/bin/env python3
"""A plain Python Celery app, for testing Celerity's client against a real Celery worker.

Tasks (routed to queue "pyq"):
    pyapp.mul(x, y)     -> x * y
    pyapp.hello(name)   -> "hello " + name
    pyapp.total(numbers) -> sum(numbers)   (a chord body)
    pyapp.add(x, y)     -> x + y            (as Celerity's built-in add)
    pyapp.sleep(seconds) -> seconds, after sleeping (a slow task, to revoke while running)
    pyapp.fail(message) -> raises ValueError(message)

Start the worker from this directory:
    celery -A py_worker_app worker -Q pyq --pool solo -c 1 -n pyworker@%h
For interop/ops_clients.py (events on, and a pool that can terminate a running task: the solo
pool runs tasks on the thread that reads remote-control messages, so a revoke with
terminate=True only arrives after the task has finished):
    celery -A py_worker_app worker -Q pyq --pool prefork -c 2 -E -n pyworker@%h

Broker and result backend come from CELERITY_BROKER_URL and CELERITY_RESULT_BACKEND
(default redis://localhost:6379/0; the backend may also be rpc://).
"""
import os
import sys
import time

from celery import Celery

# Let the worker decode and encode integers longer than 4,300 digits (Python's default
# limit), so big-number calls from Celerity clients work with this worker too.
if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

BROKER_URL = os.environ.get("CELERITY_BROKER_URL", "redis://localhost:6379/0")
RESULT_BACKEND = os.environ.get("CELERITY_RESULT_BACKEND", "redis://localhost:6379/0")

app = Celery("py_worker_app", broker=BROKER_URL, backend=RESULT_BACKEND)
app.conf.update(
    task_routes={"pyapp.*": {"queue": "pyq"}},
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    broker_connection_retry_on_startup=True,
)


@app.task(name="pyapp.mul")
def mul(x, y):
    return x * y


@app.task(name="pyapp.total")
def total(numbers):
    return sum(numbers)


@app.task(name="pyapp.hello")
def hello(name):
    return "hello " + name


@app.task(name="pyapp.add")
def add(x, y):
    return x + y


@app.task(name="pyapp.sleep")
def sleep(seconds):
    time.sleep(seconds)
    return seconds


@app.task(name="pyapp.fail")
def fail(message="failed on purpose"):
    raise ValueError(message)


if __name__ == "__main__":
    print("start the worker with: celery -A py_worker_app worker -Q pyq --pool solo -c 1 "
          "-n pyworker@%h")
