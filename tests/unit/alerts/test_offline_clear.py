"""Offline always clears, and inhibition never hides a red process alarm (issue 10, Critical 3).

Table tests over the shipped config (rules, inventory, inhibit rules) with the real detectors feeding the
engine through DetectionPipeline on an injected wall clock, as `citywatch run` does: a tick raises
Offline, the device reports in every shape a field device may, and Offline clears and resolves after
clear_for_s. Then inhibition: only a really active device-health alert mutes, and never a red gas alarm.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from alerts.muting import Silence
from citywatch.pipeline import DetectionPipeline
from config.alerting import Alerting
from config.rules import RuleSpec
from core import ReadingBatch
from tests.unit.alerts.helpers import T0, S, at, base_cfg, det, make_engine

CLEAR_FOR_S = 120  # Offline's clear_for_s in these tests (the shipped rule has 0), so resolving is timed


def real_cfg(offline_clear_for_s: float = CLEAR_FOR_S):
    """The shipped config: every rule (Offline with `offline_clear_for_s`), the shipped inhibit rules;
    one recording sink without grouping delays."""
    base = base_cfg()
    alerting = Alerting.model_validate({
        "sinks": {"rec": {"type": "terminal"}},
        "route": {"receivers": ["rec"], "group_wait_s": 0, "group_interval_s": 0, "repeat_interval_s": 100000},
        "inhibit": [i.model_dump() for i in base.alerting.inhibit],
    })
    rules = [RuleSpec.model_validate({**r.model_dump(), "clear_for_s": offline_clear_for_s})
             if r.type == "deadman" else r for r in base.rules]
    return base.model_copy(update={"alerting": alerting, "rules": rules})


class Harness:
    """The shipped rules and the engine wired as in the running service, on a wall clock we move."""

    def __init__(self, tmp_path, cfg=None):
        self.cfg = cfg or real_cfg()
        self.now = T0
        # A tick takes every device of the shipped inventory offline: a hundred notices, which the default
        # rate limit (50/s) would make each test wait for.
        self.engine, self.sink = make_engine(tmp_path, self.cfg, clock=lambda: self.now, rate_per_s=1e6)
        self.pipe = DetectionPipeline(self.cfg, {}, clock=lambda: self.now, listen=False, engine=self.engine)

    def index(self, device_id: str) -> int:
        return self.cfg.device_index(device_id)

    def tick(self, t_ns: int) -> None:
        self.now = max(self.now, t_ns)
        self.pipe.tick(t_ns)

    def send(self, device_id: str, ts_ns: list[int], arrive_ns: int | None = None, **values) -> None:
        """One message of `device_id` with readings at `ts_ns`, evaluated at `arrive_ns` (wall clock)."""
        if arrive_ns is not None:
            self.now = max(self.now, arrive_ns)
        dev = self.cfg.devices[self.index(device_id)]
        n = len(ts_ns)
        if dev.kind == "gas":
            # A live pressure (not flat, so G-flatline stays out of the way), or the value asked for.
            p = np.full(n, values["p"]) if "p" in values else dev.set_pressure_kpa * (1 + 0.02 * np.sin(np.arange(n)))
            cols = {"p": p, "batt_v": np.full(n, 3.5)}
        else:
            cols = {k: np.full(n, v) for k, v in {"leq": 52.0, "lmax": 60.0, "lmin": 45.0, "l90": 47.0}.items()}
        self.pipe.on_batch(ReadingBatch(np.full(n, self.index(device_id)), np.array(ts_ns, np.int64), cols))

    def notices(self, rule: str, device_id: str) -> list:
        assert self.engine.flush(5)
        return [n for n in self.sink.notices if n.payload["rule_id"] == rule and n.payload["device"]["id"] == device_id]

    def transitions(self, rule: str, device_id: str) -> list[str]:
        return [n.transition for n in self.notices(rule, device_id)]

    def stop(self):
        self.engine.stop()


def envelope(end_ns: int, n: int = 12, step_s: int = 300) -> list[int]:
    """A gas device's hourly report: `n` samples `step_s` apart, the newest at `end_ns`."""
    return [end_ns - (n - 1 - i) * step_s * S for i in range(n)]


H = 3600 * S
MS = 1_000_000


def gap_then_envelope(h):  # 3 h silent, then the normal 12-sample hourly envelope ending now
    h.send("XMG0001", [T0])
    h.tick(T0 + 2 * H)
    h.tick(T0 + 3 * H + 400 * MS)          # the last tick, 0.4 s after the newest sample
    h.send("XMG0001", envelope(T0 + 3 * H), arrive_ns=T0 + 3 * H + 450 * MS)
    return "XMG0001", T0 + 3 * H + 400 * MS


def minute_device_after_a_gap(h):  # a 60 s device (offline after 420 s) back after 20 min, reading newer than the tick
    h.send("XM0001NOISE", [T0])
    h.tick(T0 + 1200 * S)
    h.send("XM0001NOISE", [T0 + 1205 * S], arrive_ns=T0 + 1205 * S + 30 * MS)
    return "XM0001NOISE", T0 + 1205 * S


def hj212_whole_seconds(h):  # HJ 212 DataTime has whole seconds: the reading is < 1 s older than the tick
    h.send("XM0004NOISE", [T0])
    h.tick(T0 + 900 * S + 999 * MS)
    h.send("XM0004NOISE", [T0 + 900 * S], arrive_ns=T0 + 901 * S)
    return "XM0004NOISE", T0 + 900 * S + 999 * MS


def newer_batch_then_older(h):  # out of order: the newest report arrives first, then an older one
    h.send("XMG0001", [T0])
    h.tick(T0 + 4 * H)
    h.send("XMG0001", envelope(T0 + 4 * H - 200 * MS), arrive_ns=T0 + 4 * H + S)
    h.send("XMG0001", envelope(T0 + 3 * H), arrive_ns=T0 + 4 * H + 2 * S)
    return "XMG0001", T0 + 4 * H


def older_reading_after_the_tick(h):  # a late message: its reading is 5 s older than the tick it follows
    h.send("XM0002NOISE", [T0])
    h.tick(T0 + 600 * S)
    h.send("XM0002NOISE", [T0 + 595 * S], arrive_ns=T0 + 600 * S + 10 * MS)
    return "XM0002NOISE", T0 + 600 * S


@pytest.mark.parametrize("scenario", [gap_then_envelope, minute_device_after_a_gap, hj212_whole_seconds,
                                      newer_batch_then_older, older_reading_after_the_tick])
def test_offline_clears_and_resolves_after_clear_for_s(tmp_path, scenario):
    h = Harness(tmp_path)
    device, cleared_at = scenario(h)
    assert h.transitions("Offline", device) == ["firing"]
    offline = h.notices("Offline", device)[0]
    assert offline.payload["context"]["last_reading_ns"] == T0
    h.tick(cleared_at + (CLEAR_FOR_S - 1) * S)
    assert h.transitions("Offline", device) == ["firing"]  # cleared, not yet clear_for_s
    assert not h.engine.active() or all(a.device_id != device or a.clear_since_ns is not None
                                        for a in h.engine.active() if a.rule_id == "Offline")
    h.tick(cleared_at + CLEAR_FOR_S * S)
    assert h.transitions("Offline", device) == ["firing", "resolved"]
    resolved = h.notices("Offline", device)[1]
    assert resolved.ts_ns == cleared_at + CLEAR_FOR_S * S
    assert h.engine.counters["late_rows"] == 0
    # and it stays resolved: the device goes on reporting, the clock goes on
    h.tick(cleared_at + (CLEAR_FOR_S + 60) * S)
    assert h.transitions("Offline", device) == ["firing", "resolved"]
    h.stop()


def test_offline_resolves_at_once_with_the_shipped_clear_for_s(tmp_path):
    h = Harness(tmp_path, real_cfg(offline_clear_for_s=0))
    device, cleared_at = gap_then_envelope(h)
    assert h.transitions("Offline", device) == ["firing", "resolved"]
    assert h.notices("Offline", device)[1].ts_ns == cleared_at
    h.stop()


def test_the_finding_gap_envelope_then_over_pressure_is_a_red_notice(tmp_path):
    """The sequence of issue 10: 3 h silent -> Offline; the hourly envelope -> Offline resolves;
    p = 5.25 kPa (> MOP 3.5 kPa) -> a red G-highhigh notice, not muted."""
    h = Harness(tmp_path, real_cfg(offline_clear_for_s=0))
    gap_then_envelope(h)
    h.send("XMG0001", [T0 + 3 * H + S], arrive_ns=T0 + 3 * H + S, p=5.25)
    red = h.notices("G-highhigh", "XMG0001")
    assert [(n.transition, n.payload["severity"]) for n in red] == [("firing", "red")]
    assert "device_health" not in red[0].payload["context"]
    assert h.engine.alert(red[0].alert_id).muted is None
    h.stop()


def test_only_the_clear_of_a_clock_raised_rule_is_kept_when_late(tmp_path):
    """The late-row rule still drops a reading-driven rule's late clear, never Offline's."""
    h = Harness(tmp_path, real_cfg(offline_clear_for_s=0))
    gas = h.index("XMG0002")
    h.engine.process(det([(gas, 100, "Offline", "yellow", 9000, 7500, "device"),
                          (gas, 100, "G-high", "yellow", 3.2, 3.0, "gas")]))
    h.engine.process(det([(gas, 50, "Offline", "clear", 0, 7500, "device"),
                          (gas, 50, "G-high", "clear", 2.5, 3.0, "gas")]))
    assert h.transitions("Offline", "XMG0002") == ["firing", "resolved"]
    assert h.notices("Offline", "XMG0002")[1].ts_ns == at(100)  # applied as of the newest row, not before it
    assert h.engine.counters["late_rows"] == 1  # G-high's
    h.stop()


# ----- inhibition --------------------------------------------------------------------------------------

def offline_row(sensor: int, t_s: float, last_reading_s: float | None = 0.0):
    d = det([(sensor, t_s, "Offline", "yellow", 9000, 7500, "device")])
    d.context[0] = {"metric": "silence", "unit": "s", "window": "deadman", "never_reported": last_reading_s is None,
                    "last_reading_ns": None if last_reading_s is None else at(last_reading_s)}
    return d


def test_a_red_process_alarm_is_delivered_while_its_device_is_offline(tmp_path):
    h = Harness(tmp_path)
    g = h.index("XMG0001")
    h.engine.process(offline_row(g, 100))
    h.engine.process(det([(g, 101, "G-highhigh", "red", 5.25, 3.5, "gas")]))
    red = h.notices("G-highhigh", "XMG0001")
    assert [(n.transition, n.payload["severity"]) for n in red] == [("firing", "red")]
    offline = h.notices("Offline", "XMG0001")[0]
    health = red[0].payload["context"]["device_health"]
    assert health == {"alert_id": offline.alert_id, "rule_id": "Offline", "severity": "yellow",
                      "since": offline.payload["firing_ts"], "last_reading_ts": "2025-06-01T14:30:00.000Z"}
    assert h.engine.alert(red[0].alert_id).muted is None
    h.stop()


def test_a_red_rupture_is_not_muted_by_a_low_battery_either(tmp_path):
    cfg = real_cfg()
    inhibit = [*(i.model_dump() for i in cfg.alerting.inhibit),
               {"source_rule": ["Batt"], "target_rule": ["G-rupture"], "equal": ["device_id"]}]
    cfg = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"inhibit": Alerting.model_validate(
        {"inhibit": inhibit}).inhibit})})
    h = Harness(tmp_path, cfg)
    g = h.index("XMG0003")
    h.engine.process(det([(g, 0, "Batt", "orange", 3.0, 3.1, "device")]))
    h.engine.process(det([(g, 10, "G-rupture", "orange", 2.1, 2.3, "gas")]))
    assert h.transitions("G-rupture", "XMG0003") == []  # orange: inhibited as configured
    h.engine.process(det([(g, 20, "G-rupture", "red", 1.9, 2.3, "gas")]))
    got = h.notices("G-rupture", "XMG0003")
    assert [(n.transition, n.payload["severity"]) for n in got] == [("firing", "red")]
    assert got[0].payload["context"]["device_health"]["rule_id"] == "Batt"
    h.stop()


def test_a_yellow_value_alert_is_muted_while_offline_and_notified_once_offline_resolves(tmp_path):
    h = Harness(tmp_path, real_cfg(offline_clear_for_s=0))
    g = h.index("XMG0001")
    h.engine.process(offline_row(g, 100))
    h.engine.process(det([(g, 101, "G-high", "yellow", 3.2, 3.0, "gas")]))
    assert h.transitions("G-high", "XMG0001") == []
    muted = next(a for a in h.engine.active() if a.rule_id == "G-high")
    assert muted.muted == f"inhibited:{h.notices('Offline', 'XMG0001')[0].alert_id}"
    h.engine.process(det([(g, 102, "Offline", "clear", 0, 7500, "device")]))
    assert h.transitions("Offline", "XMG0001") == ["firing", "resolved"]
    late = h.notices("G-high", "XMG0001")
    assert [n.transition for n in late] == ["firing"] and late[0].payload.get("late") is True
    assert "device_health" not in late[0].payload["context"]
    h.stop()


def test_an_offline_that_has_cleared_mutes_nothing_while_it_waits_to_resolve(tmp_path):
    h = Harness(tmp_path)  # Offline clear_for_s 120: cleared at 102, resolved at 222
    g = h.index("XMG0001")
    h.engine.process(offline_row(g, 100))
    h.engine.process(det([(g, 102, "Offline", "clear", 0, 7500, "device")]))
    h.engine.process(det([(g, 103, "G-high", "yellow", 3.2, 3.0, "gas")]))
    assert h.transitions("Offline", "XMG0001") == ["firing"]
    assert h.transitions("G-high", "XMG0001") == ["firing"]
    h.stop()


def test_an_offline_whose_device_has_reported_since_is_stale(tmp_path):
    """An Offline that knew of a reading at 0 s: once a newer reading of its device is seen (a restart
    made its detector forget it, so no clear comes), it no longer mutes."""
    h = Harness(tmp_path)
    g = h.index("XMG0001")
    h.engine.process(offline_row(g, 100, last_reading_s=0))
    h.engine.observe_readings(np.array([g]), np.array([at(-50)]))  # older than the verdict: still offline
    h.engine.process(det([(g, 101, "G-high", "yellow", 3.2, 3.0, "gas")]))
    assert h.transitions("G-high", "XMG0001") == []
    h.engine.observe_readings(np.array([g]), np.array([at(99)]))
    h.engine.tick(at(105))
    assert h.transitions("G-high", "XMG0001") == ["firing"]
    h.stop()


def test_an_operator_silence_naming_the_red_alarm_still_mutes_it(tmp_path):
    h = Harness(tmp_path)
    g = h.index("XMG0001")
    h.engine.start()  # loads the store's silences: ours comes after
    h.engine.muter.silences["s1"] = Silence("s1", {"rule_id": "G-highhigh", "device_id": "XMG0001"}, "lin",
                                            "valve work, crew on site", at(0), at(3600))
    h.engine.process(offline_row(g, 100))
    h.engine.process(det([(g, 101, "G-highhigh", "red", 5.25, 3.5, "gas")]))
    assert h.transitions("G-highhigh", "XMG0001") == []
    assert next(a for a in h.engine.active() if a.rule_id == "G-highhigh").muted == "silence:s1"
    h.stop()


def test_a_rupture_still_inhibits_red_low_pressure_of_its_site(tmp_path):
    """Only device-health sources are overridden: a rupture (a process alarm) mutes its consequence."""
    h = Harness(tmp_path)
    g = h.index("XMG0001")
    h.engine.process(det([(g, 0, "G-rupture", "red", 1.0, 2.3, "gas"), (g, 1, "G-low", "red", 1.0, 1.25, "gas")]))
    assert h.transitions("G-rupture", "XMG0001") == ["firing"]
    assert h.transitions("G-low", "XMG0001") == []
    h.stop()


def test_never_reported_offline_mutes_until_the_device_reports(tmp_path):
    h = Harness(tmp_path)
    g = h.index("XMG0001")
    h.engine.process(offline_row(g, 100, last_reading_s=None))
    h.engine.process(det([(g, 101, "G-high", "yellow", 3.2, 3.0, "gas")]))
    assert h.transitions("G-high", "XMG0001") == []
    h.engine.observe_readings(np.array([g]), np.array([at(0)]))
    h.engine.tick(at(102))
    assert h.transitions("G-high", "XMG0001") == ["firing"]
    assert not math.isnan(h.notices("G-high", "XMG0001")[0].payload["value"])
    h.stop()
