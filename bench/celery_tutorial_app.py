"""The tutorial's three tasks as a real Python Celery app (the benchmark's Celery side).

Same task names and queues as bench/tasks.yaml (the Celerity side): add_module.tasks.add on
"add", factorial_module.tasks.factorial on "factorial", mat_mul_module.tasks.mat_mul on
"mat_mul", and add_module.tasks.tsum on "add" (sum of a list: the body of the benchmark's
chord; Celerity's built-in `sum`). The bodies are the tutorial's Python code. One change: Python 3.11 refuses to turn an int of
more than 4,300 digits into text, so the tutorial's factorial(20000) fails to serialize in
real Celery; the limit is lifted here so that Celery has a time to compare with.
"""
import os
import sys

from celery import Celery

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)

BROKER_URL = os.environ.get("CELERITY_BROKER_URL", "redis://localhost:6379/0")
app = Celery("tutorial_bench", broker=BROKER_URL, backend=os.environ.get("CELERITY_RESULT_BACKEND", BROKER_URL))
app.conf.update(
    task_routes={
        "add_module.tasks.add": {"queue": "add"},
        "add_module.tasks.tsum": {"queue": "add"},
        "factorial_module.tasks.factorial": {"queue": "factorial"},
        "mat_mul_module.tasks.mat_mul": {"queue": "mat_mul"},
    },
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    result_accept_content=["json"],
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


@app.task(name="add_module.tasks.add")
def add(x, y):
    return x + y


@app.task(name="add_module.tasks.tsum")
def tsum(numbers):
    return sum(numbers)


@app.task(name="factorial_module.tasks.factorial")
def factorial(n):
    result = 1
    for i in range(2, n + 1):
        result *= i
    return result


@app.task(name="mat_mul_module.tasks.mat_mul")
def mat_mul(m, n):
    import numpy as np
    a = np.random.rand(m, n)
    b = np.random.rand(n, m)
    return (a @ b).tolist()
