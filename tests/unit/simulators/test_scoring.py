"""Event-level matching of alerts to faults: table tests and properties."""

from __future__ import annotations

import json
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulators.alert_sources import from_notices, from_sqlite, load_alerts, start_from_id
from simulators.scoring import ScoredAlert, TruthFault, score

H = 3_600_000
T0 = 1_748_815_200_000


def fault(fid="F1", device="D1", start_h=1.0, end_h=2.0, rules=("N-day",), allowed=("N-pre",), type_="S3", site="S1"):
    return TruthFault(fid, type_, device, site, T0 + int(start_h * H), T0 + int(end_h * H), tuple(rules), tuple(allowed))


def alert(rule="N-day", device="D1", start_h=1.1, aid=None, site="S1", sev="orange"):
    return ScoredAlert(aid or f"{rule}.{device}.{start_h}", rule, device, site, T0 + int(start_h * H), sev)


WINDOW = (T0, T0 + 24 * H)


@pytest.mark.parametrize("alerts,caught,false,tolerated", [
    ([alert()], 1, 0, 0),                                   # expected rule, right device, inside
    ([alert(device="D2")], 0, 1, 0),                        # other device
    ([alert(rule="N-night")], 0, 1, 0),                     # rule the fault does not expect
    ([alert(rule="N-pre")], 0, 0, 1),                       # allowed side effect
    ([alert(start_h=0.6)], 1, 0, 0),                        # inside the 30 min tolerance before
    ([alert(start_h=0.4)], 0, 1, 0),                        # before the tolerance
    ([alert(start_h=2.45)], 1, 0, 0),                       # after the end, inside the tolerance
    ([alert(start_h=2.6)], 0, 1, 0),                        # after the tolerance
    ([alert(device="", site="S1")], 1, 0, 0),               # a site-level alert matches by site
    ([alert(), alert(start_h=1.5, aid="x2")], 1, 0, 0),     # a second alert of the same fault is no false alert
])
def test_matching_table(alerts, caught, false, tolerated):
    card = score([fault()], alerts, tolerance_s=1800, window=WINDOW)
    assert len(card.caught) == caught
    assert len(card.false_alerts) == false
    assert len(card.allowed) == tolerated


def test_per_rule_and_per_type_figures_and_delay():
    faults = [fault("F1", "D1", 1, 2, ("N-day",)), fault("F2", "D2", 3, 4, ("G-low", "G-rupture"), (), "G4"),
              fault("F3", "D3", 5, 6, ("G-low",), (), "G6"), fault("F4", "D4", 1, 3, (), ("N-pre",), "S5")]
    alerts = [alert("N-day", "D1", 1.25), alert("G-rupture", "D2", 3.05), alert("G-low", "D2", 3.1),
              alert("N-night", "D4", 2.0), alert("G-high", "D9", 9.0)]
    card = score(faults, alerts, tolerance_s=600, device_days=10.0, window=WINDOW)
    assert [f.id for f in card.missed] == ["F3"]
    assert card.recall == pytest.approx(2 / 3)
    assert card.precision == pytest.approx(3 / 5)
    assert card.false_per_device_day == pytest.approx(0.2)
    assert card.per_rule["G-low"] == {"faults": 2, "caught": 1, "recall": 0.5, "alerts": 1, "true": 1, "false": 0,
                                      "precision": 1.0}
    assert card.per_rule["N-night"]["false"] == 1 and card.per_rule["N-night"]["recall"] is None
    assert card.per_type["S5"]["false_near"] == 1 and card.per_type["S5"]["precision"] == 0.0
    assert card.per_type["G4"]["recall"] == 1.0
    # delays: F1 15 min, F2 3 min (first of its alerts)
    assert sorted(card.delays_s()) == [180.0, 900.0]
    assert card.delay_stats()["median_s"] == pytest.approx(540.0)


def test_alerts_of_another_run_are_ignored():
    card = score([fault()], [alert(start_h=-30)], window=WINDOW)
    assert card.alerts == [] and card.false_alerts == []


def test_no_faults_with_rules_means_full_recall():
    card = score([fault(rules=())], [], window=WINDOW)
    assert card.recall == 1.0 and card.precision == 1.0


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["N-day", "N-pre", "G-low", "Offline"]), st.sampled_from(["D1", "D2", "D3"]),
                          st.floats(0, 24)), max_size=30), st.randoms())
def test_order_of_alerts_does_not_matter_and_every_alert_is_counted_once(specs, rnd):
    faults = [fault("F1", "D1", 1, 3), fault("F2", "D2", 5, 8, ("G-low",), ("Offline",), "G6")]
    alerts = [alert(r, d, h, aid=f"a{i}") for i, (r, d, h) in enumerate(specs)]
    a = score(faults, alerts, window=WINDOW)
    shuffled = list(alerts)
    rnd.shuffle(shuffled)
    b = score(faults, shuffled, window=WINDOW)
    assert a.summary() == b.summary()
    hits = {x.alert_id for h in a.hits.values() for v in h.values() for x in v}
    assert len(hits) + len(a.allowed) + len(a.false_alerts) == len(alerts)
    assert 0.0 <= a.recall <= 1.0 and 0.0 <= a.precision <= 1.0


def _notice(alert_id, transition, severity="orange", start="2025-06-02T01:10:00.000Z", rule="N-day", device="D1"):
    return {"alert_id": alert_id, "rule_id": rule, "transition": transition, "severity": severity, "start_ts": start,
            "site": {"id": "S1"}, "device": {"id": device}, "seq": 1}


def test_notices_capture_in_every_line_form(tmp_path):
    p = tmp_path / "alerts.jsonl"
    lines = [
        json.dumps(_notice("N-day.D1.20250602T011000000Z", "firing", "yellow")),
        json.dumps({"t": 1, "topic": "city/xm/alerts/noise/S1", "payload": json.dumps(_notice("N-day.D1.20250602T011000000Z", "severity", "orange"))}),
        "city/xm/alerts/noise/S1 " + json.dumps(_notice("N-day.D1.20250602T011000000Z", "resolved", "orange")),
        "city/xm/alerts/active/N-day.D1.20250602T011000000Z firing",
        json.dumps(_notice("G-low.D2.20250602T030000000Z", "firing", "red", "2025-06-02T03:00:00Z", "G-low", "D2")),
    ]
    p.write_text("\n".join(lines) + "\n")
    got = from_notices(p)
    assert [(a.alert_id, a.rule_id, a.device_id, a.site_id, a.severity) for a in got] == [
        ("N-day.D1.20250602T011000000Z", "N-day", "D1", "S1", "orange"),
        ("G-low.D2.20250602T030000000Z", "G-low", "D2", "S1", "red"),
    ]
    assert got[0].start_ms == start_from_id(got[0].alert_id)


def test_sqlite_store_source(tmp_path):
    db = tmp_path / "alerts.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE alerts (alert_id TEXT PRIMARY KEY, rule_id TEXT, device_id TEXT, state TEXT, "
                "severity INTEGER, started_ns INTEGER, body TEXT NOT NULL)")
    for aid, firing in (("N-day.D1.x", 1), ("N-pre.D1.y", None)):
        body = {"alert_id": aid, "rule_id": aid.split(".")[0], "device_id": "D1", "site": {"id": "S1"}, "severity": 3,
                "started_ns": (T0 + H) * 1_000_000, "firing_ns": firing}
        con.execute("INSERT INTO alerts VALUES (?,?,?,?,?,?,?)", (aid, "", "", "", 0, 0, json.dumps(body)))
    con.commit()
    con.close()
    got = load_alerts(f"sqlite:{db}")
    assert [(a.alert_id, a.severity, a.start_ms) for a in got] == [("N-day.D1.x", "orange", T0 + H)]
    assert from_sqlite(str(db)) == got


def test_under_severity_is_reported():
    f = TruthFault("F1", "G4", "D1", "S1", T0 + H, T0 + 2 * H, ("G-rupture",), (), "red")
    card = score([f], [alert("G-rupture", "D1", 1.1, sev="orange")], window=WINDOW)
    assert [(x.id, seen) for x, seen in card.under_severity()] == [("F1", "orange")]
    card = score([f], [alert("G-rupture", "D1", 1.1, sev="orange"), alert("G-rupture", "D1", 1.2, aid="b", sev="red")],
                 window=WINDOW)
    assert card.under_severity() == [] and card.summary()["under_severity"] == {}
