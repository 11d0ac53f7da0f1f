"""Benchmark: does the alert engine's cost per batch and per tick grow with the size of its alert store?

Builds a real AlertEngine on a real AlertStore (SQLite, WAL, synchronous=FULL) in a temporary directory, with
one sink that drops what it is sent behind the real Dispatcher (which marks each delivery sent in the store).
At each store size (`--sizes`, default 0, 100k, 1M resolved alerts of history) it measures, in the same run:

- `engine.process(detections)`: a batch of `--rows` detection rows, one second of event time apart: 4 alerts
  open (and fire: for_s 0), 4 clear (and resolve), the rest refresh open alerts (about 100 open);
- `engine.tick(now)` (commands inbox, timers, persist, heartbeat; the hourly prune is measured apart);
- the hourly prune: once through the engine (it deletes the hour of history past `retention_days`: N / 2160
  alerts with their notices, deliveries and acks, so this figure grows with N by design), then `store.prune`
  again at the same cut-off (nothing left to delete: the cost of the search alone, which must not grow);
- the reads of the console and of `citywatch alerts list`: the console's status refresh (freshness + silences),
  `alerts list` (open alerts), `alerts list --all` (newest 1000), the engine's inbox read, and the alert page's
  evidence of one resolved alert (alert, notices with deliveries, commands naming it).

The history is written through the store's own API (`commit`, `mark_delivery`, `add_command`) from a template:
a real alert that this engine opened, fired and resolved, with its firing and resolved notices (one delivery
each, marked sent) and, for `--acks-per-alert` of the alerts, an applied ack command. Its start times are spread
over `retention_days` + 1 h before the engine's clock. While it is written the store runs synchronous=OFF
(restored to FULL before anything is measured).

Figures are CPU time of the calling thread (time.thread_time: the engine's SQLite work runs there; the
dispatcher's threads are not counted), medians of `--repeats` rounds; a round's figure is its mean per call.
The ratios (figure at the largest size / at size 0) are the result: the machine is shared, absolute times drift.
A run at the defaults takes about 7 minutes and about 5 GB of disk (the 1M store; removed at the end).

    .venv/bin/python bench/bench_alert_store.py [--sizes 0,100000,1000000] [--rows 32] [--batches 100]
        [--repeats 5] [--acks-per-alert 0.2] [--cache-mib MIB] [--dir DIR] [--keep]

Ends with one line `RESULT bench_alert_store sizes=.. batch_us=.. tick_us=.. prune_ms=.. prune_search_ms=..
alerts_list_us=.. alerts_all_us=.. console_status_us=.. inbox_us=.. alert_page_us=.. batch_ratio=.. tick_ratio=..
prune_ratio=.. ... store_mb=.. load=..` (per-size figures comma-separated, in the order of `sizes`).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alerts.commands import Author  # noqa: E402
from alerts.dispatch import Dispatcher  # noqa: E402
from alerts.engine import AlertEngine  # noqa: E402
from alerts.model import Alert, Notice, alert_id_for  # noqa: E402
from alerts.sinks.base import Sink  # noqa: E402
from alerts.store import AlertStore  # noqa: E402
from alerts.terminal import freshness  # noqa: E402
from config import load_config  # noqa: E402
from config.alerting import Alerting  # noqa: E402
from config.rules import RuleSpec  # noqa: E402
from core import Detections  # noqa: E402

NS = 1_000_000_000
T0 = 1_748_788_200 * NS  # 2025-06-01T14:30:00Z: event time of the first batch
RULES = ("N-a", "N-b", "N-c", "N-d")  # four noise rules over every device of the shipped inventory: 4 x 52 keys
OPEN_TARGET = 100  # open alerts the batches keep (about)
CHURN = 4  # alerts opened and alerts cleared per batch
OPERATOR = Author("li", "Li Wei")
OPEN = ("pending", "firing")


class DropSink:
    """Takes every notice and drops it (the dispatcher still marks each delivery sent in the store)."""

    def send(self, notice: Notice) -> str | None:
        return None

    def close(self) -> None:
        pass


def make_engine(path: Path) -> AlertEngine:
    base = load_config(None, env={})
    alerting = Alerting.model_validate({
        "sinks": {"ops": {"type": "terminal"}},
        "route": {"receivers": ["ops"], "group_interval_s": 0},
        "flap_max_transitions": 1_000_000,  # the batches open and clear the same keys: never flapping
        "operators": [{"username": OPERATOR.account, "name": OPERATOR.name}],
    })
    rules = [RuleSpec.model_validate({"id": r, "type": "noise_day_limit", "kind": "noise"}) for r in RULES]
    cfg = base.model_copy(update={"alerting": alerting, "rules": rules})
    store = AlertStore(path)
    sinks: dict[str, Sink] = {"ops": DropSink()}
    return AlertEngine(cfg, store, sinks, dispatcher=Dispatcher(sinks, store, 0.01, 0.05))


class Batches:
    """Detection batches one second apart: CHURN keys open, CHURN open keys clear, the rest refresh open keys."""

    def __init__(self, engine: AlertEngine, rows: int, seed: int = 1):
        self.devices = list(range(len(engine.cfg.devices)))
        self.keys = [(r, s) for r in RULES for s in self.devices]
        self.open: list[tuple[str, int]] = []
        self.rows = rows
        self.rng = np.random.default_rng(seed)
        self.t = T0

    def next(self) -> Detections:
        self.t += NS
        rows: list[tuple[str, int, int, float]] = []  # (rule, sensor, severity, value)
        if len(self.open) >= OPEN_TARGET:
            for i in sorted(self.rng.choice(len(self.open), CHURN, replace=False), reverse=True):
                r, s = self.open.pop(int(i))
                rows.append((r, s, 0, 65.0))
        closed = {(r, s) for r, s, _, _ in rows}
        shut = set(self.open) | closed
        free = [k for k in self.keys if k not in shut]
        for i in self.rng.choice(len(free), CHURN, replace=False):
            r, s = free[int(i)]
            self.open.append((r, s))
            rows.append((r, s, 2, 72.0))
        refresh = self.rows - len(rows)
        if self.open and refresh > 0:
            for i in self.rng.choice(len(self.open), min(refresh, len(self.open)), replace=False):
                r, s = self.open[int(i)]
                rows.append((r, s, 2, 71.0 + float(self.rng.random())))
        n = len(rows)
        return Detections(np.array([s for _, s, _, _ in rows], np.int32), np.full(n, self.t, np.int64),
                          np.array([r for r, _, _, _ in rows], object), np.full(n, "noise", object),
                          np.array([v for _, _, v, _ in rows], np.int8), np.array([v for _, _, _, v in rows]),
                          np.full(n, 70.0), np.full(n, np.nan), [{"metric": "leq", "unit": "dB(A)"}] * n)


class History:
    """Writes resolved alerts like a template one (its notices, sent deliveries, some acks) into the store."""

    def __init__(self, engine: AlertEngine, acks_per_alert: float):
        store = engine.store
        resolved = store.alerts(("resolved",), limit=1)
        if not resolved:
            raise SystemExit("bench_alert_store: the warm-up resolved no alert to copy")
        self.template = resolved[0]
        self.notices = [n for n, _ in store.notices(self.template.alert_id)]
        self.devices = list(engine.cfg.devices)
        self.labels = engine._labels  # (site, device) per device index, as the engine puts them on alerts
        self.index = {d.id: i for i, d in enumerate(engine.cfg.devices)}
        self.store = store
        self.acks_per_alert = acks_per_alert
        self.written = 0
        self.retention_ns = int(engine.cfg.alerting.retention_days * 86400 * NS)

    def write(self, n: int, now_ns: int, chunk: int = 5000) -> None:
        """Add `n` resolved alerts started over [now - retention - 1 h, now - 10 min)."""
        span_ms = (self.retention_ns + 3600 * NS - 600 * NS) // 1_000_000
        lo = now_ns - self.retention_ns - 3600 * NS
        store = self.store
        store._db.execute("PRAGMA synchronous=OFF")  # filling only; measured with FULL
        try:
            done = 0
            while done < n:
                m = min(chunk, n - done)
                alerts: list[Alert] = []
                notices: list[tuple[Notice, list[tuple[str, int]]]] = []
                acks: list[str] = []
                for _ in range(m):
                    j = self.written
                    self.written += 1
                    # A permutation of the span's milliseconds (7_919_993 is prime): unique start, unique id.
                    start = lo + ((j * 7_919_993) % span_ms) * 1_000_000
                    dev = self.devices[j % len(self.devices)]
                    rule = RULES[(j // len(self.devices)) % len(RULES)]
                    site, device = self.labels[self.index[dev.id]]
                    aid = alert_id_for(rule, dev.id, start)
                    t = self.template
                    a = dataclasses.replace(t, alert_id=aid, rule_id=rule, device_id=dev.id, site=site, device=device,
                                            started_ns=start, firing_ns=start, severity_ns=start,
                                            last_active_ns=start + 120 * NS, clear_since_ns=start + 121 * NS,
                                            resolved_ns=start + 121 * NS, last_notice_ns=start + 121 * NS)
                    alerts.append(a)
                    for tn in self.notices:
                        ts = start + (121 * NS if tn.transition == "resolved" else 0)
                        key = f"{aid}:{tn.seq}"
                        payload = {**tn.payload, "alert_id": aid, "idempotency_key": key, "rule_id": rule,
                                   "site": site, "device": device, "ts_ns": ts}
                        notices.append((Notice(key, aid, tn.seq, tn.transition, ts, payload), [("ops", ts)]))
                    if int((j + 1) * self.acks_per_alert) > int(j * self.acks_per_alert):  # every 1/acks_per_alert-th
                        acks.append(aid)
                store.commit(alerts, notices)
                with store._lock:
                    store._db.execute("BEGIN")
                    for notice, deliveries in notices:
                        for sink, _ in deliveries:
                            store.mark_delivery(notice.key, sink, "sent", 1)
                    for aid in acks:
                        store.add_command(f"cli:{OPERATOR.account}", {"action": "ack", "alert_id": aid, "note": None},
                                          OPERATOR.account, OPERATOR.name, status="applied", result="ok")
                    store._db.execute("COMMIT")
                done += m
        finally:
            store._db.execute("PRAGMA synchronous=FULL")


def cpu_per_call(fn: Callable[[], object], calls: int) -> float:
    """Mean CPU seconds of the calling thread per call of `fn`."""
    c0 = time.thread_time()
    for _ in range(calls):
        fn()
    return (time.thread_time() - c0) / calls


def cpu_per_batch(batches: list[Detections], process: Callable[[Detections], object]) -> float:
    """Mean CPU seconds of the calling thread per `process(batch)`."""
    c0 = time.thread_time()
    for d in batches:
        process(d)
    return (time.thread_time() - c0) / len(batches)


def alert_page_reader(path: Path) -> Callable[[str], object]:
    """The console's alert page evidence (console.app._alert_evidence) on a read-only connection."""
    from console.app import _alert_evidence

    app = SimpleNamespace(read_only=lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5))
    return lambda alert_id: _alert_evidence(app, alert_id)  # type: ignore[arg-type]


def measure(engine: AlertEngine, batches: Batches, args: argparse.Namespace, probe_id: str,
            page: Callable[[str], object]) -> dict[str, float]:
    """Median figures (µs or ms) at the store's current size."""
    store = engine.store
    rounds: dict[str, list[float]] = {k: [] for k in ("batch", "tick", "alerts_list", "alerts_all", "console_status",
                                                       "inbox", "alert_page")}
    for _ in range(args.repeats):
        dets = [batches.next() for _ in range(args.batches)]
        rounds["batch"].append(cpu_per_batch(dets, engine.process) * 1e6)
        engine._pruned_at = engine.watermark_ns  # the hourly prune is measured below
        rounds["tick"].append(cpu_per_call(lambda: engine.tick(engine.watermark_ns), args.calls) * 1e6)
        rounds["alerts_list"].append(cpu_per_call(lambda: store.alerts(OPEN), args.calls) * 1e6)
        rounds["alerts_all"].append(cpu_per_call(lambda: store.alerts(None), max(1, args.calls // 10)) * 1e6)
        rounds["console_status"].append(cpu_per_call(lambda: (freshness(store), store.silences()), args.calls) * 1e6)
        rounds["inbox"].append(cpu_per_call(store.unapplied_commands, args.calls) * 1e6)
        rounds["alert_page"].append(cpu_per_call(lambda: page(probe_id), max(1, args.calls // 10)) * 1e6)
    engine.flush(30)
    out = {k: statistics.median(v) for k, v in rounds.items()}
    # The hourly prune: once through the engine (deletes what fell out of retention), then the search alone.
    now = engine.watermark_ns
    engine._pruned_at = None
    c0 = time.thread_time()
    engine._prune(now)
    out["prune_ms"] = (time.thread_time() - c0) * 1e3
    cut = now - int(engine.cfg.alerting.retention_days * 86400 * NS)
    out["prune_search_ms"] = statistics.median(
        cpu_per_call(lambda: store.prune(cut), 1) * 1e3 for _ in range(args.prune_repeats))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0,100000,1000000", help="resolved alerts of history, ascending")
    ap.add_argument("--rows", type=int, default=32, help="detection rows per batch")
    ap.add_argument("--batches", type=int, default=100, help="batches per round")
    ap.add_argument("--calls", type=int, default=50, help="ticks and reads per round")
    ap.add_argument("--repeats", type=int, default=5, help="rounds per size (medians)")
    ap.add_argument("--prune-repeats", type=int, default=3, help="repeats of the prune search")
    ap.add_argument("--acks-per-alert", type=float, default=0.2, help="applied ack commands per history alert")
    ap.add_argument("--dir", default=None, help="where the store goes (default: the system's temporary directory)")
    ap.add_argument("--cache-mib", type=int, default=None,
                    help="SQLite page cache of the engine's store connection (default: SQLite's, 2 MiB)")
    ap.add_argument("--keep", action="store_true", help="keep the store")
    args = ap.parse_args()
    for name in ("rows", "batches", "calls", "repeats", "prune_repeats"):
        if getattr(args, name) < 1:
            raise SystemExit(f"bench_alert_store: --{name.replace('_', '-')} must be at least 1 "
                             f"(got {getattr(args, name)})")
    if not 0 <= args.acks_per_alert <= 1:
        raise SystemExit(f"bench_alert_store: --acks-per-alert must be within 0-1 (got {args.acks_per_alert})")
    if args.cache_mib is not None and args.cache_mib < 1:
        raise SystemExit(f"bench_alert_store: --cache-mib must be at least 1 (got {args.cache_mib})")
    try:
        sizes = [int(s) for s in args.sizes.split(",")]
    except ValueError:
        raise SystemExit(f"bench_alert_store: --sizes must be whole numbers separated by commas (got {args.sizes!r})") from None
    if sizes != sorted(sizes) or sizes[0] < 0:
        raise SystemExit("bench_alert_store: --sizes must be ascending and >= 0 (the history only grows)")

    if args.dir is not None:
        Path(args.dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-alert-store-", dir=args.dir))
    path = work / "alerts.sqlite"
    engine = make_engine(path)
    if args.cache_mib is not None:
        engine.store._db.execute(f"PRAGMA cache_size = -{args.cache_mib * 1024}")
    try:
        engine.start()
        batches = Batches(engine, args.rows)
        for _ in range(300):  # warm-up: the open set reaches its size, alerts resolve
            engine.process(batches.next())
        engine.flush(30)
        history = History(engine, args.acks_per_alert)
        page = alert_page_reader(path)
        results: list[dict[str, float]] = []
        for size in sizes:
            t0 = time.monotonic()
            history.write(size - history.written, engine.watermark_ns)
            filled = time.monotonic() - t0
            probe = store_probe(engine.store, history)
            r = measure(engine, batches, args, probe, page)
            r["store_mb"] = sum(p.stat().st_size for p in work.iterdir()) / 1e6
            results.append(r)
            print(f"history {size:>9,} resolved alerts (written in {filled:.0f} s; store {r['store_mb']:.0f} MB): "
                  f"process {r['batch']:.0f} us/batch of {args.rows} rows, tick {r['tick']:.0f} us, "
                  f"prune {r['prune_ms']:.1f} ms (search alone {r['prune_search_ms']:.2f} ms); reads: alerts list "
                  f"{r['alerts_list']:.0f} us, --all {r['alerts_all']:.0f} us, console status "
                  f"{r['console_status']:.0f} us, inbox {r['inbox']:.0f} us, alert page {r['alert_page']:.0f} us",
                  flush=True)
        keys = ("batch", "tick", "prune_ms", "prune_search_ms", "alerts_list", "alerts_all", "console_status", "inbox",
                "alert_page")
        base, top = results[0], results[-1]
        ratios = {k: top[k] / base[k] if base[k] > 0 else float("nan") for k in keys}
        print(f"ratio at {sizes[-1]:,} vs {sizes[0]:,}: " + ", ".join(f"{k} x{v:.2f}" for k, v in ratios.items()))
        names = {"batch": "batch_us", "tick": "tick_us", "alerts_list": "alerts_list_us", "alerts_all": "alerts_all_us",
                 "console_status": "console_status_us", "inbox": "inbox_us", "alert_page": "alert_page_us"}
        parts = [f"sizes={','.join(map(str, sizes))}"]
        parts += [f"{names.get(k, k)}={','.join(f'{r[k]:.4g}' for r in results)}" for k in keys]
        parts += [f"{k.removesuffix('_ms')}_ratio={v:.2f}" for k, v in ratios.items()]
        mb = ",".join(f"{r['store_mb']:.0f}" for r in results)
        parts.append(f"store_mb={mb}")
        print("RESULT bench_alert_store " + " ".join(parts) + f" load={os.getloadavg()[0]:.2f}")
        return 0
    finally:
        engine.stop()
        engine.store.close()
        if args.keep:
            print(f"store kept: {path}")
        else:
            shutil.rmtree(work, ignore_errors=True)


def store_probe(store: AlertStore, history: History) -> str:
    """A resolved alert to show on the alert page: the newest history alert, or the warm-up's template."""
    newest = store.alerts(("resolved",), limit=1)
    return newest[0].alert_id if newest else history.template.alert_id


if __name__ == "__main__":
    sys.exit(main())
