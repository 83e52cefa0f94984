#!/usr/bin/env python3
"""Celery's remote control (pidbox) and events, driven by the real Python Celery 5.7 tools
against whatever workers are on a broker: a Celerity worker or a Python Celery worker alike.

Usage:
    ops_clients.py --broker URL --backend URL --node PATTERN --queue QUEUE
                   [--add-task NAME] [--sleep-task NAME] [--fail-task NAME]
                   [--only CASE,...] [--skip CASE,...] [--with-shutdown] [--list]

PATTERN is a node name or a glob (`celerity@*`); the first node answering `ping` whose name
matches is the one under test (printed as "node: <name>"). The worker must consume QUEUE and
serve there ADD (x, y) -> x + y, SLEEP (seconds) -> sleeps, and FAIL (message) -> raises
ValueError: by default pyapp.add / pyapp.sleep / pyapp.fail (interop/py_worker_app.py); for a
Celerity worker the built-ins add / sleep / fail under the names its tasks.yaml gives them.
Against Python Celery, run the worker with a pool that can terminate a running task, e.g.
    celery -A py_worker_app worker -Q pyq --pool prefork -c 2 -E -n pyworker@%h
(the solo pool reads remote-control messages on the thread that runs the task, so a revoke
with terminate=True only arrives after the task has ended).

Cases run in the order listed by --list; `shutdown` (stops the worker) only with
--with-shutdown, and last. Prints "OK <case>" per case that passed, "FAIL <case>: why"
otherwise; exits 1 on any FAIL (2 when no node answers).
"""
import argparse
import fnmatch
import json
import os
import subprocess
import sys
import threading
import time
import traceback
import uuid

from celery import Celery
from celery.result import AsyncResult

p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
p.add_argument("--broker", default=os.environ.get("CELERITY_BROKER_URL", "redis://localhost:6379/0"))
p.add_argument("--backend", default=os.environ.get("CELERITY_RESULT_BACKEND"))
p.add_argument("--node", default="*", help="node name or glob")
p.add_argument("--queue", default="pyq")
p.add_argument("--add-task", default="pyapp.add")
p.add_argument("--sleep-task", default="pyapp.sleep")
p.add_argument("--fail-task", default="pyapp.fail")
p.add_argument("--timeout", type=float, default=5.0,
               help="seconds to wait for a reply (requests name the node, so a reply ends the wait)")
p.add_argument("--only", default="", help="comma-separated case names to run")
p.add_argument("--skip", default="", help="comma-separated case names not to run")
p.add_argument("--with-shutdown", action="store_true", help="also run `shutdown` (stops the worker)")
p.add_argument("--list", action="store_true", help="print the case names and exit")
p.add_argument("--no-pidbox", action="store_true",
               help="the worker answers no remote control: --node is its exact name (not resolved by ping), "
                    "events cases do not send enable_events (run the worker with task events on)")
opts = p.parse_args()

app = Celery("ops_clients", broker=opts.broker, backend=opts.backend or opts.broker)
app.conf.update(task_serializer="json", result_serializer="json", accept_content=["json"],
                broker_connection_retry_on_startup=True)
CELERY = [sys.executable, "-m", "celery", "-b", opts.broker]

# ------------------------------------------------------------------------------ cases

CASES = []          # (name, function, runs by default)


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


node = None         # resolved below
concurrency = 1     # from stats, for filling every execution slot


def insp(**kw):
    return app.control.inspect(destination=[node], timeout=opts.timeout, **kw)


def reply_of(replies, what):
    """The node's reply from an inspect dict ({node: reply}) or a broadcast list ([{node: reply}])."""
    if isinstance(replies, list):
        merged = {}
        for r in replies:
            merged.update(r)
        replies = merged
    check(replies and node in replies, "%s: no reply from %s (got %r)" % (what, node, replies))
    return replies[node]


def inspect(method, *args, **kw):
    return reply_of(getattr(insp(), method)(*args, **kw), method)


def broadcast(method, **arguments):
    return reply_of(app.control.broadcast(method, arguments=arguments, destination=[node], reply=True,
                                          timeout=opts.timeout), method)


def send(name, *args, **options):
    return app.send_task(name, args=list(args), queue=opts.queue, **options)


def wait_until(what, fn, timeout, interval=0.25):
    """Polls fn() until it returns something truthy; returns it or raises Fail."""
    deadline = time.time() + timeout
    while True:
        v = fn()
        if v:
            return v
        if time.time() > deadline:
            raise Fail("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def state(task_id):
    return AsyncResult(task_id, app=app).state


def wait_state(task_id, wanted, timeout):
    wait_until("task %s to be %s (it is %s)" % (task_id, wanted, state(task_id)),
               lambda: state(task_id) == wanted, timeout)


def ids_in(tasks, key=None):
    return {(t[key] if key else t)["id"] for t in tasks or []}


def wait_active(task_ids, timeout=20):
    wait_until("%s to be active" % sorted(task_ids),
               lambda: set(task_ids) <= ids_in(inspect("active")), timeout)


def fill_slots(seconds):
    """One SLEEP task per execution slot, waited for until all are active; returns their results."""
    blockers = [send(opts.sleep_task, seconds) for _ in range(concurrency)]
    wait_active({b.id for b in blockers})
    return blockers


INFO_KEYS = {"id", "name", "args", "kwargs", "type", "hostname", "time_start", "acknowledged",
             "delivery_info", "worker_pid"}      # celery/worker/request.py Request.info()


def check_info(info, what):
    check(isinstance(info, dict), "%s: an item is not a dict: %r" % (what, info))
    missing = INFO_KEYS - set(info)
    check(not missing, "%s: item lacks %s: %r" % (what, sorted(missing), info))
    check(isinstance(info["delivery_info"], dict), "%s: delivery_info is not a dict: %r" % (what, info))


def celery_cli(*args, timeout=60):
    r = subprocess.run(CELERY + list(args), capture_output=True, text=True, timeout=timeout)
    return r.returncode, r.stdout + r.stderr


def collect_events(seconds, action=None, until=None):
    """Every event seen (by a real celery EventReceiver) for `seconds` after action() runs,
    or until until(events) holds."""
    events = []
    with app.connection_for_read() as conn:
        recv = app.events.Receiver(conn, handlers={"*": events.append})
        t = threading.Thread(target=lambda: recv.capture(limit=None, timeout=None, wakeup=False), daemon=True)
        t.start()
        time.sleep(0.5)             # the receiver's PSUBSCRIBE is in place
        if action:
            action()
        deadline = time.time() + seconds
        while time.time() < deadline and not (until and until(events)):
            time.sleep(0.1)
        recv.should_stop = True
        t.join(3)
    return events


def task_events(events, task_id):
    return [e for e in events if e.get("uuid") == task_id]


@case("ping")
def _():
    check(insp().ping() == {node: {"ok": "pong"}}, "ping with destination: %r" % insp().ping())
    everyone = app.control.inspect(timeout=1.0).ping() or {}     # broadcast: waits 1 s after the last reply
    check(everyone.get(node) == {"ok": "pong"}, "broadcast ping: %r" % everyone)


@case("ping-filter")
def _():
    # without a destination the requester waits until `timeout` passes without a reply
    got = app.control.inspect(timeout=1.0, pattern=node.split("@")[0] + "@*", matcher="glob").ping()
    check(got and got.get(node) == {"ok": "pong"}, "pattern (glob) ping: %r" % got)
    got = app.control.inspect(timeout=1.0, destination=["nobody@nowhere"]).ping()
    check(not got, "a ping for another destination was answered: %r" % got)
    got = app.control.inspect(timeout=1.0, pattern="nobody@*", matcher="glob").ping()
    check(not got or node not in got, "a ping for a non-matching pattern was answered: %r" % got)


@case("cli-ping")
def _():
    rc, out = celery_cli("inspect", "ping", "-d", node, "-t", str(opts.timeout))
    check(rc == 0, "`celery inspect ping -d %s` exited %d: %s" % (node, rc, out))
    check(node in out and "pong" in out, "`celery inspect ping` output: %s" % out)


@case("cli-status")
def _():
    rc, out = celery_cli("status", "-d", node, "-t", str(opts.timeout))
    check(rc == 0 and node in out and "online" in out, "`celery status` exited %d: %s" % (rc, out))


@case("cli-inspect")
def _():
    for command, want in (("stats", dict), ("registered", list), ("active_queues", list)):
        rc, out = celery_cli("inspect", command, "-d", node, "-t", str(opts.timeout), "--json")
        check(rc == 0, "`celery inspect %s --json` exited %d: %s" % (command, rc, out))
        replies = json.loads(out.strip().splitlines()[-1])
        check(isinstance(replies.get(node), want), "`celery inspect %s --json`: %r" % (command, replies))


@case("cli-control")
def _():
    rc, out = celery_cli("control", "enable_events", "-d", node, "-t", str(opts.timeout))
    check(rc == 0 and "task events" in out, "`celery control enable_events` exited %d: %s" % (rc, out))
    tid = str(uuid.uuid4())
    rc, out = celery_cli("control", "revoke", tid, "-d", node, "-t", str(opts.timeout))
    check(rc == 0 and "flagged as revoked" in out, "`celery control revoke` exited %d: %s" % (rc, out))


@case("stats")
def _():
    s = inspect("stats")
    # Flower's worker page (flower/templates/worker.html) reads stats['pool'] (a dict),
    # 'pid', 'prefetch_count', ('consumer' or stats)['broker'] (a dict), stats['total'] (a dict)
    # and optional 'rusage' (a dict), 'autoscaler'; the Inspector pops broker['alternates'].
    for key, kind in (("pid", int), ("total", dict), ("pool", dict), ("broker", dict),
                      ("prefetch_count", int), ("uptime", (int, float))):
        check(isinstance(s.get(key), kind), "stats[%r] is %r" % (key, s.get(key)))
    int(s["clock"])     # Python sends the Lamport clock as a string: "154"
    pool = s["pool"]
    check(isinstance(pool.get("max-concurrency"), int) and isinstance(pool.get("processes"), list),
          "stats['pool'] lacks max-concurrency / processes: %r" % pool)
    check("transport" in s["broker"] and "hostname" in s["broker"], "stats['broker']: %r" % s["broker"])
    check(all(isinstance(v, int) for v in s["total"].values()), "stats['total']: %r" % s["total"])
    if "rusage" in s:
        check(isinstance(s["rusage"], (dict, str)), "stats['rusage']: %r" % s["rusage"])


@case("registered")
def _():
    r = inspect("registered")
    check(isinstance(r, list) and all(isinstance(n, str) for n in r), "registered: %r" % r)
    names = {n.split(" ")[0] for n in r}
    for t in (opts.add_task, opts.sleep_task):
        check(t in names, "registered lacks %s: %r" % (t, r))
    check(not any(n.startswith("celery.") for n in names), "registered lists celery.* built-ins: %r" % r)
    # Flower asks with taskinfoitems=[] at start-up; the CLI's `inspect registered rate_limit`
    # appends "name [rate_limit=...]" for the attributes set.
    r = inspect("registered", "rate_limit")
    check(isinstance(r, list) and {n.split(" ")[0] for n in r} == names, "registered rate_limit: %r" % r)


@case("active-queues")
def _():
    qs = inspect("active_queues")
    check(isinstance(qs, list) and qs, "active_queues: %r" % qs)
    for q in qs:       # the columns of Flower's worker page, and kombu's Queue.as_dict() keys
        for k in ("name", "exchange", "routing_key", "durable", "exclusive", "auto_delete", "no_ack",
                  "alias", "queue_arguments", "binding_arguments"):
            check(k in q, "active_queues item lacks %r: %r" % (k, q))
        check(isinstance(q["exchange"], dict) and "name" in q["exchange"] and "type" in q["exchange"],
              "active_queues exchange: %r" % q["exchange"])
    check(opts.queue in {q["name"] for q in qs}, "active_queues lacks %s: %r" % (opts.queue, qs))


@case("conf")
def _():
    c = inspect("conf", with_defaults=False)
    check(isinstance(c, dict) and c, "conf: %r" % c)
    # Python masks the password of URLs (broker_url: "redis://:********@host:port/0", even when
    # the URL has none); any other "user:secret@" in a URL value is a leak.
    for k, v in c.items():
        if isinstance(v, str) and "://" in v and "@" in v:
            userinfo = v.split("://", 1)[1].split("@", 1)[0]
            check(":" not in userinfo or userinfo.split(":", 1)[1] == "********", "conf[%r] shows a password: %r" % (k, v))


@case("clock")
def _():
    c = inspect("clock")
    check(isinstance(c, dict) and isinstance(c.get("clock"), int), "clock: %r" % c)
    later = inspect("clock")["clock"]
    check(later >= c["clock"], "the clock went back: %r then %r" % (c["clock"], later))


@case("report")
def _():
    r = inspect("report")
    check(isinstance(r, dict) and isinstance(r.get("ok"), str) and r["ok"], "report: %r" % r)


@case("active")
def _():
    # 8 s: the first blocker must still run when the inspect reply comes (a host that steals
    # the CPU made 3 s too short: it had finished, once in CI).
    blockers = fill_slots(8)
    got = inspect("active")
    check(isinstance(got, list), "active: %r" % got)
    for info in got:
        check_info(info, "active")
    mine = [i for i in got if i["id"] == blockers[0].id][0]
    check(mine["name"] == opts.sleep_task and mine["args"] == [8] and mine["hostname"] == node,
          "active item: %r" % mine)
    # Python acks before running (acknowledged true); a worker that acks late says false
    check(isinstance(mine["time_start"], (int, float)) and isinstance(mine["acknowledged"], bool),
          "active item time_start/acknowledged: %r" % mine)
    # Flower asks active(safe=True): args and kwargs are then the repr strings
    safe = [i for i in insp().active(safe=True)[node] if i["id"] == blockers[0].id][0]
    check(safe["args"] == "[8]" and safe["kwargs"] == "{}", "active(safe=True) item: %r" % safe)
    for b in blockers:
        b.get(timeout=30)


@case("reserved")
def _():
    blockers = fill_slots(3)
    waiting = send(opts.add_task, 1, 2)
    got = wait_until("the waiting task in reserved",
                     lambda: waiting.id in ids_in(inspect("reserved")) and inspect("reserved"), 10)
    for info in got:
        check_info(info, "reserved")
    mine = [i for i in got if i["id"] == waiting.id][0]
    check(mine["name"] == opts.add_task and mine["args"] == [1, 2] and mine["time_start"] is None,
          "reserved item: %r" % mine)
    check(waiting.id not in ids_in(inspect("active")), "the waiting task is also listed as active")
    check(waiting.get(timeout=30) == 3, "the waiting task's result")
    for b in blockers:
        b.get(timeout=30)


@case("scheduled")
def _():
    r = send(opts.add_task, 2, 3, countdown=4)
    got = wait_until("the countdown task in scheduled",
                     lambda: r.id in ids_in(inspect("scheduled"), "request") and inspect("scheduled"), 10)
    for item in got:
        check(isinstance(item, dict) and {"eta", "priority", "request"} <= set(item), "scheduled item: %r" % item)
        check_info(item["request"], "scheduled request")
    mine = [i for i in got if i["request"]["id"] == r.id][0]
    check(isinstance(mine["eta"], str) and "T" in mine["eta"], "scheduled eta is not ISO 8601: %r" % mine)
    check(r.get(timeout=30) == 5, "the countdown task's result")


@case("query-task")
def _():
    blockers = fill_slots(3)
    waiting = send(opts.add_task, 1, 1)
    later = send(opts.add_task, 2, 2, countdown=5)
    wait_until("the countdown task in scheduled",
               lambda: later.id in ids_in(inspect("scheduled"), "request"), 10)
    wait_until("the waiting task in reserved", lambda: waiting.id in ids_in(inspect("reserved")), 10)
    q = inspect("query_task", [blockers[0].id, waiting.id, later.id, str(uuid.uuid4())])
    check(isinstance(q, dict), "query_task: %r" % q)
    check(set(q) == {blockers[0].id, waiting.id, later.id}, "query_task ids (an unknown id is left out): %r" % q)
    for tid, want in ((blockers[0].id, "active"), (waiting.id, "reserved"), (later.id, "scheduled")):
        check(isinstance(q[tid], list) and len(q[tid]) == 2 and q[tid][0] == want,
              "query_task[%s] is not [%r, info]: %r" % (tid, want, q[tid]))
        check_info(q[tid][1], "query_task")
    for r in blockers + [waiting, later]:
        r.get(timeout=30)


@case("revoke-reply")
def _():
    tid = str(uuid.uuid4())
    got = reply_of(app.control.revoke(tid, reply=True, destination=[node], timeout=opts.timeout), "revoke")
    check(got == {"ok": "tasks {'%s'} flagged as revoked" % tid}, "revoke reply: %r" % got)
    got = reply_of(app.control.revoke(str(uuid.uuid4()), terminate=True, reply=True, destination=[node],
                                      timeout=opts.timeout), "revoke terminate")
    check(got == {"ok": "terminate: tasks unknown"}, "revoke terminate reply for an unknown id: %r" % got)


@case("revoked")
def _():
    tid = str(uuid.uuid4())
    app.control.revoke(tid)                      # a cast, as Python clients send it
    got = wait_until("the id in revoked", lambda: tid in (inspect("revoked") or []) and inspect("revoked"), 5)
    check(all(isinstance(i, str) for i in got), "revoked: %r" % got)


@case("revoke-queued")
def _():
    blockers = fill_slots(3)
    target = send(opts.sleep_task, 0.1)
    wait_until("the queued task in reserved", lambda: target.id in ids_in(inspect("reserved")), 10)
    app.control.revoke(target.id)                # broadcast cast, no destination
    # Celery 5.7 marks a queued (PENDING) task REVOKED in the backend when the revoke arrives
    # (celery/worker/control.py _revoke), and skips it when its turn comes.
    wait_state(target.id, "REVOKED", 5)
    for b in blockers:
        b.get(timeout=30)
    time.sleep(1.5)
    check(state(target.id) == "REVOKED", "the revoked task ran: %s" % state(target.id))
    check(target.id in inspect("revoked"), "revoked lacks the task")


@case("revoke-delayed")
def _():
    r = send(opts.add_task, 3, 4, countdown=3)
    wait_until("the countdown task in scheduled", lambda: r.id in ids_in(inspect("scheduled"), "request"), 10)
    app.control.revoke(r.id)
    wait_state(r.id, "REVOKED", 5)
    time.sleep(4)                                # past its eta
    check(state(r.id) == "REVOKED", "the revoked countdown task ran: %s" % state(r.id))


@case("revoke-terminate")
def _():
    r = send(opts.sleep_task, 30)
    wait_active({r.id})
    got = reply_of(app.control.revoke(r.id, terminate=True, signal="SIGTERM", reply=True, timeout=opts.timeout,
                                      destination=[node]), "revoke terminate")
    check(got == {"ok": "terminate: %s" % r.id}, "revoke(terminate=True) reply: %r" % got)
    wait_state(r.id, "REVOKED", 10)
    wait_until("the task to leave active", lambda: r.id not in ids_in(inspect("active")), 10)


@case("terminate-command")
def _():
    r = send(opts.sleep_task, 30)
    wait_active({r.id})
    got = broadcast("terminate", signal="SIGTERM", task_id=r.id)    # `celery control terminate SIGTERM <id>`
    check(got == {"ok": "terminate: %s" % r.id}, "terminate reply: %r" % got)
    wait_state(r.id, "REVOKED", 10)


@case("asyncresult-revoke")
def _():
    r = send(opts.add_task, 5, 6, countdown=3)
    wait_until("the countdown task in scheduled", lambda: r.id in ids_in(inspect("scheduled"), "request"), 10)
    r.revoke()
    wait_state(r.id, "REVOKED", 5)
    time.sleep(4)
    check(r.state == "REVOKED", "the task revoked through AsyncResult.revoke() ran: %s" % r.state)
    # terminate=True through AsyncResult, on a running task
    r = send(opts.sleep_task, 30)
    wait_active({r.id})
    r.revoke(terminate=True)        # sends signal null and headers.expires 0: the worker uses SIGTERM
    wait_state(r.id, "REVOKED", 10)


@case("unknown-command")
def _():
    got = broadcast("no_such_command")
    check(isinstance(got, dict) and "error" in got, "unknown command: %r" % got)


@case("pidbox-garbage")
def _():
    import redis
    from kombu import Connection
    db = Connection(opts.broker).virtual_host or "0"
    r = redis.Redis.from_url(opts.broker)
    channel = "/%s.celery.pidbox" % db
    r.publish(channel, b"not json at all \xff")
    r.publish(channel, json.dumps({"body": "bm90IGpzb24=", "content-type": "application/json",
                                   "content-encoding": "utf-8", "headers": {},
                                   "properties": {"body_encoding": "base64"}}))
    r.publish(channel, json.dumps({"body": json.dumps({"method": 42, "arguments": "x"}),
                                   "content-type": "application/json", "content-encoding": "utf-8",
                                   "headers": {}, "properties": {}}))
    # Celery quirk: a Python worker logs "Cannot process event on channel 'celery.pidbox'" for
    # the first message, and an envelope without properties.delivery_tag makes it drop its broker
    # connection (KeyError('delivery_tag')) and reconnect, about 2 s later. So this asks for a
    # ping reply within 10 s; Celerity should keep answering at once.
    wait_until("a ping reply after garbage on the pidbox",
               lambda: (app.control.inspect(destination=[node], timeout=1.0).ping() or {}).get(node) == {"ok": "pong"},
               10)


@case("add-cancel-consumer")
def _():
    extra = "ops_extra_" + uuid.uuid4().hex[:8]
    got = reply_of(app.control.add_consumer(extra, reply=True, destination=[node], timeout=opts.timeout),
                   "add_consumer")
    check(got == {"ok": "add consumer %s" % extra}, "add_consumer reply: %r" % got)
    wait_until("%s in active_queues" % extra, lambda: extra in {q["name"] for q in inspect("active_queues")}, 5)
    r = app.send_task(opts.add_task, args=[20, 22], queue=extra)
    check(r.get(timeout=20) == 42, "a task on the added queue")
    got = reply_of(app.control.cancel_consumer(extra, reply=True, destination=[node], timeout=opts.timeout),
                   "cancel_consumer")
    check(got == {"ok": "no longer consuming from %s" % extra}, "cancel_consumer reply: %r" % got)
    wait_until("%s gone from active_queues" % extra,
               lambda: extra not in {q["name"] for q in inspect("active_queues")}, 5)


@case("limits")
def _():
    got = reply_of(app.control.rate_limit(opts.add_task, "1000/m", reply=True, destination=[node],
                                          timeout=opts.timeout), "rate_limit")
    check(got == {"ok": "new rate limit set successfully"}, "rate_limit reply: %r" % got)
    got = reply_of(app.control.rate_limit(opts.add_task, 0, reply=True, destination=[node],
                                          timeout=opts.timeout), "rate_limit 0")
    check(got == {"ok": "rate limit disabled successfully"}, "rate_limit 0 reply: %r" % got)
    got = reply_of(app.control.rate_limit("no.such.task", "1/s", reply=True, destination=[node],
                                          timeout=opts.timeout), "rate_limit unknown")
    check(got == {"error": "unknown task"}, "rate_limit for an unknown task: %r" % got)
    got = reply_of(app.control.time_limit(opts.add_task, soft=60, hard=120, reply=True, destination=[node],
                                          timeout=opts.timeout), "time_limit")
    check(got == {"ok": "time limits set successfully"}, "time_limit reply: %r" % got)
    got = reply_of(app.control.time_limit("no.such.task", hard=1, reply=True, destination=[node],
                                          timeout=opts.timeout), "time_limit unknown")
    check(got == {"error": "unknown task"}, "time_limit for an unknown task: %r" % got)


@case("pool-grow-shrink")
def _():
    got = reply_of(app.control.pool_grow(1, reply=True, destination=[node], timeout=opts.timeout), "pool_grow")
    check(got == {"ok": "pool will grow"}, "pool_grow reply: %r" % got)
    got = reply_of(app.control.pool_shrink(1, reply=True, destination=[node], timeout=opts.timeout), "pool_shrink")
    check(got == {"ok": "pool will shrink"}, "pool_shrink reply: %r" % got)


@case("heartbeat")
def _():
    # Flower casts `heartbeat` when it starts; Celery answers with an immediate worker-heartbeat
    # (freq 5 in Celery's; no reply to the cast). Regular heartbeats come every 2 s, so this
    # asks for one within 1 s of the cast, three times.
    for _ in range(3):
        sent = []
        events = collect_events(1.0, lambda: sent.append(time.time()) or app.control.heartbeat(destination=[node]),
                                until=lambda ev: any(e["type"] == "worker-heartbeat" and e["hostname"] == node
                                                     for e in ev))
        beats = [e for e in events if e["type"] == "worker-heartbeat" and e["hostname"] == node]
        check(beats, "no worker-heartbeat within 1 s of a heartbeat cast")


@case("events-toggle")
def _():
    # Celery quirk: a Python worker started with -E has an event dispatcher without a group
    # filter (celery/worker/consumer/events.py: groups=None), so there `disable_events` answers
    # "task events already disabled" and changes nothing, and `enable_events` answers "already
    # enabled". The toggle below is what Celery does for a worker started WITHOUT -E (groups
    # {'worker'}, 'task' added and discarded), and what Celerity should do either way; against
    # Python Celery, run this case on a worker started without -E.
    first = broadcast("disable_events")
    check(first in ({"ok": "task events disabled"}, {"ok": "task events already disabled"}),
          "disable_events: %r" % first)
    check(broadcast("disable_events") == {"ok": "task events already disabled"}, "disable_events twice")
    r = []
    events = collect_events(2.5, lambda: r.append(send(opts.add_task, 1, 1)))
    check(r[0].get(timeout=20) == 2, "the task with events off")
    check(not task_events(events, r[0].id), "task events while disabled: %r" % task_events(events, r[0].id))
    check(broadcast("enable_events") == {"ok": "task events enabled"}, "enable_events after disable")
    check(broadcast("enable_events") == {"ok": "task events already enabled"}, "enable_events twice")
    r = []
    events = collect_events(8, lambda: r.append(send(opts.add_task, 2, 2)),
                            until=lambda ev: r and any(e["type"] == "task-succeeded" for e in task_events(ev, r[0].id)))
    check(any(e["type"] == "task-succeeded" for e in task_events(events, r[0].id)), "no task events once enabled")


COMMON = {"hostname", "utcoffset", "pid", "clock", "timestamp", "type"}
FIELDS = {   # celery/worker/request.py, celery/app/trace.py, celery/worker/heartbeat.py
    "worker-heartbeat": {"freq", "active", "processed", "loadavg", "sw_ident", "sw_ver", "sw_sys"},
    "task-received": {"uuid", "name", "args", "kwargs", "root_id", "parent_id", "retries", "eta", "expires"},
    "task-started": {"uuid"},
    "task-succeeded": {"uuid", "result", "runtime"},
    "task-failed": {"uuid", "exception", "traceback"},
}


def enable_events():
    if not opts.no_pidbox:
        check(broadcast("enable_events").get("ok"), "enable_events")


@case("events-shape")
def _():
    enable_events()
    sent = []

    def action():
        sent.append(send(opts.add_task, 40, 2))
        sent.append(send(opts.fail_task, "kaput"))

    def done(ev):
        return len(sent) == 2 and any(e["type"] == "task-succeeded" for e in task_events(ev, sent[0].id)) \
            and any(e["type"] == "task-failed" for e in task_events(ev, sent[1].id)) \
            and any(e["type"] == "worker-heartbeat" and e["hostname"] == node for e in ev)
    events = collect_events(10, action, until=done)
    ok_ev = {e["type"]: e for e in task_events(events, sent[0].id)}
    bad_ev = {e["type"]: e for e in task_events(events, sent[1].id)}
    beats = [e for e in events if e["type"] == "worker-heartbeat" and e["hostname"] == node]
    check(beats, "no worker-heartbeat from %s" % node)
    for kind, ev in (("worker-heartbeat", beats[-1]), ("task-received", ok_ev.get("task-received")),
                     ("task-started", ok_ev.get("task-started")), ("task-succeeded", ok_ev.get("task-succeeded")),
                     ("task-failed", bad_ev.get("task-failed"))):
        check(ev is not None, "no %s event (got %s / %s)" % (kind, sorted(ok_ev), sorted(bad_ev)))
        missing = (COMMON | FIELDS[kind]) - set(ev)
        check(not missing, "%s lacks %s: %r" % (kind, sorted(missing), ev))
        check(ev["hostname"] == node, "%s hostname: %r" % (kind, ev))
        check(abs(ev["timestamp"] - time.time()) < 30, "%s timestamp is not now (utcoffset?): %r" % (kind, ev))
    hb = beats[-1]
    check(hb["freq"] in (2, 2.0, 5, 5.0) and isinstance(hb["loadavg"], list) and len(hb["loadavg"]) == 3,
          "worker-heartbeat freq/loadavg: %r" % hb)
    rec = ok_ev["task-received"]
    check(rec["name"] == opts.add_task and rec["args"] == "[40, 2]" and rec["kwargs"] == "{}",
          "task-received name/args/kwargs (repr strings): %r" % rec)
    suc = ok_ev["task-succeeded"]
    check(suc["result"] == "42" and isinstance(suc["runtime"], (int, float)),
          "task-succeeded result (a repr string) / runtime: %r" % suc)
    fail = bad_ev["task-failed"]
    check(fail["exception"] == "ValueError('kaput')" and "kaput" in fail["traceback"],
          "task-failed exception / traceback: %r" % fail)


@case("events-dump")
def _():
    enable_events()
    proc = subprocess.Popen(CELERY + ["events", "--dump"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(3)                       # the interpreter starts and subscribes
        r = send(opts.add_task, 7, 8)
        check(r.get(timeout=20) == 15, "the task's result")
        time.sleep(2.5)                     # a heartbeat and the batched task events arrive
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    lines = out.splitlines()
    # celery/events/dumper.py: "<host> [<utc time>] heartbeat: active=..., freq=..." and
    # "<host> [<time>] task received: <name>(<uuid>) args=... kwargs=... <fields>"
    check(any(l.startswith(node + " [") and "] heartbeat:" in l for l in lines), "no heartbeat line in:\n" + out)
    for what in ("task received: %s(%s)" % (opts.add_task, r.id), "task started:", "task succeeded:"):
        check(any(what in l and r.id in l and l.startswith(node + " [") for l in lines),
              "no %r line in:\n%s" % (what, out))
    check(any("task succeeded:" in l and "result=15" in l and "runtime=" in l for l in lines),
          "the succeeded line lacks result/runtime:\n" + out)


@case("shutdown", default=False)
def _():
    events = collect_events(
        10, lambda: app.control.shutdown(destination=[node]),
        until=lambda ev: any(e["type"] == "worker-offline" and e["hostname"] == node for e in ev))
    # Celery's worker raises WorkerShutdown in the handler (celery/worker/control.py shutdown),
    # so it never replies; `celery control shutdown` therefore exits 69 "No nodes replied".
    check(any(e["type"] == "worker-offline" and e["hostname"] == node for e in events),
          "no worker-offline event within 10 s of shutdown")
    wait_until("the node to stop answering ping",
               lambda: not (app.control.inspect(destination=[node], timeout=1.0).ping() or {}).get(node), 15)


# ------------------------------------------------------------------------------ main

names = [n for n, _, _ in CASES]
if opts.list:
    print("\n".join("%s%s" % (n, "" if d else "   (with --with-shutdown)") for n, _, d in CASES))
    sys.exit(0)
only = [s for s in opts.only.split(",") if s]
skip = [s for s in opts.skip.split(",") if s]
unknown = [s for s in only + skip if s not in names]
if unknown:
    sys.exit("unknown case(s): %s (known: %s)" % (", ".join(unknown), ", ".join(names)))
selected = [(n, fn) for n, fn, default in CASES
            if (n in only if only else (default or (n == "shutdown" and opts.with_shutdown))) and n not in skip]

deadline = time.time() + 20
if opts.no_pidbox:
    node = opts.node
while node is None:
    answers = app.control.inspect(timeout=1.0).ping() or {}
    matching = sorted(n for n in answers if fnmatch.fnmatchcase(n, opts.node))
    if matching:
        node = matching[0]
    elif time.time() > deadline:
        print("FAIL resolve-node: no node matching %r answered ping (answers: %r)" % (opts.node, answers), flush=True)
        sys.exit(2)
print("node: %s" % node, flush=True)
try:
    concurrency = 1 if opts.no_pidbox else int(inspect("stats")["pool"]["max-concurrency"])
except Exception:   # noqa: BLE001 -- the stats case reports it
    concurrency = 1

failures = []
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

print("%d of %d failed%s" % (len(failures), len(selected), (": " + ", ".join(failures)) if failures else ""))
sys.exit(1 if failures else 0)
