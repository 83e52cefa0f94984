#!/usr/bin/env python3
"""The counting side of scripts/cluster.sh (run on its client host; needs redis-py).

    cluster_check.py --work DIR make-batch --phase P --add N --factorial N --mat-mul N
    cluster_check.py --work DIR wait-workers --count N [--timeout S]
    cluster_check.py --work DIR cmdlines --pids FILE [--running-only]
    cluster_check.py --work DIR snapshot-held --host H --out FILE
    cluster_check.py --work DIR held-done --held FILE [--timeout S]
    cluster_check.py --work DIR wait-held --host H|'' [--min N] [--timeout S]
    cluster_check.py --work DIR wait-results --phase P [--timeout S]
    cluster_check.py --work DIR verify --faults FILE

DIR holds batches/<phase>-<task>.args (one JSON argument list per line, as `celerity map`
reads them) and .ids (the ids `celerity map --no-wait` printed, same order), logs/<host>-
<service>.log (the services' output, debug level), argv/<host>-<service>.json (the argv each
was started with). Broker: $CELERITY_BROKER_URL. Exit 1 when a check fails, with the reason.
"""
import argparse
import calendar
import glob
import json
import math
import os
import re
import sys
import time

import redis

TASKS = {
    "add": "add_module.tasks.add",
    "factorial": "factorial_module.tasks.factorial",
    "mat_mul": "mat_mul_module.tasks.mat_mul",
}
TASK_ID = re.compile(rb"task_id=([0-9a-f-]{36})")
MAT = 30


def connect():
    return redis.Redis.from_url(os.environ.get("CELERITY_BROKER_URL", "redis://redis:6379/0"),
                                socket_timeout=5, socket_connect_timeout=2)


def fail(message):
    print("   FAIL: " + message, flush=True)
    sys.exit(1)


def say(message):
    print("   " + message, flush=True)


# ------------------------------------------------------------------------------ batches

def make_batch(a):
    os.makedirs(os.path.join(a.work, "batches"), exist_ok=True)
    calls = {
        "add": [[i, 7 * i] for i in range(a.add)],
        # n! for n in [from, to): 0.2-2 s each in a debug build, so a fault catches some running.
        "factorial": [[a.factorial_from + (i * 3637) % (a.factorial_to - a.factorial_from)]
                      for i in range(a.factorial)],
        "mat_mul": [[MAT, MAT] for _ in range(a.mat_mul)],
    }
    for short, task in TASKS.items():
        with open(os.path.join(a.work, "batches", "%s-%s.args" % (a.phase, task)), "w") as f:
            for args in calls[short]:
                f.write(json.dumps(args) + "\n")


def batches(work, phase=None):
    """[(task short name, args, id)] of one phase, or of all."""
    out = []
    for path in sorted(glob.glob(os.path.join(work, "batches", "*.args"))):
        name = os.path.basename(path)[:-5]
        p, task = name.split("-", 1)
        if phase is not None and p != phase:
            continue
        short = [k for k, v in TASKS.items() if v == task][0]
        with open(path) as f:
            args = [json.loads(line) for line in f if line.strip()]
        with open(path[:-5] + ".ids") as f:
            ids = [line.strip() for line in f if line.strip()]
        if len(ids) != len(args):
            fail("%s: %d calls but %d ids from celerity map" % (name, len(args), len(ids)))
        out += [(short, x, i) for x, i in zip(args, ids)]
    return out


def results(r, ids):
    """{id: raw result document (bytes) or None}."""
    out = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for tid, raw in zip(chunk, r.mget(["celery-task-meta-" + t for t in chunk])):
            out[tid] = raw
    return out


def status_of(raw):
    if raw is None:
        return None
    m = re.search(rb'"status"\s*:\s*"([A-Z]+)"', raw)
    return m.group(1).decode() if m else "?"


def factorial_ok(digits, n):
    """digits is n! in decimal: length, leading digits and trailing zeros from lgamma (exact
    n! is checked by the test suite; here: the right task's answer, cheaply)."""
    log10 = math.lgamma(n + 1) / math.log(10)
    length = int(math.floor(log10)) + 1
    lead = ("%.8f" % (10 ** (log10 - math.floor(log10)))).replace(".", "")[:5]
    zeros, p = 0, 5
    while p <= n:
        zeros += n // p
        p *= 5
    return (len(digits) == length and digits[:5] == lead
            and len(digits) - len(digits.rstrip("0")) == zeros)


def wrong(short, args, raw):
    """None if the stored SUCCESS holds the right answer, else why not."""
    doc = json.loads(raw, parse_int=str)
    value = doc.get("result")
    if short == "add":
        return None if value == str(args[0] + args[1]) else "add%r = %r" % (tuple(args), value)
    if short == "factorial":
        return None if isinstance(value, str) and factorial_ok(value, args[0]) else \
            "factorial(%d): %.40r" % (args[0], value)
    ok = (isinstance(value, list) and len(value) == MAT
          and all(isinstance(row, list) and len(row) == MAT for row in value))
    return None if ok else "mat_mul(%d, %d): not a %dx%d matrix" % (MAT, MAT, MAT, MAT)


def wait_results(a):
    calls = batches(a.work, a.phase)
    pending = [c[2] for c in calls]
    deadline, started, last = time.time() + a.timeout, time.time(), 0
    while pending and time.time() < deadline:
        try:
            got = results(connect(), pending)
            pending = [t for t in pending if status_of(got[t]) not in ("SUCCESS", "FAILURE", "REVOKED")]
        except redis.RedisError:
            pass                           # Redis restarting: ask again
        if pending:
            if time.time() - last > 10:
                say("phase %s: %d of %d results still to come" % (a.phase, len(pending), len(calls)))
                last = time.time()
            time.sleep(0.5)
    if pending:
        fail("phase %s: %d of %d tasks have no result after %.0f s (first: %s)"
             % (a.phase, len(pending), len(calls), a.timeout, pending[0]))
    say("phase %s: all %d results stored, %.1f s after the wait began" % (a.phase, len(calls), time.time() - started))


# ------------------------------------------------------------------------------ workers

def wait_workers(a):
    r = connect()
    deadline = time.time() + a.timeout
    while time.time() < deadline:
        try:
            nodes = sorted(k.decode()[len("celerity:worker:"):] for k in r.scan_iter("celerity:worker:*"))
        except redis.RedisError:
            nodes = []
        if len(nodes) >= a.count:
            say("%d Celerity workers heartbeating: %s" % (len(nodes), ", ".join(nodes)))
            return
        time.sleep(0.3)
    fail("only %d of %d workers heartbeat after %.0f s" % (len(nodes), a.count, a.timeout))


def cmdlines(a):
    """Each started process runs exactly compose.yaml's argv (read back from /proc)."""
    checked = 0
    with open(a.pids) as f:
        rows = [line.split() for line in f if line.strip()]
    latest = {}
    for host, svc, pid in rows:
        latest[(host, svc)] = pid            # a restarted service: its newest process
    for (host, svc), pid in sorted(latest.items()):
        if svc == "redis":
            continue
        with open(os.path.join(a.work, "argv", "%s-%s.json" % (host, svc))) as f:
            want = json.load(f)
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                have = [x.decode() for x in f.read().split(b"\0")[:-1]]
        except OSError:
            if a.running_only:
                fail("%s on %s (pid %s) is not running" % (svc, host, pid))
            fail("%s on %s (pid %s) is not running" % (svc, host, pid))
        same = have == want
        # A Python entry point runs as <python> <script> args...: the script's name and every
        # argument after it must be compose's.
        via_interpreter = (not same and len(have) >= len(want) and have[len(have) - len(want) + 1:] == want[1:]
                           and os.path.basename(have[len(have) - len(want)]).startswith(want[0]))
        if not (same or via_interpreter):
            fail("%s on %s runs %r, compose.yaml says %r" % (svc, host, have, want))
        checked += 1
    say("%d processes run compose.yaml's commands exactly (/proc/<pid>/cmdline)" % checked)


def held_ids(r, host):
    out = {}
    for key in r.scan_iter("celerity:processing:*-%s" % host if host else "celerity:processing:*"):
        for raw in r.lrange(key, 0, -1):
            try:
                out[json.loads(raw)["headers"]["id"]] = key.decode()
            except (ValueError, KeyError, TypeError):
                pass
    return out


def snapshot_held(a):
    held = held_ids(connect(), a.host)
    with open(a.out, "w") as f:
        json.dump(held, f)
    say("%s held %d messages in its processing lists when it was cut off" % (a.host, len(held)))
    if not held:
        fail("%s held nothing at the cut: the test would prove nothing (workload too short?)" % a.host)


def wait_held(a):
    """Until the host's (or any, with --host '') processing lists hold --min messages: the
    fault comes while work is in flight, however slow the machine is today."""
    r, deadline, n = connect(), time.time() + a.timeout, 0
    while time.time() < deadline:
        n = len(held_ids(r, a.host))
        if n >= a.min:
            return
        time.sleep(0.1)
    fail("%s held %d messages after %.0f s, not %d: the fault would prove little"
         % (a.host or "the workers", n, a.timeout, a.min))


def held_done(a):
    """All messages the cut-off host held are done by the others (SUCCESS stored), waiting
    up to --timeout; the caller keeps the host cut off meanwhile."""
    with open(a.held) as f:
        held = json.load(f)
    r, deadline = connect(), time.time() + a.timeout
    while True:
        got = results(r, list(held))
        done = [t for t in held if status_of(got[t]) == "SUCCESS"]
        if len(done) == len(held) or time.time() >= deadline:
            break
        time.sleep(0.5)
    left = sum(r.llen(k) for k in set(held.values()))
    say("while it was away: %d of its %d messages done by the other hosts; its lists hold %d"
        % (len(done), len(held), left))
    if len(done) != len(held):
        fail("%d messages of the cut-off host were not recovered by the others" % (len(held) - len(done)))


# ------------------------------------------------------------------------------ store times

def watch_stores(a):
    """Until killed: the time each celery-task-meta-* key is first written, from Redis's
    keyspace notifications (the Redis host runs with notify-keyspace-events K$). A line is
    written when the notification arrives, so each time is an upper bound of the store's:
    a task start logged in a later second than this came after the result was stored."""
    seen = set()
    prefix = "__keyspace@0__:celery-task-meta-"
    with open(a.out, "a", buffering=1) as out:
        while True:
            try:
                p = connect().pubsub(ignore_subscribe_messages=True)
                p.psubscribe(prefix + "*")
                out.write("subscribed\t%.6f\n" % time.time())
                while True:
                    m = p.get_message(timeout=1.0)
                    if m and m["type"] == "pmessage":
                        tid = m["channel"].decode()[len(prefix):]
                        if tid not in seen:
                            seen.add(tid)
                            out.write("%s\t%.6f\n" % (tid, time.time()))
            except (redis.RedisError, OSError):
                out.write("disconnected\t%.6f\n" % time.time())
                time.sleep(0.1)


def store_times(work):
    times, gaps, since = {}, [], None
    path = os.path.join(work, "stores.tsv")
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                key, t = line.rstrip("\n").split("\t")
                if key == "disconnected" and since is None:
                    since = float(t)
                elif key == "subscribed" and since is not None:
                    gaps.append((since, float(t)))
                    since = None
                elif key not in ("subscribed", "disconnected"):
                    times.setdefault(key, float(t))
    return times, gaps


# ------------------------------------------------------------------------------ verdict

def starts(work):
    """{id: [(log name, offset of its 'task started' line)]} and 'not started' counts."""
    out, skipped = {}, 0
    for path in sorted(glob.glob(os.path.join(work, "logs", "*-worker-*.log"))):
        name = os.path.basename(path)[:-4]
        offset = 0
        with open(path, "rb") as f:
            for line in f:
                if b"task started" in line:
                    m = TASK_ID.search(line)
                    if m:
                        out.setdefault(m.group(1).decode(), []).append((name, offset, line[:19].decode()))
                elif b"not started: another worker took" in line:
                    skipped += 1
                offset += len(line)
    return out, skipped


def verify(a):
    calls = batches(a.work)
    r = connect()
    got = results(r, [c[2] for c in calls])
    lost = [c for c in calls if status_of(got[c[2]]) != "SUCCESS"]
    bad = [(c, why) for c in calls if status_of(got[c[2]]) == "SUCCESS" for why in [wrong(c[0], c[1], got[c[2]])] if why]

    # Fault windows: (log name) -> [(begin, end)] byte ranges of starts that a fault may repeat.
    marks = {}
    with open(a.faults) as f:
        for line in f:
            label, log, offset = line.split()
            marks.setdefault(log, {})[label] = int(offset)
    windows = {}
    for log, m in marks.items():
        # The cut host: from its phase's start to the end of its lease (cut + 9.5 s); the
        # killed host: from its phase's start to its death.
        for begin, end in (("a-begin", "lease"), ("b-begin", "kill")):
            if begin in m and end in m:
                windows.setdefault(log, []).append((m[begin], m[end]))

    def in_window(start):
        log, offset = start[0], start[1]
        return any(b <= offset < e for b, e in windows.get(log, []))

    runs, not_started = starts(a.work)
    sent = set(c[2] for c in calls)
    twice = {t: s for t, s in runs.items() if t in sent and len(s) > 1}
    unexplained = {t: s for t, s in twice.items() if sum(1 for x in s if not in_window(x)) > 1}
    by_phase = {}
    phase_of = {}
    for path in glob.glob(os.path.join(a.work, "batches", "*.ids")):
        with open(path) as f:
            for line in f:
                phase_of[line.strip()] = os.path.basename(path).split("-", 1)[0]
    for t in twice:
        by_phase[phase_of.get(t, "?")] = by_phase.get(phase_of.get(t, "?"), 0) + 1
    # A start logged in a second later than the store's notification came after the result
    # was stored: never allowed. (Start times are whole seconds in the log: a re-run within
    # the second of the store is not caught.)
    stored_at, gaps = store_times(a.work)
    after_store, unchecked = {}, 0
    for t, s in twice.items():
        if t not in stored_at:
            unchecked += 1
            continue
        late = [x for x in s if calendar.timegm(time.strptime(x[2], "%Y-%m-%dT%H:%M:%S")) > stored_at[t]]
        if late:
            after_store[t] = (s, stored_at[t])
    # Workers the others took for dead without a fault of ours: a stall (on a loaded machine,
    # a heartbeat more than 10 s late). Their re-runs are at-least-once, not a bug. A recovery
    # is ours when it names a node of the cut host between the cut and 5 s after the heal, or
    # of the killed host between the kill and 5 s after its restart (faults.tsv: label epoch).
    ours = {}
    with open(os.path.join(a.work, "faults.tsv")) as f:
        for line in f:
            label, t = line.split()
            ours[label] = float(t)
    spans = {"-w1": (ours.get("cut", 0), ours.get("heal", 0) + 5), "-w2": (ours.get("kill", 0), ours.get("restart", 0) + 5)}
    stalled = {}          # node -> [epoch seconds of the sweeps that took its list]
    for path in glob.glob(os.path.join(a.work, "logs", "*-worker-*.log")):
        with open(path, "rb") as f:
            for line in f:
                if b"recovered the in-flight messages of dead workers" in line:
                    m = re.search(rb"workers=(\S+)", line)
                    when = calendar.timegm(time.strptime(line[:19].decode(), "%Y-%m-%dT%H:%M:%S"))
                    for node in (m.group(1).decode().split(",") if m else []):
                        span = spans.get(node[-3:])
                        if not (span and span[0] - 1 <= when <= span[1]):
                            stalled.setdefault(node, []).append(when)
    def node_of(log):      # "w1-worker-factorial" -> "celerity@worker-factorial-w1"
        host, svc = log.split("-", 1)
        return "celerity@%s-%s" % (svc, host)

    def after_a_stall(starts_of_id):
        """Some run of it began on a node that the others then took for dead (a stall): the
        recovered copy runs again, even after the first run stored its result (at-least-once,
        docs/reliability.md "A stalled or cut-off worker")."""
        for log, _, stamp in starts_of_id:
            began = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%S"))
            if any(began <= w for w in stalled.get(node_of(log), [])):
                return True
        return False

    stall_explained_store = {t: v for t, v in after_store.items() if after_a_stall(v[0])}
    stall_explained_twice = {t: v for t, v in unexplained.items() if after_a_stall(v)}
    if not a.strict:
        for t in stall_explained_store:
            del after_store[t]
        for t in stall_explained_twice:
            del unexplained[t]
    never = [t for t in sent if t not in runs]
    stranded = sum(r.llen(k) for k in r.scan_iter("celerity:processing:*"))
    dead = r.zcard("celerity:dead") if r.type("celerity:dead") == b"zset" else r.llen("celerity:dead") \
        if r.type("celerity:dead") == b"list" else 0

    print()
    print("   tasks sent                 %d (add %d, factorial %d, mat_mul %d)" % (
        len(calls), *[sum(1 for c in calls if c[0] == k) for k in TASKS]))
    print("   lost (no SUCCESS stored)   %d" % len(lost))
    print("   wrong result               %d" % len(bad))
    print("   started more than once     %d (phase a: %d, b: %d, c: %d); outside the fault windows: %d"
          % (len(twice), by_phase.get("a", 0), by_phase.get("b", 0), by_phase.get("c", 0),
             len(unexplained) + (0 if a.strict else len(stall_explained_twice))))
    print("     of them started after their result was stored%s: %d (%d unchecked: no store time seen)"
          % ("" if a.strict else ", not after a stall", len(after_store), unchecked))
    print("   stalls (workers taken for dead without a fault of ours)  %s" % (
        ", ".join("%s at %s" % (n, ",".join(time.strftime("%H:%M:%S", time.gmtime(w)) for w in ws))
                  for n, ws in sorted(stalled.items())) or "none"))
    if stall_explained_store or stall_explained_twice:
        print("     after a stall (at-least-once, %s): %d tasks ran twice outside the fault windows, %d started after their result was stored"
              % ("failures with --strict" if a.strict else "allowed", len(stall_explained_twice), len(stall_explained_store)))
    print("   not started (taken back while stalled or cut off)  %d" % not_started)
    print("   without a 'task started' line  %d" % len(never))
    print("   left in processing lists   %d, dead letters %d" % (stranded, dead))
    problems = []
    if lost:
        problems.append("%d tasks lost (first: %s %s %s, state %s)" % (len(lost), lost[0][0], lost[0][1], lost[0][2], status_of(got[lost[0][2]])))
    if bad:
        problems.append("%d wrong results (first: %s)" % (len(bad), bad[0][1]))
    if after_store:
        t, (s, when) = next(iter(after_store.items()))
        problems.append("%d tasks started again after their result was stored (first: %s, stored by %.3f, starts %s)"
                        % (len(after_store), t, when, s))
    if unexplained:
        t, s = next(iter(unexplained.items()))
        # Outside the windows, a re-run is only allowed of a worker that was recovered from
        # without a fault of ours (a stall), and only in phases a and b... it is reported;
        # with --strict (CI on a quiet machine) it fails.
        problems.append("%d tasks ran twice outside a fault window%s (first: %s, starts %s)"
                        % (len(unexplained), "" if a.strict else " and not after a stall", t, s))
    if never:
        problems.append("%d stored results without a 'task started' line (logs incomplete?)" % len(never))
    if stranded:
        problems.append("%d messages left in processing lists" % stranded)
    if dead:
        problems.append("%d dead letters" % dead)
    if problems:
        for p in problems:
            print("   FAIL: " + p)
        sys.exit(1)
    print("   PASS: nothing lost, nothing wrong, no re-run except of tasks a fault%s caught running%s"
          % (" or a stall" if stall_explained_store or stall_explained_twice else "",
             "" if stall_explained_store else ", nothing stored ran again"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("make-batch")
    s.add_argument("--phase", required=True)
    s.add_argument("--add", type=int, default=0)
    s.add_argument("--factorial", type=int, default=0)
    s.add_argument("--mat-mul", type=int, default=0)
    s.add_argument("--factorial-from", type=int, default=12000)
    s.add_argument("--factorial-to", type=int, default=32000)
    s = sub.add_parser("wait-workers")
    s.add_argument("--count", type=int, required=True)
    s.add_argument("--timeout", type=float, default=60)
    s = sub.add_parser("cmdlines")
    s.add_argument("--pids", required=True)
    s.add_argument("--running-only", action="store_true")
    s = sub.add_parser("snapshot-held")
    s.add_argument("--host", required=True)
    s.add_argument("--out", required=True)
    s = sub.add_parser("held-done")
    s.add_argument("--held", required=True)
    s.add_argument("--timeout", type=float, default=0)
    s = sub.add_parser("wait-held")
    s.add_argument("--host", required=True)
    s.add_argument("--min", type=int, default=1)
    s.add_argument("--timeout", type=float, default=60)
    s = sub.add_parser("wait-results")
    s.add_argument("--phase", required=True)
    s.add_argument("--timeout", type=float, default=150)
    s = sub.add_parser("verify")
    s.add_argument("--faults", required=True)
    s.add_argument("--strict", action="store_true",
                   help="also fail on re-runs that follow a stall (a worker taken for dead without a fault)")
    s = sub.add_parser("watch-stores")
    s.add_argument("--out", required=True)
    a = p.parse_args()
    {"make-batch": make_batch, "wait-workers": wait_workers, "cmdlines": cmdlines,
     "snapshot-held": snapshot_held, "held-done": held_done, "wait-held": wait_held, "wait-results": wait_results,
     "verify": verify, "watch-stores": watch_stores}[a.cmd](a)


if __name__ == "__main__":
    main()
