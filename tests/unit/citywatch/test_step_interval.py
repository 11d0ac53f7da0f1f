"""At light load the detector thread takes fewer, larger steps (issue 15): while few readings are in hand, a step
starts no sooner than `alerting.detect_step_min_interval_ms` after the last one started, waiting on the queue
for more rows meanwhile; never longer than that, the shutdown sentinel ends the wait, and 0 steps at once.
A real threaded DetectionPipeline; times are compared with the interval, with wide margins."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.store import AlertStore
from citywatch.pipeline import STEP_COALESCE_ROWS, DetectionPipeline
from config import load_config
from core import ReadingBatch
from tests.unit.alerts.helpers import T0, NoScheduler, RecordingSink, S, write_config

ALERTS = """
alerting:
  sinks: {rec: {type: terminal}}
  route: {receivers: [rec], group_wait_s: 0, group_interval_s: 0}
  store_path: STORE
  detect_step_min_interval_ms: INTERVAL
"""
RULES = "rules:\n  - {id: G-highhigh, type: gas_highhigh, kind: gas}\n"



def _pipeline(tmp_path, interval_ms: float) -> tuple[DetectionPipeline, int]:
    """A started threaded pipeline with the given interval, and a gas device's sensor index."""
    alerts = ALERTS.replace("STORE", str(tmp_path / "a.sqlite")).replace("INTERVAL", str(interval_ms))
    d = write_config(tmp_path / "config", alerts, RULES)
    cfg = load_config(d, {})
    assert cfg.alerting.detect_step_min_interval_ms == interval_ms
    sink = RecordingSink()
    store = AlertStore(tmp_path / "a.sqlite")
    engine = AlertEngine(cfg, store, {"rec": sink}, dispatcher=Dispatcher({"rec": sink}, store, 0.01, 0.02))
    pipe = DetectionPipeline(cfg, {}, d, listen=False, engine=engine, threaded=True)
    pipe.start(scheduler=NoScheduler())
    gas = next(i for i, dev in enumerate(cfg.devices) if dev.kind == "gas")
    return pipe, gas


def _reading(sensor: int, k: int) -> ReadingBatch:
    return ReadingBatch(np.array([sensor]), np.array([T0 + k * S]), {"p": np.array([300.0])})


def _lone_reading_after_a_step(pipe: DetectionPipeline, sensor: int) -> float:
    """Seconds from handing over one reading, right after a step ran, until it has been evaluated."""
    pipe.on_batch(_reading(sensor, 0))
    assert pipe.drain(10)
    t0 = time.monotonic()
    pipe.on_batch(_reading(sensor, 1))
    assert pipe.drain(10)
    return time.monotonic() - t0


def test_small_arrivals_are_taken_together_at_most_one_step_per_interval(tmp_path):
    interval_s = 0.05
    pipe, gas = _pipeline(tmp_path, interval_s * 1000)
    try:
        n = 60
        assert n < STEP_COALESCE_ROWS  # never enough rows in hand to step before the interval
        t0 = time.monotonic()
        for k in range(n):  # one reading every ~2 ms: the old thread stepped for (nearly) each of them
            pipe.on_batch(_reading(gas, k))
            time.sleep(0.002)
        assert pipe.drain(10)
        elapsed = time.monotonic() - t0
        assert pipe.counters["readings"] == n and pipe.counters["errors"] == 0
        # Each step after the first starts at least the interval after the one before (monotonic clock).
        assert 1 <= pipe.counters["batches"] <= elapsed / interval_s + 1
    finally:
        pipe.stop()


def test_a_lone_reading_waits_for_the_interval_at_most(tmp_path):
    interval_s = 0.6
    pipe, gas = _pipeline(tmp_path, interval_s * 1000)
    try:
        waited = _lone_reading_after_a_step(pipe, gas)
        assert interval_s / 2 <= waited <= interval_s + 1.0  # generous: a loaded machine only adds
        assert pipe.counters["batches"] == 2 and pipe.counters["readings"] == 2
    finally:
        pipe.stop()


def test_zero_steps_at_once(tmp_path):
    pipe, gas = _pipeline(tmp_path, 0)
    try:
        assert _lone_reading_after_a_step(pipe, gas) < 0.3  # 0.6 s interval above: waited at least 0.3 s
        assert pipe.counters["batches"] == 2
    finally:
        pipe.stop()


def test_the_stop_sentinel_ends_the_wait(tmp_path):
    pipe, gas = _pipeline(tmp_path, 1000)
    worker = pipe._worker
    assert isinstance(worker, threading.Thread)
    pipe.on_batch(_reading(gas, 0))
    assert pipe.drain(10)
    pipe.on_batch(_reading(gas, 1))
    t0 = time.monotonic()
    pipe.stop()  # puts the sentinel behind the reading, which is evaluated before the thread ends
    assert time.monotonic() - t0 < 0.5 and not worker.is_alive()
    assert pipe.counters["readings"] == 2


@pytest.mark.parametrize("bad", [-1, 1001])
def test_the_interval_is_validated(tmp_path, bad):
    from config import ConfigError

    alerts = ALERTS.replace("STORE", str(tmp_path / "a.sqlite")).replace("INTERVAL", str(bad))
    with pytest.raises(ConfigError, match="detect_step_min_interval_ms"):
        load_config(write_config(tmp_path / "config", alerts, RULES), {})
