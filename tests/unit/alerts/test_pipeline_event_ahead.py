"""Event clock (replays, simulations): a reading dated far ahead of the feed waits outside the detectors and the
feed's clock until the feed gets there (found by an audit: one reading of one device dated 30 days ahead moved the
clock of every device: Offline for 51 of 52 devices again and again, an operator's 2-hour silence ended at once).
A gap in a recording, where every device moves on, still moves the clock."""

from __future__ import annotations

import logging

import numpy as np

from alerts.commands import local_author
from citywatch import pipeline as pipeline_mod
from core import ReadingBatch
from tests.unit.alerts.helpers import T0, S
from tests.unit.alerts.test_pipeline_event_deadman import _pipeline

DAY = 86400 * S


def _all(pipe, t, sensors=None):
    sensors = np.arange(pipe.rules.n_sensors) if sensors is None else np.asarray(sensors)
    pipe.on_batch(ReadingBatch(sensors, np.full(len(sensors), t, np.int64), {"p": np.full(len(sensors), 2.0),
                                                                            "leq": np.full(len(sensors), 50.0)}))


def _offline_firing(sink):
    return {n.alert_id for n in sink.notices if n.alert_id.startswith("Offline.") and n.transition == "firing"}


def test_one_reading_dated_30_days_ahead_moves_no_clock(tmp_path, caplog):
    cfg, pipe, sink = _pipeline(tmp_path, "ahead")
    gas = [i for i, d in enumerate(cfg.devices) if d.kind == "gas"]
    for k in range(5):
        _all(pipe, T0 + k * 60 * S)
    said = pipe.engine.submit_command("cli:li", {"action": "silence", "matchers": {
        "device_id": cfg.devices[gas[1]].id}, "comment": "maintenance", "expires": "2h"}, local_author("li"))
    assert said.startswith("ok"), said
    with caplog.at_level(logging.WARNING, logger="citywatch.pipeline"):
        _all(pipe, T0 + 30 * DAY, [gas[2]])
    assert "detection holds readings of " + cfg.devices[gas[2]].id in caplog.text
    assert pipe.backlog()["rows_held_ahead"] == 1
    for k in range(5, 12):  # every device goes on reporting as before
        _all(pipe, T0 + k * 60 * S)
    assert _offline_firing(sink) == set()
    assert pipe.engine.watermark_ns < T0 + DAY
    assert [s.active(pipe.engine._now()) for s in pipe.engine.muter.silences.values()] == [True]
    assert pipe.backlog()["rows_held_ahead"] == 1  # still waiting for the feed to get there
    pipe.stop()


def test_a_gap_in_a_recording_moves_the_clock_once_two_devices_are_past_it(tmp_path):
    cfg, pipe, sink = _pipeline(tmp_path, "gap")
    n = pipe.rules.n_sensors
    for k in range(3):
        _all(pipe, T0 + k * 60 * S)
    later = T0 + 2 * DAY
    _all(pipe, later, [0])  # the first device after the gap: held, alone it says nothing
    assert pipe.backlog()["rows_held_ahead"] == 1 and pipe.engine.watermark_ns < later
    _all(pipe, later + 30 * S, [1])  # a second device reaches that time: the feed has moved on
    assert pipe.backlog()["rows_held_ahead"] == 0
    assert pipe.engine.watermark_ns >= later
    # The other devices were silent across the gap: the deadman may say so (the clock moved for real).
    _all(pipe, later + 60 * S, range(2, n))
    _all(pipe, later + 2 * 3600 * S)
    assert pipe.backlog()["rows_held_ahead"] == 0
    pipe.stop()


def test_held_readings_run_when_the_feed_gets_there(tmp_path):
    cfg, pipe, sink = _pipeline(tmp_path, "catch")
    _all(pipe, T0)
    early = T0 + 3 * DAY
    _all(pipe, early, [0])  # 3 days ahead: held
    assert pipe.backlog()["rows_held_ahead"] == 1
    readings = pipe.counters["readings"]
    for k in range(1, 4):   # the feed gets to within EVENT_JUMP_S of it
        _all(pipe, T0 + k * DAY, range(1, pipe.rules.n_sensors))
    assert pipe.backlog()["rows_held_ahead"] == 0
    assert pipe.counters["readings"] == readings + 3 * (pipe.rules.n_sensors - 1) + 1  # the held one ran too
    pipe.stop()


def test_the_hold_is_bounded(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(pipeline_mod, "AHEAD_MAX_ROWS", 5)
    cfg, pipe, sink = _pipeline(tmp_path, "bound")
    _all(pipe, T0)
    with caplog.at_level(logging.WARNING, logger="citywatch.pipeline"):
        for k in range(8):
            _all(pipe, T0 + 30 * DAY + k * S, [0])
    assert pipe.backlog()["rows_held_ahead"] == 5
    assert pipe.backlog()["rows_ahead_dropped"] == 3
    assert "left out of detection" in caplog.text
    pipe.stop()


def test_second_newest():
    f = pipeline_mod._second_newest
    assert f(np.array([], np.int32), np.array([], np.int64)) is None
    assert f(np.array([3, 3, 3]), np.array([1, 9, 5])) is None  # one device
    assert f(np.array([3, 4, 3, 5]), np.array([1, 7, 9, 2])) == 7  # newest per device: 9, 7, 2
    assert f(np.array([1, 2]), np.array([5, 5])) == 5


def test_the_wall_clock_holds_nothing(tmp_path):
    from config import load_config
    from tests.unit.alerts.helpers import write_config
    from tests.unit.alerts.test_pipeline_event_deadman import ALERTS, RULES
    d = write_config(tmp_path / "wall", ALERTS.replace("STORE", str(tmp_path / "w.sqlite"))
                     .replace("STATE", str(tmp_path / "w.npz")), RULES)
    cfg = load_config(d, {})
    assert cfg.ingest.clock == "wall"
    pipe = pipeline_mod.DetectionPipeline(cfg, {}, d, listen=False, threaded=False)
    batch = ReadingBatch(np.array([0, 1]), np.array([T0, T0 + 30 * DAY]), {"p": np.array([2.0, 2.0])})
    assert pipe._hold_ahead(batch) is batch
