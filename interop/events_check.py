#!/usr/bin/env python3
"""What a worker publishes on Celery's event channels, seen by a real Celery 5.7 EventReceiver
(the one `celery events` and Flower use), from the worker's start to its stop.

Usage:
    events_check.py --broker URL --node NAME --queue QUEUE [--add-task NAME] [--fail-task NAME]
                    [--no-task-events] -- WORKER COMMAND...

Starts capturing, then starts the worker command (which must serve QUEUE as node NAME, with
ADD (x, y) -> x + y and FAIL (message) -> ValueError), sends add(40, 2) and fail('kaput')
with the Python Celery client, waits for both results and two heartbeats, stops the worker
with SIGTERM and waits for its exit. Then checks:
  * worker-online first, worker-heartbeat every ~2 s (freq 2.0, active, processed, loadavg of
    3 numbers, sw_ident/sw_ver/sw_sys), worker-offline last;
  * every event has hostname, utcoffset, pid, clock, timestamp (now), type; clocks increase;
  * by default: task-received (name, args/kwargs as repr strings, root_id, parent_id,
    retries, eta, expires), task-started, task-succeeded (result '42', runtime) for add and
    task-received, task-started, task-failed (exception "ValueError('kaput')", traceback) for
    fail, in that order, and they came as task.multi (batches);
  * with --no-task-events: no task event at all.
Prints "OK <check>" lines and a summary; exits 1 on any failure.
"""
import argparse
import os
import signal
import subprocess
import sys
import threading
import time

from celery import Celery

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--broker", required=True)
p.add_argument("--node", required=True)
p.add_argument("--queue", required=True)
p.add_argument("--add-task", default="pyapp.add")
p.add_argument("--fail-task", default="pyapp.fail")
p.add_argument("--no-task-events", action="store_true")
p.add_argument("worker", nargs=argparse.REMAINDER)
opts = p.parse_args()
worker_cmd = opts.worker[1:] if opts.worker[:1] == ["--"] else opts.worker

app = Celery("events_check", broker=opts.broker, backend=opts.broker)
app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)

events = []
multi = []          # sizes of the task.multi batches
failures = []


def check(cond, what):
    if cond:
        print("OK   " + what, flush=True)
    else:
        failures.append(what)
        print("FAIL " + what, flush=True)


def capture():
    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": events.append})
        orig = recv._receive

        def receive(body, message):
            if isinstance(body, list):
                multi.append(len(body))
            orig(body, message)
        recv._receive = receive
        recv.capture(limit=None, timeout=None, wakeup=False)


threading.Thread(target=capture, daemon=True).start()
time.sleep(1.0)     # the receiver's PSUBSCRIBE is in place


def mine(kind=None):
    return [e for e in events if e.get("hostname") == opts.node and (kind is None or e["type"] == kind)]


def wait(what, cond, timeout):
    end = time.time() + timeout
    while time.time() < end:
        if cond():
            return True
        time.sleep(0.1)
    print("timed out waiting for " + what, flush=True)
    return False


worker = subprocess.Popen(worker_cmd, stdout=sys.stdout, stderr=sys.stderr)
try:
    wait("worker-online", lambda: mine("worker-online"), 20)
    ok = app.send_task(opts.add_task, args=[40, 2], queue=opts.queue)
    bad = app.send_task(opts.fail_task, args=["kaput"], queue=opts.queue)
    check(ok.get(timeout=30) == 42, "add(40, 2) = 42")
    try:
        bad.get(timeout=30)
        check(False, "fail('kaput') failed")
    except ValueError as e:
        check(str(e) == "kaput", "fail('kaput') failed with ValueError('kaput')")
    if not opts.no_task_events:
        wait("the task events", lambda: any(e.get("uuid") == bad.id and e["type"] == "task-failed" for e in events), 10)
    beats_before = len(mine("worker-heartbeat"))
    wait("two more heartbeats", lambda: len(mine("worker-heartbeat")) >= beats_before + 2, 8)
finally:
    worker.send_signal(signal.SIGTERM)
    try:
        status = worker.wait(30)
    except subprocess.TimeoutExpired:
        worker.kill()
        status = worker.wait()
check(status == 0, "the worker stopped cleanly (exit %r)" % status)
wait("worker-offline", lambda: mine("worker-offline"), 5)

ev = mine()
kinds = [e["type"] for e in ev]
check(kinds[:1] == ["worker-online"], "worker-online first (got %s)" % kinds[:3])
check(kinds[-1:] == ["worker-offline"], "worker-offline last (got %s)" % kinds[-3:])
beats = mine("worker-heartbeat")
check(len(beats) >= 2, "worker-heartbeats (%d)" % len(beats))
gaps = [b["timestamp"] - a["timestamp"] for a, b in zip(beats, beats[1:])]
check(all(1.5 < g < 2.6 for g in gaps), "heartbeats every ~2 s (gaps %s)" % ["%.2f" % g for g in gaps])
now = time.time()
for e in ev:
    missing = {"hostname", "utcoffset", "pid", "clock", "timestamp", "type"} - set(e)
    if missing or abs(e["timestamp"] - now) > 120 or e["pid"] != worker.pid:
        check(False, "common fields of %r" % e)
        break
else:
    check(True, "every event has hostname, utcoffset, pid (the worker's), clock, timestamp (now), type")
clocks = [e["clock"] for e in ev]
check(clocks == sorted(clocks) and len(set(clocks)) == len(clocks), "clocks increase")
for e in [ev[0], beats[-1], ev[-1]]:
    want = {"freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"}
    check(want <= set(e) and e["freq"] == 2.0 and isinstance(e["loadavg"], list) and len(e["loadavg"]) == 3
          and isinstance(e["active"], int) and isinstance(e["processed"], int),
          "%s fields (freq 2.0, active, processed, loadavg, sw_*): %r" % (e["type"], e))
check(ev[-1]["processed"] >= 2, "worker-offline counts the tasks processed (%r)" % ev[-1]["processed"])

task_events = [e for e in ev if e["type"].startswith("task-")]
if opts.no_task_events:
    check(not task_events, "no task events without -E (got %s)" % [e["type"] for e in task_events])
    check(not multi, "no task.multi messages")
else:
    def of(task_id):
        return [e for e in task_events if e.get("uuid") == task_id]
    okt, badt = of(ok.id), of(bad.id)
    check([e["type"] for e in okt] == ["task-received", "task-started", "task-succeeded"],
          "add: received, started, succeeded (got %s)" % [e["type"] for e in okt])
    check([e["type"] for e in badt] == ["task-received", "task-started", "task-failed"],
          "fail: received, started, failed (got %s)" % [e["type"] for e in badt])
    if len(okt) == 3 and len(badt) == 3:
        rec, suc, fail = okt[0], okt[2], badt[2]
        check(rec["name"] == opts.add_task and rec["args"] == "[40, 2]" and rec["kwargs"] == "{}"
              and rec["root_id"] == ok.id and rec["parent_id"] is None and rec["retries"] == 0
              and rec["eta"] is None and rec["expires"] is None,
              "task-received name, args/kwargs (repr strings), root_id, parent_id, retries, eta, expires: %r" % rec)
        check(badt[0]["args"] == "['kaput']", "task-received args of fail: %r" % badt[0]["args"])
        check(suc["result"] == "42" and isinstance(suc["runtime"], float) and 0 <= suc["runtime"] < 5,
              "task-succeeded result '42' (a repr string) and runtime: %r" % suc)
        check(fail["exception"] == "ValueError('kaput')" and "kaput" in fail["traceback"],
              "task-failed exception and traceback: %r" % fail)
        check(okt[0]["timestamp"] <= okt[1]["timestamp"] <= okt[2]["timestamp"], "task timestamps in order")
    check(multi and sum(multi) >= len(task_events), "task events came as task.multi arrays (sizes %s)" % multi)

print("%d failed%s" % (len(failures), (": " + "; ".join(failures)) if failures else ""))
sys.exit(1 if failures else 0)
