#!/usr/bin/env python3
"""Scale-out and growth: how Celerity's cost grows with workers and with the work, on one
private redis-server (docs/benchmarks.md, "Scale-out and growth").

    scripts/bench-scale.sh                  (builds the release binary, then runs this)
    python3 bench/scale.py [--only workers,depth,inflight,recover,big,queues] [--rounds R] ...
    python3 bench/scale.py --smoke          (small counts, every result checked; CI)

Sections (each on a fresh Redis db, workers started fresh):
  workers   N add tasks (pre-enqueued, COPY of a prepared list) drained by 1, 2, 4, 8 separate
            `celerity worker` processes: tasks/s, Redis CPU and the workers' CPU (from /proc),
            Redis CPU per task, and INFO commandstats per task (calls and µs by command).
  depth     a queue of --depth messages: Redis used_memory per message; the rate of draining
            the first --depth-sample of them, against the same count from a queue that holds
            only those.
  inflight  --inflight tasks in flight at once on one worker (sleep built-in, -c --inflight):
            the rate against the ideal, and the ack (LREM) cost against a worker with 8 in flight.
  recover   a worker holding --recover fetched, unacked messages is SIGKILLed: time until
            another worker has put them back in the queue, and until they are drained.
  big       results of --big-kb KiB (echo built-in): sequential round trips (store, then GET)
            and a drain of --big-tasks of them (tasks/s, MB/s), against small ones.
  queues    one worker consuming --queues queues: the drain rate of N add tasks all on one
            of them, and spread over all of them, against a worker with that one queue.
"""
import argparse
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import ProcessOwner  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, ".build", "release", "celerity")
TICK = os.sysconf("SC_CLK_TCK")

MANIFEST = """\
# bench/scale.py's workers: the tutorial's add, and sleep/echo built-ins of their own queues.
broker: redis://localhost:6379/0
result_backend:
  expires: 86400
defaults:
  time_limit: 300
tasks:
  add_module.tasks.add:
    queue: add
    builtin: add
  scale.sleep:
    queue: sleep
    builtin: sleep
    time_limit: 7200
  scale.echo:
    queue: echo
    builtin: echo
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def envelope(task, args, queue, task_id=None):
    """A protocol-2 message as the Python Celery client writes it (JSON, base64 body)."""
    task_id = task_id or str(uuid.uuid4())
    body = base64.b64encode(json.dumps([args, {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]).encode()).decode()
    headers = {"lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None,
               "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
               "parent_id": None, "argsrepr": repr(tuple(args))[:100], "kwargsrepr": "{}", "origin": "scale@bench",
               "ignore_result": False}
    props = {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
             "delivery_info": {"exchange": "", "routing_key": queue}, "priority": 0,
             "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    return json.dumps({"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                       "headers": headers, "properties": props})


def cpu_seconds(pid):
    """utime + stime of a process, in seconds (/proc/<pid>/stat)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except OSError:
        return 0.0


def span(v, fmt="%.0f"):
    return (fmt + "–" + fmt) % (min(v), max(v)) if len(v) > 1 else ""


class Failed(Exception):
    pass


class Scale(ProcessOwner):
    stop_wait = 30

    def __init__(self, args):
        self.a = args
        self.tmp = tempfile.mkdtemp(prefix="celerity-scale-")
        self.manifest = os.path.join(self.tmp, "tasks.yaml")
        open(self.manifest, "w").write(MANIFEST)
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.procs = []
        self.rows = []
        self.notes = []
        self.seq = 0

    # -- processes ---------------------------------------------------------------------------
    def start_redis(self):
        self.redis_proc = self.spawn(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--maxmemory-policy", "noeviction", "--maxclients", "20000"],
                                     "redis.log")
        self.r = redis.Redis(port=self.port)
        self.src = redis.Redis(port=self.port, db=1)
        for _ in range(200):
            try:
                self.r.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise Failed("redis-server did not start (see %s/redis.log)" % self.tmp)

    def worker(self, queues, extra=(), wait=True):
        self.seq += 1
        name = "scale-%d" % self.seq
        p = self.spawn([BIN, "worker", "-Q", queues, "-n", name, "-c", str(self.a.concurrency), "-l", "warning",
                        "--manifest", self.manifest, "--broker", self.url] + list(extra), name + ".log")
        p.node = name
        if wait:
            self.wait_ready([p])
        return p

    def wait_ready(self, ps, timeout=60):
        self.wait_until(lambda: all(self.r.exists("celerity:worker:" + p.node) for p in ps), "workers ready", timeout)

    def wait_until(self, cond, what, timeout, step=0.02):
        end = time.time() + timeout
        while time.time() < end:
            if cond():
                return
            time.sleep(step)
        raise Failed("%s: not within %d s (logs in %s)" % (what, timeout, self.tmp))

    def fill(self, key, texts, db=None):
        c = db or self.r
        p = c.pipeline(transaction=False)
        for s in range(0, len(texts), 1000):
            p.lpush(key, *texts[s:s + 1000])
            if s % 50_000 == 0:
                p.execute()
        p.execute()

    def add_texts(self, n, queue="add", start=0):
        ids = [str(uuid.uuid4()) for _ in range(n)]
        return ids, [envelope("add_module.tasks.add", [start + i, start + i], queue, ids[i]) for i in range(n)]

    def check(self, ids, expect, sample=None):
        """Every (or a sample of) result document is SUCCESS with the expected value."""
        import random
        idx = range(len(ids)) if sample is None or sample >= len(ids) else random.sample(range(len(ids)), sample)
        keys = ["celery-task-meta-" + ids[i] for i in idx]
        docs = []
        for s in range(0, len(keys), 5000):
            docs += self.r.mget(keys[s:s + 5000])
        bad = 0
        for i, d in zip(idx, docs):
            if d is None:
                bad += 1
                continue
            doc = json.loads(d)
            if doc.get("status") != "SUCCESS" or doc.get("result") != expect(i):
                bad += 1
        if bad:
            raise Failed("%d of %d results checked are missing or wrong (logs in %s)" % (bad, len(keys), self.tmp))
        return len(keys)

    def wait_results(self, n, base, timeout, queue, t0=None, step=0.01, poll=None):
        """Waits until n result documents are stored (the db holds base + n keys and `queue` is
        empty, then confirmed by counting the documents: other keys a worker creates on the
        way must not end the wait early); returns the seconds since t0 (default: now)."""
        t0 = t0 or time.time()
        end = t0 + timeout
        while True:
            if poll:
                poll()
            if self.r.dbsize() >= base + n and (queue is None or self.r.llen(queue) == 0):
                t = time.time()
                got = sum(1 for _ in self.r.scan_iter("celery-task-meta-*", count=10000))
                if got >= n:
                    return t - t0
            if time.time() > end:
                raise Failed("results missing after %d s: %d keys of %d (logs in %s)" % (timeout, self.r.dbsize() - base, n, self.tmp))
            time.sleep(step)

    def commandstats(self):
        out = {}
        for k, v in self.r.info("commandstats").items():
            name = k.replace("cmdstat_", "")
            out[name] = (v["calls"], v["usec"])
        return out

    # -- workers ------------------------------------------------------------------------------
    def sec_workers(self):
        a = self.a
        n = a.tasks
        ids, texts = self.add_texts(n)
        self.src.delete("scale:add")
        self.fill("scale:add", texts, self.src)
        counts = [int(x) for x in a.workers.split(",")]
        runs = {k: [] for k in counts}
        for rnd in range(a.rounds):
            for k in (counts if rnd % 2 == 0 else list(reversed(counts))):
                self.r.flushdb()
                ws = [self.worker("add", wait=False) for _ in range(k)]
                self.wait_ready(ws)
                time.sleep(0.3)
                base = self.r.dbsize()
                self.r.config_resetstat()
                c0 = {p.pid: cpu_seconds(p.pid) for p in ws}
                r0 = cpu_seconds(self.redis_proc.pid)
                t0 = time.time()
                self.src.copy("scale:add", "add", destination_db=0)
                took = self.wait_results(n, base, 600, "add", t0)
                rc = cpu_seconds(self.redis_proc.pid) - r0
                wc = sum(cpu_seconds(p.pid) - c0[p.pid] for p in ws)
                stats = self.commandstats()
                for p in ws:
                    self.stop(p)
                checked = self.check(ids, lambda i: 2 * i, None if a.smoke else 2000)
                run = {"rate": n / took, "took": took, "redis_cpu": rc, "workers_cpu": wc, "stats": stats}
                runs[k].append(run)
                print("  %d worker(s): %6.0f tasks/s  Redis %.0f%% of a core, workers %.0f%%  (%d results checked)"
                      % (k, n / took, 100 * rc / took, 100 * wc / took, checked), flush=True)
        rows = []
        one = statistics.median(r["rate"] for r in runs[counts[0]])
        for k in counts:
            rs = runs[k]
            rate = statistics.median(r["rate"] for r in rs)
            rows.append(("workers: %d × -c %d, drain %d add (tasks/s)" % (k, a.concurrency, n), "%.0f" % rate,
                         "%.2f×" % (rate / one), span([r["rate"] for r in rs])))
            rows.append(("workers: %d: Redis CPU %% of a core / workers %%" % k,
                         "%.0f%%" % statistics.median(100 * r["redis_cpu"] / r["took"] for r in rs),
                         "%.0f%%" % statistics.median(100 * r["workers_cpu"] / r["took"] for r in rs), ""))
            rows.append(("workers: %d: CPU µs per task, Redis / workers" % k,
                         "%.1f" % statistics.median(1e6 * r["redis_cpu"] / n for r in rs),
                         "%.1f" % statistics.median(1e6 * r["workers_cpu"] / n for r in rs), ""))
        self.rows += rows
        # Commands per task, from the median-rate run of each count.
        self.cmd_tables = []
        for k in counts:
            rs = sorted(runs[k], key=lambda r: r["rate"])
            st = rs[len(rs) // 2]["stats"]
            skip = {"dbsize", "copy", "info", "config|resetstat", "config", "ping", "scan", "mget"}
            # EXEC's time includes the commands it ran, which are counted on their own too.
            total_us = sum(us for c, (calls, us) in st.items() if c not in skip and c != "exec")
            line = ", ".join("%s %.3f (%.1f µs)" % (c, calls / n, us / calls)
                             for c, (calls, us) in sorted(st.items(), key=lambda x: -x[1][1])
                             if c not in skip and calls / n >= 0.001)
            self.cmd_tables.append("%d worker(s): %.1f µs in commands per task; calls per task: %s" % (k, total_us / n, line))

    # -- depth ----------------------------------------------------------------------------------
    def sec_depth(self):
        a = self.a
        depth, sample = a.depth, min(a.depth_sample, a.depth)
        self.r.flushdb()
        self.src.flushdb()
        time.sleep(0.5)
        m0 = self.r.info("memory")["used_memory"]
        # Built in slices of `sample` (Python never holds the whole million), kept aside in
        # db 1 (scale:deep) and copied into the queue for each round. The first slice is
        # pushed first: it is at the pop end and is what a worker drains first.
        ids_first = None
        t0 = time.time()
        length = 0
        for s in range(0, depth, sample):
            k = min(sample, depth - s)
            ids, texts = self.add_texts(k, start=s)
            length += sum(len(t) for t in texts)
            self.fill("scale:deep", texts, self.src)
            if ids_first is None:
                ids_first = ids
        fill_s = time.time() - t0
        m1 = self.r.info("memory")["used_memory"]
        per = (m1 - m0) / depth
        print("  %d messages queued in %.1f s: used_memory +%.0f MB, %.0f bytes per message (envelope %.0f bytes)"
              % (depth, fill_s, (m1 - m0) / 2**20, per, length / depth), flush=True)
        sid, stexts = self.add_texts(sample)
        self.fill("scale:shallow", stexts, self.src)
        deep, shallow, copies = [], [], []
        for rnd in range(a.rounds):
            for kind in ("deep", "shallow") if rnd % 2 == 0 else ("shallow", "deep"):
                self.r.flushdb()
                w = self.worker("add")
                time.sleep(0.3)
                base = self.r.dbsize()
                # Timed from the end of the COPY (Redis does nothing else while it copies).
                c0 = time.time()
                self.src.copy("scale:" + kind, "add", destination_db=0)
                t0 = time.time()
                # The deep queue stays long: no wait for it to empty.
                took = self.wait_results(sample, base, 600, None if kind == "deep" else "add", t0, 0.005)
                self.stop(w)
                (deep if kind == "deep" else shallow).append(sample / took)
                if kind == "deep":
                    copies.append(t0 - c0)
                self.check(ids_first if kind == "deep" else sid, lambda i: 2 * i, None if a.smoke else 2000)
            print("  round %d: first %d of %d: %.0f tasks/s (COPY of the list %.2f s, not counted); %d alone: %.0f tasks/s"
                  % (rnd, sample, depth, deep[-1], copies[-1], sample, shallow[-1]), flush=True)
        self.rows += [
            ("depth: Redis used_memory per queued message (B)", "%.0f" % per, "-", "env. %.0f B" % (length / depth)),
            ("depth: drain %d from a queue of %d (tasks/s)" % (sample, depth), "%.0f" % statistics.median(deep), "-", span(deep)),
            ("depth: drain %d from a queue of %d (tasks/s)" % (sample, sample), "%.0f" % statistics.median(shallow), "-", span(shallow)),
            ("depth: deep / shallow", "%.1f%%" % (100 * statistics.median(deep) / statistics.median(shallow)), "-", ""),
        ]
        self.r.flushdb()
        self.src.flushdb()

    def push_tail(self, key, texts):
        """Puts texts at the pop end of a list, texts[0] outermost (popped first)."""
        rev = texts[::-1]
        for s in range(0, len(rev), 1000):
            self.r.rpush(key, *rev[s:s + 1000])

    # -- inflight -------------------------------------------------------------------------------
    def sleep_run(self, c, n, seconds, prefetch=1):
        self.r.flushdb()
        ids = [str(uuid.uuid4()) for _ in range(n)]
        self.src.delete("scale:sleep")
        self.fill("scale:sleep", [envelope("scale.sleep", [seconds], "sleep", i) for i in ids], self.src)
        w = self.spawn([BIN, "worker", "-Q", "sleep", "-n", "scale-sleep-%d" % c, "-c", str(c), "--prefetch-multiplier", str(prefetch),
                        "-l", "warning", "--manifest", self.manifest, "--broker", self.url], "sleep-%d.log" % c)
        w.node = "scale-sleep-%d" % c
        self.wait_ready([w])
        time.sleep(0.3)
        base = self.r.dbsize()
        self.r.config_resetstat()
        w0, r0 = cpu_seconds(w.pid), cpu_seconds(self.redis_proc.pid)
        peak = [0]
        t0 = time.time()
        self.src.copy("scale:sleep", "sleep", destination_db=0)

        threads = [0]

        def peek():
            peak[0] = max(peak[0], self.r.llen("celerity:processing:" + w.node))
            try:
                threads[0] = max(threads[0], len(os.listdir("/proc/%d/task" % w.pid)))
            except OSError:
                pass
        took = self.wait_results(n, base, 600, "sleep", t0, 0.05, peek)
        wc, rc = cpu_seconds(w.pid) - w0, cpu_seconds(self.redis_proc.pid) - r0
        st = self.commandstats()
        self.stop(w)
        self.check(ids, lambda i: seconds)
        lrem = st.get("lrem", (0, 0))
        return {"rate": n / took, "ideal": c / seconds if seconds else 0, "peak": peak[0], "lrem_us": lrem[1] / max(1, lrem[0]),
                "redis_us": 1e6 * rc / n, "worker_us": 1e6 * wc / n, "took": took, "threads": threads[0],
                "running": n / took * seconds}

    def sec_inflight(self):
        a = self.a
        c, s = a.inflight, a.sleep
        n = int(c / s * a.inflight_seconds)
        small = 8
        big_runs, small_runs = [], []
        for rnd in range(a.rounds):
            big_runs.append(self.sleep_run(c, n, s))
            small_runs.append(self.sleep_run(small, max(small, int(small / s * a.inflight_seconds)), s))
            print("  round %d: -c %d: %.0f tasks/s (ideal %.0f: %.0f running on average), peak unacked %d, most threads %d, LREM %.1f µs;"
                  " -c %d: %.1f tasks/s (ideal %.0f), LREM %.1f µs"
                  % (rnd, c, big_runs[-1]["rate"], big_runs[-1]["ideal"], big_runs[-1]["running"], big_runs[-1]["peak"], big_runs[-1]["threads"],
                     big_runs[-1]["lrem_us"], small, small_runs[-1]["rate"], small_runs[-1]["ideal"], small_runs[-1]["lrem_us"]), flush=True)
        med = lambda rs, k: statistics.median(r[k] for r in rs)
        self.rows += [
            ("inflight: -c %d, sleep(%g) × %d (tasks/s)" % (c, s, n), "%.0f" % med(big_runs, "rate"), "ideal %.0f" % (c / s), span([r["rate"] for r in big_runs])),
            ("inflight: -c %d: most unacked / running on average" % c, "%d" % med(big_runs, "peak"), "%.0f" % med(big_runs, "running"),
             "%d threads" % med(big_runs, "threads")),
            ("inflight: ack (LREM) µs in Redis, -c %d / -c %d" % (c, small), "%.1f" % med(big_runs, "lrem_us"), "%.1f" % med(small_runs, "lrem_us"), ""),
            ("inflight: CPU µs per task Redis / worker, -c %d" % c, "%.1f" % med(big_runs, "redis_us"), "%.1f" % med(big_runs, "worker_us"), ""),
            ("inflight: CPU µs per task Redis / worker, -c %d" % small, "%.1f" % med(small_runs, "redis_us"), "%.1f" % med(small_runs, "worker_us"), ""),
        ]

    # -- recover --------------------------------------------------------------------------------
    def sec_recover(self):
        """Worker A (-c 1, prefetch room n + 1) fetches a sleep(3600) and then n sleep(0)
        messages; the first blocks its only slot, so the n stay fetched and unacked in its
        processing list. Worker B (consuming another queue) is running. A is SIGKILLed: B's
        recovery sweep puts the n back in `sleep`; then B2 drains them."""
        a = self.a
        n = a.recover
        runs = []
        for rnd in range(a.rounds):
            self.r.flushdb()
            ids = [str(uuid.uuid4()) for _ in range(n)]
            # The blocker is popped first, then the n.
            self.push_tail("sleep", [envelope("scale.sleep", [3600], "sleep")] + [envelope("scale.sleep", [0], "sleep", i) for i in ids])
            A = self.spawn([BIN, "worker", "-Q", "sleep", "-n", "scale-holder", "-c", "1", "--prefetch-multiplier", str(n + 1),
                            "-l", "warning", "--manifest", self.manifest, "--broker", self.url], "holder-%d.log" % rnd)
            A.node = "scale-holder"
            B = self.worker("idle")
            t0 = time.time()
            self.wait_until(lambda: self.r.llen("celerity:processing:scale-holder") >= n + 1, "holder fetching %d" % n, 600, 0.05)
            fetch_s = time.time() - t0
            self.r.config_resetstat()
            r0, b0 = cpu_seconds(self.redis_proc.pid), cpu_seconds(B.pid)
            os.killpg(A.pid, signal.SIGKILL)
            A.wait()
            t_kill = time.time()
            first = [None]

            def back():
                q = self.r.llen("sleep")
                if q > 0 and first[0] is None:
                    first[0] = time.time()
                return q >= n + 1
            self.wait_until(back, "recovery of %d messages" % n, 900, 0.05)
            t_back = time.time()
            rc, bc = cpu_seconds(self.redis_proc.pid) - r0, cpu_seconds(B.pid) - b0
            st = self.commandstats()
            self.stop(B)
            # Drain them with a fresh worker (the blocker runs too: it holds one slot of 8).
            base = self.r.dbsize()
            C = self.worker("sleep")
            drain_s = self.wait_results(n, base, 900, "sleep", None, 0.05)
            self.stop(C, signal.SIGKILL)
            self.check(ids, lambda i: 0, None if a.smoke else 2000)
            run = {"fetch": fetch_s, "detect": first[0] - t_kill, "sweep": t_back - first[0], "total": t_back - t_kill,
                   "drain": drain_s, "redis_cpu": rc, "sweeper_cpu": bc, "stats": st}
            runs.append(run)
            print("  round %d: holder fetched %d in %.1f s; after SIGKILL: first back %.1f s, all back %.1f s later (%.0f/s), "
                  "Redis CPU %.1f s, sweeping worker CPU %.1f s; drained in %.1f s" % (rnd, n, fetch_s, run["detect"], run["sweep"],
                                                          n / max(run["sweep"], 1e-3), rc, bc, drain_s), flush=True)
            ev = st.get("evalsha", (0, 0))
            self.notes.append("recover round %d: EVALSHA %d calls, %.1f µs each in Redis" % (rnd, ev[0], ev[1] / max(1, ev[0])))
        med = lambda k: statistics.median(r[k] for r in runs)
        self.rows += [
            ("recover: SIGKILL -> first message back (s)", "%.1f" % med("detect"), "-", span([r["detect"] for r in runs], "%.1f")),
            ("recover: first -> all %d back in the queue (s)" % n, "%.1f" % med("sweep"), "%.0f/s" % (n / max(med("sweep"), 1e-3)), span([r["sweep"] for r in runs], "%.1f")),
            ("recover: CPU µs per message, Redis / sweeping worker", "%.1f" % (1e6 * med("redis_cpu") / n), "%.1f" % (1e6 * med("sweeper_cpu") / n), ""),
            ("recover: then drained by a fresh worker (s)", "%.1f" % med("drain"), "%.0f/s" % (n / med("drain")), ""),
        ]

    # -- big results ----------------------------------------------------------------------------
    def sec_big(self):
        a = self.a
        self.r.flushdb()
        w = self.worker("echo")
        rows = []
        for kb in (0, a.big_kb):
            payload = "x" * (kb * 1024)
            # Sequential round trips: push, wait for the result's PUBLISH, then GET it.
            ps = self.r.pubsub()
            rts, gets = [], []
            for i in range(a.big_calls):
                tid = str(uuid.uuid4())
                text = envelope("scale.echo", [payload], "echo", tid)
                ps.subscribe("celery-task-meta-" + tid)
                ps.get_message(timeout=1)
                t0 = time.perf_counter()
                self.r.lpush("echo", text)
                while True:
                    m = ps.get_message(timeout=10)
                    if m is None:
                        raise Failed("echo %d KiB: no result within 10 s" % kb)
                    if m["type"] == "message":
                        break
                t1 = time.perf_counter()
                doc = self.r.get("celery-task-meta-" + tid)
                t2 = time.perf_counter()
                ps.unsubscribe()
                ps.get_message(timeout=1)
                got = json.loads(doc)
                if got["status"] != "SUCCESS" or got["result"]["args"] != [payload]:
                    raise Failed("echo %d KiB: wrong result" % kb)
                rts.append(t1 - t0)
                gets.append(t2 - t1)
            ps.close()
            # Drain of big_tasks pre-enqueued.
            n = a.big_tasks
            ids = [str(uuid.uuid4()) for _ in range(n)]
            self.src.delete("scale:echo")
            self.fill("scale:echo", [envelope("scale.echo", [payload], "echo", i) for i in ids], self.src)
            base = self.r.dbsize()
            w0, r0 = cpu_seconds(w.pid), cpu_seconds(self.redis_proc.pid)
            t0 = time.time()
            self.src.copy("scale:echo", "echo", destination_db=0)
            took = self.wait_results(n, base, 600, "echo", t0)
            wc, rc = cpu_seconds(w.pid) - w0, cpu_seconds(self.redis_proc.pid) - r0
            self.check(ids, lambda i: {"args": [payload], "kwargs": {}}, None if a.smoke else 20)
            self.r.delete(*["celery-task-meta-" + i for i in ids])
            label = "%d KiB" % kb if kb else "empty"
            mb = n * len(payload) / 2**20
            print("  echo %s: round trip p50 %.2f ms, GET p50 %.2f ms; drain %d: %.0f tasks/s (%.0f MB/s of results), CPU µs/task Redis %.0f worker %.0f"
                  % (label, 1e3 * statistics.median(rts), 1e3 * statistics.median(gets), n, n / took, mb / took, 1e6 * rc / n, 1e6 * wc / n), flush=True)
            rows += [
                ("big: echo %s: send -> stored, p50 ms" % label, "%.2f" % (1e3 * statistics.median(rts)), "-",
                 "p99 %.2f" % (1e3 * sorted(rts)[int(0.99 * (len(rts) - 1))])),
                ("big: echo %s: GET of the result, p50 ms" % label, "%.2f" % (1e3 * statistics.median(gets)), "-", ""),
                ("big: echo %s: drain %d (tasks/s)" % (label, n), "%.0f" % (n / took), "%.0f MB/s" % (mb / took) if kb else "-", ""),
                ("big: echo %s: CPU µs per task Redis / worker" % label, "%.0f" % (1e6 * rc / n), "%.0f" % (1e6 * wc / n), ""),
            ]
        self.stop(w)
        self.rows += rows

    # -- many queues ----------------------------------------------------------------------------
    def sec_queues(self):
        a = self.a
        q = a.queues
        n = a.queue_tasks
        names = ["q%d" % i for i in range(q)]
        one_ids, one = self.add_texts(n, "q0")
        self.src.delete("scale:one")
        self.fill("scale:one", one, self.src)
        spread_ids = [str(uuid.uuid4()) for _ in range(n)]
        runs = {"1 queue": [], "%d queues, all on one" % q: [], "%d queues, spread" % q: []}
        for rnd in range(a.rounds):
            for label, queues in (("1 queue", "q0"), ("%d queues, all on one" % q, ",".join(names)), ("%d queues, spread" % q, ",".join(names))):
                self.r.flushdb()
                w = self.worker(queues)
                time.sleep(1.0)
                base = self.r.dbsize()
                w0 = cpu_seconds(w.pid)
                t0 = time.time()
                if "spread" in label:
                    p = self.r.pipeline(transaction=False)
                    for i in range(n):
                        p.lpush(names[i % q], envelope("add_module.tasks.add", [i, i], names[i % q], spread_ids[i]))
                        if i % 5000 == 4999:
                            p.execute()
                    p.execute()
                    ids = spread_ids
                else:
                    self.src.copy("scale:one", "q0", destination_db=0)
                    ids = one_ids
                try:
                    took = self.wait_results(n, base, a.queue_timeout, None if "spread" in label else "q0", t0)
                    done = n
                except Failed:
                    # Past a few hundred blocking fetch loops the worker starves (see
                    # docs/benchmarks.md): report how far it got instead of waiting on.
                    if a.smoke:
                        raise
                    took = time.time() - t0
                    done = sum(1 for _ in self.r.scan_iter("celery-task-meta-*", count=10000))
                    self.notes.append("queues: %s: only %d of %d results after %.0f s" % (label, done, n, took))
                wc = cpu_seconds(w.pid) - w0
                threads = len(os.listdir("/proc/%d/task" % w.pid))
                clients = self.r.info("clients")["connected_clients"]
                self.stop(w, signal.SIGKILL if done < n else signal.SIGTERM)
                if done == n:
                    self.check(ids, lambda i: 2 * i, None if a.smoke else 2000)
                runs[label].append({"rate": done / took, "cpu": wc, "threads": threads, "clients": clients})
                print("  %s: %.0f tasks/s (%d of %d), worker CPU %.2f s, %d threads, %d Redis clients" % (label, done / took, done, n, wc, threads, clients), flush=True)
        base_rate = statistics.median(r["rate"] for r in runs["1 queue"])
        for label, rs in runs.items():
            rate = statistics.median(r["rate"] for r in rs)
            self.rows.append(("queues: %s, drain %d (tasks/s)" % (label, n), "%.0f" % rate, "%.0f%%" % (100 * rate / base_rate),
                              "%d thr, %d cl" % (rs[0]["threads"], rs[0]["clients"])))

    # -------------------------------------------------------------------------------------------
    def run(self):
        a = self.a
        self.start_redis()
        sections = [s for s in ["workers", "depth", "inflight", "recover", "big", "queues"] if s in a.only.split(",")]
        print("Redis %s (pid %d); sections: %s; %d rounds" % (self.url, self.redis_proc.pid, ", ".join(sections), a.rounds), flush=True)
        for s in sections:
            print("%s…" % s, flush=True)
            t0 = time.time()
            getattr(self, "sec_" + s)()
            print("  (%s: %.0f s)" % (s, time.time() - t0), flush=True)
        print()
        print("%-52s %12s %12s %12s" % ("benchmark", "value", "vs / other", "range"))
        for r in self.rows:
            print("%-52s %12s %12s %12s" % r)
        for line in getattr(self, "cmd_tables", []):
            print(line)
        for line in self.notes:
            print(line)
        print("Logs: %s" % self.tmp)
        return 0


def main():
    global BIN
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="workers,depth,inflight,recover,big,queues", help="sections to run, comma-separated")
    ap.add_argument("--rounds", type=int, default=3, help="runs of each measurement (medians are reported)")
    ap.add_argument("--concurrency", type=int, default=8, help="-c of each add worker")
    ap.add_argument("--tasks", type=int, default=100_000, help="workers: add tasks to drain")
    ap.add_argument("--workers", default="1,2,4,8", help="workers: worker counts")
    ap.add_argument("--depth", type=int, default=1_000_000, help="depth: messages in the deep queue")
    ap.add_argument("--depth-sample", type=int, default=100_000, help="depth: messages drained from it")
    ap.add_argument("--inflight", type=int, default=1000, help="inflight: -c of the sleep worker")
    ap.add_argument("--sleep", type=float, default=0.5, help="inflight: seconds each sleep task takes")
    ap.add_argument("--inflight-seconds", type=float, default=10, help="inflight: ideal length of each run")
    ap.add_argument("--recover", type=int, default=100_000, help="recover: messages the killed worker held")
    ap.add_argument("--big-kb", type=int, default=1024, help="big: result size in KiB")
    ap.add_argument("--big-calls", type=int, default=50, help="big: sequential round trips")
    ap.add_argument("--big-tasks", type=int, default=200, help="big: tasks drained")
    ap.add_argument("--queues", type=int, default=1000, help="queues: queues of the one worker")
    ap.add_argument("--queue-tasks", type=int, default=50_000, help="queues: add tasks drained")
    ap.add_argument("--queue-timeout", type=float, default=60, help="queues: seconds a drain may take before it is reported unfinished")
    ap.add_argument("--celerity", default=BIN, help="the celerity binary to run (default: this checkout's release build)")
    ap.add_argument("--smoke", action="store_true", help="small counts, one round, every result checked (CI)")
    a = ap.parse_args()
    if a.smoke:
        a.rounds, a.tasks, a.workers, a.depth, a.depth_sample = 1, 2000, "1,2", 20_000, 2000
        a.inflight, a.sleep, a.inflight_seconds, a.recover = 100, 0.2, 1, 2000
        a.big_kb, a.big_calls, a.big_tasks, a.queues, a.queue_tasks = 1024, 5, 10, 50, 2000
    BIN = a.celerity
    if not os.path.exists(BIN):
        sys.exit("release binary missing: run scripts/bench-scale.sh (or swift build -c release --product celerity) first")
    s = Scale(a)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))   # so that `finally` stops what was started
    try:
        return s.run()
    except Failed as e:
        print("FAILED: %s" % e, file=sys.stderr)
        return 1
    finally:
        s.cleanup()


if __name__ == "__main__":
    sys.exit(main())
