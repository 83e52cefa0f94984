#!/usr/bin/env python3
"""Next fire times of cron expressions from Python's own implementations, for CronTests.

Reads JSON on stdin: {"cases": [{"expr": "0 3 * * *", "tz": "Europe/Paris", "after": <unix
seconds>, "oracle": "celery" | "croniter", "count": N}]} and prints one JSON list: per case
{"next": [unix seconds...], "wall": [local wall-clock seconds...]} or {"error": "..."}.

- celery: Celery 5.7's celery.schedules.crontab (5 fields; day-of-month AND day-of-week),
  remaining_delta(last_run_at, tz) as beat uses it; each next time is computed from the
  previous one (last_run_at = the previous fire).
- croniter: croniter with implement_cron_bug=True (Vixie cron's day rule: OR only when
  neither day field starts with '*') and second_at_beginning=True for 6 fields.
"""
import json
import sys
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from celery import Celery
from celery.schedules import crontab
from croniter import croniter

EPOCH = datetime(1970, 1, 1)


def wall(d):
    return int((d.replace(tzinfo=None) - EPOCH).total_seconds())


apps = {}


def app_for(tz):
    if tz not in apps:
        app = Celery("cron-oracle", set_as_current=False)
        app.conf.timezone = tz
        app.conf.enable_utc = True
        apps[tz] = app
    return apps[tz]


def celery_next(expr, tz, after, count):
    minute, hour, dom, month, dow = expr.split()
    zone = ZoneInfo(tz)
    last = datetime.fromtimestamp(after, zone)
    out = []
    for _ in range(count):
        holder = {"now": last}
        c = crontab(minute, hour, dow, dom, month, app=app_for(tz), nowfun=lambda: holder["now"])
        start, delta, _now = c.remaining_delta(last, tz=tz)
        nxt = start + delta
        out.append(nxt)
        last = nxt
    return out


NAMES = {n: i for i, n in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
NAMES.update({n: i + 1 for i, n in enumerate(["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"])})


def single_value_ranges(expr):
    """croniter 7.0 reads a one-value range `13-13` (or `13-13/5`) as `*`; cron and Celery
    read it as 13. Rewrite such items to the plain value so the comparison is of semantics."""
    fields = []
    for field in expr.split():
        items = []
        for item in field.split(","):
            base = item.split("/")[0]
            if "-" in base and not base.startswith("-"):
                a, b = base.split("-", 1)
                va, vb = NAMES.get(a.lower(), a), NAMES.get(b.lower(), b)
                if str(va) == str(vb):
                    item = a
            items.append(item)
        fields.append(",".join(items))
    return " ".join(fields)


def croniter_next(expr, tz, after, count):
    zone = ZoneInfo(tz)
    expr = single_value_ranges(expr)
    it = croniter(expr, datetime.fromtimestamp(after, zone), implement_cron_bug=True,
                  second_at_beginning=len(expr.split()) == 6)
    return [it.get_next(datetime) for _ in range(count)]


def main():
    cases = json.load(sys.stdin)["cases"]
    results = []
    for case in cases:
        try:
            fn = celery_next if case["oracle"] == "celery" else croniter_next
            times = fn(case["expr"], case["tz"], case["after"], case.get("count", 1))
            results.append({"next": [int(t.timestamp()) for t in times], "wall": [wall(t) for t in times]})
        except Exception as e:  # reported per case; the Swift side fails the test with it
            results.append({"error": f"{type(e).__name__}: {e}"})
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
