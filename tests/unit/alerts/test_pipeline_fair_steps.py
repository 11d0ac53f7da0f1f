"""DetectionPipeline in bounded steps (issue 10): a device's back-fill is evaluated a few readings at a time
beside the others' new readings; in event time the watermark and the deadman wait for its deferred rows."""

from __future__ import annotations

import numpy as np

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.store import AlertStore
from citywatch.pipeline import DetectionPipeline
from config import load_config
from core import ReadingBatch
from tests.unit.alerts.helpers import T0, NoScheduler, RecordingSink, S, write_config

ALERTS = """
alerting:
  sinks: {rec: {type: terminal}}
  route: {receivers: [rec], group_wait_s: 0, group_interval_s: 0}
  store_path: STORE
  detect_step_rows_per_device: 32
"""
RULES = "rules:\n  - {id: G-highhigh, type: gas_highhigh, kind: gas}\n  - {id: Offline, type: deadman, kind: any}\n"



def test_a_backfill_in_event_time_holds_neither_another_device_nor_sends_its_own_offline(tmp_path):
    d = write_config(tmp_path / "config", ALERTS.replace("STORE", str(tmp_path / "a.sqlite")), RULES)
    ingest = d / "ingest.yaml"
    text = ingest.read_text()
    assert "  clock: wall" in text
    ingest.write_text(text.replace("  clock: wall", "  clock: event", 1))
    cfg = load_config(d, {})
    sink = RecordingSink()
    store = AlertStore(tmp_path / "a.sqlite")
    engine = AlertEngine(cfg, store, {"rec": sink}, dispatcher=Dispatcher({"rec": sink}, store, 0.01, 0.02))
    pipe = DetectionPipeline(cfg, {}, d, listen=False, engine=engine, threaded=True)
    gas = [i for i, dev in enumerate(cfg.devices) if dev.kind == "gas"]
    a, b = gas[0], gas[1]
    set_p = {i: cfg.devices[i].set_pressure_kpa for i in (a, b)}
    pipe.start(scheduler=NoScheduler())
    try:
        every = np.arange(pipe.rules.n_sensors)
        pipe.on_batch(ReadingBatch(every, np.full(len(every), T0), {"p": np.full(len(every), np.nan)}))
        assert pipe.drain(10)
        after_s = float(next(r for r in pipe.rules.rules if r.rule_id == "Offline").after_s.max())
        n = 3000
        backfill = ReadingBatch(np.full(n, a), T0 + np.arange(1, n + 1) * S, {"p": np.full(n, set_p[a])})
        # B's reading is newer than all of A's: evaluated whole, it would carry the watermark (and the
        # deadman) far past A's deferred rows, and A would look silent for longer than after_s.
        t_b = T0 + (n + int(after_s // 2)) * S
        with pipe._lock:  # both queue up while the detector thread waits
            pipe.on_batch(backfill)
            pipe.on_batch(ReadingBatch(np.array([b]), np.array([t_b]), {"p": np.array([cfg.devices[b].mop_kpa * 1.5])}))
        assert pipe.drain(60)
        pipe.engine.flush(5)
        assert pipe.counters["readings"] == len(every) + n + 1 and pipe.counters["errors"] == 0
        assert pipe.counters["batches"] >= n // 32  # bounded steps, not one batch
        kinds = sink.kinds()
        assert ("G-highhigh", "firing") in kinds
        offline_a = [nt for nt in sink.notices
                     if nt.alert_id.startswith("Offline.") and cfg.devices[a].id in nt.alert_id]
        assert offline_a == []
        assert pipe._watermark_ns == t_b  # after the drain the watermark is where one big batch leaves it
    finally:
        pipe.stop()
