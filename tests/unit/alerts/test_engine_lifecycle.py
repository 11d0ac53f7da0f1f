"""The alert lifecycle through the whole engine (detections in, notices out of a recording sink, state in
a real store): for_s, clear_for_s, flapping, severity changes. The same lifecycle without a store or a
sink: test_lifecycle.py."""

from __future__ import annotations

import pytest

from tests.unit.alerts.helpers import at, det, make_cfg, make_engine

RULE = {"id": "N-day", "type": "noise_day_limit", "kind": "noise"}


def run(tmp_path, rule: dict, steps: list, alerting: dict | None = None):
    """Feed each step (a list of detection rows, or ("tick", t)) and return the notices' transitions."""
    engine, sink = make_engine(tmp_path, make_cfg(alerting, [{**RULE, **rule}]))
    for step in steps:
        if isinstance(step, tuple) and step[0] == "tick":
            engine.tick(at(step[1]))
        else:
            engine.process(det(step))
    assert engine.flush(5)
    engine.stop()
    return sink.notices, engine


@pytest.mark.parametrize(
    "for_s, steps, expected",
    [
        # fires at once without for_s
        (0, [[(0, 0, "N-day", "yellow", 72)]], ["firing"]),
        # held 60 s: the second reading at 30 s does not fire it yet
        (60, [[(0, 0, "N-day", "yellow", 72), (0, 30, "N-day", "yellow", 72)]], []),
        # ... the watermark reaching 60 s does
        (60, [[(0, 0, "N-day", "yellow", 72)], ("tick", 60)], ["firing"]),
        # cleared before for_s: never fires, never notifies
        (60, [[(0, 0, "N-day", "yellow", 72), (0, 30, "N-day", "clear", 65)], ("tick", 600)], []),
        # cleared after for_s within one batch: firing then resolved, in order
        (60, [[(0, 0, "N-day", "yellow", 72), (0, 90, "N-day", "clear", 65)]], ["firing", "resolved"]),
    ],
)
def test_for_s(tmp_path, for_s, steps, expected):
    notices, _ = run(tmp_path, {"for_s": for_s}, steps)
    assert [n.transition for n in notices] == expected


def test_firing_is_stamped_when_for_s_elapsed(tmp_path):
    notices, _ = run(tmp_path, {"for_s": 60}, [[(0, 0, "N-day", "yellow", 72), (0, 120, "N-day", "yellow", 72)]])
    assert notices[0].ts_ns == at(60)
    assert notices[0].payload["start_ts"] == "2025-06-01T14:30:00.000Z"


@pytest.mark.parametrize(
    "steps, expected",
    [
        # clear for 120 s: resolves at clear + 120
        ([[(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "clear", 65)], ("tick", 180)], ["firing", "resolved"]),
        # clear for only 100 s: still open
        ([[(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "clear", 65)], ("tick", 179)], ["firing"]),
        # active again within clear_for_s: the same alert stays open, no second firing
        (
            [[(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "clear", 65), (0, 120, "N-day", "yellow", 71)],
             ("tick", 1000)],
            ["firing"],
        ),
    ],
)
def test_clear_for_s_hysteresis(tmp_path, steps, expected):
    notices, _ = run(tmp_path, {"clear_for_s": 120}, steps)
    assert [n.transition for n in notices] == expected
    if expected == ["firing", "resolved"]:
        assert notices[1].ts_ns == at(180)


def test_severity_rises_and_falls_within_one_alert(tmp_path):
    rows = [(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "orange", 76), (0, 120, "N-day", "orange", 77),
            (0, 180, "N-day", "yellow", 73), (0, 240, "N-day", "clear", 65)]
    notices, _ = run(tmp_path, {}, [rows])
    assert [(n.transition, n.payload["severity"]) for n in notices] == [
        ("firing", "yellow"), ("severity", "orange"), ("severity", "yellow"), ("resolved", "yellow")]
    assert notices[1].payload["previous_severity"] == "yellow"
    assert len({n.alert_id for n in notices}) == 1
    assert [n.seq for n in notices] == [1, 2, 3, 4]
    assert notices[3].payload["peak_value"] == 77


def test_flapping_rule_is_held_firing(tmp_path):
    # flips every 60 s; the 7th flip within the hour exceeds flap_max_transitions (6)
    rows = []
    for i in range(10):
        rows.append((0, i * 120, "N-day", "yellow", 72))
        rows.append((0, i * 120 + 60, "N-day", "clear", 65))
    notices, engine = run(tmp_path, {}, [rows], {"flap_window_s": 3600, "flap_max_transitions": 6})
    kinds = [n.transition for n in notices]
    # three short alerts (6 flips); the 7th flip opens a 4th alert that fires flapping and is held open
    assert kinds == ["firing", "resolved"] * 3 + ["firing"]
    assert notices[-1].payload["flapping"] is True
    assert [a.flapping for a in engine.active()] == [True]


def test_flapping_alert_resolves_once_the_flips_die_down(tmp_path):
    rows = []
    for i in range(5):
        rows.append((0, i * 120, "N-day", "yellow", 72))
        rows.append((0, i * 120 + 60, "N-day", "clear", 65))
    alerting = {"flap_window_s": 3600, "flap_max_transitions": 6}
    # at 2000 s all 10 flips are still in the window: held
    notices, engine = run(tmp_path, {}, [rows, ("tick", 2000)], alerting)
    assert [n.transition for n in notices] == ["firing", "resolved"] * 3 + ["firing"]
    assert len(engine.active()) == 1
    # at 4000 s the window holds none: it resolves
    notices, engine = run(tmp_path / "b", {}, [rows, ("tick", 4000)], alerting)
    assert [n.transition for n in notices] == ["firing", "resolved"] * 4
    assert engine.active() == []


def test_firing_alert_that_starts_flapping_is_marked(tmp_path):
    # clear_for_s keeps one alert open across short clears; its flips mark it flapping once
    rows = []
    for i in range(5):
        rows.append((0, i * 120, "N-day", "yellow", 72))
        rows.append((0, i * 120 + 60, "N-day", "clear", 65))
    notices, _ = run(tmp_path, {"clear_for_s": 90}, [rows], {"flap_max_transitions": 6})
    assert [n.transition for n in notices] == ["firing", "flapping"]


def test_two_devices_are_two_alerts(tmp_path):
    notices, _ = run(tmp_path, {}, [[(0, 0, "N-day", "yellow", 72), (1, 0, "N-day", "orange", 76)]])
    assert sorted(n.payload["device"]["id"] for n in notices) == ["XM0001NOISE", "XM0002NOISE"]
    p = notices[0].payload
    assert p["site"]["name"] and p["site"]["address"] and p["site"]["district"]


def test_late_rows_older_than_the_alert_are_ignored(tmp_path):
    notices, engine = run(tmp_path, {}, [[(0, 100, "N-day", "yellow", 72)], [(0, 50, "N-day", "clear", 65)]])
    assert [n.transition for n in notices] == ["firing"]
    assert engine.counters["late_rows"] == 1


def test_rows_of_unknown_sensors_are_counted_and_skipped(tmp_path):
    notices, engine = run(tmp_path, {}, [[(-1, 0, "N-day", "red", 90), (9999, 0, "N-day", "red", 90),
                                          (0, 0, "N-day", "yellow", 72)]])
    assert [(n.transition, n.payload["device"]["id"]) for n in notices] == [("firing", "XM0001NOISE")]
    assert engine.counters["unknown_sensor_rows"] == 2


def test_an_untouched_alerts_timer_runs_in_process_at_most_every_advance_interval_and_is_stamped_when_due(tmp_path):
    """process() runs the timers of alerts no detection touched at most every ADVANCE_EVERY_NS of engine time
    (a step comes every few ms under load); tick() always does. Either way the transition carries the time it
    fell due, and none is lost (issue 17)."""
    from alerts.engine import ADVANCE_EVERY_NS

    gap = ADVANCE_EVERY_NS / 1e9
    engine, sink = make_engine(tmp_path, make_cfg(None, [{**RULE, "for_s": 1}, {**RULE, "id": "N-other"}]))
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))  # pending until 1 s
    engine.process(det([(1, 1.0 - gap / 2, "N-other", "yellow", 72)]))  # other alerts' timers ran at 1 s - gap/2
    engine.process(det([(1, 1.0 + gap / 4, "N-other", "yellow", 72)]))  # N-day due, untouched, inside the gap
    assert engine.flush(5)
    assert [(n.payload["rule_id"], n.transition) for n in sink.notices] == [("N-other", "firing")]
    engine.process(det([(1, 1.0 + gap, "N-other", "yellow", 72)]))  # the interval passed: timers run here
    assert engine.flush(5)
    fired = [n for n in sink.notices if n.payload["rule_id"] == "N-day"]
    assert [n.transition for n in fired] == ["firing"] and fired[0].ts_ns == at(1)
    engine.process(det([(0, 1.0 + gap, "N-day", "clear", 60)]))  # clear_for_s 0 by default: resolves
    engine.process(det([(0, 1.0 + 1.5 * gap, "N-day", "yellow", 72)]))  # pending again until 2 + 1.5 gap
    engine.tick(at(2.0 + 1.5 * gap))  # tick always runs every timer
    assert engine.flush(5)
    engine.stop()
    fired = [n for n in sink.notices if n.payload["rule_id"] == "N-day"]
    assert [n.transition for n in fired] == ["firing", "resolved", "firing"]
    assert fired[2].ts_ns == at(2.0 + 1.5 * gap)

