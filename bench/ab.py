#!/usr/bin/env python3
"""A/B of two `celerity` worker binaries on one private Redis, in one run: the hot path
before and after a change (drain rate, end to end, single-call latency).

    python3 bench/ab.py --a OLD/.build/release/celerity --b .build/release/celerity [--rounds 4]
    python3 bench/ab.py --a .build/release/celerity --b .build/release/celerity --b-args=-E --drain-only
                        (one binary, events off / on)

Each round runs both binaries, in alternating order: the worker drains N add tasks that were
enqueued before it started (COPY of a prepared list, so both drain the very same bytes),
then serves `celerity-bench e2e` and `latency` (the client of this checkout's release build).
Prints every run and the mean per binary.
"""
import argparse, base64, json, os, signal, socket, statistics, subprocess, sys, tempfile, time, uuid

import redis

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU seconds of a process and its threads (/proc/PID/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_ticks():
    """(steal, total) CPU ticks of the host so far (/proc/stat): steal is time the hypervisor
    gave this machine's CPUs to others, which slows a run without showing in its CPU time."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return v[7], sum(v)


def redis_cpu(r):
    info = r.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def envelope(task_id, i):
    body = base64.b64encode(json.dumps([[i, i], {}, {"callbacks": None, "errbacks": None, "chain": None, "chord": None}]).encode()).decode()
    headers = {"lang": "py", "task": "add_module.tasks.add", "id": task_id, "shadow": None, "eta": None, "expires": None,
               "group": None, "group_index": None, "retries": 0, "timelimit": [None, None], "root_id": task_id,
               "parent_id": None, "argsrepr": f"({i}, {i})", "kwargsrepr": "{}", "origin": "ab@bench", "ignore_result": False}
    props = {"correlation_id": task_id, "reply_to": "", "delivery_mode": 2,
             "delivery_info": {"exchange": "", "routing_key": "add"}, "priority": 0,
             "body_encoding": "base64", "delivery_tag": str(uuid.uuid4())}
    return json.dumps({"body": body, "content-encoding": "utf-8", "content-type": "application/json",
                       "headers": headers, "properties": props})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="celerity binary A (before)")
    ap.add_argument("--b", required=True, help="celerity binary B (after)")
    ap.add_argument("--bench", default=os.path.join(REPO, ".build/release/celerity-bench"))
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--e2e", type=int, default=50_000)
    ap.add_argument("--latency", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--manifest", default=os.path.join(REPO, "tasks.yaml"),
                    help="tasks.yaml both workers load (one an older binary can read: it refuses keys it does not know)")
    ap.add_argument("--a-manifest", help="tasks.yaml of A only (default --manifest)")
    ap.add_argument("--b-manifest", help="tasks.yaml of B only (default --manifest)")
    ap.add_argument("--a-args", default="", help="extra worker arguments of A (space-separated, e.g. -E)")
    ap.add_argument("--b-args", default="", help="extra worker arguments of B")
    ap.add_argument("--drain-only", action="store_true", help="measure the drain only (no e2e, no latency)")
    ap.add_argument("--max-steal", type=float, default=5, help="rounds counted as calm: host steal at most this %% in both runs")
    args = ap.parse_args()
    extra = {"A": args.a_args.split(), "B": args.b_args.split()}
    manifests = {"A": args.a_manifest or args.manifest, "B": args.b_manifest or args.manifest}
    tmp = tempfile.mkdtemp(prefix="celerity-ab-")
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                            "--maxmemory-policy", "noeviction"], stdout=subprocess.DEVNULL, start_new_session=True)
    r = redis.Redis(port=port)
    src = redis.Redis(port=port, db=1)
    runs = {"A": [], "B": []}
    try:
        for _ in range(100):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        texts = [envelope(str(uuid.uuid4()), i) for i in range(args.tasks)]
        for s in range(0, len(texts), 1000):
            src.lpush("ab:src", *texts[s:s + 1000])
        for rnd in range(args.rounds):
            order = [("A", args.a), ("B", args.b)] if rnd % 2 == 0 else [("B", args.b), ("A", args.a)]
            for label, binary in order:
                r.flushdb()
                name = f"ab-{label}-{rnd}"
                log = open(os.path.join(tmp, name + ".log"), "wb")
                w = subprocess.Popen([binary, "worker", "-Q", "add", "-n", name, "-c", str(args.concurrency), "-l", "warning",
                                      "--manifest", manifests[label], "--broker", url] + extra[label],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                started = time.time()
                while not r.exists(f"celerity:worker:{name}"):
                    if w.poll() is not None or time.time() - started > 30:
                        log.flush()
                        raise SystemExit(f"worker {label} ({binary}) did not start:\n" + open(log.name).read()[-2000:])
                    time.sleep(0.02)
                base = r.dbsize()
                c0 = (cpu_seconds(w.pid), redis_cpu(r))
                h0 = host_ticks()
                t0 = time.time()
                src.copy("ab:src", "add", destination_db=0)
                while r.dbsize() < base + args.tasks:
                    time.sleep(0.005)
                drain = args.tasks / (time.time() - t0)
                # CPU per task (µs), worker and Redis: steadier than the rate on a host whose
                # speed swings (steal), and it says which side pays.
                h1 = host_ticks()
                cpu = {"worker_us": 1e6 * (cpu_seconds(w.pid) - c0[0]) / args.tasks,
                       "redis_us": 1e6 * (redis_cpu(r) - c0[1]) / args.tasks,
                       "steal": 100 * (h1[0] - h0[0]) / max(1, h1[1] - h0[1])}
                # Work that trails the drain (the events writer at nice 10 may finish after the
                # last result): CPU counted until the worker's CPU stops growing, too.
                settle_t0, last = time.time(), cpu_seconds(w.pid)
                while time.time() - settle_t0 < 10:
                    time.sleep(0.3)
                    now = cpu_seconds(w.pid)
                    if now - last < 0.03:   # under 10% of a core: idle (heartbeats)
                        break
                    last = now
                cpu["settled_us"] = 1e6 * (cpu_seconds(w.pid) - c0[0] + redis_cpu(r) - c0[1]) / args.tasks
                r.delete(*[k for k in r.scan_iter("celery-task-meta-*", count=10000)] or ["none"])
                out = {}
                for mode, n in () if args.drain_only else (("e2e", args.e2e), ("latency", args.latency)):
                    p = subprocess.run([args.bench, mode, "--broker", url, "--calls", str(n)], cwd=REPO, check=True,
                                       capture_output=True, text=True)
                    out[mode] = json.loads(p.stdout.strip().splitlines()[-1])
                w.send_signal(signal.SIGTERM)
                w.wait(timeout=60)
                if args.drain_only:
                    runs[label].append({"drain": drain, **cpu})
                    print(f"round {rnd} {label}: drain {drain:6.0f}/s  cpu/task worker {cpu['worker_us']:.2f} µs"
                          f"  redis {cpu['redis_us']:.2f} µs  steal {cpu['steal']:.0f}%  settled {cpu['settled_us']:.2f} µs", flush=True)
                    continue
                run = {"drain": drain, "e2e": out["e2e"], "latency": out["latency"], **cpu}
                runs[label].append(run)
                print(f"round {rnd} {label}: drain {drain:6.0f}/s  e2e {out['e2e']['per_second']:6.0f}/s  "
                      f"latency p50 {out['latency']['p50_ms']:.3f} ms  p99 {out['latency']['p99_ms']:.3f} ms", flush=True)
        print()
        for label, binary in (("A", args.a), ("B", args.b)):
            if args.drain_only:
                v = [x["drain"] for x in runs[label]]
                print(f"{label} ({binary} {' '.join(extra[label])}): drain/s mean {statistics.mean(v):.0f} "
                      f"median {statistics.median(v):.0f} [{min(v):.0f}–{max(v):.0f}]")
                continue
            cols = {"drain/s": [x["drain"] for x in runs[label]], "e2e/s": [x["e2e"]["per_second"] for x in runs[label]],
                    "p50 ms": [x["latency"]["p50_ms"] for x in runs[label]], "p99 ms": [x["latency"]["p99_ms"] for x in runs[label]]}
            print(f"{label} ({binary}): " + "   ".join(
                f"{k} mean {statistics.mean(v):.3f} [{min(v):.3f}–{max(v):.3f}]" if "ms" in k else
                f"{k} mean {statistics.mean(v):.0f} [{min(v):.0f}–{max(v):.0f}]" for k, v in cols.items()))
        if args.drain_only:
            a, b = (statistics.median([x["drain"] for x in runs[k]]) for k in ("A", "B"))
            print(f"B / A drain (medians): {100 * b / a:.1f}%")
            pairs = [100 * y["drain"] / x["drain"] for x, y in zip(runs["A"], runs["B"])]
            print(f"B / A drain per round (A and B run back to back): {', '.join(f'{p:.1f}%' for p in pairs)}; "
                  f"median {statistics.median(pairs):.1f}%")
            # Rounds where the hypervisor took more than --max-steal % of the CPUs from either
            # run measure the host, not the binaries.
            calm = [100 * y["drain"] / x["drain"] for x, y in zip(runs["A"], runs["B"])
                    if max(x["steal"], y["steal"]) <= args.max_steal]
            if calm:
                print(f"B / A drain in rounds with steal <= {args.max_steal:.0f}% ({len(calm)} of {len(pairs)}): "
                      f"median {statistics.median(calm):.1f}% [{min(calm):.1f}–{max(calm):.1f}%]")
            else:
                print(f"no round had steal <= {args.max_steal:.0f}% in both runs")
            # Drain against steal, a straight line per binary: where each meets steal 0.
            fits = {}
            for k in ("A", "B"):
                st, dr = [x["steal"] for x in runs[k]], [x["drain"] for x in runs[k]]
                if len(set(st)) > 1:
                    fits[k] = statistics.linear_regression(st, dr).intercept
            if len(fits) == 2:
                print(f"drain at steal 0 (least squares over the rounds' steal): A {fits['A']:.0f}/s, B {fits['B']:.0f}/s, "
                      f"B / A {100 * fits['B'] / fits['A']:.1f}%")
        for label in ("A", "B"):
            w, rd = ([x[k] for x in runs[label]] for k in ("worker_us", "redis_us"))
            st = [x["settled_us"] for x in runs[label]]
            print(f"{label} CPU per task (medians): worker {statistics.median(w):.2f} µs, Redis {statistics.median(rd):.2f} µs, "
                  f"both {statistics.median([x + y for x, y in zip(w, rd)]):.2f} µs; both, with the work that trails the drain "
                  f"{statistics.median(st):.2f} µs")
    finally:
        srv.kill()
        srv.wait()


if __name__ == "__main__":
    sys.exit(main())
