"""The console's alert history (issue 11 item 5): bounded parsing of the search parameters (every bad value a
clear error naming it), the SQL search over a real SQLite alert store written through AlertStore (filters,
local-day boundaries, peak severity, paging, counts per day) and the CSV export (BOM, RFC 4180 quoting,
ISO 8601 local times, no formula cells). No servers."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import sqlite3
import urllib.parse
import zoneinfo

import pytest

from alerts.model import Alert, alert_id_for
from alerts.store import AlertStore
from console.history import (
    CSV_COLUMNS,
    MAX_DAYS,
    HistoryQuery,
    QueryError,
    csv_bytes,
    day_bounds,
    parse_query,
    per_day,
    search,
    view_row,
)

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
TODAY = dt.date(2026, 12, 6)
NS = 1_000_000_000
SITES = {
    "SM-1": {"id": "SM-1", "name": "思明 1 号工地", "address": "湖滨中路 667 号", "district": "Siming"},
    "HL-2": {"id": "HL-2", "name": "Huli block 2", "address": "97 Xianyue Rd", "district": "Huli"},
}


def local_ns(text: str, tz=SHANGHAI) -> int:
    return int(dt.datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()) * NS


def resolved_alert(rule: str, device: str, site: dict, start: str, minutes: float = 10, severity: int = 2,
                   peak: int | None = None, state: str = "resolved", **extra) -> Alert:
    """A resolved alert as the engine stores it (times local Asia/Shanghai 'YYYY-MM-DD HH:MM')."""
    t0 = local_ns(start)
    t1 = t0 + int(minutes * 60 * NS)
    a = Alert(alert_id=alert_id_for(rule, device, t0), rule_id=rule, device_id=device,
              category="noise" if rule.startswith("N") else "gas", site=dict(site),
              device={"id": device, "mn": device, "kind": "noise"}, state=state, severity=severity,
              value=61.5, limit=55.0, peak_value=72.25, peak_severity=peak or severity,
              context={"unit": "dB(A)", "window_s": 300}, started_ns=t0, firing_ns=t0 + 60 * NS,
              last_active_ns=t1, resolved_ns=t1 if state == "resolved" else None)
    for k, v in extra.items():
        setattr(a, k, v)
    return a


def write_store(path, alerts: list[Alert]):
    store = AlertStore(path)
    store.commit(alerts, [])
    store.close()


@pytest.fixture
def db(tmp_path):
    alerts = [
        resolved_alert("N-night", "N1", SITES["SM-1"], "2026-12-01 23:59", severity=2, peak=4),
        resolved_alert("N-night", "N1", SITES["SM-1"], "2026-12-02 00:00", severity=1),
        resolved_alert("N-day", "N1", SITES["SM-1"], "2026-12-02 10:00", severity=3),
        resolved_alert("N-day", "N2", SITES["HL-2"], "2026-12-02 11:00", severity=3),
        resolved_alert("G-low", "G1", SITES["HL-2"], "2026-12-04 08:00", severity=4),
        resolved_alert("N-day", "N2", SITES["HL-2"], "2026-11-20 08:00", severity=2),          # before the range
        resolved_alert("N-day", "N1", SITES["SM-1"], "2026-12-05 09:00", state="firing"),  # still open
    ]
    write_store(tmp_path / "alerts.sqlite", alerts)
    conn = sqlite3.connect(f"file:{tmp_path / 'alerts.sqlite'}?mode=ro", uri=True)
    yield conn
    conn.close()


def q(**kw) -> HistoryQuery:
    return HistoryQuery(dt.date(2026, 12, 1), dt.date(2026, 12, 6), **kw)


# ----- parameters ------------------------------------------------------------------------------------------

def test_no_parameters_is_the_last_seven_days_first_page():
    got = parse_query([], TODAY)
    assert got == HistoryQuery(dt.date(2026, 11, 30), TODAY)
    assert parse_query([("from", ""), ("site", " "), ("severity", "")], TODAY) == got   # an empty form field: any


def test_a_full_search_round_trips_through_its_query_string():
    got = parse_query([("from", "2026-12-01"), ("to", "2026-12-03"), ("site", "SM-1"), ("district", "思明区"),
                       ("rule", "N-night"), ("severity", "blue"), ("severity", "red"), ("severity", "red"),
                       ("page", "3"), ("per_page", "25")], TODAY)
    assert got == HistoryQuery(dt.date(2026, 12, 1), dt.date(2026, 12, 3), "SM-1", "思明区", "N-night",
                               ("red", "blue"), 3, 25)
    assert parse_query(urllib.parse.parse_qsl(got.query_string()), TODAY) == got
    assert "page" not in dict(urllib.parse.parse_qsl(got.query_string(page=1)))


@pytest.mark.parametrize("params, message", [
    ([("sevrity", "red")], "unknown parameter 'sevrity' (did you mean 'severity'?)"),
    ([("q", "x")], "unknown parameter 'q' (known: from, to, site, district, rule, severity, page, per_page)"),
    ([("from", "2026/12/01")], "from: must be a date YYYY-MM-DD, got '2026/12/01'"),
    ([("to", "2026-02-30")], "to: no such date, got '2026-02-30'"),
    ([("from", "1999-12-31"), ("to", "2000-01-01")], "from: must be 2000-01-01 or later, got '1999-12-31'"),
    ([("to", "2026-12-07")], "to: 2026-12-07 is after today (2026-12-06)"),
    ([("from", "2026-12-05"), ("to", "2026-12-04")], "from: 2026-12-05 is after to (2026-12-04)"),
    ([("from", "2026-09-05")], f"from..to: at most {MAX_DAYS} days, got 93 (2026-09-05..2026-12-06)"),
    ([("site", "SM-1' OR 1=1")], "site: must be an id of letters, digits, '.', '_' or '-' (at most 64), "
                                 "got \"SM-1' OR 1=1\""),
    ([("rule", "N" * 65)], "rule: must be an id of letters, digits, '.', '_' or '-' (at most 64), got '" + "N" * 65 + "'"),
    ([("site", "SM-1"), ("site", "HL-2")], "site: given 2 times, at most once"),
    ([("district", "x" * 65)], "district: at most 64 printable characters, got '" + "x" * 65 + "'"),
    ([("district", "Si\nming")], "district: at most 64 printable characters, got 'Si\\nming'"),
    ([("severity", "critical")], "severity: must be one of red, orange, yellow, blue, got 'critical'"),
    ([("per_page", "1000")], "per_page: must be one of 25, 50, 100, 200, got 1000"),
    ([("page", "0")], "page: must be 1..1000 with per_page 50, got 0"),
    ([("page", "1001")], "page: must be 1..1000 with per_page 50, got 1001"),
    ([("page", "-1")], "page: must be a whole number, got '-1'"),
    ([("page", "99999999999999")], "page: must be a whole number, got '99999999999999'"),
])
def test_every_bad_parameter_is_refused_with_its_reason(params, message):
    with pytest.raises(QueryError) as e:
        parse_query(params, TODAY)
    assert str(e.value) == message


def test_the_widest_range_is_accepted():
    got = parse_query([("from", "2026-09-06")], TODAY)
    assert len(got.days) == MAX_DAYS


# ----- the search ------------------------------------------------------------------------------------------

def ids(result) -> list[tuple[str, str]]:
    return [(a["rule_id"], a["device_id"]) for a in result.rows]


def test_only_resolved_alerts_started_inside_the_local_days_newest_first(db):
    r = search(db, q(), SHANGHAI)
    assert r.total == 5
    assert ids(r) == [("G-low", "G1"), ("N-day", "N2"), ("N-day", "N1"), ("N-night", "N1"), ("N-night", "N1")]
    # 23:59 on Dec 1 and 00:00 on Dec 2 (local) fall on different days
    one_day = search(db, HistoryQuery(dt.date(2026, 12, 2), dt.date(2026, 12, 2)), SHANGHAI)
    assert one_day.total == 3 and one_day.days == ["2026-12-02"]


def test_filters_narrow_the_rows_and_the_day_counts(db):
    assert ids(search(db, q(site="HL-2"), SHANGHAI)) == [("G-low", "G1"), ("N-day", "N2")]
    assert ids(search(db, q(district="Siming"), SHANGHAI)) == [("N-day", "N1"), ("N-night", "N1"), ("N-night", "N1")]
    assert ids(search(db, q(rule="N-day"), SHANGHAI)) == [("N-day", "N2"), ("N-day", "N1")]
    # severity is the peak an alert reached: the 23:59 one fell to yellow but was red
    r = search(db, q(severities=("red",)), SHANGHAI)
    assert ids(r) == [("G-low", "G1"), ("N-night", "N1")]
    assert r.per_day["red"] == [1, 0, 0, 1, 0, 0] and sum(map(sum, r.per_day.values())) == 2
    r = search(db, q(site="SM-1", severities=("orange", "blue")), SHANGHAI)
    assert ids(r) == [("N-day", "N1"), ("N-night", "N1")]
    assert search(db, q(site="NOPE"), SHANGHAI).total == 0


def test_counts_per_day_cover_every_day_with_zeros(db):
    r = search(db, q(), SHANGHAI)
    assert r.days == ["2026-12-01", "2026-12-02", "2026-12-03", "2026-12-04", "2026-12-05", "2026-12-06"]
    assert r.per_day == {"red": [1, 0, 0, 1, 0, 0], "orange": [0, 2, 0, 0, 0, 0], "yellow": [0, 0, 0, 0, 0, 0],
                         "blue": [0, 1, 0, 0, 0, 0]}
    assert r.day_totals == [1, 3, 0, 1, 0, 0]


def test_pages_split_the_rows_in_order(db):
    pages = [ids(search(db, q(per_page=2, page=p), SHANGHAI)) for p in (1, 2, 3)]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sum(pages, []) == ids(search(db, q(), SHANGHAI))
    assert search(db, q(per_page=2, page=3), SHANGHAI).total == 5


def test_a_local_day_across_a_dst_change_is_not_24_hours():
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    t0, t1 = day_bounds(dt.date(2026, 3, 29), berlin)
    assert (t1 - t0) // NS == 23 * 3600
    assert t0 == local_ns("2026-03-29 00:00", berlin)


def test_day_counts_use_local_midnights_and_skip_stamps_outside_the_days():
    days = [dt.date(2026, 12, 1), dt.date(2026, 12, 2)]
    stamps = [(local_ns("2026-12-01 00:00"), 4), (local_ns("2026-12-01 23:59"), 1), (local_ns("2026-12-02 00:00"), 1),
              (local_ns("2026-11-30 23:59"), 4), (local_ns("2026-12-03 00:00"), 4), (local_ns("2026-12-02 12:00"), 0)]
    assert per_day(stamps, days, SHANGHAI) == {"red": [1, 0], "orange": [0, 0], "yellow": [0, 0], "blue": [1, 1]}
    assert per_day(stamps, [], SHANGHAI) == {"red": [], "orange": [], "yellow": [], "blue": []}


def test_an_export_past_the_cap_reads_no_rows_but_says_how_many(db, monkeypatch):
    import console.history

    monkeypatch.setattr(console.history, "MAX_EXPORT_ROWS", 4)
    r = search(db, q(), SHANGHAI, all_rows=True)
    assert (r.total, r.rows) == (5, [])
    monkeypatch.setattr(console.history, "MAX_EXPORT_ROWS", 5)
    assert len(search(db, q(), SHANGHAI, all_rows=True).rows) == 5


def test_a_store_read_only_connection_is_never_written(db, tmp_path):
    search(db, q(), SHANGHAI)
    with pytest.raises(sqlite3.OperationalError):
        db.execute("DELETE FROM alerts")


# ----- CSV -----------------------------------------------------------------------------------------------------

def test_csv_is_utf8_with_bom_quoted_and_local_iso_times():
    a = resolved_alert("N-night", "N1", {**SITES["SM-1"], "name": '思明 "一号", 工地'}, "2026-12-01 23:59",
                       minutes=90, peak=4, acked_by="console:duty", acked_by_name="值班员 林",
                       ack_note="已派人\n到场, \"crew\" sent")
    b = resolved_alert("G-low", "G1", {**SITES["HL-2"], "address": "=HYPERLINK(\"http://x\")"}, "2026-12-02 08:00")
    rows = [view_row(x.to_dict(), SHANGHAI) for x in (a, b)]
    body = csv_bytes(rows, {"N-night": "夜间噪声超标"})
    assert body.startswith(b"\xef\xbb\xbf")
    text = body[3:].decode("utf-8")
    assert text.split("\r\n")[0] == ",".join(CSV_COLUMNS)
    assert '"思明 ""一号"", 工地"' in text and '"已派人\n到场, ""crew"" sent"' in text
    parsed = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    assert len(parsed) == 2
    first = parsed[0]
    assert first["site_name"] == '思明 "一号", 工地' and first["ack_note"] == '已派人\n到场, "crew" sent'
    assert first["rule_name"] == "夜间噪声超标" and parsed[1]["rule_name"] == "G-low"
    assert first["started"] == "2026-12-01T23:59:00+08:00" and first["resolved"] == "2026-12-02T01:29:00+08:00"
    assert first["firing"] == "2026-12-02T00:00:00+08:00" and first["duration_s"] == "5400"
    assert first["peak_severity"] == "red" and first["peak_value"] == "72.25" and first["unit"] == "dB(A)"
    assert (first["acked_by"], first["acked_by_name"]) == ("console:duty", "值班员 林")
    # a cell Excel would run as a formula is kept as text
    assert parsed[1]["address"] == "'=HYPERLINK(\"http://x\")"


def test_csv_of_no_rows_is_the_header_only():
    assert csv_bytes([], {}) == ("\ufeff" + ",".join(CSV_COLUMNS) + "\r\n").encode("utf-8")


# ----- a store written before the history columns ------------------------------------------------------


OLD_SCHEMA = ("CREATE TABLE alerts (alert_id TEXT PRIMARY KEY, rule_id TEXT, device_id TEXT, state TEXT, "
              "severity INTEGER, started_ns INTEGER, body TEXT NOT NULL)")


def old_store(path, alerts: list[Alert], damaged: int = 0) -> None:
    """A store as services before the history columns wrote it: bodies only (plus `damaged` rows that are not JSON)."""
    con = sqlite3.connect(path)
    con.execute(OLD_SCHEMA)
    for a in alerts:
        con.execute("INSERT INTO alerts VALUES (?,?,?,?,?,?,?)",
                    (a.alert_id, a.rule_id, a.device_id, a.state, a.severity, a.started_ns, json.dumps(a.to_dict())))
    con.commit()
    con.close()
    add_damaged(path, damaged)


def add_damaged(path, n: int) -> None:
    """`n` resolved rows whose body is not JSON (a damaged store), on Dec 3, severity yellow."""
    con = sqlite3.connect(path)
    for i in range(n):
        con.execute("INSERT INTO alerts (alert_id, rule_id, device_id, state, severity, started_ns, body) "
                    "VALUES (?,?,?,?,?,?,?)", (f"bad.{i}", "N-day", "N9", "resolved", 2, local_ns("2026-12-03 12:00"),
                                               "{not json"))
    con.commit()
    con.close()


def history_alerts() -> list[Alert]:
    return [
        resolved_alert("N-night", "N1", SITES["SM-1"], "2026-12-01 23:59", severity=2, peak=4),
        resolved_alert("N-day", "N2", SITES["HL-2"], "2026-12-02 11:00", severity=3),
        resolved_alert("G-low", "G1", SITES["HL-2"], "2026-12-04 08:00", severity=4),
    ]


def searches(conn) -> list:
    return [(ids(r), r.total, r.per_day) for r in (
        search(conn, q(), SHANGHAI), search(conn, q(site="HL-2"), SHANGHAI),
        search(conn, q(district="Siming"), SHANGHAI), search(conn, q(severities=("red",)), SHANGHAI))]


def test_an_old_store_is_searched_from_its_bodies_and_gets_the_columns_when_the_service_opens_it(tmp_path):
    old, new = tmp_path / "old.sqlite", tmp_path / "new.sqlite"
    old_store(old, history_alerts(), damaged=1)
    write_store(new, history_alerts())
    add_damaged(new, 1)
    with sqlite3.connect(f"file:{new}?mode=ro", uri=True) as conn:
        expected = searches(conn)
    assert expected[3][0] == [("G-low", "G1"), ("N-night", "N1")]  # the peak, not the last severity
    # A damaged row fails no search: it is counted on its day (its stored severity), and cannot be listed.
    assert expected[0][1] == 4 and len(expected[0][0]) == 3 and expected[0][2]["yellow"][2] == 1
    # The console opens stores read-only: one no new service has opened yet is searched from the bodies.
    conn = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
    assert searches(conn) == expected
    conn.close()
    # The service's store opening adds the columns and fills them from the bodies (the damaged row stays NULL).
    AlertStore(old).close()
    conn = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
    cols = {r[1] for r in conn.execute("PRAGMA table_info(alerts)")}
    assert {"peak_severity", "site_id", "district"} <= cols
    assert conn.execute("SELECT peak_severity, site_id, district FROM alerts WHERE alert_id = ?",
                        (history_alerts()[0].alert_id,)).fetchone() == (4, "SM-1", "Siming")
    assert conn.execute("SELECT site_id FROM alerts WHERE alert_id = 'bad.0'").fetchone() == (None,)
    assert searches(conn) == expected
    plan = " ".join(r[3] for r in conn.execute(
        "EXPLAIN QUERY PLAN SELECT started_ns FROM alerts WHERE started_ns >= 0 AND started_ns < 1 AND +state = 'r'"))
    assert "alerts_started" in plan
    conn.close()
