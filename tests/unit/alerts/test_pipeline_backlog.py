"""Detection never falls behind silently (issue 17): DetectionPipeline.backlog() says how many readings
wait for the detectors, how old the oldest arrival is and the event-time lag; check_lag logs once when
it falls behind and once when it caught up; firing notices feed the alert-latency histogram."""

from __future__ import annotations

import logging
import time

import numpy as np

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.store import AlertStore
from citywatch.pipeline import DetectionPipeline
from config import load_config
from core import ReadingBatch
from ingest.metrics import LagWatch
from tests.unit.alerts.helpers import NoScheduler, RecordingSink, S, write_config

ALERTS = """
alerting:
  sinks: {rec: {type: terminal}}
  route: {receivers: [rec], group_wait_s: 0, group_interval_s: 0}
  store_path: STORE
  detect_step_rows_per_device: 32
"""
RULES = "rules:\n  - {id: G-highhigh, type: gas_highhigh, kind: gas}\n"



def test_backlog_lag_log_and_alert_latency(tmp_path, caplog):
    caplog.set_level(logging.INFO, "citywatch.pipeline")
    d = write_config(tmp_path / "config", ALERTS.replace("STORE", str(tmp_path / "a.sqlite")), RULES)
    cfg = load_config(d, {})
    sink = RecordingSink()
    store = AlertStore(tmp_path / "a.sqlite")
    engine = AlertEngine(cfg, store, {"rec": sink}, dispatcher=Dispatcher({"rec": sink}, store, 0.01, 0.02))
    pipe = DetectionPipeline(cfg, {}, d, listen=False, engine=engine, threaded=True)
    pipe.lag_watch = LagWatch("detection", 0.05, every_s=0.0)
    a, b = [i for i, dev in enumerate(cfg.devices) if dev.kind == "gas"][:2]
    pipe.start(scheduler=NoScheduler())
    try:
        assert pipe.backlog() == {"rows_queued": 0, "oldest_age_s": 0.0, "event_lag_s": 0.0, "oldest_queued_ns": 0,
                                  "steps": 0, "deferred_steps": 0, "readings": 0, "notices": 0, "errors": 0, "rows_held_ahead": 0,
                                  "rows_ahead_dropped": 0}
        now = time.time_ns()
        n = 1000
        t_a = now - 10 * S - (n - np.arange(n)) * S // 10  # A's back-fill: 0.1 s apart, ending 10 s ago
        t_b = now - 3 * S // 2                                # B: one reading over its limit, 1.5 s ago
        with pipe._lock:  # the detector thread waits: everything queues up
            pipe.on_batch(ReadingBatch(np.full(n, a), t_a, {"p": np.full(n, cfg.devices[a].set_pressure_kpa)}))
            pipe.on_batch(ReadingBatch(np.array([b]), np.array([t_b]), {"p": np.array([cfg.devices[b].mop_kpa * 1.5])}))
            time.sleep(0.2)
            q = pipe.check_lag()
        assert q["rows_queued"] == n + 1 and q["oldest_age_s"] >= 0.2
        assert q["oldest_queued_ns"] == int(t_a[0])
        assert q["event_lag_s"] == (t_b - int(t_a[0])) / 1e9  # nothing evaluated yet: the span that waits
        behind = [r.getMessage() for r in caplog.records if "falling behind" in r.getMessage()]
        assert len(behind) == 1 and f"{n + 1:,} readings queued for detection" in behind[0], behind
        assert pipe.drain(60)
        pipe.engine.flush(5)
        done = pipe.check_lag()
        assert done["rows_queued"] == 0 and done["oldest_age_s"] == 0.0 and done["event_lag_s"] == 0.0
        assert done["readings"] == n + 1 and done["steps"] >= n // 32 and done["deferred_steps"] >= n // 32 - 1
        assert done["notices"] == 1 and ("G-highhigh", "firing") in sink.kinds()
        assert any(r.getMessage().startswith("detection caught up after") for r in caplog.records)
        # The firing notice was handed over at least 1.5 s (+0.2 s held) after its reading's event time.
        _, total, count = pipe.alert_latency.snapshot()
        assert count == 1 and total >= 1.7 and pipe.alert_latency.quantile(0.99) == 2.5
    finally:
        pipe.stop()
