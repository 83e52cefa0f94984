#!/usr/bin/env python3
"""Celerity vs Celery, side by side on one private redis-server, in one run.

    scripts/bench.sh            (builds the release binaries, then runs this)
    python3 bench/run.py [--tasks N] [--e2e N] [--latency N] [--concurrency C] [--celery-pool P]
                         [--chain-steps N] [--chord-parts N]

Measures, each with the same task names, queues and Redis:
  a. drain: N add tasks pre-enqueued by the real Python Celery client, drained once by a
     Celery worker and once by a Celerity worker (same concurrency): tasks/s and the ratio;
  b. end to end: Celerity's client sends N calls at once (bulk) and collects every result;
  c. latency of sequential single calls, p50/p99: Celerity client -> Celerity worker,
     Python client -> Celery worker, Python client -> Celerity worker;
  d. factorial(20000) and mat_mul(1000, 1000) through a worker: Celerity's built-ins vs
     the tutorial's Python code in a Celery worker (round trip from a client);
  e. worker memory (RSS) idle and peak under load, Celerity vs Celery;
  f. workflows: a chain of N add steps and a chord of N add parts with a sum body, sent once
     by the real Python Celery client (its send timed alone), then carried out by each
     worker from the queue (timed from the copy into the queue to the final result); and
     sent by Celerity's Swift client to a Celerity worker (send to final result);
  g. the cost of task events: the drain of (a) by a Celerity worker started without and
     with -E, alternated for --events-rounds rounds (a fresh worker each run), median tasks/s
     each way and the ratio on/off; with --events-celery, the same for the Celery worker
     (one round each way) as the reference;
  h. the cost of a global rate limit (tasks.yaml `rate_limit`): the drain of (a) by a
     Celerity worker whose add task has a limit it never reaches (1000000/s: every message
     still asks Redis for its turn) against the same worker without a limit, alternated for
     --limit-rounds rounds; and one drain under a limit that binds (tasks / 5 s, so about
     5 s), the rate achieved against the limit;
  j. the cost of argument schemas: the drain of (a) by a Celerity worker whose add task has no
     schema (`params: null`), against the built-in's own (two numbers) and a stricter one from
     tasks.yaml (two integers with bounds), alternated for --schema-rounds rounds; medians
     and the ratio to no schema.
"""
import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from procs import ProcessOwner  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, ".build", "release")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def rss_kb(pids, field):
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/status" % pid) as f:
                for line in f:
                    if line.startswith(field + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def process_tree(pid):
    """pid and all its descendants (prefork children)."""
    out = [pid]
    try:
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    except OSError:
        kids = []
    for k in kids:
        out += process_tree(int(k))
    return out


class Bench(ProcessOwner):
    def __init__(self, args):
        self.args = args
        self.tmp = tempfile.mkdtemp(prefix="celerity-bench-")
        self.port = free_port()
        self.url = "redis://127.0.0.1:%d/0" % self.port
        self.env = dict(os.environ, CELERITY_BROKER_URL=self.url, CELERITY_RESULT_BACKEND=self.url,
                        PYTHONPATH=os.path.join(REPO, "bench") + os.pathsep + os.path.join(REPO, "interop"))
        # The orchestrator itself talks to Celery (ping) through the same app module.
        os.environ.update(CELERITY_BROKER_URL=self.url, CELERITY_RESULT_BACKEND=self.url)
        sys.path.insert(0, os.path.join(REPO, "bench"))
        self.procs = []
        self.rows = []
        self.notes = []
        self.workflows = {}

    # -- processes -------------------------------------------------------------------------
    def start_redis(self):
        self.redis_proc = self.spawn(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--maxmemory-policy", "noeviction"], "redis.log")
        import redis
        self.r = redis.Redis(port=self.port)
        for _ in range(100):
            try:
                self.r.ping()
                return
            except Exception:
                time.sleep(0.05)
        sys.exit("redis-server did not start (see %s/redis.log)" % self.tmp)

    def celery_worker(self, queues, name, extra=()):
        a = self.args
        argv = [sys.executable, "-m", "celery", "-A", "celery_tutorial_app", "worker", "-Q", queues, "-n", name + "@%h",
                "-P", a.celery_pool, "-c", str(a.concurrency), "-l", "warning",
                "--without-gossip", "--without-mingle", "--without-heartbeat"] + list(extra)
        p = self.spawn(argv, name + ".log")
        self.wait_until(lambda: self.celery_ready(name), "Celery worker %s" % name, 60)
        return p

    def celery_ready(self, name):
        from celery_tutorial_app import app
        r = app.control.ping(destination=["%s@%s" % (name, socket.gethostname())], timeout=0.5)
        return bool(r)

    def celerity_worker(self, queues, name, extra=(), manifest=None):
        argv = [os.path.join(BIN, "celerity"), "worker", "-Q", queues, "-n", name, "-c", str(self.args.concurrency),
                "-l", "warning", "--manifest", manifest or os.path.join(REPO, "bench", "tasks.yaml"), "--broker", self.url] + list(extra)
        p = self.spawn(argv, name + ".log")
        self.wait_until(lambda: self.r.exists("celerity:worker:" + name), "Celerity worker %s" % name, 30)
        return p

    def wait_until(self, cond, what, timeout):
        end = time.time() + timeout
        while time.time() < end:
            if cond():
                return
            time.sleep(0.05)
        sys.exit("%s did not become ready within %d s (logs in %s)" % (what, timeout, self.tmp))

    def clear_results(self):
        keys = list(self.r.scan_iter("celery-task-meta-*", count=10000))
        for i in range(0, len(keys), 10000):
            self.r.unlink(*keys[i:i + 10000])

    # -- a. drain ----------------------------------------------------------------------------
    def enqueue(self, n):
        """The real Celery client publishes n add calls (two client processes, one per core);
        they are kept aside in bench:add."""
        code = (
            "import sys, celery_tutorial_app as t\n"
            "lo, hi = int(sys.argv[1]), int(sys.argv[2]); ids = []\n"
            "for i in range(lo, hi): ids.append(t.add.apply_async((i, i)).id)\n"
            "open(sys.argv[3], 'w').write('\\n'.join(ids))\n")
        t0 = time.time()
        parts = [(0, n // 2), (n // 2, n)]
        files = [os.path.join(self.tmp, "ids%d.txt" % k) for k in range(len(parts))]
        procs = [subprocess.Popen([sys.executable, "-c", code, str(lo), str(hi), f], env=self.env, cwd=REPO)
                 for (lo, hi), f in zip(parts, files)]
        for p in procs:
            if p.wait() != 0:
                sys.exit("the Python Celery client failed to enqueue")
        took = time.time() - t0
        self.r.rename("add", "bench:add")
        self.ids = []
        for f in files:
            self.ids += [i for i in open(f).read().split("\n") if i]
        assert len(self.ids) == n, len(self.ids)
        self.notes.append("enqueue: the Python Celery client (2 processes) published %d add calls in %.1f s (%.0f/s)" % (n, took, n / took))

    def drain(self, worker_pid_fn):
        """Hands the kept messages to the queue of a ready, idle worker; times until every result is stored."""
        self.clear_results()
        keys = ["celery-task-meta-" + i for i in self.ids]
        t0 = time.time()
        self.r.copy("bench:add", "add")
        pids = worker_pid_fn()   # once: pgrep in the loop would steal CPU from the worker
        while self.r.llen("add") > 0:
            time.sleep(0.01)
        done = 0
        while True:
            done = sum(self.r.exists(*keys[i:i + 20000]) for i in range(0, len(keys), 20000))
            if done >= len(keys):
                break
            if time.time() - t0 > 1800:
                sys.exit("drain did not finish in 30 minutes (%d of %d results)" % (done, len(keys)))
            time.sleep(0.02)
        took = time.time() - t0
        import random
        for i in random.sample(range(len(keys)), min(200, len(keys))) + [len(keys) - 1]:
            doc = json.loads(self.r.get(keys[i]))
            assert doc["status"] == "SUCCESS" and doc["result"] == 2 * i, (i, doc)
        return took, rss_kb(pids, "VmHWM")

    # -- f. workflows --------------------------------------------------------------------------
    def enqueue_workflows(self):
        """The real Celery client sends a chain of --chain-steps add steps and a chord of
        --chord-parts add parts with the tsum body, while no worker consumes `add`; each is set
        aside (bench:chain, bench:chord) with the chord's size key, to be replayed to each worker."""
        a = self.args
        code = (
            "import sys, os, time, json, celery_tutorial_app as t\n"
            "from celery import chain, chord\n"
            "kind, n = sys.argv[1], int(sys.argv[2])\n"
            "t0 = time.perf_counter()\n"
            "if kind == 'chain': wf = chain(t.add.s(1, 1), *[t.add.s(1) for _ in range(n - 1)])\n"
            "else: wf = chord([t.add.s(i, i) for i in range(n)], t.tsum.s())\n"
            "t1 = time.perf_counter(); r = wf.apply_async(); t2 = time.perf_counter()\n"
            "print(json.dumps({'id': r.id, 'build_s': t1 - t0, 'send_s': t2 - t0}), flush=True)\n"
            # exit at once: the AsyncResult's finalizers talk to Redis while Python shuts down
            "os._exit(0)\n")
        self.workflows = {}
        for kind, n, expected in [("chain", a.chain_steps, a.chain_steps + 1), ("chord", a.chord_parts, a.chord_parts * (a.chord_parts - 1))]:
            if n <= 0:
                continue
            assert not self.r.exists("add")
            before = set(self.r.scan_iter("celery-taskset-meta-*"))
            out = subprocess.run([sys.executable, "-c", code, kind, str(n)], env=self.env, cwd=REPO, check=True, capture_output=True, text=True).stdout
            sent = json.loads(out.strip().splitlines()[-1])
            messages = self.r.llen("add")
            self.r.rename("add", "bench:" + kind)
            # The chord's size (celery-taskset-meta-<group>.s), set by the client before the parts.
            keys = [k for k in self.r.scan_iter("celery-taskset-meta-*") if k not in before]
            sent["keys"] = [(k, self.r.dump(k), max(self.r.pttl(k), 0)) for k in keys]
            sent.update(kind=kind, n=n, expected=expected, messages=messages)
            self.workflows[kind] = sent
            self.notes.append("f. the Python Celery client built a %d-%s in %.2f s and sent it in %.2f s more (%d message%s)"
                              % (n, "step chain" if kind == "chain" else "part chord", sent["build_s"], sent["send_s"] - sent["build_s"],
                                 messages, "" if messages == 1 else "s"))
            print(self.notes[-1], flush=True)

    def clear_workflow_state(self):
        self.clear_results()
        keys = list(self.r.scan_iter("celery-taskset-meta-*", count=10000))
        for i in range(0, len(keys), 10000):
            self.r.unlink(*keys[i:i + 10000])

    def replay_workflow(self, kind):
        """Copies the set-aside workflow into the `add` queue of a ready, idle worker (chord
        size restored first); times until its final result (the chain's last step, the chord's
        body) is stored, and checks it. None when the row is skipped."""
        w = self.workflows.get(kind)
        if not w:
            return None
        self.clear_workflow_state()
        for k, dump, ttl in w["keys"]:
            self.r.restore(k, ttl, dump, replace=True)
        key = "celery-task-meta-" + w["id"]
        t0 = time.time()
        self.r.copy("bench:" + kind, "add")
        while True:
            doc = self.r.get(key)
            if doc is not None and json.loads(doc)["status"] in ("SUCCESS", "FAILURE", "REVOKED"):
                break
            if time.time() - t0 > 1800:
                sys.exit("the %s did not finish in 30 minutes" % kind)
            time.sleep(0.005)
        took = time.time() - t0
        doc = json.loads(doc)
        assert doc["status"] == "SUCCESS" and doc["result"] == w["expected"], (kind, doc)
        self.clear_workflow_state()
        return took

    def swift_workflow(self, kind):
        n = self.workflows.get(kind, {}).get("n", 0)
        if n <= 0:
            return None
        self.clear_workflow_state()
        out = subprocess.run([os.path.join(BIN, "celerity-bench"), "workflow", "--broker", self.url, "--%s" % ("chain-steps" if kind == "chain" else "chord-parts"), str(n)],
                             cwd=REPO, check=True, capture_output=True, text=True)
        sys.stderr.write(out.stderr)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        assert r["ok"], r
        self.clear_workflow_state()
        return r

    # -- c. latency from Python --------------------------------------------------------------
    def python_latency(self, n):
        code = (
            "import sys, time, json, celery_tutorial_app as t\n"
            "n = int(sys.argv[1])\n"
            "for i in range(20): t.add.delay(i, i).get(timeout=30)\n"
            "lat = []\n"
            "for i in range(n):\n"
            "    t0 = time.perf_counter(); r = t.add.delay(i, i).get(timeout=30); lat.append((time.perf_counter() - t0) * 1000)\n"
            "    assert r == 2 * i\n"
            "lat.sort(); print(json.dumps({'p50_ms': lat[len(lat)//2], 'p99_ms': lat[min(int(len(lat)*0.99), len(lat)-1)]}))\n")
        out = subprocess.run([sys.executable, "-c", code, str(n)], env=self.env, cwd=REPO, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    def python_compute(self, repeats):
        """factorial(20000) and mat_mul(1000, 1000) round trips from the Python client (median)."""
        code = (
            "import sys, time, json, statistics, celery_tutorial_app as t\n"
            "sys.set_int_max_str_digits(0)\n"
            "reps = int(sys.argv[1]); out = {}\n"
            "for name, call in [('factorial', lambda: t.factorial.delay(20000)), ('mat_mul', lambda: t.mat_mul.delay(1000, 1000))]:\n"
            "    call().get(timeout=120)\n"
            "    times = []\n"
            "    for _ in range(reps):\n"
            "        t0 = time.perf_counter(); v = call().get(timeout=120); times.append((time.perf_counter() - t0) * 1000)\n"
            "    out[name] = statistics.median(times)\n"
            "    if name == 'factorial': assert len(str(v)) == 77338\n"
            "    else: assert len(v) == 1000 and len(v[0]) == 1000\n"
            "print(json.dumps(out))\n")
        out = subprocess.run([sys.executable, "-c", code, str(repeats)], env=self.env, cwd=REPO, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    def swift_bench(self, mode, n, extra=()):
        out = subprocess.run([os.path.join(BIN, "celerity-bench"), mode, "--broker", self.url, "--calls", str(n)] + list(extra),
                             cwd=REPO, check=True, capture_output=True, text=True)
        sys.stderr.write(out.stderr)
        return json.loads(out.stdout.strip().splitlines()[-1])

    # -- the run -----------------------------------------------------------------------------
    # -- g. the cost of events ------------------------------------------------------------------
    def alternate(self, modes, rounds, tag):
        """Drains the kept add tasks once per mode per round, alternating the order each round;
        `modes` maps a label to a function that starts that mode's worker (and anything beside
        it) and returns (worker, stop). Returns {label: [tasks/s, ...]}."""
        a = self.args
        rates = {m: [] for m in modes}
        labels = list(modes)
        for rnd in range(rounds):
            order = labels if rnd % 2 == 0 else labels[::-1]
            for mode in order:
                w, stop = modes[mode]("celerity-%s-%s-%d" % (tag, mode, rnd))
                time.sleep(0.3)
                took, _ = self.drain(lambda: [w.pid])
                stop()
                self.clear_results()
                time.sleep(0.5)   # Redis frees the unlinked results in the background
                rates[mode].append(a.tasks / took)
                print("   round %d, %-10s: %.2f s (%.0f tasks/s)" % (rnd, mode, took, a.tasks / took), flush=True)
        return rates

    def plain_worker(self, extra=(), manifest=None):
        """A mode of `alternate`: a Celerity worker on add with these arguments."""
        def start(name):
            w = self.celerity_worker("add", name, extra, manifest=manifest)
            return w, lambda: self.stop(w)
        return start

    @staticmethod
    def span(v):
        return "%.0f–%.0f" % (min(v), max(v))

    def events_cost(self):
        """Drains the kept add tasks with a fresh Celerity worker without -E and one with -E,
        alternating which goes first, for --events-rounds rounds; medians of tasks/s. With
        --events-celery, one Celery drain each way too. Returns the rows."""
        a = self.args
        rates = self.alternate({"off": self.plain_worker(), "on": self.plain_worker(["-E"])}, a.events_rounds, "ev")
        off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
        rows = [("g. drain, Celerity worker, events off (tasks/s)", "%.0f" % off, "-", self.span(rates["off"])),
                ("g. drain, Celerity worker -E, events on (tasks/s)", "%.0f" % on, "-", self.span(rates["on"])),
                ("g. events on / off, Celerity (target ≥ 90%)", "%.1f%%" % (100 * on / off), "-", "")]
        # The rounds' own ratios (each round's two drains run back to back, in alternating
        # order): what the host's slower and faster minutes do not shift, unlike the medians'.
        pairs = [100 * y / x for x, y in zip(rates["off"], rates["on"])]
        rows.append(("g. on / off per round (median of the rounds' ratios)", "%.1f%%" % statistics.median(pairs), "-",
                     "%.1f–%.1f%%" % (min(pairs), max(pairs))))
        self.events_rates = rates
        if a.events_celery:
            cel = {}
            for mode in ("off", "on"):
                w = self.celery_worker("add", "celery-ev-" + mode, ["-E"] if mode == "on" else [])
                time.sleep(0.5)
                took, _ = self.drain(lambda: process_tree(w.pid))
                self.stop(w)
                self.clear_results()
                cel[mode] = a.tasks / took
                print("   Celery, events %-3s: %.1f s (%.0f tasks/s)" % (mode, took, cel[mode]), flush=True)
            rows[0] = rows[0][:2] + ("%.0f" % cel["off"],) + rows[0][3:]
            rows[1] = rows[1][:2] + ("%.0f" % cel["on"],) + rows[1][3:]
            rows[2] = rows[2][:2] + ("%.1f%%" % (100 * cel["on"] / cel["off"]),) + rows[2][3:]
        return rows

    # -- h. the cost of a global rate limit ---------------------------------------------------------
    def limited_manifest(self, rate):
        """bench/tasks.yaml with `rate_limit: <rate>` on the add task; its path."""
        text = open(os.path.join(REPO, "bench", "tasks.yaml")).read()
        anchor = "    queue: add\n    builtin: add\n"
        assert anchor in text
        path = os.path.join(self.tmp, "tasks-limit-%s.yaml" % rate.replace("/", "-"))
        open(path, "w").write(text.replace(anchor, anchor + "    rate_limit: %s\n" % rate, 1))
        return path

    def limit_cost(self):
        """Drains the kept add tasks with a fresh Celerity worker without a rate limit and one
        with a limit it never reaches, alternating, for --limit-rounds rounds (medians); then
        once under a limit that binds. Returns the rows."""
        a = self.args
        never = self.limited_manifest("1000000/s")
        rates = self.alternate({"unlimited": self.plain_worker(), "limited": self.plain_worker(manifest=never)}, a.limit_rounds, "rl")
        binding = max(100, a.tasks // 5)
        w = self.celerity_worker("add", "celerity-rl-binding", manifest=self.limited_manifest("%d/s" % binding))
        time.sleep(0.3)
        took, _ = self.drain(lambda: [w.pid])
        self.stop(w)
        self.clear_results()
        # The first call starts at once (burst 1): N calls take (N - 1) periods.
        achieved = (a.tasks - 1) / took
        print("   limit %d/s: %.2f s (%.0f tasks/s)" % (binding, took, achieved), flush=True)
        un, lim = statistics.median(rates["unlimited"]), statistics.median(rates["limited"])
        return [("h. drain, add without a rate limit (tasks/s)", "%.0f" % un, "-", self.span(rates["unlimited"])),
                ("h. drain, add rate_limit 1000000/s, never reached", "%.0f" % lim, "-", self.span(rates["limited"])),
                ("h. limited / unlimited (the cost of asking Redis)", "%.1f%%" % (100 * lim / un), "-", ""),
                ("h. drain under rate_limit %d/s: achieved (tasks/s)" % binding, "%.0f" % achieved, "-", "%.1f%% of it" % (100 * achieved / binding))]

    # -- j. the cost of argument schemas ----------------------------------------------------------
    def schema_manifest(self, tag, params):
        """bench/tasks.yaml with `params: <params>` on the add task; its path."""
        text = open(os.path.join(REPO, "bench", "tasks.yaml")).read()
        anchor = "    queue: add\n    builtin: add\n"
        assert anchor in text
        path = os.path.join(self.tmp, "tasks-schema-%s.yaml" % tag)
        open(path, "w").write(text.replace(anchor, anchor + "    params: %s\n" % params, 1))
        return path

    def schema_cost(self):
        """Drains the kept add tasks with a fresh Celerity worker whose add task has no schema,
        the built-in's, and a bounded one from tasks.yaml, alternating, for --schema-rounds
        rounds (medians). Returns the rows."""
        a = self.args
        modes = {"none": self.plain_worker(manifest=self.schema_manifest("none", "null")),
                 "builtin": self.plain_worker(),
                 "bounded": self.plain_worker(manifest=self.schema_manifest(
                     "bounded", "{x: {type: integer, minimum: 0, maximum: 1000000000}, y: {type: integer, minimum: 0, maximum: 1000000000}}"))}
        rates = self.alternate(modes, a.schema_rounds, "sc")
        none, builtin, bounded = (statistics.median(rates[m]) for m in ("none", "builtin", "bounded"))
        per_call = self.swift_bench("schema", 1_000_000)
        print("   the check alone: %s" % json.dumps(per_call), flush=True)
        return [("j. the check alone, add's built-in schema (ns/call)", "%.1f" % per_call["builtin_ns"], "-", ""),
                ("j. the check alone, 2 bounded integers (ns/call)", "%.1f" % per_call["bounded_ns"], "-", ""),
                ("j. the check alone, nested schema, 3 params (ns/call)", "%.1f" % per_call["nested_ns"], "-", ""),("j. drain, add without a schema (params: null)", "%.0f" % none, "-", self.span(rates["none"])),
                ("j. drain, add with its built-in schema (2 numbers)", "%.0f" % builtin, "-", self.span(rates["builtin"])),
                ("j. drain, add with 2 bounded integers (tasks.yaml)", "%.0f" % bounded, "-", self.span(rates["bounded"])),
                ("j. built-in schema / none", "%.1f%%" % (100 * builtin / none), "-", ""),
                ("j. bounded schema / none", "%.1f%%" % (100 * bounded / none), "-", "")]

    # -- i. a dashboard left open -------------------------------------------------------------
    def dashboard_cost(self):
        """Drains the kept add tasks with a worker that keeps no task history and no dashboard
        running, against a worker with the default history (100,000 records) and a
        `celerity dashboard` on the same Redis that is read as an open page and a Prometheus
        server read it: the overview every second, /metrics every 5 s, the tasks page every
        5 s. Alternating, --dashboard-rounds rounds, medians. Returns the rows."""
        a = self.args
        text = open(os.path.join(REPO, "bench", "tasks.yaml")).read()
        quiet = os.path.join(self.tmp, "tasks-no-history.yaml")
        open(quiet, "w").write(text.replace("defaults:\n", "defaults:\n  history: 0\n", 1) if "defaults:\n" in text
                               else text + "\ndefaults:\n  history: 0\n")
        import threading
        import urllib.request

        def with_dashboard(name):
            port = free_port()
            d = self.spawn([os.path.join(BIN, "celerity-dashboard"), "--port", str(port), "--broker", self.url,
                            "--manifest", os.path.join(REPO, "bench", "tasks.yaml")], name + "-dashboard.log")
            w = self.celerity_worker("add", name)
            base = "http://127.0.0.1:%d" % port
            self.wait_until(lambda: self.fetch(base + "/healthz") is not None, "dashboard", 30)
            done = threading.Event()
            reads = {"n": 0, "bytes": 0}

            def poll():
                tick = 0
                while not done.is_set():
                    for path in ["/"] + (["/metrics", "/tasks"] if tick % 5 == 0 else []):
                        body = self.fetch(base + path)
                        if body is not None:
                            reads["n"] += 1
                            reads["bytes"] += len(body)
                    tick += 1
                    done.wait(1.0)
            t = threading.Thread(target=poll, daemon=True)
            t.start()

            def stop():
                done.set()
                t.join()
                self.stop(w)
                self.stop(d)
                self.dashboard_reads.append(reads["n"])
            return w, stop
        self.dashboard_reads = []
        rates = self.alternate({"plain": self.plain_worker(manifest=quiet), "dashboard": with_dashboard}, a.dashboard_rounds, "db")
        plain, dash = statistics.median(rates["plain"]), statistics.median(rates["dashboard"])
        return [("i. drain, no history, no dashboard (tasks/s)", "%.0f" % plain, "-", self.span(rates["plain"])),
                ("i. drain, history + open dashboard (tasks/s)", "%.0f" % dash, "-", self.span(rates["dashboard"])),
                ("i. with / without (target ≥ 95%)", "%.1f%%" % (100 * dash / plain), "-", "%d reads" % sum(self.dashboard_reads))]

    @staticmethod
    def fetch(url):
        import urllib.request
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                return r.read()
        except Exception:
            return None

    def single_row(self, title, measure):
        """--only-events, --only-limits, --only-dashboard: one row alone on its own Redis."""
        a = self.args
        self.start_redis()
        print("Redis: %s; concurrency %d; %d tasks to drain" % (self.url, a.concurrency, a.tasks), flush=True)
        self.enqueue(a.tasks)
        print(self.notes[-1], flush=True)
        print(title, flush=True)
        rows = measure()
        print()
        print("%-52s %12s %12s %10s" % ("benchmark", "Celerity", "Celery", "range"))
        for r in rows:
            print("%-52s %12s %12s %10s" % r)
        print("Logs: %s" % self.tmp)
        return 0

    def run(self):
        a = self.args
        if a.only_dashboard:
            return self.single_row("i. history + dashboard, Celerity worker…", self.dashboard_cost)
        if a.only_limits:
            return self.single_row("h. rate limit off / on, Celerity worker…", self.limit_cost)
        if a.only_schema:
            return self.single_row("j. argument schema off / on, Celerity worker…", self.schema_cost)
        if a.only_events:
            return self.single_row("g. events off / on, Celerity worker…", self.events_cost)
        self.start_redis()
        print("Redis: %s; concurrency %d for both workers (Celery pool: %s); %d tasks to drain" % (self.url, a.concurrency, a.celery_pool, a.tasks), flush=True)
        self.enqueue(a.tasks)
        print(self.notes[-1], flush=True)
        self.enqueue_workflows()

        # Celery worker: drain, latency, compute, memory.
        cel = self.celery_worker("add,factorial,mat_mul", "celery")
        time.sleep(0.5)
        cel_idle = rss_kb(process_tree(cel.pid), "VmRSS")
        self.cel_idle_anon = rss_kb(process_tree(cel.pid), "RssAnon")
        print("a. draining with the Celery worker…", flush=True)
        cel_drain, cel_peak = self.drain(lambda: process_tree(cel.pid))
        print("   %.1f s (%.0f tasks/s)" % (cel_drain, a.tasks / cel_drain), flush=True)
        print("c. latency Python -> Celery…", flush=True)
        py_cel = self.python_latency(a.latency)
        print("d. factorial / mat_mul in the Celery worker…", flush=True)
        cel_compute = self.python_compute(a.repeats)
        cel_peak_all = rss_kb(process_tree(cel.pid), "VmHWM")
        print("f. workflows in the Celery worker…", flush=True)
        cel_chain = self.replay_workflow("chain")
        cel_chord = self.replay_workflow("chord")
        self.stop(cel)

        # Celerity worker: the same.
        cy = self.celerity_worker("add,factorial,mat_mul", "celerity-bench")
        time.sleep(0.5)
        cy_idle = rss_kb([cy.pid], "VmRSS")
        cy_idle_anon = rss_kb([cy.pid], "RssAnon")
        cel_idle_anon = self.cel_idle_anon
        print("a. draining with the Celerity worker…", flush=True)
        cy_drain, cy_peak = self.drain(lambda: [cy.pid])
        print("   %.2f s (%.0f tasks/s)" % (cy_drain, a.tasks / cy_drain), flush=True)
        self.clear_results()
        time.sleep(1)   # let Redis free the 100,000 unlinked results in the background first
        print("c. latency Celerity client -> Celerity, Python -> Celerity…", flush=True)
        cy_lat = self.swift_bench("latency", a.latency)
        py_cy = self.python_latency(a.latency)
        print("b. end to end from the Celerity client…", flush=True)
        e2e = self.swift_bench("e2e", a.e2e)
        print("d. factorial / mat_mul in the Celerity worker…", flush=True)
        cy_fact = self.swift_bench("latency", a.repeats, ["--task", "factorial_module.tasks.factorial", "--queue", "factorial", "--args", "[20000]"])
        cy_mm = self.swift_bench("latency", a.repeats, ["--task", "mat_mul_module.tasks.mat_mul", "--queue", "mat_mul", "--args", "[1000, 1000]"])
        cy_peak_all = rss_kb([cy.pid], "VmHWM")
        print("f. workflows in the Celerity worker, from the Python client's messages and from the Swift client…", flush=True)
        cy_chain = self.replay_workflow("chain")
        cy_chord = self.replay_workflow("chord")
        sw_chain = self.swift_workflow("chain")
        sw_chord = self.swift_workflow("chord")
        self.stop(cy)
        self.clear_results()
        print("g. events off / on, Celerity worker (%d rounds)…" % a.events_rounds, flush=True)
        events_rows = self.events_cost() if a.events_rounds > 0 else []
        print("h. rate limit off / on, Celerity worker (%d rounds)…" % a.limit_rounds, flush=True)
        limit_rows = self.limit_cost() if a.limit_rounds > 0 else []
        print("i. history + open dashboard, Celerity worker (%d rounds)…" % a.dashboard_rounds, flush=True)
        dashboard_rows = self.dashboard_cost() if a.dashboard_rounds > 0 else []
        print("j. argument schema off / on, Celerity worker (%d rounds)…" % a.schema_rounds, flush=True)
        schema_rows = self.schema_cost() if a.schema_rounds > 0 else []

        def ratio(x, y):
            return "%.1f×" % (x / y) if y else "n/a"
        rows = [
            ("a. drain %d add tasks (tasks/s)" % a.tasks, "%.0f" % (a.tasks / cy_drain), "%.0f" % (a.tasks / cel_drain), ratio(cel_drain, cy_drain)),
            ("b. end to end, bulk send + gather (calls/s)", "%.0f" % e2e["per_second"], "-", "target ≥30,000"),
            ("c. latency, own client: p50 ms", "%.3f" % cy_lat["p50_ms"], "%.3f" % py_cel["p50_ms"], ratio(py_cel["p50_ms"], cy_lat["p50_ms"])),
            ("c. latency, own client: p99 ms", "%.3f" % cy_lat["p99_ms"], "%.3f" % py_cel["p99_ms"], ratio(py_cel["p99_ms"], cy_lat["p99_ms"])),
            ("c. latency, Python client: p50 ms", "%.3f" % py_cy["p50_ms"], "%.3f" % py_cel["p50_ms"], ratio(py_cel["p50_ms"], py_cy["p50_ms"])),
            ("c. latency, Python client: p99 ms", "%.3f" % py_cy["p99_ms"], "%.3f" % py_cel["p99_ms"], ratio(py_cel["p99_ms"], py_cy["p99_ms"])),
            ("d. factorial(20000) round trip ms (median)", "%.1f" % cy_fact["p50_ms"], "%.1f" % cel_compute["factorial"], ratio(cel_compute["factorial"], cy_fact["p50_ms"])),
            ("d. mat_mul(1000, 1000) round trip ms (median)", "%.1f" % cy_mm["p50_ms"], "%.1f" % cel_compute["mat_mul"], ratio(cel_compute["mat_mul"], cy_mm["p50_ms"])),
            ("e. worker RSS idle (MB)", "%.1f" % (cy_idle / 1024), "%.1f" % (cel_idle / 1024), ratio(cel_idle, cy_idle)),
            ("e.   of which private, not shared libraries (MB)", "%.1f" % (cy_idle_anon / 1024), "%.1f" % (cel_idle_anon / 1024), ratio(cel_idle_anon, cy_idle_anon)),
            ("e. worker RSS peak, draining add (MB)", "%.1f" % (cy_peak / 1024), "%.1f" % (cel_peak / 1024), ratio(cel_peak, cy_peak)),
            ("e. worker RSS peak, incl. mat_mul(1000, 1000) (MB)", "%.1f" % (cy_peak_all / 1024), "%.1f" % (cel_peak_all / 1024), ratio(cel_peak_all, cy_peak_all)),
        ]
        for kind, cy_t, cel_t, sw in [("chain", cy_chain, cel_chain, sw_chain), ("chord", cy_chord, cel_chord, sw_chord)]:
            w = self.workflows.get(kind)
            if not w:
                continue
            p = "f. %s %d" % (kind, w["n"])
            rows += [
                (p + ": Python client, build + send s", "%.2f" % w["send_s"], "%.2f" % w["send_s"], "n/a"),
                (p + ": worker, queue -> final result s", "%.2f" % cy_t, "%.2f" % cel_t, ratio(cel_t, cy_t)),
                (p + ": Swift client, send s", "%.3f" % sw["send_seconds"], "-", ""),
                (p + ": Swift client, send -> final result s", "%.2f" % sw["seconds"], "-", ""),
            ]
        rows += events_rows
        rows += limit_rows
        rows += dashboard_rows
        rows += schema_rows
        print()
        print("%-52s %12s %12s %10s" % ("benchmark", "Celerity", "Celery", "ratio"))
        for r in rows:
            print("%-52s %12s %12s %10s" % r)
        print()
        print("ratio: how many times better Celerity is (Celery's time or size / Celerity's; rate / rate for drain).")
        print("c. 'own client' compares Celerity's Swift client -> Celerity worker with Python client -> Celery worker.")
        if self.workflows:
            print("f. chain N: chain(add.s(1, 1), add.s(1), ...) of N steps; chord N: chord([add.s(i, i) for i < N], tsum.s()).\n"
                  "   The Python client sends each once, to no worker; the messages are then copied into the queue of each idle\n"
                  "   worker: 'worker' is timed from that copy to the final result (the last step's, the body's), and the ratio\n"
                  "   compares only that. The Python client's own time (one run, in both columns) comes on top of it. The Swift\n"
                  "   client rows are one live run against the Celerity worker: apply() (build, freeze, push), then get().")
        if events_rows:
            print("g. ratio column: the range of the %d runs each way; the median is shown. Celerity -E publishes task events\n"
                  "   (task.multi batches); worker heartbeats go out either way. %s"
                  % (a.events_rounds, "Celery column: one run each way, with and without -E." if a.events_celery else
                     "--events-celery adds Celery's own cost of -E."))
        if dashboard_rows:
            print("i. without: a worker with `history: 0` and no dashboard; with: the default history (every outcome written\n"
                  "   to celerity:history) and a celerity dashboard read as an open page (/ every second, /metrics and /tasks\n"
                  "   every 5 s). Range column: the range of the %d runs each way, and how many pages were read." % a.dashboard_rounds)
        if schema_rows:
            print("j. range column: the range of the %d runs each way; the median is shown. Every call is bound and checked\n"
                  "   by the worker before it runs (the client checks too, before sending; not measured here)." % a.schema_rounds)
        if limit_rows:
            print("h. range column: the range of the %d runs each way; the median is shown. The limit is global (all workers\n"
                  "   together, decided in Redis per message): Celery's rate_limit is per worker and has no counterpart here." % a.limit_rounds)
        print("Workers: Celerity `celerity worker -c %d`; Celery `celery worker -P %s -c %d` (without gossip/mingle/heartbeat)."
              % (a.concurrency, a.celery_pool, a.concurrency))
        print("Logs: %s" % self.tmp)
        bad = e2e.get("wrong", 0)
        if bad:
            print("ERROR: %d wrong end-to-end results" % bad)
            return 1
        return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", type=int, default=100_000, help="add tasks to drain (a)")
    ap.add_argument("--e2e", type=int, default=100_000, help="calls for the end-to-end run (b)")
    ap.add_argument("--latency", type=int, default=2000, help="sequential calls per latency run (c)")
    ap.add_argument("--repeats", type=int, default=5, help="calls of factorial and mat_mul (d)")
    ap.add_argument("--chain-steps", type=int, default=1000, help="add steps of the chain (f; 0 skips it)")
    ap.add_argument("--chord-parts", type=int, default=10_000, help="add parts of the chord (f; 0 skips it)")
    ap.add_argument("--concurrency", type=int, default=8, help="worker concurrency, both workers")
    ap.add_argument("--celery-pool", default="threads", help="Celery worker pool: threads, prefork or solo")
    ap.add_argument("--events-rounds", type=int, default=3, help="rounds of drains without and with -E (g; 0 skips it)")
    ap.add_argument("--events-celery", action="store_true", help="g: also drain with a Celery worker without and with -E")
    ap.add_argument("--only-events", action="store_true", help="run row g alone (with --tasks)")
    ap.add_argument("--limit-rounds", type=int, default=3, help="rounds of drains without and with a rate limit (h; 0 skips it)")
    ap.add_argument("--only-limits", action="store_true", help="run row h alone (with --tasks)")
    ap.add_argument("--dashboard-rounds", type=int, default=3, help="rounds of drains without and with history + a read dashboard (i; 0 skips it)")
    ap.add_argument("--only-dashboard", action="store_true", help="run row i alone (with --tasks)")
    ap.add_argument("--schema-rounds", type=int, default=3, help="rounds of drains without and with an argument schema (j; 0 skips it)")
    ap.add_argument("--only-schema", action="store_true", help="run row j alone (with --tasks)")
    args = ap.parse_args()
    if not os.path.exists(os.path.join(BIN, "celerity-bench")):
        sys.exit("release binaries missing: run scripts/bench.sh (or swift build -c release) first")
    b = Bench(args)
    try:
        sys.exit(b.run())
    finally:
        b.cleanup()


if __name__ == "__main__":
    main()
