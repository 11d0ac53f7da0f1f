"""The alert store's kept history (resolved alerts, notices, commands: `retention_days` of them) must not make the
engine's work per batch and per tick grow: every statement it runs finds its rows through an index (SQLite's query
plan says so), and the hourly prune forgets every kind of closed alert. bench/bench_alert_store.py measures it."""

from __future__ import annotations

import json
import re

from alerts.store import AlertStore
from tests.unit.alerts.helpers import AUTHORS, RecordingSink, at, det, make_cfg, make_engine

# Tables that grow with the history; a full SCAN of one is what this file forbids on the hot paths. `silences`
# (what operators set, pruned) and `meta`/`flips` (one row per key) stay small whatever the history.
HISTORY_TABLES = ("alerts", "notices", "deliveries", "commands")


def traced(store: AlertStore, run) -> list[str]:
    """The SQL statements (with their bound values) `run()` makes the store's connection execute."""
    got: list[str] = []
    store._db.set_trace_callback(got.append)
    try:
        run()
    finally:
        store._db.set_trace_callback(None)
    return got


def plan(store: AlertStore, sql: str) -> list[str]:
    return [r[3] for r in store._db.execute("EXPLAIN QUERY PLAN " + sql)]


def full_scans(store: AlertStore, statements: list[str]) -> list[tuple[str, str]]:
    """(statement, plan line) of every full scan of a history table. Allowed: a scan of the partial index of the
    commands still to apply (it holds those rows only), and a scan in index order of a statement with a LIMIT and
    no WHERE (`alerts list --all`: it stops at the limit)."""
    bad = []
    for sql in statements:
        if not re.match(r"\s*(SELECT|UPDATE|DELETE|INSERT\s+INTO\s+\w+\s+SELECT)", sql, re.I):
            continue
        limited = " LIMIT " in sql and " WHERE " not in sql
        for line in plan(store, sql):
            m = re.match(r"SCAN (\w+)( USING INDEX)?", line)
            if m and m.group(1) in HISTORY_TABLES and "commands_unapplied" not in line and not (limited and m.group(2)):
                bad.append((sql, line))
    return bad


def history(engine, n: int = 3) -> None:
    """A few alerts of each kind, some acknowledged, some commands refused: the rows the store keeps."""
    for i in range(n):
        t = i * 100
        engine.process(det([(0, t, "N-day", "yellow", 72)]))
        engine.submit_command("cli:li", {"action": "ack", "alert_id": engine.active()[0].alert_id}, AUTHORS["li"])
        engine.submit_command("cli:li", {"action": "ack", "alert_id": "nope"}, AUTHORS["li"])
        engine.process(det([(0, t + 60, "N-day", "clear", 65)]))
    engine.flush(5)


def test_the_engines_batches_and_ticks_scan_no_history_table(tmp_path):
    cfg = make_cfg({"retention_days": 1}, [{"id": "N-day", "type": "noise_day_limit"},
                                           {"id": "N-slow", "type": "noise_day_limit", "for_s": 300}])
    engine, _ = make_engine(tmp_path, cfg)
    history(engine)
    store = engine.store

    def batches_and_ticks():
        engine.process(det([(1, 400, "N-day", "yellow", 72), (2, 400, "N-slow", "yellow", 72)]))  # opens
        engine.process(det([(1, 401, "N-day", "yellow", 73)]))                                     # refreshes
        engine.process(det([(1, 402, "N-day", "clear", 65), (2, 402, "N-slow", "clear", 65)]))     # resolves, discards
        engine.submit_command("cli:li", {"action": "silence", "matchers": {"device_id": "x"}, "comment": "c",
                                         "expires": "1h"}, AUTHORS["li"])
        engine.tick(at(500))
        engine._pruned_at = None  # the hourly prune runs at this tick
        engine.tick(at(2 * 86400))
        engine.flush(5)

    statements = traced(store, batches_and_ticks)
    assert any(s.startswith("INSERT INTO gone") for s in statements)  # the prune ran
    assert any("WHERE applied_at IS NULL" in s for s in statements)  # and the inbox read
    assert full_scans(store, statements) == []


def test_the_prune_finds_old_closed_alerts_by_their_end_time_and_their_deliveries_by_key(tmp_path):
    store = AlertStore(tmp_path / "alerts.sqlite")
    statements = traced(store, lambda: store.prune(at(0)))
    select = next(s for s in statements if s.startswith("INSERT INTO gone"))
    lines = plan(store, select)
    assert lines[0] == "SEARCH alerts USING INDEX alerts_ended (state=? AND <expr><?)"
    # Per old alert: its notices, then each notice's deliveries by key (never every pending delivery).
    assert "SEARCH n USING INDEX notices_alert (alert_id=?)" in lines
    assert "SEARCH d USING INDEX sqlite_autoindex_deliveries_1 (key=?)" in lines
    commands = next(s for s in statements if s.startswith("DELETE FROM commands"))
    assert plan(store, commands) == ["SEARCH commands USING INDEX commands_received (received_at<?)"]


def test_the_inbox_reads_only_the_commands_still_to_apply(tmp_path):
    store = AlertStore(tmp_path / "alerts.sqlite")
    statements = traced(store, store.unapplied_commands)
    assert plan(store, statements[-1]) == ["SCAN commands USING INDEX commands_unapplied"]


def test_the_console_and_alerts_list_reads_use_indexes(tmp_path):
    engine, _ = make_engine(tmp_path)
    history(engine)
    store = engine.store
    aid = store.alerts(("resolved",))[0].alert_id
    statements = traced(store, lambda: (store.alerts(("pending", "firing")), store.alerts(), store.alert(aid),
                                        store.notices(aid), store.pending_deliveries(), store.open_alerts()))
    assert full_scans(store, statements) == []


def test_a_store_written_before_the_indexes_gets_them_at_opening(tmp_path):
    path = tmp_path / "alerts.sqlite"
    AlertStore(path).close()
    old = AlertStore(path)
    for index in ("alerts_ended", "commands_unapplied", "commands_received"):
        old._db.execute(f"DROP INDEX {index}")
    old.close()
    store = AlertStore(path)
    names = {r[0] for r in store._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"alerts_ended", "commands_unapplied", "commands_received"} <= names


def test_the_prune_forgets_alerts_discarded_before_the_cut_off(tmp_path):
    # A pending alert whose condition clears before for_s is discarded (never notified): stored, and once
    # `retention_days` old, forgotten like a resolved one; it never stayed forever.
    cfg = make_cfg({"retention_days": 1}, [{"id": "N-slow", "type": "noise_day_limit", "for_s": 300}])
    engine, sink = make_engine(tmp_path, cfg)
    engine.process(det([(0, 0, "N-slow", "yellow", 72)]))
    engine.process(det([(0, 60, "N-slow", "clear", 65)]))
    engine.process(det([(1, 86400, "N-slow", "yellow", 72)]))
    engine.process(det([(1, 86460, "N-slow", "clear", 65)]))
    engine.stop()  # writes the discards (a discard is no transition: it is written with the refreshes)
    store = engine.store
    assert [a.state for a in store.alerts()] == ["discarded", "discarded"] and sink.notices == []
    assert store.prune(at(0))["alerts"] == 0                       # its last detection at 0 s: not before 0 s
    gone = store.prune(at(3600))                                   # the other one's, a day later: kept
    assert gone["alerts"] == 1
    assert [a.device_id for a in store.alerts()] == [engine.cfg.devices[1].id]


def test_the_alert_pages_commands_are_found_by_the_alert_they_name(tmp_path):
    """The console's alert page lists the commands naming the alert through the index `commands_alert`, not a
    scan of every kept command; a body that is not JSON, or names another alert, is not listed."""
    import sqlite3

    from console.app import _alert_evidence

    engine, _ = make_engine(tmp_path)
    history(engine)
    store = engine.store
    aid = store.alerts(("resolved",))[-1].alert_id
    store.add_command("cli:li", "{not json", "li", status="refused", result="bad json")
    engine.submit_command("cli:li", {"action": "ack", "alert_id": aid.replace("_", "%")}, AUTHORS["li"])
    engine.tick(at(1000))
    seen: list[str] = []

    class Page:  # the console's read-only connection to the real store, traced
        def read_only(self):
            db = sqlite3.connect(f"file:{store.path}?mode=ro", uri=True)
            db.set_trace_callback(seen.append)
            return db

    alert, notices, cmds = _alert_evidence(Page(), aid)
    assert alert["alert_id"] == aid and notices
    def names(body):
        try:
            return json.loads(body).get("alert_id") == aid
        except ValueError:
            return False
    every = store._db.execute("SELECT body FROM commands ORDER BY id").fetchall()
    assert [c["body"] for c in cmds] == [b for (b,) in every if names(b)] != []  # its acks, nothing else
    select = next(s for s in seen if "FROM commands" in s)
    assert plan(store, select) == [
        "SEARCH commands USING INDEX commands_alert (<expr>=?)"]


def test_pending_deliveries_parse_each_notice_once_and_forget_what_went(tmp_path, monkeypatch):
    """A cluster worker reads every pending delivery at each save of its alerts: a stored notice (never changed
    once written) is parsed the first time only, and one no longer pending is dropped from what is kept."""
    import alerts.store as store_module

    sink_down = RecordingSink()
    sink_down.fail = 10**6  # every send fails (retryable): the notices stay pending
    engine, _ = make_engine(tmp_path, sink=sink_down)
    for i in range(4):
        engine.process(det([(i, 0, "N-day", "yellow", 72)]))
    store = engine.store
    first = store.pending_deliveries()
    assert len(first) >= 4
    fresh = AlertStore(store.path).pending_deliveries()       # another store: everything parsed anew
    assert [(n, s, d) for n, s, d in first] == fresh

    parsed: list[str] = []

    class Counting:
        dumps = staticmethod(json.dumps)

        @staticmethod
        def loads(text, *a, **k):
            parsed.append(text)
            return json.loads(text, *a, **k)

    monkeypatch.setattr(store_module, "json", Counting)
    assert store.pending_deliveries() == first and parsed == []  # nothing parsed again
    gone = first[0][0]
    for sink in {s for n, s, _ in first if n.key == gone.key}:
        store.mark_delivery(gone.key, sink, "sent", 1, None)
    engine.process(det([(5, 0, "N-day", "yellow", 72)]))         # a new one: parsed once
    now = store.pending_deliveries()
    assert gone.key not in {n.key for n, _, _ in now} and gone.key not in store._pending_parsed
    assert len(parsed) == len({n.key for n, _, _ in now} - {n.key for n, _, _ in first}) == 1
    engine.dispatcher.stop(timeout_s=0.1)  # the sink never takes them: no flush to wait for


def test_a_damaged_closed_alert_neither_stops_the_store_from_opening_nor_the_prune(tmp_path):
    """A resolved row whose body is not JSON (a damaged or hand-edited store): the index of closed alerts by end
    time leaves it out (json_extract would raise on it), the store opens, takes writes and prunes the rest."""
    import sqlite3

    engine, _ = make_engine(tmp_path, make_cfg({"retention_days": 1}, [{"id": "N-day", "type": "noise_day_limit"}]))
    history(engine, 2)
    engine.stop()
    path = engine.store.path
    engine.store.close()
    con = sqlite3.connect(path)
    con.execute("DROP INDEX alerts_ended")
    con.execute("INSERT INTO alerts (alert_id, rule_id, device_id, state, severity, started_ns, body) "
                "VALUES ('bad.1', 'N-day', 'N9', 'resolved', 2, 0, '{not json')")
    con.commit()
    con.close()
    store = AlertStore(path)                              # builds alerts_ended again over the damaged row
    store._db.execute("INSERT INTO alerts (alert_id, rule_id, device_id, state, severity, started_ns, body) "
                      "VALUES ('bad.2', 'N-day', 'N9', 'discarded', 2, 0, '{not json either')")
    gone = store.prune(at(30 * 86400))
    assert gone["alerts"] == 2                            # the two resolved ones of the history
    assert {r[0] for r in store._db.execute("SELECT alert_id FROM alerts")} == {"bad.1", "bad.2"}
