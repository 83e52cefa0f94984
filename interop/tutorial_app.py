#!/usr/bin/env python3
"""The tutorial's Celery app, as its clients see it.

Three tasks, each routed to its own queue, all executed by a Celerity worker:

    add_module.tasks.add(x, y)            -> queue "add"
    factorial_module.tasks.factorial(n)   -> queue "factorial"
    mat_mul_module.tasks.mat_mul(m, n)    -> queue "mat_mul"

The task bodies here are stubs: this module only gives clients the task names, routes
and broker settings. Broker and result backend come from CELERITY_BROKER_URL and
CELERITY_RESULT_BACKEND (default redis://localhost:6379/0; the backend may also be rpc://).

Run it directly to print the configuration.
"""
import os

from celery import Celery

BROKER_URL = os.environ.get("CELERITY_BROKER_URL", "redis://localhost:6379/0")
RESULT_BACKEND = os.environ.get("CELERITY_RESULT_BACKEND", "redis://localhost:6379/0")

app = Celery("tutorial", broker=BROKER_URL, backend=RESULT_BACKEND)
app.conf.update(
    task_routes={
        "add_module.tasks.add": {"queue": "add"},
        "factorial_module.tasks.factorial": {"queue": "factorial"},
        "mat_mul_module.tasks.mat_mul": {"queue": "mat_mul"},
    },
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    broker_connection_retry_on_startup=True,
)


def _remote_only(name):
    return NotImplementedError("%s runs on a Celerity worker, not in Python" % name)


@app.task(name="add_module.tasks.add")
def add(x, y):
    raise _remote_only("add_module.tasks.add")


@app.task(name="factorial_module.tasks.factorial")
def factorial(n):
    raise _remote_only("factorial_module.tasks.factorial")


@app.task(name="mat_mul_module.tasks.mat_mul")
def mat_mul(m, n):
    raise _remote_only("mat_mul_module.tasks.mat_mul")


if __name__ == "__main__":
    print("broker:         %s" % BROKER_URL)
    print("result backend: %s" % RESULT_BACKEND)
    for name, route in app.conf.task_routes.items():
        print("route:          %s -> queue %s" % (name, route["queue"]))
