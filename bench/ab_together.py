#!/usr/bin/env python3
"""A/B of two `celerity` workers draining at the same time, each on its own private Redis: the
cost of a feature (`-E`, the task history) as a ratio that the host's own speed swings do not
blur.

    python3 bench/ab_together.py --a .build/release/celerity --b .build/release/celerity --b-args=-E
    python3 bench/ab_together.py --a OLD/celerity --b NEW/celerity [--rounds 10] [--tasks 100000]

Why: on this VM the hypervisor takes from 0 to 50% of the CPUs from one minute to the next
("steal" in /proc/stat); two drains run one after the other (bench/ab.py) see different
machines, and their ratio swings by ±30%. Here both drains run in the same seconds, so both see
the same machine. Each pair (a worker and its Redis) gets about half of the 2 cores: the ratio
of their rates is the ratio of what a task costs each, which is what decides the drain of a
worker alone on a machine its Redis shares (CPU-bound: Redis and one worker use ~175% of the
2 cores). The rates are counted over the window in which both are draining (until the first
one finishes), so neither runs alone for part of its time. Each round swaps which Redis (and
port) each side uses and which queue is filled first.

Prints each round and the median of B / A.
"""
import argparse, os, signal, statistics, subprocess, sys, tempfile, time, uuid

import redis

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ab import envelope, free_port, host_ticks  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def start_redis(port):
    srv = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                            "--maxmemory-policy", "noeviction"], stdout=subprocess.DEVNULL, start_new_session=True)
    r = redis.Redis(port=port)
    for _ in range(200):
        try:
            r.ping()
            return srv, r
        except redis.ConnectionError:
            time.sleep(0.05)
    raise SystemExit(f"redis-server on port {port} did not start")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--a", required=True, help="celerity binary A")
    ap.add_argument("--b", required=True, help="celerity binary B")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--tasks", type=int, default=100_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--manifest", default=os.path.join(REPO, "tasks.yaml"))
    ap.add_argument("--a-manifest", help="tasks.yaml of A only (default --manifest)")
    ap.add_argument("--b-manifest", help="tasks.yaml of B only (default --manifest)")
    ap.add_argument("--a-args", default="", help="extra worker arguments of A (space-separated, e.g. -E)")
    ap.add_argument("--b-args", default="", help="extra worker arguments of B")
    ap.add_argument("--start-timeout", type=float, default=30, help="seconds a worker may take to start")
    args = ap.parse_args()
    extra = {"A": args.a_args.split(), "B": args.b_args.split()}
    binaries = {"A": args.a, "B": args.b}
    manifests = {"A": args.a_manifest or args.manifest, "B": args.b_manifest or args.manifest}
    tmp = tempfile.mkdtemp(prefix="celerity-abt-")
    servers = [start_redis(free_port()), start_redis(free_port())]
    ratios, rates = [], {"A": [], "B": []}
    try:
        texts = [envelope(str(uuid.uuid4()), i) for i in range(args.tasks)]
        for _, r in servers:
            src = redis.Redis(port=r.connection_pool.connection_kwargs["port"], db=1)  # the prepared messages
            for s in range(0, len(texts), 1000):
                src.lpush("ab:src", *texts[s:s + 1000])
        for rnd in range(args.rounds):
            # Round by round, A and B swap servers, and the first COPY alternates.
            pair = {"A": servers[rnd % 2], "B": servers[1 - rnd % 2]}
            workers, base = {}, {}
            for label in ("A", "B"):
                srv, r = pair[label]
                r.flushdb()
                port = r.connection_pool.connection_kwargs["port"]
                name = f"abt-{label}-{rnd}"
                log = open(os.path.join(tmp, name + ".log"), "wb")
                workers[label] = (name, subprocess.Popen(
                    [binaries[label], "worker", "-Q", "add", "-n", name, "-c", str(args.concurrency), "-l", "warning",
                     "--manifest", manifests[label], "--broker", f"redis://127.0.0.1:{port}/0"] + extra[label],
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True), log.name)
            deadline = time.time() + args.start_timeout
            for label, (name, w, logname) in workers.items():
                r = pair[label][1]
                while not r.exists(f"celerity:worker:{name}"):
                    if w.poll() is not None or time.time() > deadline:
                        raise SystemExit(f"worker {label} ({binaries[label]}) did not start:\n" + open(logname).read()[-2000:])
                    time.sleep(0.02)
                base[label] = r.dbsize()
            order = ["A", "B"] if rnd % 2 == 0 else ["B", "A"]
            h0 = host_ticks()
            t0 = time.time()
            sources = {k: redis.Redis(port=pair[k][1].connection_pool.connection_kwargs["port"], db=1) for k in order}
            for label in order:
                sources[label].copy("ab:src", "add", destination_db=0)
            done = {}
            while True:
                counts = {k: pair[k][1].dbsize() - base[k] for k in ("A", "B")}
                if any(c >= args.tasks for c in counts.values()):
                    elapsed = time.time() - t0
                    break
                time.sleep(0.01)
            h1 = host_ticks()
            for k in ("A", "B"):
                done[k] = min(counts[k], args.tasks) / elapsed
                rates[k].append(done[k])
            ratio = 100 * done["B"] / done["A"]
            ratios.append(ratio)
            steal = 100 * (h1[0] - h0[0]) / max(1, h1[1] - h0[1])
            print(f"round {rnd}: A {done['A']:6.0f}/s  B {done['B']:6.0f}/s  B / A {ratio:5.1f}%  "
                  f"(window {elapsed:.2f} s, host steal {steal:.0f}%)", flush=True)
            # Let the slower one finish (its messages must not be left for the next round).
            for k in ("A", "B"):
                r = pair[k][1]
                end = time.time() + 120
                while r.dbsize() - base[k] < args.tasks and time.time() < end:
                    time.sleep(0.02)
            for _, w, _ in workers.values():
                w.send_signal(signal.SIGTERM)
            for _, w, _ in workers.values():
                w.wait(timeout=60)
        print()
        for k in ("A", "B"):
            print(f"{k} ({binaries[k]} {' '.join(extra[k])}): drain/s while both drain, median {statistics.median(rates[k]):.0f} "
                  f"[{min(rates[k]):.0f}–{max(rates[k]):.0f}]")
        print(f"B / A per round: {', '.join(f'{x:.1f}%' for x in ratios)}")
        print(f"B / A median {statistics.median(ratios):.1f}% [{min(ratios):.1f}–{max(ratios):.1f}%] over {len(ratios)} rounds")
    finally:
        for srv, _ in servers:
            srv.kill()
            srv.wait()


if __name__ == "__main__":
    sys.exit(main())
