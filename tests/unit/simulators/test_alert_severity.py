"""Each alert source gives the scorer the highest severity an alert reached, not its last one: the store's
peak_severity, the maximum over a capture's notices, the maximum over InfluxDB transitions."""

from __future__ import annotations

import json

import pytest

from alerts.model import Alert
from alerts.store import AlertStore
from simulators.alert_sources import (
    from_influx_result,
    from_notice_payloads,
    from_notices,
    from_sqlite,
    highest_severity,
    load_alerts,
)
from simulators.scoring import TruthFault, parse_time_ms, score

S = 1_000_000_000
T0 = 1_748_826_600 * S  # 2025-06-02T01:10:00Z
AID = "N-day.D1.20250602T011000000Z"
CODES = {"blue": 1, "yellow": 2, "orange": 3, "red": 4}


@pytest.mark.parametrize(
    "names, expected",
    [((), ""), (("yellow",), "yellow"), (("yellow", "orange", "blue"), "orange"), ((None, "", "red"), "red"),
     (("clear", "bogus"), ""), (("orange", "bogus"), "orange")],
)
def test_highest_severity(names, expected):
    assert highest_severity(*names) == expected


# ----- SQLite store: a real store file written by AlertStore -------------------------------------------

@pytest.mark.parametrize(
    "severity, peak, expected",
    [
        ("yellow", "orange", "orange"),  # fell back after its peak: the peak counts (the F01 case)
        ("orange", "orange", "orange"),
        ("blue", "red", "red"),
        ("red", None, "red"),            # record without a tracked peak: the severity
    ],
)
def test_sqlite_store_gives_the_peak(tmp_path, severity, peak, expected):
    path = tmp_path / "alerts.sqlite"
    store = AlertStore(path)
    a = Alert(AID, "N-day", "D1", "noise", {"id": "S1"}, {"id": "D1"}, state="resolved", severity=CODES[severity],
              peak_severity=CODES[peak] if peak else 0, started_ns=T0, firing_ns=T0, resolved_ns=T0 + 600 * S)
    store.commit([a], [])
    store.close()
    got = from_sqlite(str(path))
    assert [(x.alert_id, x.severity, x.start_ms) for x in got] == [(AID, expected, T0 // 1_000_000)]


@pytest.mark.parametrize("severity, expected", [(2, "yellow"), (3, "orange"), (4, "red")])
def test_sqlite_store_written_before_peak_severity(tmp_path, severity, expected):
    path = tmp_path / "old.sqlite"
    store = AlertStore(path)
    a = Alert(AID, "N-day", "D1", "noise", {"id": "S1"}, {"id": "D1"}, state="firing", severity=severity,
              started_ns=T0, firing_ns=T0)
    body = a.to_dict()
    del body["peak_severity"]
    body = {k: v for k, v in body.items() if not (isinstance(v, float) and v != v)}
    store._db.execute("INSERT INTO alerts (alert_id, rule_id, device_id, state, severity, started_ns, body) "
                      "VALUES (?,?,?,?,?,?,?)",
                      (AID, "N-day", "D1", "firing", severity, T0, json.dumps(body)))
    store.close()
    assert [x.severity for x in load_alerts(f"sqlite:{path}")] == [expected]


def test_engine_store_scores_the_peak_not_the_last_severity(tmp_path):
    """End to end through the engine: the F01 shape (orange at its peak, yellow at the end) is not under."""
    from tests.unit.alerts.helpers import det, make_cfg, make_engine

    engine, _ = make_engine(tmp_path, make_cfg(None, [{"id": "N-day", "type": "noise_day_limit", "kind": "noise"}]))
    engine.process(det([(0, 0, "N-day", "yellow", 72), (0, 600, "N-day", "orange", 78),
                        (0, 1200, "N-day", "yellow", 73), (0, 1800, "N-day", "clear", 65)]))
    engine.tick(engine.watermark_ns + 3600 * S)
    engine.flush(5)
    engine.stop()
    engine.store.close()
    alerts = load_alerts(f"sqlite:{tmp_path / 'alerts.sqlite'}")
    assert [a.severity for a in alerts] == ["orange"]
    start = alerts[0].start_ms
    fault = TruthFault("F01", "S3", alerts[0].device_id, "", start, start + 3_600_000, ("N-day",), severity="orange")
    card = score([fault], alerts)
    assert [f.id for f in card.caught] == ["F01"] and card.under_severity() == []


# ----- JSONL capture of notices ------------------------------------------------------------------------

def _n(transition, severity, peak=None):
    n = {"alert_id": AID, "rule_id": "N-day", "transition": transition, "severity": severity,
         "start_ts": "2025-06-02T01:10:00.000Z", "site": {"id": "S1"}, "device": {"id": "D1"}}
    if peak is not None:
        n["peak_severity"] = peak
    return n


@pytest.mark.parametrize(
    "notices, expected",
    [
        # older engines (no peak field): the maximum over the notices
        ([_n("firing", "yellow"), _n("severity", "orange"), _n("severity", "yellow"), _n("resolved", "yellow")],
         "orange"),
        # the rise was muted (no notice at orange) but a later notice carries the peak
        ([_n("firing", "yellow", "yellow"), _n("resolved", "yellow", "orange")], "orange"),
        # the peak was reached while pending
        ([_n("firing", "yellow", "red")], "red"),
        # order of capture does not matter
        ([_n("resolved", "blue", "blue"), _n("severity", "red", "red"), _n("firing", "blue", "blue")], "red"),
        ([_n("firing", "orange", "orange")], "orange"),
    ],
)
def test_notice_capture_gives_the_highest(tmp_path, notices, expected):
    assert [a.severity for a in from_notice_payloads(notices)] == [expected]
    p = tmp_path / "alerts.jsonl"
    p.write_text("".join(json.dumps({"topic": "city/xm/alerts/noise/S1", "payload": json.dumps(n)}) + "\n"
                         for n in notices))
    assert [(a.alert_id, a.severity) for a in from_notices(p)] == [(AID, expected)]


# ----- InfluxDB `alerts` measurement (a v1 /query response over SELECT *) -------------------------------

def _influx(rows, columns=("time", "alert_id", "category", "device_id", "district", "escalation_level", "key",
                           "limit", "rule_id", "seq", "severity", "site_id", "transition", "value")):
    values = []
    for i, (transition, severity, *extra) in enumerate(rows):
        r = {"time": parse_time_ms("2025-06-02T01:10:00Z") + i * 60_000, "alert_id": AID, "category": "noise",
             "device_id": "D1", "district": "Siming", "escalation_level": 0, "key": f"{AID}:{i + 1}", "limit": 70.0,
             "rule_id": "N-day", "seq": i + 1, "severity": severity, "site_id": "S1", "transition": transition,
             "value": 72.0}
        if extra:
            r["peak_severity"] = extra[0]
        values.append([r.get(c) for c in columns])
    return {"results": [{"statement_id": 0, "series": [{"name": "alerts", "columns": list(columns),
                                                         "values": values}]}]}


@pytest.mark.parametrize(
    "rows, expected",
    [
        ([("firing", "yellow"), ("severity", "orange"), ("severity", "yellow"), ("resolved", "yellow")], "orange"),
        ([("severity", "red"), ("firing", "blue"), ("resolved", "blue")], "red"),
        ([("firing", "yellow")], "yellow"),
    ],
)
def test_influx_transitions_give_the_highest(rows, expected):
    got = from_influx_result(_influx(rows))
    assert [(a.alert_id, a.rule_id, a.device_id, a.site_id, a.severity) for a in got] == [
        (AID, "N-day", "D1", "S1", expected)]


def test_influx_peak_severity_field_is_used_when_the_sink_writes_one():
    cols = ("time", "alert_id", "device_id", "peak_severity", "rule_id", "severity", "site_id", "transition")
    got = from_influx_result(_influx([("firing", "yellow", "orange"), ("resolved", "yellow", None)], cols))
    assert [a.severity for a in got] == ["orange"]
