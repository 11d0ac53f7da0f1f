"""The alert keeps the highest severity it reached (`peak_severity`) while its current severity follows
the latest detection: in the record, in the SQLite store (old stores without the field stay readable),
on every notice, and in `citywatch alerts show`."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts.model import Alert
from alerts.store import AlertStore
from citywatch.cli import main
from tests.unit.alerts.helpers import at, det, make_cfg, make_engine

RULE = {"id": "N-day", "type": "noise_day_limit", "kind": "noise"}


def run(tmp_path, steps, rule: dict | None = None):
    engine, sink = make_engine(tmp_path, make_cfg(None, [{**RULE, **(rule or {})}]))
    for step in steps:
        if isinstance(step, tuple) and step[0] == "tick":
            engine.tick(at(step[1]))
        else:
            engine.process(det(step))
    assert engine.flush(5)
    return engine, sink


@pytest.mark.parametrize(
    "rule, steps, expected",
    [
        # rises and falls: every notice after the rise carries the peak, the current severity falls back
        ({}, [[(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "orange", 78), (0, 120, "N-day", "yellow", 73),
               (0, 180, "N-day", "clear", 65)]],
         [("firing", "yellow", "yellow"), ("severity", "orange", "orange"), ("severity", "yellow", "orange"),
          ("resolved", "yellow", "orange")]),
        # the peak was reached while pending (for_s): the firing notice reports it
        ({"for_s": 60}, [[(0, 0, "N-day", "orange", 78), (0, 30, "N-day", "yellow", 73)], ("tick", 60)],
         [("firing", "yellow", "orange")]),
        # several peaks in one batch: red is kept; the notice shows the peak as of its transition
        ({}, [[(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "red", 95), (0, 120, "N-day", "blue", 70),
               (0, 180, "N-day", "orange", 80)]],
         [("firing", "yellow", "yellow"), ("severity", "red", "red"), ("severity", "blue", "red"),
          ("severity", "orange", "red")]),
        # never above its first severity
        ({}, [[(0, 0, "N-day", "orange", 78), (0, 60, "N-day", "orange", 79)]], [("firing", "orange", "orange")]),
    ],
)
def test_notices_carry_the_peak(tmp_path, rule, steps, expected):
    engine, sink = run(tmp_path, steps, rule)
    got = [(n.transition, n.payload["severity"], n.payload["peak_severity"]) for n in sink.notices]
    assert got == expected
    codes = {"blue": 1, "yellow": 2, "orange": 3, "red": 4}
    assert [n.payload["peak_severity_code"] for n in sink.notices] == [codes[p] for _, _, p in expected]
    engine.stop()


def test_peak_is_stored_and_survives_a_restart(tmp_path):
    rows = [(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "orange", 78), (0, 120, "N-day", "yellow", 73)]
    engine, _ = run(tmp_path, [rows])
    alert_id = engine.active()[0].alert_id
    engine.stop()
    engine.store.close()

    store = AlertStore(tmp_path / "alerts.sqlite")
    a = store.alert(alert_id)
    assert (a.severity, a.peak_severity, a.peak_value) == (2, 3, 78)
    # the engine started on that store keeps the peak; a higher detection raises it, a lower one does not
    engine2, sink2 = make_engine(tmp_path, make_cfg(None, [RULE]), store=store)
    engine2.start()
    assert engine2.active()[0].peak_severity == 3
    engine2.process(det([(0, 180, "N-day", "blue", 71)]))
    assert (engine2.active()[0].severity, engine2.active()[0].peak_severity) == (1, 3)
    engine2.process(det([(0, 240, "N-day", "red", 96), (0, 300, "N-day", "clear", 65)]))
    engine2.tick(at(10_000))
    engine2.flush(5)
    engine2.stop()
    a = store.alert(alert_id)
    assert (a.state, a.severity, a.peak_severity, a.peak_value) == ("resolved", 4, 4, 96)
    assert sink2.notices[-1].payload["peak_severity"] == "red"


@pytest.mark.parametrize(
    "body, expected",
    [
        ({"severity": 3}, 3),  # written before the field existed: the stored severity
        ({"severity": 2, "peak_severity": None}, 2),
        ({"severity": 2, "peak_severity": 4}, 4),
        ({"severity": 4, "peak_severity": 2}, 4),  # never below the current severity
    ],
)
def test_old_and_odd_store_records_load(tmp_path, body, expected):
    path = tmp_path / "old.sqlite"
    # An old store: the same tables, a body without peak_severity.
    AlertStore(path).close()
    full = {"alert_id": "N-day.D1.x", "rule_id": "N-day", "device_id": "D1", "category": "noise",
            "site": {"id": "S1"}, "device": {"id": "D1"}, "state": "resolved", "started_ns": at(0),
            "firing_ns": at(0), "value": 70.0, "limit": 70.0, "peak_value": None, **body}
    con = sqlite3.connect(path)
    con.execute("INSERT INTO alerts (alert_id, rule_id, device_id, state, severity, started_ns, body) "
                "VALUES (?,?,?,?,?,?,?)",
                ("N-day.D1.x", "N-day", "D1", "resolved", body["severity"], at(0), json.dumps(full)))
    con.commit()
    con.close()
    a = AlertStore(path).alert("N-day.D1.x")
    assert a.peak_severity == expected and a.severity == body["severity"]


def test_alert_record_defaults_peak_to_severity():
    a = Alert("x", "N-day", "D1", "noise", {}, {}, severity=3)
    assert a.peak_severity == 3 and a.peak_severity_name == "orange"
    assert Alert.from_dict({**a.to_dict(), "peak_severity": 4}).peak_severity == 4
    d = a.to_dict()
    del d["peak_severity"]
    assert Alert.from_dict(d).peak_severity == 3


def test_alerts_show_reports_the_peak(tmp_path, capsys):
    rows = [(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "orange", 78), (0, 120, "N-day", "yellow", 73)]
    engine, _ = run(tmp_path, [rows])
    alert_id = engine.active()[0].alert_id
    engine.stop()
    store = str(tmp_path / "alerts.sqlite")
    assert main(["alerts", "--store", store, "show", alert_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)["alert"]
    assert (shown["severity"], shown["peak_severity"], shown["peak_value"]) == (2, 3, 78)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sevs=st.lists(st.sampled_from(["blue", "yellow", "orange", "red"]), min_size=1, max_size=12),
       cut=st.integers(0, 12))
def test_peak_is_the_running_maximum(tmp_path_factory, sevs, cut):
    """Whatever the order and batching of one lifecycle's detections: the stored peak is the maximum
    severity seen, and every notice's peak is at least the maximum up to its transition time (a notice held
    by grouping is composed later and may already carry a higher peak) and never above the overall peak."""
    tmp = tmp_path_factory.mktemp("peak")
    rows = [(0, 60 * i, "N-day", s, 70 + i) for i, s in enumerate(sevs)]
    engine, sink = run(tmp, [rows[:cut], rows[cut:]] if 0 < cut < len(rows) else [rows])
    codes = {"blue": 1, "yellow": 2, "orange": 3, "red": 4}
    a = engine.store.alert(engine.active()[0].alert_id)
    assert a.peak_severity == max(codes[s] for s in sevs) and a.severity == codes[sevs[-1]]
    for n in sink.notices:
        upto = [codes[s] for i, s in enumerate(sevs) if at(60 * i) <= n.ts_ns]
        assert max(upto) <= n.payload["peak_severity_code"] <= max(codes[s] for s in sevs)
    engine.stop()


# ----- the peak value lies in the direction of the condition ------------------------------------------

@pytest.mark.parametrize("rows, peak", [
    # above the limit, then held active by hysteresis just inside it: the peak is the highest value, not
    # the one farthest from the limit (the what-if report showed "peak 45.2 dB(A), limit 47.0").
    ([(0, 0, "N-day", "blue", 47.3, 47.0), (0, 60, "N-day", "blue", 45.2, 47.0)], 47.3),
    ([(0, 0, "N-day", "yellow", 71.0, 70.0), (0, 60, "N-day", "yellow", 60.5, 70.0),
      (0, 120, "N-day", "yellow", 74.0, 70.0)], 74.0),
    # below the limit (G-low, N-data's valid rate): the lowest value, also against a hysteresis row above
    ([(0, 0, "N-day", "yellow", 2.0, 2.125), (0, 60, "N-day", "yellow", 1.9, 2.125),
      (0, 120, "N-day", "yellow", 2.5, 2.125)], 1.9),
])
def test_peak_value_is_the_most_severe_value_in_the_conditions_direction(tmp_path, rows, peak):
    engine, _ = run(tmp_path, [rows[:1], rows[1:]])
    (alert,) = engine.active()
    assert alert.peak_value == peak
    engine.stop()


def test_an_alert_from_an_older_store_infers_its_direction(tmp_path):
    engine, _ = run(tmp_path, [[(0, 0, "N-day", "yellow", 2.0, 2.125)]])
    engine.stop()
    db = sqlite3.connect(engine.store.path)
    (body,) = db.execute("SELECT body FROM alerts").fetchone()
    old = json.loads(body)
    del old["direction"]
    db.execute("UPDATE alerts SET body=?", (json.dumps(old),))
    db.commit()
    db.close()
    again, _ = run(tmp_path, [[(0, 60, "N-day", "yellow", 1.8, 2.125)], [(0, 120, "N-day", "yellow", 2.3, 2.125)]])
    (alert,) = again.active()
    assert alert.peak_value == 1.8 and alert.direction == -1
    again.stop()
