"""Detector state across a reload and a restart of the DetectionPipeline: rules that did not change keep
their state, so their open alerts go on and clear when the condition does; changed ones are recovered."""

from __future__ import annotations

import numpy as np

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.store import AlertStore
from citywatch.pipeline import DetectionPipeline
from config import load_config
from core import ReadingBatch
from detectors.context import Inventory
from tests.unit.alerts.helpers import T0, RecordingSink, S, at, det, make_cfg, make_engine, write_config

ALERTS = """
alerting:
  sinks: {rec: {type: terminal}}
  route: {receivers: [rec], group_interval_s: 0}
  store_path: STORE
  detector_state_path: STATE
  recovered_clear_after_s: 120
"""
RULES = """rules:
  - {id: G-high, type: gas_high, kind: gas}
  - {id: G-low, type: gas_low, kind: gas}
"""


class Jobs:
    """A scheduler that only records the jobs it is given."""

    def __init__(self):
        self.jobs = {}

    def add_job(self, fn, trigger, seconds, id, **kw):
        self.jobs[id] = (fn, seconds)


class Rig:
    """A config directory, alert store and detector snapshot in tmp_path; `pipeline()` builds a fresh
    pipeline on them, as a restarted service would."""

    def __init__(self, tmp_path):
        self.tmp = tmp_path
        alerts = ALERTS.replace("STORE", str(tmp_path / "a.sqlite")).replace("STATE", str(tmp_path / "state.npz"))
        self.dir = write_config(tmp_path / "config", alerts, RULES)
        cfg = load_config(self.dir, {})
        inv = Inventory(cfg)
        gas = [i for i, d in enumerate(cfg.devices) if d.kind == "gas"]
        self.g1, self.g2 = gas[0], gas[1]
        self.high = float(inv.rel_high[self.g1] * inv.p_set[self.g1])
        self.set1, self.set2 = float(inv.p_set[self.g1]), float(inv.p_set[self.g2])

    def pipeline(self):
        cfg = load_config(self.dir, {})
        sink = RecordingSink()
        store = AlertStore(self.tmp / "a.sqlite")
        engine = AlertEngine(cfg, store, {"rec": sink}, dispatcher=Dispatcher({"rec": sink}, store, 0.01, 0.02))
        pipe = DetectionPipeline(cfg, {}, self.dir, clock=lambda: T0, listen=False, engine=engine)
        return pipe, sink

    def readings(self, t_s: float, p1: float | None = None, p2: float | None = None) -> ReadingBatch:
        rows = [(s, p) for s, p in ((self.g1, p1), (self.g2, p2)) if p is not None]
        return ReadingBatch(np.array([s for s, _ in rows]), np.full(len(rows), T0 + int(t_s * S)),
                            {"p": np.array([p for _, p in rows])})

    def raise_both(self, pipe, t0: float = 0) -> None:
        """G-high on g1 and G-low on g2 fire, then both sit inside their hysteresis bands (held)."""
        pipe.on_batch(self.readings(t0, self.high + 0.01 * self.set1, 0.80 * self.set2))
        pipe.on_batch(self.readings(t0 + 60, self.high - 0.01 * self.set1, 0.86 * self.set2))


def open_alerts(pipe) -> dict[str, object]:
    return {a.rule_id: a for a in pipe.engine.active()}


def level(pipe, rule_id: str, sensor: int) -> int:
    rule = next(r for r in pipe.rules.rules if r.rule_id == rule_id)
    return int(rule.level_[rule.group.local[sensor]])


def test_reload_keeps_the_state_of_unchanged_rules_and_recovers_changed_ones(tmp_path):
    rig = Rig(tmp_path)
    pipe, sink = rig.pipeline()
    pipe.start(scheduler=Jobs())
    rig.raise_both(pipe)
    assert set(open_alerts(pipe)) == {"G-high", "G-low"}
    (rig.dir / "rules.yaml").write_text(RULES.replace("{id: G-low, type: gas_low, kind: gas}",
                                                      "{id: G-low, type: gas_low, kind: gas, hysteresis_pct: 3}"))
    pipe.reload(load_config(rig.dir, {}))
    alerts = open_alerts(pipe)
    assert not alerts["G-high"].recovered and alerts["G-low"].recovered
    assert level(pipe, "G-high", rig.g1) == 2 and level(pipe, "G-low", rig.g2) == 0
    assert pipe.state_report.reset() == {"G-low"}
    # The kept level holds inside the band, then its detector sends the clear itself.
    pipe.on_batch(rig.readings(120, rig.high - 0.01 * rig.set1))
    assert set(open_alerts(pipe)) == {"G-high", "G-low"}
    pipe.on_batch(rig.readings(180, rig.set1))
    pipe.engine.flush(5)
    assert [(n.payload["rule_id"], n.transition) for n in sink.notices][-1] == ("G-high", "resolved")
    assert set(open_alerts(pipe)) == {"G-low"}
    pipe.stop()


def test_a_restarted_pipeline_continues_the_detector_state(tmp_path):
    rig = Rig(tmp_path)
    pipe, _ = rig.pipeline()
    jobs = Jobs()
    pipe.start(scheduler=jobs)
    assert jobs.jobs["detector_state"] == (pipe.save_state, 60)
    rig.raise_both(pipe)
    ids = {k: a.alert_id for k, a in open_alerts(pipe).items()}
    pipe.stop()   # saves the snapshot
    assert (tmp_path / "state.npz").exists() and pipe.counters["state_saves"] == 1

    pipe2, sink2 = rig.pipeline()
    pipe2.start(scheduler=Jobs())
    assert pipe2.state_report.ok and pipe2.state_report.reset() == set()
    alerts = open_alerts(pipe2)
    assert {k: a.alert_id for k, a in alerts.items()} == ids
    assert not any(a.recovered for a in alerts.values())
    assert level(pipe2, "G-high", rig.g1) == 2 and level(pipe2, "G-low", rig.g2) == 2
    # Still inside the bands long after `recovered_clear_after_s`: the alerts stay, as they would have.
    pipe2.on_batch(rig.readings(600, rig.high - 0.01 * rig.set1, 0.86 * rig.set2))
    assert set(open_alerts(pipe2)) == {"G-high", "G-low"}
    pipe2.on_batch(rig.readings(660, rig.set1, rig.set2))
    pipe2.engine.flush(5)
    assert sorted((n.alert_id, n.transition) for n in sink2.notices) == sorted(
        (i, "resolved") for i in ids.values())
    pipe2.stop()


def test_without_a_snapshot_a_restart_recovers_the_open_alerts(tmp_path):
    rig = Rig(tmp_path)
    pipe, _ = rig.pipeline()
    pipe.start(scheduler=Jobs())
    rig.raise_both(pipe)
    pipe.stop()
    (tmp_path / "state.npz").write_bytes(b"PK\x03\x04 truncated")
    pipe2, sink2 = rig.pipeline()
    pipe2.start(scheduler=Jobs())
    assert "truncated or corrupt" in pipe2.state_report.error
    assert all(a.recovered for a in open_alerts(pipe2).values())
    assert level(pipe2, "G-high", rig.g1) == 0
    # Inside the band, the fresh detector says nothing: the alert is resolved as recovered.
    pipe2.on_batch(rig.readings(600, rig.high - 0.01 * rig.set1, 0.86 * rig.set2))
    pipe2.engine.flush(5)
    assert sorted(n.transition for n in sink2.notices) == ["resolved", "resolved"]
    pipe2.stop()


def test_an_alert_newer_than_the_snapshot_is_recovered(tmp_path):
    rig = Rig(tmp_path)
    pipe, _ = rig.pipeline()
    pipe.start(scheduler=Jobs())
    pipe.on_batch(rig.readings(0, rig.set1, 0.80 * rig.set2))   # G-low fires on g2
    assert pipe.save_state()
    pipe.on_batch(rig.readings(60, rig.high + 0.01 * rig.set1, 0.80 * rig.set2))  # G-high fires on g1 ...
    pipe.engine.stop()   # ... and the service dies before the next snapshot
    pipe2, _ = rig.pipeline()
    pipe2.start(scheduler=Jobs())
    alerts = open_alerts(pipe2)
    # The restored G-high level is from before the alert: that detector would never send its clear.
    assert alerts["G-high"].recovered and not alerts["G-low"].recovered
    pipe2.stop()


def test_a_failed_save_is_counted_and_keeps_running(tmp_path):
    rig = Rig(tmp_path)
    (tmp_path / "state.npz").mkdir()   # the path is a directory: the rename fails
    pipe, _ = rig.pipeline()
    pipe.start(scheduler=Jobs())
    assert "cannot read" in pipe.state_report.error
    assert pipe.save_state() is False and pipe.counters["state_save_errors"] == 1
    pipe.on_batch(rig.readings(0, rig.high + 0.01 * rig.set1))
    assert set(open_alerts(pipe)) == {"G-high"}
    pipe.stop()


def test_engine_reload_recovers_only_the_named_rules_and_keys(tmp_path):
    cfg = make_cfg(rules=[{"id": "N-day", "type": "noise_day_limit"}, {"id": "N-pre", "type": "noise_pre_warning"}])
    engine, _ = make_engine(tmp_path, cfg)
    engine.process(det([(0, 0, "N-day", "yellow", 72), (1, 0, "N-day", "yellow", 72), (0, 0, "N-pre", "blue", 68)]))
    dev0, dev1 = cfg.devices[0].id, cfg.devices[1].id
    engine.reload(cfg, detectors_reset={("N-day", dev1)})
    assert {a.key: a.recovered for a in engine.active()} == {
        ("N-day", dev0): False, ("N-day", dev1): True, ("N-pre", dev0): False}
    engine.reload(cfg, detectors_reset={"N-pre"})
    assert {a.key: a.recovered for a in engine.active()}[("N-pre", dev0)] is True
    engine.reload(cfg, detectors_reset=set())
    engine.reload(cfg, detectors_reset=True)
    assert all(a.recovered for a in engine.active())
    engine.stop()


def test_engine_start_keeps_the_alerts_whose_detector_state_was_restored(tmp_path):
    cfg = make_cfg()
    engine, _ = make_engine(tmp_path, cfg)
    engine.process(det([(0, 0, "N-day", "yellow", 72), (1, 0, "N-day", "yellow", 72)]))
    engine.stop()
    engine2, _ = make_engine(tmp_path, cfg, store=AlertStore(tmp_path / "alerts.sqlite"))
    engine2.start(kept={("N-day", cfg.devices[0].id)})
    assert {a.device_id: a.recovered for a in engine2.active()} == {cfg.devices[0].id: False, cfg.devices[1].id: True}
    # The kept alert clears by its detector's clear row; nothing resolves it as recovered.
    engine2.observe_readings(np.array([0, 1], np.int32), np.array([at(600), at(600)]))
    assert {a.device_id for a in engine2.active()} == {cfg.devices[0].id}
    engine2.stop()
