"""SQLite store of alert states, flap history, silences, commands and the notification log.

The engine commits a transition's alert state, notice and pending deliveries in one transaction before
any sink sees the notice, so a crash between the two re-sends at most the notices in flight, with the
same idempotency key, and never opens a new alert.

An alert's fields live in the JSON `body`; the columns beside it are only for lookups. A field added
later (e.g. `peak_severity`) therefore needs no migration: the loader gives an old body its default.
"""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from pathlib import Path

from alerts.model import Alert, Notice
from alerts.muting import Silence

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY, rule_id TEXT, device_id TEXT, state TEXT, severity INTEGER,
    started_ns INTEGER, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state);
CREATE TABLE IF NOT EXISTS flips (rule_id TEXT, device_id TEXT, body TEXT, PRIMARY KEY (rule_id, device_id));
CREATE TABLE IF NOT EXISTS notices (
    key TEXT PRIMARY KEY, alert_id TEXT, seq INTEGER, transition TEXT, ts_ns INTEGER, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS notices_alert ON notices(alert_id);
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT, sink TEXT, due_ns INTEGER, status TEXT, attempts INTEGER DEFAULT 0, error TEXT,
    done_at REAL, PRIMARY KEY (key, sink));
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries(status);
CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, expires_ns INTEGER, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL, source TEXT, body TEXT NOT NULL,
    applied_at REAL, result TEXT);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
"""


def _dumps(obj) -> str:
    # NaN is not JSON: store it as null and read it back as NaN where a float is expected.
    return json.dumps(_clean(obj), sort_keys=True)


def _clean(obj):
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


class AlertStore:
    """One SQLite file (WAL). Safe to share between threads; every write is one transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed transition survives power loss, not only a process kill.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ----- the engine's transaction ---------------------------------------------------------------

    def commit(self, alerts: list[Alert], notices: list[tuple[Notice, list[tuple[str, int]]]],
               flips: dict[tuple, list[int]] | None = None, silences: list[Silence] | None = None,
               meta: dict[str, str] | None = None) -> None:
        """Write changed alerts, new notices with their (sink, due_ns) deliveries, flips, silences, meta."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    "INSERT OR REPLACE INTO alerts VALUES (?,?,?,?,?,?,?)",
                    [(a.alert_id, a.rule_id, a.device_id, a.state, a.severity, a.started_ns, _dumps(a.to_dict()))
                     for a in alerts],
                )
                for n, deliveries in notices:
                    cur = db.execute(
                        "INSERT OR IGNORE INTO notices VALUES (?,?,?,?,?,?)",
                        (n.key, n.alert_id, n.seq, n.transition, n.ts_ns, _dumps(n.payload)),
                    )
                    if cur.rowcount:  # a notice key is written once: its deliveries too
                        db.executemany(
                            "INSERT OR IGNORE INTO deliveries (key, sink, due_ns, status) VALUES (?,?,?,'pending')",
                            [(n.key, sink, due) for sink, due in deliveries],
                        )
                for key, ts in (flips or {}).items():
                    db.execute("INSERT OR REPLACE INTO flips VALUES (?,?,?)", (key[0], key[1], json.dumps(ts)))
                for s in silences or []:
                    db.execute("INSERT OR REPLACE INTO silences VALUES (?,?,?)", (s.id, s.expires_ns, _dumps(s.to_dict())))
                for k, v in (meta or {}).items():
                    db.execute("INSERT OR REPLACE INTO meta VALUES (?,?)", (k, v))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def mark_delivery(self, key: str, sink: str, status: str, attempts: int, error: str | None = None) -> None:
        """status: sent | failed (not retryable) | pending (still retrying)."""
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET status=?, attempts=?, error=?, done_at=? WHERE key=? AND sink=?",
                (status, attempts, error, time.time() if status != "pending" else None, key, sink),
            )

    def prune(self, before_ns: int) -> dict[str, int]:
        """Forget what ended before `before_ns` (UTC ns): resolved alerts with their notices and
        deliveries (never a notice with a delivery still pending), silences that ended or expired, and
        applied operator commands. Open alerts, pending deliveries and active silences always stay.
        Returns the rows deleted per table."""
        before_s = before_ns / 1e9
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("CREATE TEMP TABLE IF NOT EXISTS gone (alert_id TEXT PRIMARY KEY)")
                db.execute("DELETE FROM gone")
                db.execute(
                    "INSERT INTO gone SELECT alert_id FROM alerts WHERE state = 'resolved' "
                    "AND json_extract(body, '$.resolved_ns') < ? AND NOT EXISTS ("
                    "  SELECT 1 FROM notices n JOIN deliveries d ON d.key = n.key "
                    "  WHERE n.alert_id = alerts.alert_id AND d.status = 'pending')", (before_ns,))
                counts = {
                    "deliveries": db.execute(
                        "DELETE FROM deliveries WHERE key IN (SELECT key FROM notices WHERE alert_id IN "
                        "(SELECT alert_id FROM gone))").rowcount,
                    "notices": db.execute("DELETE FROM notices WHERE alert_id IN (SELECT alert_id FROM gone)").rowcount,
                    "alerts": db.execute("DELETE FROM alerts WHERE alert_id IN (SELECT alert_id FROM gone)").rowcount,
                    "silences": db.execute(
                        "DELETE FROM silences WHERE expires_ns < ? OR (json_extract(body, '$.ended_by') IS NOT NULL "
                        "AND json_extract(body, '$.created_ns') < ?)", (before_ns, before_ns)).rowcount,
                    "commands": db.execute(
                        "DELETE FROM commands WHERE applied_at IS NOT NULL AND received_at < ?", (before_s,)).rowcount,
                }
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return counts

    # ----- loading --------------------------------------------------------------------------------

    def open_alerts(self) -> list[Alert]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM alerts WHERE state IN ('pending', 'firing')").fetchall()
        return [_alert(r[0]) for r in rows]

    def flips(self) -> dict[tuple, list[int]]:
        with self._lock:
            rows = self._db.execute("SELECT rule_id, device_id, body FROM flips").fetchall()
        return {(r[0], r[1]): json.loads(r[2]) for r in rows}

    def silences(self, include_ended: bool = False) -> list[Silence]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM silences ORDER BY expires_ns").fetchall()
        out = [Silence(**json.loads(r[0])) for r in rows]
        return out if include_ended else [s for s in out if s.ended_by is None]

    def meta(self, k: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return row[0] if row else None

    def pending_deliveries(self) -> list[tuple[Notice, str, int]]:
        """Every (notice, sink, due_ns) not yet sent or failed, in notice order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT n.key, n.alert_id, n.seq, n.transition, n.ts_ns, n.body, d.sink, d.due_ns "
                "FROM deliveries d JOIN notices n ON n.key = d.key WHERE d.status = 'pending' "
                "ORDER BY d.due_ns, n.ts_ns, n.seq"
            ).fetchall()
        return [(Notice(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])), r[6], r[7]) for r in rows]

    # ----- queries for the commands ---------------------------------------------------------------

    def alerts(self, states: tuple[str, ...] | None = None, limit: int = 1000) -> list[Alert]:
        with self._lock:
            if states:
                q = f"SELECT body FROM alerts WHERE state IN ({','.join('?' * len(states))}) ORDER BY started_ns DESC LIMIT ?"
                rows = self._db.execute(q, (*states, limit)).fetchall()
            else:
                rows = self._db.execute("SELECT body FROM alerts ORDER BY started_ns DESC LIMIT ?", (limit,)).fetchall()
        return [_alert(r[0]) for r in rows]

    def alert(self, alert_id: str) -> Alert | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM alerts WHERE alert_id=?", (alert_id,)).fetchone()
        return _alert(row[0]) if row else None

    def notices(self, alert_id: str) -> list[tuple[Notice, list[tuple[str, str, int]]]]:
        """The notices of an alert with their deliveries (sink, status, attempts)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, alert_id, seq, transition, ts_ns, body FROM notices WHERE alert_id=? ORDER BY seq",
                (alert_id,),
            ).fetchall()
            out = []
            for r in rows:
                d = self._db.execute("SELECT sink, status, attempts FROM deliveries WHERE key=? ORDER BY sink",
                                     (r[0],)).fetchall()
                out.append((Notice(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])), [tuple(x) for x in d]))
        return out

    def delivery_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall()
        return dict(rows)

    # ----- the command inbox (CLI and MQTT commands) ----------------------------------------------

    def add_command(self, source: str, command: dict) -> int:
        with self._lock:
            cur = self._db.execute("INSERT INTO commands (received_at, source, body) VALUES (?,?,?)",
                                   (time.time(), source, json.dumps(command, sort_keys=True)))
            return int(cur.lastrowid)

    def unapplied_commands(self) -> list[tuple[int, str, dict]]:
        with self._lock:
            rows = self._db.execute("SELECT id, source, body FROM commands WHERE applied_at IS NULL ORDER BY id").fetchall()
        return [(r[0], r[1], json.loads(r[2])) for r in rows]

    def mark_command(self, command_id: int, result: str) -> None:
        with self._lock:
            self._db.execute("UPDATE commands SET applied_at=?, result=? WHERE id=?", (time.time(), result, command_id))

    def command(self, command_id: int) -> tuple[dict, float | None, str | None] | None:
        with self._lock:
            row = self._db.execute("SELECT body, applied_at, result FROM commands WHERE id=?", (command_id,)).fetchone()
        return (json.loads(row[0]), row[1], row[2]) if row else None


def _alert(body: str) -> Alert:
    d = json.loads(body)
    for k in ("value", "limit", "peak_value"):
        if d.get(k) is None:
            d[k] = float("nan")
    # Stores written before peak_severity existed: the best we know is the stored severity.
    if d.get("peak_severity") is None:
        d["peak_severity"] = d.get("severity", 0)
    return Alert.from_dict(d)
