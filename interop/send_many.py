#!/usr/bin/env python3
"""Sends COUNT calls of TASK to QUEUE with Python Celery 5.7's own client
(`app.send_task(name, args, queue=...)`) and prints their ids, one per line.

Usage:
    send_many.py --broker URL --task NAME --queue QUEUE --count N [--args JSON]
"""
import argparse
import json

from celery import Celery

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--broker", required=True)
p.add_argument("--task", required=True)
p.add_argument("--queue", required=True)
p.add_argument("--count", type=int, required=True)
p.add_argument("--args", default="[]")
opts = p.parse_args()

app = Celery("send_many", broker=opts.broker, backend=opts.broker)
args = json.loads(opts.args)
with app.producer_or_acquire() as producer:
    for _ in range(opts.count):
        print(app.send_task(opts.task, args=args, queue=opts.queue, producer=producer).id)
