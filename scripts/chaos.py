#!/usr/bin/env python3
"""Reliability chaos test for Celerity workers.

Four phases on one Redis and three workers:
1. kills: N tasks while a worker is SIGKILLed every few seconds and Redis restarts once;
2. connection resets: 10,000 tasks while Redis kills every client connection
   (CLIENT KILL TYPE normal) every 0.2 s for 20 s. A fetch whose reply is lost leaves
   messages in a live worker's processing list: none may stay there ("stranded");
3. a stalled worker: one worker SIGSTOPped for 15 s (its heartbeat expires, the others take
   its list back) while 4,000 tasks flow, then SIGCONT. It may finish what it had started
   (counted as re-runs) but must start nothing it had only prefetched;
4. workflows: 300 chains of 5 steps and 100 chords of 20 parts (a `sum` body) sent by the
   real Celery client over 15 s while a worker is SIGKILLed and restarted every second, then
   5 chords whose claimer "dies" between winning the claim and sending the body (staged). No
   step may be lost or wrong, every chord body must run exactly once (its "task succeeded"
   lines; the AOF shows how often each message was sent). Step re-runs are counted.

What it proves: with workers SIGKILLed and restarted every few seconds and the Redis
server itself restarted once mid-run (SHUTDOWN, which writes the append-only file, then
a fresh start on the same port and directory), every one of N good tasks still ends up
with a correct SUCCESS result (none lost, none wrong), every malformed message lands in
the dead-letter list `celerity:dead` with a reason (and no good task does), nothing is
left in a processing list or the delayed set, and every worker still exits 0 on SIGTERM.
Delivery is at-least-once, so re-executions (a worker killed after running a task but
before acking it) are counted and reported as duplicates, not treated as errors.

It runs its own redis-server (AOF, fsync always) and its own workers in a temp dir:
    scripts/chaos.py --tasks 2000 --malformed 100 --timeout 120
Needs Python 3 with redis-py, redis-server on PATH and a built `celerity` binary.
"""
import argparse, base64, gc, json, os, random, re, shutil, signal, socket, subprocess, sys, tempfile, threading, time, uuid

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUEUE = "chaos"
ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A private redis-server with an fsync-always AOF, restartable on the same port and dir."""

    def __init__(self, tmp):
        self.tmp, self.port, self.proc = tmp, free_port(), None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.tmp,
             "--appendonly", "yes", "--appendfsync", "always", "--save", "",
             "--logfile", os.path.join(self.tmp, "redis.log")], start_new_session=True)
        client = self.client()
        deadline = time.time() + 30
        while True:
            try:
                if client.ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError):
                if self.proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"redis-server did not answer PING (see {self.tmp}/redis.log)")
                time.sleep(0.05)

    def client(self, retries=3):
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=30, retry=Retry(NoBackoff(), retries))

    def restart(self):
        try:
            self.client(retries=0).shutdown()  # fsyncs the AOF; the connection drops as it exits
        except redis.RedisError:
            pass
        self.proc.wait(timeout=60)
        self.start()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Workers:
    """W `celerity worker` processes; worker i keeps its node name and log across restarts."""

    def __init__(self, args, tmp, manifest, port):
        self.args, self.tmp, self.manifest, self.port = args, tmp, manifest, port
        self.procs, self.log_offsets, self.kills, self.closed = {}, {}, 0, False
        self.crashes = []  # workers that exited without being killed: [{worker, code, why}]
        self.lock = threading.Lock()

    def log_path(self, i):
        return os.path.join(self.tmp, f"worker-{i}.log")

    def start(self, i):
        cmd = [self.args.binary, "worker", "-Q", QUEUE, "-n", f"chaos-{i}@test", "-c", str(self.args.concurrency),
               "-l", "debug", "--manifest", self.manifest, "--broker", f"redis://127.0.0.1:{self.port}/0"]
        deadline = time.time() + 120
        with open(self.log_path(i), "ab") as log:
            self.log_offsets[i] = log.tell()
            while True:
                try:
                    self.procs[i] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                    return
                except OSError:  # missing or "text file busy": the binary is being rebuilt; retry
                    if time.time() > deadline:
                        raise
                    time.sleep(0.5)

    def kill_and_restart(self, i):
        with self.lock:
            if self.closed:
                return
            self.procs[i].kill()
            self.procs[i].wait()
            self.kills += 1
            self.start(i)

    def restart_crashed(self):
        """Workers must never exit on their own: record any that did (and the log line saying why), restart it."""
        with self.lock:
            for i, p in list(self.procs.items()):
                if self.closed or p.poll() is None:
                    continue
                with open(self.log_path(i), "rb") as f:
                    f.seek(self.log_offsets[i])
                    lines = f.read().decode(errors="replace").strip().splitlines()
                causes = [l for l in lines if l.strip() and not re.match(r"\d{4}-\d\d-\d\dT", l)]  # not a log line
                why = (causes or lines or [""])[0]
                self.crashes.append({"worker": i, "code": p.returncode, "why": why})
                if len(self.crashes) <= 5:
                    print(f"chaos: worker {i} exited on its own ({p.returncode}): {why}", flush=True)
                self.start(i)

    def wait_started(self, i, timeout=15):
        """Waits until worker i logged 'worker starting' (its SIGTERM handler is in place)."""
        deadline = time.time() + timeout
        while time.time() < deadline and self.procs[i].poll() is None:
            with open(self.log_path(i), "rb") as f:
                f.seek(self.log_offsets[i])
                if b"worker starting" in f.read():
                    return
            time.sleep(0.1)

    def terminate_all(self, grace=30.0):
        """SIGTERM everyone; returns ({i: exit code}, [i that had to be SIGKILLed])."""
        for i in self.procs:
            self.wait_started(i)
            self.procs[i].send_signal(signal.SIGTERM)
        deadline, codes, killed = time.time() + grace, {}, []
        for i, p in self.procs.items():
            try:
                codes[i] = p.wait(timeout=max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                p.kill()
                codes[i] = p.wait()
                killed.append(i)
        return codes, killed

    def kill_all(self):
        with self.lock:
            self.closed = True
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


def envelope(task, task_id, args):
    """A Celery protocol-v2 message, built like TaskMessage.encode()."""
    embed = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
    body = base64.b64encode(json.dumps([args, {}, embed]).encode()).decode()
    headers = {"lang": "py", "task": task, "id": task_id, "shadow": None, "eta": None, "expires": None,
               "group": None, "group_index": None, "retries": 0, "timelimit": [None, None],
               "root_id": task_id, "parent_id": None, "argsrepr": "(" + ", ".join(map(str, args)) + ")",
               "kwargsrepr": "{}", "origin": ORIGIN, "ignore_result": False,
               "replaced_task_nesting": 0, "stamped_headers": None, "stamps": {}}
    props = {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
             "delivery_info": {"exchange": "", "routing_key": QUEUE}, "priority": 0,
             "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    return json.dumps({"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                       "headers": headers, "properties": props})


def malformed(k):
    """Message k of four kinds of garbage, each text unique so it can be found among dead letters."""
    props = {"delivery_info": {"exchange": "", "routing_key": QUEUE}, "body_encoding": "base64",
             "delivery_tag": str(uuid.uuid4())}
    kind = k % 4
    if kind == 0:
        return f"chaos garbage #{k}: this is not JSON {{"
    if kind == 1:
        return json.dumps({"body": "W1tdLCB7fSwge31d", "properties": props, "chaos": k})
    if kind == 2:
        return json.dumps({"headers": {"id": f"malformed-{k}"}, "body": "W1tdLCB7fSwge31d", "properties": props})
    bad_body = base64.b64encode(json.dumps({"args": [k, k]}).encode()).decode()
    return json.dumps({"headers": {"task": "chaos.add", "id": f"malformed-{k}"}, "content-type": "application/json",
                       "body": bad_body, "properties": props})


def write_manifest(tmp, token):
    path = os.path.join(tmp, "tasks.yaml")
    plugin = os.path.join(REPO, "plugins", "py_tasks.py")
    with open(path, "w") as f:
        # Every message in a killed worker's processing list counts one delivery, prefetched or
        # started. The workflow phase kills one of three workers every second (each dies every
        # ~3 s), so on a loaded machine a chord part held across kills reached the default
        # max_redeliveries (3) and was dead-lettered as a poison pill, as designed. The phases
        # check that nothing is lost to the kills, so they allow more deliveries.
        f.write(f"""defaults:
  max_redeliveries: 8
tasks:
  chaos.add:
    queue: {QUEUE}
    builtin: add
  chaos.sum:
    queue: {QUEUE}
    builtin: sum
  plugins.py_add:
    queue: {QUEUE}
    plugin: [python3, {json.dumps(plugin)}]
    mode: persistent
    processes: 2
    set_env: {{CHAOS_RUN: {json.dumps(token)}}}
""")
    return path


def enqueue(r, n, m):
    """LPUSHes n good tasks and m malformed messages (at random positions); returns what was sent."""
    good, bad = {}, []  # good: id -> (expected result, message text)
    items = []
    for i in range(n):
        tid = str(uuid.uuid4())
        text = envelope("chaos.add" if i % 2 == 0 else "plugins.py_add", tid, [i, i])
        good[tid] = (2 * i, text)
        items.append(text)
    for k in range(m):
        bad.append(malformed(k))
        items.insert(random.randint(0, len(items)), bad[-1])
    for start in range(0, len(items), 500):
        r.lpush(QUEUE, *items[start:start + 500])
    return good, bad


def count_results(r, pending):
    """Removes from `pending` every id whose result document exists (EXISTS pipelined by 1000)."""
    ids = list(pending)
    for start in range(0, len(ids), 1000):
        batch = ids[start:start + 1000]
        pipe = r.pipeline(transaction=False)
        for tid in batch:
            pipe.exists(f"celery-task-meta-{tid}")
        for tid, exists in zip(batch, pipe.execute()):
            if exists:
                pending.discard(tid)


TASK_ID = re.compile(r"task_id=([0-9a-f-]{36})")


def scan_logs(tmp, workers):
    """Executions per task id ("task succeeded" lines), and how often a result could not be stored."""
    not_stored = sum(1 for i in range(workers) for line in log_lines(tmp, i) if "result not stored" in line)
    return executions(tmp, workers, [0] * workers), not_stored


def leftover_plugins(token):
    """Plugin processes of this run (tagged via set_env) still alive: they are killed and counted."""
    found = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if f"CHAOS_RUN={token}".encode() in f.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
                    found += 1
        except (OSError, ProcessLookupError):
            pass
    return found


def message_key(text, field="delivery_tag"):
    """A message's delivery_tag (or task id), if it is a JSON envelope with one; else its text."""
    try:
        env = json.loads(text)
        return (env["properties"] if field == "delivery_tag" else env["headers"])[field]
    except (ValueError, KeyError, TypeError):
        return text


def verify(r, good, bad, tmp, workers):
    rep = {"lost": 0, "wrong": 0}
    ids = list(good)
    for start in range(0, len(ids), 1000):
        batch = ids[start:start + 1000]
        for tid, raw in zip(batch, r.mget([f"celery-task-meta-{t}" for t in batch])):
            if raw is None:
                rep["lost"] += 1
                continue
            doc = json.loads(raw)
            if doc.get("status") != "SUCCESS" or doc.get("result") != good[tid][0]:
                rep["wrong"] += 1
    entries = [json.loads(e) for e in r.lrange("celerity:dead", 0, -1)]
    rep["dead_letters"] = len(entries)
    rep["dead_letters_queue_chaos"] = sum(1 for e in entries if e.get("queue") == QUEUE)
    # Match by exact text; a message redelivered after a kill may come back re-serialized with
    # redelivery headers added, so JSON ones also match by their (unique) delivery_tag.
    by_key = {message_key(e.get("message", "")): e for e in entries}
    bad_found = [(b, by_key[message_key(b)]) for b in bad if message_key(b) in by_key]
    rep["malformed_dead_lettered"] = len(bad_found)
    rep["malformed_rewritten"] = sum(1 for b, e in bad_found if e.get("message") != b)
    rep["malformed_with_reason"] = sum(1 for _, e in bad_found if e.get("reason"))
    rep["malformed_dead_lettered_other_queue"] = sum(1 for _, e in bad_found if e.get("queue") != QUEUE)
    rep["good_dead_lettered"] = sum(1 for e in entries if message_key(e.get("message", ""), "id") in good)
    counts, rep["results_not_stored_logged"] = scan_logs(tmp, workers)
    rep["executions"] = sum(counts.get(t, 0) for t in good)
    rep["duplicates"] = sum(max(0, counts.get(t, 0) - 1) for t in good)
    rep["processing_lists_nonempty"] = {k.decode(): r.llen(k) for k in r.scan_iter("celerity:processing:*") if r.llen(k)}
    rep["delayed"] = r.zcard("celerity:delayed")
    rep["left_in_queue"] = r.llen(QUEUE)
    return rep


def log_offsets(tmp, workers):
    return [os.path.getsize(os.path.join(tmp, f"worker-{i}.log")) for i in range(workers)]


def log_lines(tmp, i, start=0, end=None):
    with open(os.path.join(tmp, f"worker-{i}.log"), "rb") as f:
        f.seek(start)
        data = f.read() if end is None else f.read(max(0, end - start))
    return data.decode(errors="replace").splitlines()


def executions(tmp, workers, offsets, ids=None):
    """Executions ("task succeeded" lines) per task id (of `ids`, if given), in the logs from `offsets` on."""
    counts = {}
    for i in range(workers):
        for line in log_lines(tmp, i, offsets[i]):
            if "task succeeded" in line:
                m = TASK_ID.search(line)
                if m and (ids is None or m.group(1) in ids):
                    counts[m.group(1)] = counts.get(m.group(1), 0) + 1
    return counts


def wait_results(r, ids, timeout):
    pending, deadline = set(ids), time.time() + timeout
    while pending and time.time() < deadline:
        try:
            count_results(r, pending)
        except redis.ConnectionError:
            pass
        if pending:
            time.sleep(0.25)
    return pending


def processing_total(r):
    return sum(r.llen(k) for k in r.scan_iter("celerity:processing:*"))


def settle_processing(r, seconds):
    """Waits up to `seconds` for every processing list to be empty; returns what is left."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        left = processing_total(r)
        if left == 0:
            return 0
        time.sleep(0.25)
    return processing_total(r)


def storm_phase(r, server, args, tmp):
    """Phase 2: connection resets while tasks flow; nothing may stay stranded."""
    offsets = log_offsets(tmp, args.workers)
    good, texts = {}, []
    for i in range(args.storm_tasks):
        tid = str(uuid.uuid4())
        texts.append(envelope("chaos.add" if i % 2 == 0 else "plugins.py_add", tid, [i, i]))
        good[tid] = 2 * i
    kills, errors, stop = [0], [], threading.Event()
    def feed():
        """Fed through the storm (not all at once), so fetches keep meeting killed connections."""
        feeder = server.client(retries=5)
        rounds = max(1, int(args.storm_seconds / 0.2) - 10)
        per = -(-len(texts) // rounds)
        for start in range(0, len(texts), per):
            marker = f"chaos:fed:{start}"
            for attempt in range(50):
                try:
                    # With a marker in the same transaction: a batch whose reply the storm cut
                    # off is not pushed twice (a duplicate message would be a re-run).
                    if not feeder.exists(marker):
                        pipe = feeder.pipeline(transaction=True)
                        pipe.lpush(QUEUE, *texts[start:start + per])
                        pipe.set(marker, 1, ex=600)
                        pipe.execute()
                    break
                except redis.ConnectionError:  # the storm killed this connection: look again
                    time.sleep(0.05)
            time.sleep(0.2)
    def storm():
        admin = server.client(retries=0)
        end = time.time() + args.storm_seconds
        while time.time() < end and not stop.is_set():
            try:
                kills[0] += admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            except redis.RedisError as e:
                errors.append(repr(e))
            time.sleep(0.2)
    t0 = time.time()
    killer = threading.Thread(target=storm, daemon=True)
    killer.start()
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    pending = wait_results(r, good, args.storm_seconds + 90)
    feeder.join()
    stop.set()
    killer.join()
    # Every result is in (or the time is up): nothing may be left in a live worker's list.
    stranded = settle_processing(r, 15)
    counts = executions(tmp, args.workers, offsets, good)
    rep = {"tasks": len(good), "connections_killed": kills[0], "lost": len(pending), "stranded": stranded,
           "reruns": sum(max(0, c - 1) for c in counts.values()), "time_s": round(time.time() - t0, 1)}
    print(f"chaos: storm: {rep}", flush=True)
    return rep


def stall_phase(r, workers, args, tmp):
    """Phase 3: one worker stalled (SIGSTOP) past its heartbeat; re-runs only of started tasks."""
    offsets = log_offsets(tmp, args.workers)
    good, _ = enqueue(r, args.stall_tasks, 0)
    t0 = time.time()
    time.sleep(0.5)
    victim = workers.procs[0]
    victim.send_signal(signal.SIGSTOP)
    stopped_time = time.time()
    stopped_at = os.path.getsize(workers.log_path(0))
    time.sleep(args.stall_seconds)
    victim.send_signal(signal.SIGCONT)
    pending = wait_results(r, good, 120)
    time.sleep(3)  # what the resumed worker does with what it had fetched
    counts = executions(tmp, args.workers, offsets, good)
    # Started before the stall: logged before it. The log is read by its lines' time, not by
    # the file's size at SIGSTOP: lines the worker had written but not yet flushed reach the
    # file only after SIGCONT (seen: a task started and finished at the second of the stop,
    # its lines in the file after it). Anything stamped before the middle of the stall was
    # written before it (timestamps are whole seconds).
    cut = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(stopped_time + args.stall_seconds / 2))
    started_before = set()
    for line in log_lines(tmp, 0, offsets[0]):
        if ("task started" in line or "task succeeded" in line) and line[:19] < cut:
            m = TASK_ID.search(line)
            if m:
                started_before.add(m.group(1))
    reruns = [t for t, c in counts.items() if c > 1]
    after = log_lines(tmp, 0, stopped_at)
    rep = {"tasks": len(good), "stalled_s": args.stall_seconds, "lost": len(pending),
           "reruns": len(reruns), "reruns_of_started": sum(1 for t in reruns if t in started_before),
           "reruns_never_started": sum(1 for t in reruns if t not in started_before),
           "prefetched_not_started": sum(1 for l in after if "not started: another worker took" in l),
           "stranded": settle_processing(r, 15), "time_s": round(time.time() - t0, 1)}
    print(f"chaos: stall: {rep}", flush=True)
    return rep


def aof_files(tmp):
    """The append-only files of the private Redis (Redis 7 keeps them in appendonlydir/)."""
    d = os.path.join(tmp, "appendonlydir")
    if os.path.isdir(d):
        return [os.path.join(d, f) for f in sorted(os.listdir(d)) if f.endswith(".aof")]
    single = os.path.join(tmp, "appendonly.aof")
    return [single] if os.path.exists(single) else []


def aof_mark(r, tmp):
    """Stops automatic AOF rewrites (they would fold the phase's history away) and returns the
    files' sizes: what is written after this mark is every write command of the phase."""
    r.config_set("auto-aof-rewrite-percentage", 0)
    deadline = time.time() + 30
    while time.time() < deadline:
        info = r.info("persistence")
        if not info.get("aof_rewrite_in_progress") and not info.get("aof_rewrite_scheduled"):
            break
        time.sleep(0.1)
    return {f: os.path.getsize(f) for f in aof_files(tmp)}


def aof_commands(data):
    """The commands of an AOF slice (RESP arrays); starts at the first one found."""
    pos = 0 if data[:1] == b"*" else data.find(b"\r\n*") + 2
    if pos == 1:  # none
        return
    n = len(data)
    while pos < n:
        if data[pos:pos + 1] != b"*":
            return
        end = data.find(b"\r\n", pos)
        if end < 0:
            return
        count, pos, args = int(data[pos + 1:end]), end + 2, []
        for _ in range(count):
            end = data.find(b"\r\n", pos)
            if end < 0 or data[pos:pos + 1] != b"$":
                return
            size = int(data[pos + 1:end])
            args.append(data[end + 2:end + 2 + size])
            pos = end + 2 + size + 2
        if pos > n:
            return
        yield args


def aof_pushes(tmp, mark, ids):
    """Per task id of `ids`: how many times a message with that id was sent (LPUSH: by a
    client, a finished step, a chord's last part) and pushed back (RPUSH: handed back after
    its worker died, or returned unstarted), read from the AOF written since `mark`.
    None when there is no AOF to read."""
    files = aof_files(tmp)
    if not files:
        return None
    sent, back = {}, {}
    for f in files:
        with open(f, "rb") as fh:
            fh.seek(mark.get(f, 0))
            data = fh.read()
        for args in aof_commands(data):
            verb = args[0].upper()
            if verb not in (b"LPUSH", b"RPUSH"):
                continue
            for value in args[2:]:
                if b'"headers"' not in value:
                    continue
                tid = message_key(value.decode(errors="replace"), "id")
                if tid in ids:
                    into = sent if verb == b"LPUSH" else back
                    into[tid] = into.get(tid, 0) + 1
    return sent, back


def send_workflows(app, args, chains, chords):
    """Sends the phase's chains and chords with the real Celery client, spread over
    --workflow-seconds so that kills land while every kind of step is in flight.
    Appends (ids of the steps in order, expected results) and (body id, group id, part ids,
    part results, body result)."""
    from celery import chain, chord
    add, tsum = app.signature("chaos.add"), app.signature("chaos.sum")
    S, P = args.workflow_steps, args.workflow_parts
    rounds = max(1, int(args.workflow_seconds / 0.25))
    t0 = time.time()
    for k in range(rounds):
        for i in range(k * args.workflow_chains // rounds, (k + 1) * args.workflow_chains // rounds):
            res = chain(add.clone(args=(i, i)), *[add.clone(args=(s,)) for s in range(1, S)]).apply_async()
            ids, node = [], res
            while node is not None:
                ids.append(node.id)
                node = node.parent
            values = [2 * i]
            for s in range(1, S):
                values.append(values[-1] + s)
            chains.append((ids[::-1], values))
        for i in range(k * args.workflow_chords // rounds, (k + 1) * args.workflow_chords // rounds):
            res = chord([add.clone(args=(i, j)) for j in range(P)], tsum.clone()).apply_async()
            chords.append((res.id, res.parent.id, [p.id for p in res.parent.results], [i + j for j in range(P)],
                           sum(i + j for j in range(P))))
        time.sleep(max(0.0, t0 + (k + 1) * 0.25 - time.time()))


def staged_dead_claimers(app, r, args):
    """Chords whose last part's worker died right after it won the claim to send the body
    (Redis `.c`) and before it sent it: a window of a few round trips that the random kills
    hit only now and then (once in three runs before the fix), so it is staged too. Each chord's parts go to a side queue no worker reads; all
    but the last are moved to the workers' queue and run; then what the dying worker did is
    written (its part recorded in `.j`/`.d` as the part-return script does, the claim won
    for --workflow-claim-lapse seconds) and its message handed back, as its restart would.
    The re-run must find the chord claimed, wait for the claim to lapse, and send the body."""
    from celery import chord
    add, tsum, side = app.signature("chaos.add"), app.signature("chaos.sum"), QUEUE + "-staged"
    staged = []
    for k in range(args.workflow_staged):
        res = chord([add.clone(args=(k, j), queue=side) for j in range(3)], tsum.clone()).apply_async()
        staged.append((res.id, res.parent.id, [p.id for p in res.parent.results], [k, k + 1, k + 2], 3 * k + 3))
    held = {message_key(m.decode(), "id"): m for m in r.lrange(side, 0, -1)}
    def hand_over(tid, push):
        env = json.loads(held[tid])
        env["properties"]["delivery_info"]["routing_key"] = QUEUE
        r.lrem(side, 1, held[tid])
        push(QUEUE, json.dumps(env))
    for _, _, parts, _, _ in staged:
        for t in parts[:-1]:
            hand_over(t, r.lpush)
    wait_results(r, [t for _, _, parts, _, _ in staged for t in parts[:-1]], 30)
    for _, group, parts, values, _ in staged:
        key = f"celery-taskset-meta-{group}"
        r.zadd(key + ".j", {json.dumps([1, parts[-1], "SUCCESS", values[-1]]): 2})
        r.sadd(key + ".d", f"{parts[-1]}:2")
        r.set(key + ".c", "0staged0dead0claimer0", nx=True, ex=args.workflow_claim_lapse)
        hand_over(parts[-1], r.rpush)
    return staged


def workflow_phase(r, server, workers, args, tmp):
    """Phase 4: chains and chords sent by the real Celery client while a worker is SIGKILLed
    (and restarted) every --workflow-kill-every seconds. No step may be lost, every chord's
    body must run exactly once; re-runs of steps (at-least-once) are counted."""
    from celery import Celery
    url = f"redis://127.0.0.1:{server.port}/0"
    app = Celery("chaos", broker=url, backend=url)
    app.conf.task_routes = {"chaos.*": {"queue": QUEUE}}   # the first step's queue; the worker routes the rest
    offsets = log_offsets(tmp, args.workers)
    mark = aof_mark(r, tmp)
    kills0, crashes0, t0 = workers.kills, len(workers.crashes), time.time()
    stop, errors = threading.Event(), []
    def kill_loop():
        try:
            while not stop.wait(args.workflow_kill_every):
                workers.restart_crashed()
                workers.kill_and_restart(random.randrange(args.workers))
        except Exception as e:
            errors.append(repr(e))
    killer = threading.Thread(target=kill_loop, daemon=True)
    killer.start()
    chains, chords = [], []
    try:
        send_workflows(app, args, chains, chords)
    except Exception as e:  # the client failed: what was sent is still checked
        errors.append(f"sending: {e!r}")
    sent_s = time.time() - t0
    finals = [ids[-1] for ids, _ in chains] + [body for body, *_ in chords]
    pending = wait_results(r, finals, 60)
    stop.set()
    killer.join()
    for i in range(args.workers):
        workers.wait_started(i)
    staged = []
    if args.workflow_staged:
        try:
            staged = staged_dead_claimers(app, r, args)
        except Exception as e:
            errors.append(f"staging: {e!r}")
        pending |= wait_results(r, [body for body, *_ in staged], args.workflow_claim_lapse + 30)
    stranded = settle_processing(r, 15)
    # The client keeps every chord part's AsyncResult as a pending result (it would wait on
    # them); they go now, while it can still unsubscribe, not at exit with Python half gone.
    for pending_results in getattr(app.backend, "_pending_results", ()):
        pending_results.clear()
    gc.collect()
    try:
        app.close()
    except Exception:
        pass

    expected = {}   # id -> result, every step, part and body
    for ids, values in chains:
        expected.update(zip(ids, values))
    for body, _, parts, values, total in chords + staged:
        expected.update(zip(parts, values))
        expected[body] = total
    got = {}
    ids = list(expected)
    for start in range(0, len(ids), 1000):
        batch = ids[start:start + 1000]
        for tid, raw in zip(batch, r.mget([f"celery-task-meta-{t}" for t in batch])):
            got[tid] = None if raw is None else json.loads(raw)
    def lost(t): return got[t] is None
    def wrong(t): return got[t] is not None and (got[t].get("status") != "SUCCESS" or got[t].get("result") != expected[t])
    bodies = [body for body, *_ in chords + staged]
    steps = [t for t in expected if t not in set(bodies)]
    staged_parts = {t for _, _, parts, *_ in staged for t in parts}   # sent twice on purpose (to the side queue, then over)
    runs = executions(tmp, args.workers, offsets, set(expected))
    pushes = aof_pushes(tmp, mark, set(expected))
    sent, back = pushes if pushes is not None else ({}, {})
    # A body that ran twice is a failure unless the AOF shows it was sent once and handed
    # back once its worker died (its own at-least-once re-run, like any task's).
    body_reruns_redelivered = [b for b in bodies if runs.get(b, 0) > 1 and pushes is not None
                               and sent.get(b, 0) == 1 and back.get(b, 0) >= runs[b] - 1]
    bodies_run_twice = [b for b in bodies if runs.get(b, 0) > 1 and b not in body_reruns_redelivered]
    chord_keys_left = sum(1 for _, g, *_ in chords + staged
                          if r.exists(*[f"celery-taskset-meta-{g}{s}" for s in (".s", ".j", ".d")]))
    dead = [message_key(json.loads(e).get("message", ""), "id") for e in r.lrange("celerity:dead", 0, -1)]
    rep = {"chains": args.workflow_chains, "chains_sent": len(chains), "steps": args.workflow_steps,
           "chords": args.workflow_chords, "chords_sent": len(chords), "parts": args.workflow_parts,
           "kills": workers.kills - kills0, "unexpected_exits": len(workers.crashes) - crashes0,
           "chains_lost": sum(1 for ids, _ in chains if any(lost(t) for t in ids)),
           "chords_lost": sum(1 for b, _, parts, *_ in chords + staged if lost(b) or any(lost(t) for t in parts)),
           "steps_lost": sum(1 for t in steps if lost(t)), "wrong": sum(1 for t in expected if wrong(t)),
           "bodies_missing": sum(1 for b in bodies if lost(b)),
           "bodies_run_twice": len(bodies_run_twice), "bodies_never_run": sum(1 for b in bodies if runs.get(b, 0) == 0),
           "bodies_sent_twice": None if pushes is None else sum(1 for b in bodies if sent.get(b, 0) > 1),
           "body_reruns_redelivered": len(body_reruns_redelivered),
           "step_reruns": sum(max(0, runs.get(t, 0) - 1) for t in steps),
           "steps_sent_twice": None if pushes is None else sum(1 for t in steps if sent.get(t, 0) > 1 and t not in staged_parts),
           "dead_lettered": sum(1 for t in dead if t in expected), "chord_keys_left": chord_keys_left,
           "staged_requested": args.workflow_staged, "staged": len(staged), "staged_completed": sum(1 for b, *_ in staged if not lost(b) and not wrong(b) and runs.get(b, 0) == 1),
           "stranded": stranded, "timed_out": len(pending), "errors": errors,
           "send_s": round(sent_s, 1), "time_s": round(time.time() - t0, 1)}
    print(f"chaos: workflows: {rep}", flush=True)
    return rep


def judge(rep):
    """The reasons the run failed (empty: PASS)."""
    why = []
    for phase in ("storm", "stall"):
        p = rep.get(phase)
        if p is None:
            continue
        if p["lost"]: why.append(f"{phase}: {p['lost']} lost")
        if p["stranded"]: why.append(f"{phase}: {p['stranded']} stranded in processing lists")
    if rep.get("storm") and rep["storm"]["connections_killed"] == 0: why.append("storm: no connection was killed")
    # Storm re-runs are reported, not failed: on a loaded machine a worker's heartbeat can
    # lapse while its connections keep being killed; its running tasks then run again.
    if rep.get("stall") and rep["stall"]["reruns_never_started"]:
        why.append(f"stall: {rep['stall']['reruns_never_started']} tasks re-run that the stalled worker had not started")
    w = rep.get("workflows")
    if w is not None:
        if w["errors"]: why.append(f"workflows: {w['errors'][0]}")
        if (w["chains_sent"], w["chords_sent"]) != (w["chains"], w["chords"]): why.append("workflows: not everything was sent")
        if w["steps_lost"] or w["chains_lost"] or w["chords_lost"]:
            why.append(f"workflows: {w['steps_lost']} steps lost ({w['chains_lost']} chains, {w['chords_lost']} chords incomplete)")
        if w["wrong"]: why.append(f"workflows: {w['wrong']} wrong results")
        if w["bodies_run_twice"]: why.append(f"workflows: {w['bodies_run_twice']} chord bodies ran twice")
        if w["bodies_never_run"]: why.append(f"workflows: {w['bodies_never_run']} chord bodies never ran")
        if w["bodies_sent_twice"]: why.append(f"workflows: {w['bodies_sent_twice']} chord bodies sent twice")
        if w["stranded"]: why.append(f"workflows: {w['stranded']} stranded in processing lists")
        if w["kills"] == 0: why.append("workflows: no worker was killed")
        if w["staged_completed"] != w["staged_requested"]:
            why.append(f"workflows: {w['staged_requested'] - w['staged_completed']} chords whose claimer died (staged) not completed exactly once")
    if rep["lost"]: why.append(f"{rep['lost']} lost")
    if rep["wrong"]: why.append(f"{rep['wrong']} wrong")
    if rep["malformed_dead_lettered"] != rep["malformed"]: why.append("malformed messages missing from dead letters")
    if rep["malformed_with_reason"] != rep["malformed"]: why.append("dead letters without a reason")
    if rep["good_dead_lettered"]: why.append(f"{rep['good_dead_lettered']} good tasks dead-lettered")
    if rep["redis_restarts"] != 1: why.append("redis was not restarted")
    if rep["kill_loop_errors"]: why.append(f"kill loop failed: {rep['kill_loop_errors'][0]}")
    if rep["unexpected_worker_exits"]: why.append(f"{len(rep['unexpected_worker_exits'])} worker exits nobody asked for")
    if rep["workers_sigkilled"]: why.append(f"workers {rep['workers_sigkilled']} ignored SIGTERM for 30 s")
    codes = {i: c for i, c in rep["worker_exit_codes"].items() if i not in rep["workers_sigkilled"]}
    if any(codes.values()): why.append(f"worker exit codes {codes}")
    if rep["processing_lists_nonempty"]: why.append(f"processing lists not empty: {rep['processing_lists_nonempty']}")
    if rep["delayed"]: why.append(f"{rep['delayed']} messages in the delayed set")
    return why


def print_report(rep):
    crashes = len(rep["unexpected_worker_exits"])
    print(f"tasks: {rep['tasks']}")
    print(f"malformed: {rep['malformed']} (dead-lettered: {rep['malformed_dead_lettered']}, "
          f"with reason: {rep['malformed_with_reason']}; dead letters for queue '{QUEUE}': "
          f"{rep['dead_letters_queue_chaos']} of {rep['dead_letters']}; re-serialized: {rep['malformed_rewritten']})")
    print(f"workers: {rep['workers']}")
    print(f"kills: {rep['kills']}" + (f" (+ {crashes} unexpected exits)" if crashes else ""))
    print(f"redis restarts: {rep['redis_restarts']}")
    print(f"lost: {rep['lost']}")
    print(f"wrong: {rep['wrong']}")
    print(f"duplicates: {rep['duplicates']}  (executions logged: {rep['executions']})")
    if rep["results_not_stored_logged"]:
        print(f"warning: {rep['results_not_stored_logged']} 'result not stored' log lines (message left unacked)")
    print(f"left in queue after stop: {rep['left_in_queue']}; leftover plugin processes: {rep['leftover_plugin_processes']}")
    print(f"time: {rep['time_s']} s")
    print(f"throughput: {rep['throughput']} tasks/s")
    if rep.get("storm"):
        s = rep["storm"]
        print(f"connection-reset storm: {s['tasks']} tasks, {s['connections_killed']} connections killed: "
              f"lost {s['lost']}, stranded {s['stranded']}, re-runs {s['reruns']} ({s['time_s']} s)")
    if rep.get("stall"):
        s = rep["stall"]
        print(f"stalled worker: {s['tasks']} tasks, SIGSTOP {s['stalled_s']} s: lost {s['lost']}, stranded {s['stranded']}, "
              f"re-runs {s['reruns']} (of started tasks {s['reruns_of_started']}, of never started {s['reruns_never_started']}), "
              f"prefetched messages it did not start {s['prefetched_not_started']}")
    if rep.get("workflows"):
        w = rep["workflows"]
        print(f"workflows: {w['chains_sent']} chains of {w['steps']} steps and {w['chords_sent']} chords of {w['parts']} parts "
              f"(real Celery client), {w['kills']} workers killed: lost {w['steps_lost']} steps "
              f"({w['chains_lost']} chains, {w['chords_lost']} chords), wrong {w['wrong']}, "
              f"chord bodies run twice {w['bodies_run_twice']}, never {w['bodies_never_run']}, sent twice {w['bodies_sent_twice']}, "
              f"re-run after their own worker died {w['body_reruns_redelivered']}; step re-runs {w['step_reruns']}, "
              f"steps sent twice {w['steps_sent_twice']}, dead-lettered {w['dead_lettered']}, stranded {w['stranded']}, "
              f"chord keys left {w['chord_keys_left']}; claimer died before sending the body (staged): "
              f"{w['staged_completed']} of {w['staged_requested']} chords completed once ({w['time_s']} s)")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--binary", default=os.path.join(REPO, ".build/debug/celerity"))
    ap.add_argument("--tasks", type=int, default=20000)
    ap.add_argument("--malformed", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=3)
    ap.add_argument("--kill-every", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=240)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--storm-tasks", type=int, default=10000, help="tasks of the connection-reset phase (0: skip it)")
    ap.add_argument("--storm-seconds", type=float, default=20)
    ap.add_argument("--stall-tasks", type=int, default=4000, help="tasks of the stalled-worker phase (0: skip it)")
    ap.add_argument("--stall-seconds", type=float, default=15)
    ap.add_argument("--workflow-chains", type=int, default=300, help="chains of the workflow phase (0 with --workflow-chords 0: skip it)")
    ap.add_argument("--workflow-steps", type=int, default=5, help="steps per chain (chaos.add)")
    ap.add_argument("--workflow-chords", type=int, default=100, help="chords of the workflow phase")
    ap.add_argument("--workflow-parts", type=int, default=20, help="parts per chord (chaos.add; the body is chaos.sum)")
    ap.add_argument("--workflow-seconds", type=float, default=15, help="time over which the workflows are sent")
    ap.add_argument("--workflow-staged", type=int, default=5, help="chords whose claimer dies before sending the body (staged)")
    ap.add_argument("--workflow-claim-lapse", type=int, default=3, help="seconds the staged dead claimer's claim holds")
    ap.add_argument("--workflow-kill-every", type=float, default=1.0, help="seconds between SIGKILLs in the workflow phase")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir even on PASS")
    args = ap.parse_args()
    args.binary = os.path.abspath(args.binary)
    def interrupted(*_):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)

    tmp = tempfile.mkdtemp(prefix="celerity-chaos-")
    token = os.path.basename(tmp)
    server, workers, passed = RedisServer(tmp), None, False
    stop_chaos = threading.Event()
    try:
        server.start()
        print(f"chaos: redis on port {server.port}, temp dir {tmp}", flush=True)
        manifest = write_manifest(tmp, token)
        workers = Workers(args, tmp, manifest, server.port)
        for i in range(args.workers):
            workers.start(i)
        r = server.client()
        t0 = time.time()
        good, bad = enqueue(r, args.tasks, args.malformed)
        print(f"chaos: enqueued {len(good)} tasks + {len(bad)} malformed in {time.time() - t0:.1f} s", flush=True)

        chaos_errors = []

        def chaos_loop():
            try:
                next_kill = time.time() + args.kill_every
                while not stop_chaos.wait(0.2):
                    workers.restart_crashed()
                    if time.time() >= next_kill:
                        workers.kill_and_restart(random.randrange(args.workers))
                        next_kill += args.kill_every
            except Exception as e:  # a worker that cannot be restarted ends the chaos (and the run fails)
                chaos_errors.append(repr(e))
                print(f"chaos: kill loop failed: {e!r}", flush=True)
        killer = threading.Thread(target=chaos_loop, daemon=True)
        killer.start()

        pending, restarts, last_print = set(good), 0, 0.0
        deadline = t0 + args.timeout
        while pending and time.time() < deadline and len(workers.crashes) < 10 * args.workers:
            try:
                count_results(r, pending)
            except redis.ConnectionError:
                pass
            done = len(good) - len(pending)
            if restarts == 0 and done >= len(good) / 3:
                print(f"chaos: {done} results: restarting redis-server", flush=True)
                t = time.time()
                server.restart()
                restarts += 1
                print(f"chaos: redis-server back after {time.time() - t:.1f} s", flush=True)
            if time.time() - last_print >= 10:
                print(f"chaos: {time.time() - t0:5.0f} s  {done}/{len(good)} results, {workers.kills} kills", flush=True)
                last_print = time.time()
            if pending:
                time.sleep(0.5)
        elapsed = time.time() - t0
        stop_chaos.set()
        killer.join()
        phases = {}
        if not pending:
            for i in range(args.workers):
                workers.wait_started(i)
            if args.storm_tasks:
                phases["storm"] = storm_phase(r, server, args, tmp)
            if args.stall_tasks:
                phases["stall"] = stall_phase(r, workers, args, tmp)
            if args.workflow_chains or args.workflow_chords:
                phases["workflows"] = workflow_phase(r, server, workers, args, tmp)
        codes, sigkilled = workers.terminate_all()
        time.sleep(0.5)
        leaked = leftover_plugins(token)

        rep = verify(r, good, bad, tmp, args.workers)
        rep.update(tasks=len(good), malformed=len(bad), workers=args.workers, kills=workers.kills,
                   redis_restarts=restarts, time_s=round(elapsed, 1), throughput=round(len(good) / elapsed, 1),
                   timed_out=bool(pending), worker_exit_codes=codes, workers_sigkilled=sigkilled,
                   leftover_plugin_processes=leaked, kill_loop_errors=chaos_errors,
                   unexpected_worker_exits=workers.crashes, **phases)
        why = judge(rep)
        passed = not why
        rep["result"] = "PASS" if passed else "FAIL (" + "; ".join(why) + ")"
        print_report(rep)
        path = os.path.join(tmp, "report.json")
        with open(path, "w") as f:
            json.dump(rep, f, indent=2)
        print(f"report: {path}" + ("" if args.keep or not passed else " (removed with the temp dir; --keep keeps it)"))
        print(f"chaos: {rep['result']}")
    except KeyboardInterrupt:
        print("chaos: interrupted", file=sys.stderr)
        return 130
    finally:
        stop_chaos.set()
        if workers:
            workers.kill_all()
        server.stop()
        if passed and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"chaos: kept {tmp}", file=sys.stderr)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
