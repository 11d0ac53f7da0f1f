"""Benchmark: the console's alert history search (console/history.py) over a large alert store.

Writes --alerts resolved alerts (default 100,000) spread evenly over the --days before today (default 365),
over the shipped inventory's sites and rules, into a temporary SQLite store through `AlertStore.commit` (the
engine's writer, so the schema and indexes are the service's), then times `search()` on a read-only
connection, as the console opens it, for the searches a duty officer makes:

  week          the default page: the last 7 days, first page of 50
  quarter       the last 90 days, first page
  quarter_site     the last 90 days (the console allows 92), one site
  quarter_district the last 90 days, one district
  quarter_red      the last 90 days, peak severity red
  page_40       the last 90 days, page 40
  csv_week      the CSV export's query: every row of the last 7 days

Each figure is the median wall time of --repeats runs (the machine is shared: medians, and every query in one run).

Run:  .venv/bin/python bench/bench_history.py [--alerts 100000] [--days 365] [--repeats 5]
Ends with: RESULT bench_history alerts=.. week_ms=.. quarter_ms=.. quarter_site_ms=.. ... max_ms=..
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import sqlite3
import statistics
import sys
import tempfile
import time
import zoneinfo
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alerts.model import Alert, alert_id_for  # noqa: E402 - after the path fix-up
from alerts.store import AlertStore  # noqa: E402
from config import load_config  # noqa: E402
from console.history import HistoryQuery, search  # noqa: E402

NS = 1_000_000_000
RULES = ["N-day", "N-night", "N-night-lmax", "N-pre", "G-high", "G-low", "G-leak", "Offline", "Batt"]


def build(path: Path, n: int, days: int, today: dt.date, tz: dt.tzinfo) -> None:
    cfg = load_config(Path(__file__).resolve().parents[1] / "config")
    sites = [{"id": s.id, "name": s.name, "address": s.address, "district": s.district} for s in cfg.sites]
    devices = [d.id for d in cfg.devices]
    rng = random.Random(7)
    t_end = int(dt.datetime.combine(today + dt.timedelta(days=1), dt.time(), tz).timestamp()) * NS
    t_start = t_end - days * 86400 * NS
    store = AlertStore(path)
    chunk: list[Alert] = []
    for i in range(n):
        t0 = t_start + (t_end - t_start) * i // n
        rule, dev, site = rng.choice(RULES), rng.choice(devices), rng.choice(sites)
        sev = rng.randint(1, 4)
        chunk.append(Alert(alert_id=alert_id_for(rule, dev, t0), rule_id=rule, device_id=dev,
                           category="noise" if rule.startswith("N") else "gas", site=dict(site),
                           device={"id": dev, "mn": dev, "kind": "noise"}, state="resolved", severity=sev,
                           value=61.5, limit=55.0, peak_value=72.25, peak_severity=max(sev, rng.randint(1, 4)),
                           context={"unit": "dB(A)", "window_s": 300}, started_ns=t0, firing_ns=t0 + 60 * NS,
                           last_active_ns=t0 + 600 * NS, resolved_ns=t0 + 600 * NS))
        if len(chunk) == 5000:
            store.commit(chunk, [])
            chunk = []
    if chunk:
        store.commit(chunk, [])
    store.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--alerts", type=int, default=100_000, help="alerts in the store (default 100,000)")
    ap.add_argument("--days", type=int, default=365, help="days they are spread over, ending today (default 365)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of each search; the median is reported")
    args = ap.parse_args()
    if args.alerts < 1 or args.days < 90 or args.repeats < 1:
        ap.error("--alerts >= 1, --days >= 90, --repeats >= 1")
    tz = zoneinfo.ZoneInfo("Asia/Shanghai")
    today = dt.date(2026, 12, 6)
    with tempfile.TemporaryDirectory(prefix="cw-bench-history-") as tmp:
        path = Path(tmp) / "alerts.sqlite"
        t = time.perf_counter()
        build(path, args.alerts, args.days, today, tz)
        print(f"store: {args.alerts:,} alerts over {args.days} days written in {time.perf_counter() - t:.1f} s")
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        week = today - dt.timedelta(days=6)
        quarter = today - dt.timedelta(days=89)
        cases = {
            "week": (HistoryQuery(week, today), False),
            "quarter": (HistoryQuery(quarter, today), False),
            "quarter_site": (HistoryQuery(quarter, today, site="SM-2025-101"), False),
            "quarter_district": (HistoryQuery(quarter, today, district="Huli"), False),
            "quarter_red": (HistoryQuery(quarter, today, severities=("red",)), False),
            "page_40": (HistoryQuery(quarter, today, page=40), False),
            "csv_week": (HistoryQuery(week, today), True),
        }
        figures: dict[str, float] = {}
        for name, (query, all_rows) in cases.items():
            times, total = [], 0
            for _ in range(args.repeats):
                t = time.perf_counter()
                r = search(db, query, tz, all_rows=all_rows)
                times.append((time.perf_counter() - t) * 1000)
                total = r.total
            figures[name] = statistics.median(times)
            print(f"{name:17s} {figures[name]:8.1f} ms  ({total:,} matching)")
        db.close()
    tail = " ".join(f"{k}_ms={v:.1f}" for k, v in figures.items())
    print(f"RESULT bench_history alerts={args.alerts} days={args.days} {tail} max_ms={max(figures.values()):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
