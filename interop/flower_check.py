#!/usr/bin/env python3
"""Flower 2.2 (from PyPI) against whatever workers are on a broker: starts Flower on a free
port, waits until it serves, and checks what its REST API, pages and /metrics show.

Usage:
    flower_check.py --broker URL --backend URL --node PATTERN --queue QUEUE
                    [--also-node PATTERN ...] [--add-task NAME] [--sleep-task NAME] [--fail-task NAME]
                    [--port P] [--flower-url URL] [--only CASE,...] [--skip CASE,...] [--list]
                    [--offline-within SECONDS [--kill-pid PID]]

PATTERN is a node name or a glob; the first node answering `ping` whose name matches is the
one under test. --also-node names more nodes (a mixed cluster) that must be listed too. Tasks
(ADD (x, y) -> x + y, SLEEP (seconds), FAIL (message) -> ValueError) go to QUEUE; defaults are
interop/py_worker_app.py's pyapp.add / pyapp.sleep / pyapp.fail.

Flower is started as
    FLOWER_UNAUTHENTICATED_API=true celery --broker=URL --result-backend=URL flower \
        --address=127.0.0.1 --port=P
(its REST API answers 401 without that variable or --basic-auth; --broker_api is only for
RabbitMQ's management API and is not needed on Redis). With --flower-url an already running
Flower is used instead.

The `offline` case runs only with --offline-within N, and last: it prints
"KILL-NOW <node>" (and sends SIGKILL to --kill-pid when given; otherwise the caller kills the
worker on reading that line), then waits up to N s for Flower to show the node offline
(/api/workers?status=true gives {node: false}; the dashboard's /workers?json=1 gives status false).
Flower's alive rule (celery/events/state.py): alive while now < last heartbeat received +
freq × 2 (freq 2.0 s ⇒ 4 s); a worker-offline event makes it offline at once.

Prints "OK <case>" / "FAIL <case>: why"; exits 1 on any FAIL (2 when Flower or the node is not found).
"""
import argparse
import fnmatch
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import traceback
import urllib.error
import urllib.request
from urllib.parse import quote

from celery import Celery
from celery.result import AsyncResult

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--broker", default=os.environ.get("CELERITY_BROKER_URL", "redis://localhost:6379/0"))
p.add_argument("--backend", default=os.environ.get("CELERITY_RESULT_BACKEND"))
p.add_argument("--node", default="*")
p.add_argument("--also-node", action="append", default=[])
p.add_argument("--queue", default="pyq")
p.add_argument("--add-task", default="pyapp.add")
p.add_argument("--sleep-task", default="pyapp.sleep")
p.add_argument("--fail-task", default="pyapp.fail")
p.add_argument("--port", type=int, default=0, help="Flower's port (default: a free one)")
p.add_argument("--flower-url", default=None, help="use this running Flower instead of starting one")
p.add_argument("--flower-log", default=None, help="write Flower's output here")
p.add_argument("--only", default="")
p.add_argument("--skip", default="")
p.add_argument("--offline-within", type=float, default=None)
p.add_argument("--kill-pid", type=int, default=None)
p.add_argument("--list", action="store_true")
p.add_argument("--no-pidbox", action="store_true",
               help="the workers answer no remote control: --node/--also-node are exact names (not resolved by "
                    "ping); only the cases built from events make sense (healthcheck, workers-status, dashboard, "
                    "tasks, metrics, offline)")
opts = p.parse_args()

app = Celery("flower_check", broker=opts.broker, backend=opts.backend or opts.broker)
app.conf.update(task_serializer="json", accept_content=["json"], broker_connection_retry_on_startup=True)

CASES = []


def case(name, default=True):
    def register(fn):
        CASES.append((name, fn, default))
        return fn
    return register


class Fail(Exception):
    pass


def check(cond, why):
    if not cond:
        raise Fail(why)


def wait_until(what, fn, timeout, interval=0.5):
    deadline = time.time() + timeout
    last = None
    while True:
        try:
            v = fn()
            if v:
                return v
        except (urllib.error.URLError, OSError, ValueError, KeyError) as e:
            last = e
        if time.time() > deadline:
            raise Fail("timed out after %.0f s waiting for %s%s" % (timeout, what, " (last error %r)" % last if last else ""))
        time.sleep(interval)


base = None
node = None


def http(path, method="GET", timeout=15):
    req = urllib.request.Request(base + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, r.read().decode("utf-8", "replace")


def get_json(path):
    status, body = http(path)
    check(status == 200, "GET %s: HTTP %d" % (path, status))
    return json.loads(body)


def send(name, *args, **options):
    return app.send_task(name, args=list(args), queue=opts.queue, **options)


def flower_task(task_id, pred=lambda t: True):
    """The task as /api/tasks lists it, once pred(task) holds."""
    def get():
        t = get_json("/api/tasks").get(task_id)
        return t if t and pred(t) else None
    return get


def metrics():
    """{(name, frozenset(labels)): value} from /metrics."""
    status, body = http("/metrics")
    check(status == 200, "GET /metrics: HTTP %d" % status)
    out = {}
    for line in body.splitlines():
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        if m:
            labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
    return out


def metric(ms, name, **labels):
    want = set(labels.items())
    return sum(v for (n, ls), v in ms.items() if n == name and want <= set(ls))


@case("healthcheck")
def _():
    status, body = http("/healthcheck")
    check(status == 200 and body == "OK", "/healthcheck: %d %r" % (status, body))


@case("workers")
def _():
    # /api/workers is built from remote-control replies (flower/inspector.py): stats, active_queues,
    # registered, conf when Flower starts; refresh=1 inspects again.
    def listed():
        w = get_json("/api/workers?refresh=1")
        return w if all(n in w and "stats" in w[n] for n in wanted) else None
    w = wait_until("%s in /api/workers" % wanted, listed, 20)
    info = w[node]
    for key, kind in (("stats", dict), ("registered", list), ("active_queues", list), ("conf", dict)):
        check(isinstance(info.get(key), kind), "/api/workers[%s][%r] is %r" % (node, key, info.get(key)))
    check(isinstance(info["stats"].get("pid"), int) and isinstance(info["stats"].get("pool"), dict),
          "stats: %r" % info["stats"])
    check(opts.add_task in {n.split(" ")[0] for n in info["registered"]}, "registered: %r" % info["registered"])
    check(opts.queue in {q["name"] for q in info["active_queues"]}, "active_queues: %r" % info["active_queues"])
    # the single-worker query also fetches the task lists
    one = get_json("/api/workers?refresh=1&workername=" + quote(node))[node]
    for key in ("active", "reserved", "scheduled", "revoked"):
        check(isinstance(one.get(key), list), "/api/workers?workername=%s [%r] is %r" % (node, key, one.get(key)))


@case("workers-status")
def _():
    # True once an event (a heartbeat suffices) arrived within the alive window
    wait_until("%s alive in /api/workers?status=1" % wanted,
               lambda: all(get_json("/api/workers?status=1").get(n) is True for n in wanted), 15)


@case("dashboard")
def _():
    def row():
        rows = {r["hostname"]: r for r in get_json("/workers?json=1")["data"]}
        return rows if all(n in rows for n in wanted) else None
    wait_until("%s on the dashboard" % wanted, row, 15)
    # The first heartbeat Flower sees may be the answer to its `heartbeat` cast at start-up:
    # Celery sends it with freq 5 and only sw_* fields (celery/worker/control.py heartbeat), so
    # active/processed/loadavg are None until a regular heartbeat (every 2 s) arrives.
    rows = wait_until("a regular heartbeat (loadavg) on the dashboard",
                      lambda: (lambda rs: rs if isinstance(rs.get(node, {}).get("loadavg"), list) else None)(row()), 8)
    r = rows[node]
    check(r["status"] is True, "dashboard status: %r" % r)
    for k in ("pid", "freq", "heartbeats", "clock", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"):
        check(k in r, "dashboard row lacks %r: %r" % (k, r))
    check(r["freq"] and isinstance(r["loadavg"], list), "dashboard freq/loadavg: %r" % r)


@case("worker-page")
def _():
    status, body = http("/worker/" + quote(node))
    check(status == 200 and node in body and "Unable to get stats" not in body, "/worker/%s: HTTP %d" % (node, status))
    for tab in ("tab-pool", "tab-broker", "tab-queues", "tab-tasks", "tab-limits", "tab-config"):
        check('id="%s"' % tab in body, "/worker/%s lacks the %s tab" % (node, tab))
    check(opts.queue in body and opts.add_task in body, "/worker/%s lacks the queue or the registered task" % node)


@case("tasks")
def _():
    ok = send(opts.add_task, 3, 4)
    bad = send(opts.fail_task, "kaput")
    check(ok.get(timeout=30) == 7, "the task's result")
    t = wait_until("the task SUCCESS in /api/tasks", flower_task(ok.id, lambda t: t["state"] == "SUCCESS"), 15)
    check(t["name"] == opts.add_task and t["args"] == "[3, 4]" and t["kwargs"] == "{}" and t["result"] == "7",
          "/api/tasks name/args/kwargs/result: %r" % t)
    check(isinstance(t["runtime"], (int, float)) and t["received"] and t["started"] and t["succeeded"],
          "/api/tasks runtime/received/started/succeeded: %r" % t)
    check(t["worker"] == node and t["uuid"] == ok.id, "/api/tasks worker/uuid: %r" % t)
    f = wait_until("the failed task in /api/tasks", flower_task(bad.id, lambda t: t["state"] == "FAILURE"), 15)
    check(f["exception"] == "ValueError('kaput')" and "kaput" in (f["traceback"] or ""),
          "/api/tasks exception/traceback: %r" % f)
    info = get_json("/api/task/info/" + ok.id)
    check(info["state"] == "SUCCESS" and info["result"] == "7", "/api/task/info: %r" % info)
    check(opts.add_task in get_json("/api/task/types")["task-types"], "/api/task/types")
    status, body = http("/task/" + ok.id)
    check(status == 200 and ok.id in body, "/task/<id>: HTTP %d" % status)
    status, body = http("/tasks")
    check(status == 200, "/tasks: HTTP %d" % status)
    listed = get_json("/api/tasks?workername=%s&state=SUCCESS&taskname=%s" % (quote(node), quote(opts.add_task)))
    check(ok.id in listed, "/api/tasks filtered by worker, state and name lacks the task")


@case("revoke")
def _():
    r = send(opts.add_task, 1, 1, countdown=4)
    wait_until("the countdown task in Flower", flower_task(r.id), 10)
    status, body = http("/api/task/revoke/" + r.id, method="POST")
    check(status == 200 and json.loads(body) == {"message": "Revoked '%s'" % r.id}, "revoke: %d %s" % (status, body))
    wait_until("REVOKED in the backend", lambda: AsyncResult(r.id, app=app).state == "REVOKED", 10)
    time.sleep(5)       # past its eta: it must not run
    check(AsyncResult(r.id, app=app).state == "REVOKED", "the revoked task ran")
    # Celery's worker sends task-revoked (terminated false) when the eta comes; Flower shows REVOKED
    wait_until("REVOKED in /api/tasks", flower_task(r.id, lambda t: t["state"] == "REVOKED"), 10)


@case("revoke-terminate")
def _():
    r = send(opts.sleep_task, 30)
    wait_until("the task STARTED in Flower", flower_task(r.id, lambda t: t["state"] == "STARTED"), 15)
    status, body = http("/api/task/revoke/%s?terminate=true&signal=SIGTERM" % r.id, method="POST")
    check(status == 200, "revoke terminate: %d %s" % (status, body))
    wait_until("REVOKED in the backend", lambda: AsyncResult(r.id, app=app).state == "REVOKED", 10)
    wait_until("REVOKED in /api/tasks", flower_task(r.id, lambda t: t["state"] == "REVOKED"), 10)


@case("metrics")
def _():
    r = send(opts.add_task, 5, 5)
    check(r.get(timeout=30) == 10, "the task's result")
    wait_until("the task SUCCESS in /api/tasks", flower_task(r.id, lambda t: t["state"] == "SUCCESS"), 15)
    ms = metrics()
    for type_ in ("task-received", "task-started", "task-succeeded"):
        check(metric(ms, "flower_events_total", worker=node, type=type_, task=opts.add_task) >= 1,
              "flower_events_total{worker=%s,type=%s,task=%s} missing" % (node, type_, opts.add_task))
    # worker-* events are not counted in flower_events_total (flower/events.py observe_worker):
    # they set flower_worker_online and, from heartbeats with `active`, the executing-tasks gauge
    check(metric(ms, "flower_task_runtime_seconds_count", worker=node, task=opts.add_task) >= 1,
          "flower_task_runtime_seconds_count missing")
    check(metric(ms, "flower_worker_online", worker=node) == 1.0, "flower_worker_online is not 1")
    check(any(n == "flower_worker_number_of_currently_executing_tasks" and ("worker", node) in ls for (n, ls) in ms),
          "flower_worker_number_of_currently_executing_tasks missing")


@case("offline", default=False)
def _():
    check(opts.offline_within, "--offline-within SECONDS is needed")
    wait_until("%s alive first" % node, lambda: get_json("/api/workers?status=1").get(node) is True, 15)

    def row():
        return {r["hostname"]: r for r in get_json("/workers?json=1")["data"]}.get(node)
    # Kill right after a new periodic heartbeat has arrived: the one Celery sends in answer to
    # Flower's start-up `heartbeat` cast carries freq 5, which keeps a worker alive 10 s.
    seen = (row() or {}).get("heartbeats", [None])[-1]
    last = wait_until("a new heartbeat from %s" % node,
                      lambda: (lambda r: r if r and r["heartbeats"] and r["heartbeats"][-1] != seen else None)(row()),
                      15, interval=0.1)
    print("KILL-NOW %s (last heartbeat freq %s)" % (node, last["freq"]), flush=True)
    if opts.kill_pid:
        os.kill(opts.kill_pid, signal.SIGKILL)
    killed = time.time()
    wait_until("%s offline in /api/workers?status=1" % node,
               lambda: get_json("/api/workers?status=1").get(node) is False, opts.offline_within, interval=0.25)
    took = time.time() - killed
    rows = {r["hostname"]: r for r in get_json("/workers?json=1")["data"]}
    check(rows.get(node, {}).get("status") is False, "the dashboard still shows %s online: %r" % (node, rows.get(node)))
    print("     %s offline %.1f s after KILL-NOW" % (node, took), flush=True)
    # flower_worker_online stays 1 after a SIGKILL: Flower sets it only from worker-online /
    # -heartbeat (1) and worker-offline (0) events (flower/events.py observe_worker).


# ------------------------------------------------------------------------------ main

names = [n for n, _, _ in CASES]
if opts.list:
    print("\n".join("%s%s" % (n, "" if d else "   (with --offline-within N)") for n, _, d in CASES))
    sys.exit(0)
only = [s for s in opts.only.split(",") if s]
skip = [s for s in opts.skip.split(",") if s]
unknown = [s for s in only + skip if s not in names]
if unknown:
    sys.exit("unknown case(s): %s (known: %s)" % (", ".join(unknown), ", ".join(names)))
selected = [(n, fn) for n, fn, default in CASES
            if (n in only if only else (default or (n == "offline" and opts.offline_within))) and n not in skip]

# the node(s), by ping
patterns = [opts.node] + opts.also_node
wanted = []
deadline = time.time() + 20
if opts.no_pidbox:
    wanted = patterns
    node = wanted[0]
while not wanted:
    answers = app.control.inspect(timeout=1.0).ping() or {}
    found = [sorted(n for n in answers if fnmatch.fnmatchcase(n, pat)) for pat in patterns]
    if all(found):
        wanted = [f[0] for f in found]
        node = wanted[0]
        break
    if time.time() > deadline:
        print("FAIL resolve-node: no node for %r answered ping (answers: %r)"
              % ([pat for pat, f in zip(patterns, found) if not f], answers), flush=True)
        sys.exit(2)
print("node: %s%s" % (node, (" (also %s)" % ", ".join(wanted[1:])) if wanted[1:] else ""), flush=True)

flower = None
if opts.flower_url:
    base = opts.flower_url.rstrip("/")
else:
    port = opts.port
    if not port:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    base = "http://127.0.0.1:%d" % port
    env = dict(os.environ, FLOWER_UNAUTHENTICATED_API="true")
    cmd = [sys.executable, "-m", "celery", "--broker=" + opts.broker]
    if opts.backend:
        cmd.append("--result-backend=" + opts.backend)
    cmd += ["flower", "--address=127.0.0.1", "--port=%d" % port]
    log = open(opts.flower_log, "w") if opts.flower_log else subprocess.DEVNULL
    flower = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    print("flower: %s (pid %d)" % (base, flower.pid), flush=True)

failures = []
try:
    try:
        wait_until("Flower at " + base, lambda: http("/healthcheck", timeout=2)[0] == 200, 30)
    except Fail as e:
        print("FAIL flower-start: %s" % e, flush=True)
        sys.exit(2)
    # /healthcheck answers before Flower's event consumer has subscribed: events published
    # before that are lost to it (Redis PUBLISH keeps nothing), so a task sent at once may
    # never show. A worker on the dashboard (/workers?json=1 is built from events, heartbeats
    # every 2 s) proves the subscription is in place.
    try:
        wait_until("%s's events in Flower" % node,
                   lambda: any(r["hostname"] == node for r in get_json("/workers?json=1")["data"]), 20)
    except Fail as e:
        print("FAIL flower-events: %s" % e, flush=True)
        sys.exit(2)
    for name, fn in selected:
        started = time.time()
        try:
            fn()
            print("OK   %s (%.1f s)" % (name, time.time() - started), flush=True)
        except Fail as e:
            failures.append(name)
            print("FAIL %s: %s" % (name, e), flush=True)
        except Exception as e:  # noqa: BLE001
            failures.append(name)
            print("FAIL %s: %r\n%s" % (name, e, traceback.format_exc()), flush=True)
finally:
    if flower is not None:
        flower.terminate()
        try:
            flower.wait(10)
        except subprocess.TimeoutExpired:
            flower.kill()
            flower.wait()

print("%d of %d failed%s" % (len(failures), len(selected), (": " + ", ".join(failures)) if failures else ""))
sys.exit(1 if failures else 0)
