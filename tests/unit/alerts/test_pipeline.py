"""DetectionPipeline: detectors feed the engine; a changed config directory is reloaded, a broken one refused."""

from __future__ import annotations

import os

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
  route: {receivers: [rec], group_interval_s: 0}
  store_path: STORE
"""
RULES = "rules:\n  - {id: G-highhigh, type: gas_highhigh, kind: gas}\n"


def pipeline(tmp_path, threaded=False):
    d = write_config(tmp_path / "config", ALERTS.replace("STORE", str(tmp_path / "a.sqlite")), RULES)
    cfg = load_config(d, {})
    sink = RecordingSink()
    store = AlertStore(tmp_path / "a.sqlite")
    engine = AlertEngine(cfg, store, {"rec": sink}, dispatcher=Dispatcher({"rec": sink}, store, 0.01, 0.02))
    pipe = DetectionPipeline(cfg, {}, d, clock=lambda: T0, listen=False, engine=engine, threaded=threaded)
    gas = next(i for i, dev in enumerate(cfg.devices) if dev.kind == "gas")
    return pipe, sink, d, gas, cfg.devices[gas]


def reading(sensor, t, p):
    return ReadingBatch(np.array([sensor]), np.array([T0 + t * S]), {"p": np.array([p])})


def test_threaded_pipeline_keeps_batch_order(tmp_path):
    pipe, sink, _, gas, dev = pipeline(tmp_path, threaded=True)
    pipe.start(scheduler=NoScheduler())
    for i in range(20):
        pipe.on_batch(reading(gas, i * 60, dev.mop_kpa * 1.5 if i % 2 == 0 else dev.set_pressure_kpa))
    assert pipe.drain(10)
    pipe.engine.flush(5)
    assert sink.transitions()[:4] == ["firing", "resolved", "firing", "resolved"]
    pipe.stop()


def test_batches_queued_while_the_detectors_are_busy_are_evaluated_together(tmp_path):
    pipe, sink, _, gas, dev = pipeline(tmp_path, threaded=True)
    pipe.start(scheduler=NoScheduler())
    with pipe._lock:  # the detector thread is busy: everything queues up meanwhile
        for i in range(20):
            pipe.on_batch(reading(gas, i * 60, dev.mop_kpa * 1.5 if i % 2 == 0 else dev.set_pressure_kpa))
    assert pipe.drain(10)
    pipe.engine.flush(5)
    assert pipe.counters["readings"] == 20 and pipe.counters["batches"] < 20
    # Evaluated together, in order: the same lifecycle as one batch at a time.
    assert sink.transitions()[:4] == ["firing", "resolved", "firing", "resolved"]
    pipe.stop()


def test_file_change_reloads_and_a_broken_file_is_refused(tmp_path):
    pipe, sink, d, gas, dev = pipeline(tmp_path)
    pipe.engine.start()
    pipe.on_batch(reading(gas, 0, dev.mop_kpa * 1.5))
    alert_id = pipe.engine.active()[0].alert_id
    path = d / "alerts.yaml"
    path.write_text(path.read_text().replace("group_interval_s: 0", "group_interval_s: 5"))
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse file systems
    pipe._watch_config()
    assert pipe.counters["reloads"] == 1 and pipe.cfg.alerting.route.group_interval_s == 5
    assert [a.alert_id for a in pipe.engine.active()] == [alert_id]
    path.write_text("alerting:\n  flap_window_s: -1\n")
    os.utime(path, ns=(2, 2))
    pipe._watch_config()
    assert pipe.counters["reload_errors"] == 1 and pipe.cfg.alerting.route.group_interval_s == 5
    pipe.engine.stop()


