"""SQLite store of alert states, flap history, silences, commands and the notification log.

The engine commits a transition's alert state, notice and pending deliveries in one transaction before
any sink sees the notice, so a crash between the two re-sends at most the notices in flight, with the
same idempotency key, and never opens a new alert.

An alert's fields live in the JSON `body`; the columns beside it are only for lookups. A field added
later (e.g. `peak_severity`) therefore needs no migration: the loader gives an old body its default.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from alerts.model import Alert, Notice
from alerts.muting import Silence

log = logging.getLogger(__name__)

T = TypeVar("T")


def _loaded(rows: list[Any], parse: Callable[[Any], T], what: str) -> list[T]:
    """Parse stored rows, skipping (and logging once per load) any that no longer parse: a damaged or
    hand-edited row must never stop the engine from starting. Skipping fails open: a lost silence mutes
    nothing, a lost open alert is opened again by its next detection."""
    out: list[T] = []
    bad: list[str] = []
    for r in rows:
        try:
            out.append(parse(r))
        except Exception as exc:  # noqa: BLE001 - any damage, whatever its kind, is this row's alone
            bad.append(f"{type(exc).__name__}: {str(exc)[:120]}")
    if bad:
        log.error("alert store: skipped %d damaged %s row(s), e.g. %s", len(bad), what, bad[0])
    return out

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    alert_id TEXT PRIMARY KEY, rule_id TEXT, device_id TEXT, state TEXT, severity INTEGER,
    started_ns INTEGER, body TEXT NOT NULL, peak_severity INTEGER, site_id TEXT, district TEXT);
CREATE INDEX IF NOT EXISTS alerts_state ON alerts(state);
CREATE TABLE IF NOT EXISTS flips (rule_id TEXT, device_id TEXT, body TEXT, PRIMARY KEY (rule_id, device_id));
CREATE TABLE IF NOT EXISTS notices (
    key TEXT PRIMARY KEY, alert_id TEXT, seq INTEGER, transition TEXT, ts_ns INTEGER, body TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS notices_alert ON notices(alert_id);
CREATE TABLE IF NOT EXISTS deliveries (
    key TEXT, sink TEXT, due_ns INTEGER, status TEXT, attempts INTEGER DEFAULT 0, error TEXT,
    done_at REAL, reached TEXT, PRIMARY KEY (key, sink));
CREATE INDEX IF NOT EXISTS deliveries_status ON deliveries(status);
CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, expires_ns INTEGER, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL, source TEXT, body TEXT NOT NULL,
    applied_at REAL, result TEXT, author TEXT, author_name TEXT, status TEXT);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT);
"""

# The commands kept for review (applied, refused, failed: `retention_days` of them) must not make the engine's
# inbox read at every tick (`unapplied_commands`), the hourly prune or the console's alert page scan them all:
# the inbox reads this partial index of the few rows still to apply, the prune the received time, the alert page
# the alert a command names (COMMAND_NAMES_ALERT; a body that is not JSON names none and is not indexed).
COMMAND_NAMES_ALERT = "json_valid(body) AND json_extract(body, '$.alert_id') = ?"
COMMAND_INDEXES = """
CREATE INDEX IF NOT EXISTS commands_unapplied ON commands(id) WHERE applied_at IS NULL;
CREATE INDEX IF NOT EXISTS commands_received ON commands(received_at);
CREATE INDEX IF NOT EXISTS commands_alert ON commands(json_extract(body, '$.alert_id')) WHERE json_valid(body);
"""

# When a closed alert ended (UTC ns): its resolve, or, for an alert discarded while pending (never notified, no
# resolved_ns), its last active detection. The hourly prune finds what ended before its cut-off through the index
# `alerts_ended` on (state, this), so it visits the hour's worth of old alerts, not every alert the store keeps.
# The prune's query spells it exactly as the index does: SQLite matches an indexed expression by its text.
# Only rows whose body is JSON: json_extract raises on a damaged one ("malformed JSON"), which in an index would
# stop the store from opening, or from taking any write to that row; a damaged row is never pruned (nor loaded).
ENDED_NS = "coalesce(json_extract(body, '$.resolved_ns'), json_extract(body, '$.last_active_ns'))"
CLOSED_STATES = "state IN ('resolved', 'discarded') AND json_valid(body)"


# Copies of body fields the console's history search filters on (console/history.py), indexed by start time.
ALERT_INDEX_COLUMNS = ("peak_severity", "site_id", "district")
ALERT_COLUMNS = ", ".join(("alert_id", "rule_id", "device_id", "state", "severity", "started_ns", "body",
                           *ALERT_INDEX_COLUMNS))


def _text(v: Any) -> str | None:
    return None if v is None else str(v)


def _dumps(obj: Any) -> str:
    """`obj` as JSON text with sorted keys. NaN and infinities are not JSON: they are stored as null and read back
    as NaN where a float is expected (an `Infinity` token would make the body invalid JSON for SQLite, which
    leaves the row out of the history columns and the prune's index).

    orjson does it ~18x faster than the standard library (an alert's body: ~3 against ~54 µs with
    `dataclasses.asdict`; the engine writes every changed alert at each commit, under the store's lock); what
    it refuses (numpy scalars, integers beyond 64 bits, non-string keys) takes the standard library's path."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS).decode()
    except TypeError:
        return json.dumps(_clean(obj), sort_keys=True)


def _body(alert: Alert) -> dict[str, Any]:
    """An alert's fields for its stored body: `Alert.to_dict` without its deep copy (`_dumps` only reads it)."""
    return {name: getattr(alert, name) for name in _ALERT_FIELDS}


_ALERT_FIELDS = tuple(f.name for f in dataclasses.fields(Alert))


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return _clean(dataclasses.asdict(obj))
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


class AlertStore:
    """One SQLite file (WAL). Safe to share between threads; every write is one transaction."""

    def __init__(self, path: str | Path, create: bool = True):
        """create=False: the file must exist already (a reader must never create an empty store and show
        an all-clear from it) and be an alert store; raises FileNotFoundError, or sqlite3.DatabaseError for
        another file (never writing to it: another application's SQLite file used to get our tables)."""
        self.path = Path(path)
        if str(path) != ":memory:":
            if not create and not self.path.is_file():
                raise FileNotFoundError(f"no alert store at {self.path}")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.RLock()
        # The notices of the last `pending_deliveries`, parsed: a stored notice never changes (INSERT OR IGNORE),
        # and a cluster worker reads every pending delivery at each save of its alerts (several a second while
        # a slow sink's queue holds hundreds: parsing them again was most of that thread's CPU).
        self._pending_parsed: dict[str, Notice] = {}
        if not create and str(path) != ":memory:":
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            if not {"alerts", "notices", "deliveries"} <= tables:
                self._db.close()
                raise sqlite3.DatabaseError("not a citywatch alert store (it has no alerts, notices and deliveries "
                                            "tables)")
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            # FULL: a committed transition survives power loss, not only a process kill.
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            # Stores written before commands had an author and a status: add the columns (NULL in old rows).
            have = {r[1] for r in self._db.execute("PRAGMA table_info(commands)")}
            for col in ("author", "author_name", "status"):
                if col not in have:
                    self._db.execute(f"ALTER TABLE commands ADD COLUMN {col} TEXT")
            # ... and before a delivery said whom it reached (team receivers, alerts/sinks/team.py).
            if "reached" not in {r[1] for r in self._db.execute("PRAGMA table_info(deliveries)")}:
                self._db.execute("ALTER TABLE deliveries ADD COLUMN reached TEXT")
            self._db.executescript(COMMAND_INDEXES)
            self._index_alerts()

    def _index_alerts(self) -> None:
        """The history search's columns (peak severity, site, district: copies of the body's fields) and its
        index on the start time, and the prune's index of closed alerts by end time. A store written before they
        existed gets them filled from the bodies, once."""
        have = {r[1] for r in self._db.execute("PRAGMA table_info(alerts)")}
        missing = [c for c in ALERT_INDEX_COLUMNS if c not in have]
        if missing:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for col in missing:
                    kind = "INTEGER" if col == "peak_severity" else "TEXT"
                    self._db.execute(f"ALTER TABLE alerts ADD COLUMN {col} {kind}")
                # A damaged body (not JSON) leaves its row's copies NULL instead of failing the store's opening.
                self._db.execute(
                    "UPDATE alerts SET peak_severity = max(coalesce(json_extract(body, '$.peak_severity'), 0), "
                    "severity), site_id = json_extract(body, '$.site.id'), "
                    "district = json_extract(body, '$.site.district') WHERE json_valid(body)")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            log.info("alert store %s: added the history columns %s", self.path, ", ".join(missing))
        self._db.execute("CREATE INDEX IF NOT EXISTS alerts_started ON alerts(started_ns)")
        # Closed alerts by end time, for the prune (see ENDED_NS). On a store written before it, built once at
        # opening (one pass over the closed alerts' bodies).
        self._db.execute(f"CREATE INDEX IF NOT EXISTS alerts_ended ON alerts(state, {ENDED_NS}) WHERE {CLOSED_STATES}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ----- the engine's transaction ---------------------------------------------------------------

    def commit(self, alerts: list[Alert], notices: list[tuple[Notice, list[tuple[str, int]]]],
               flips: Mapping[tuple[str, str], Sequence[int]] | None = None, silences: list[Silence] | None = None,
               meta: dict[str, str] | None = None) -> None:
        """Write changed alerts, new notices with their (sink, due_ns) deliveries, flips, silences, meta."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(
                    f"INSERT OR REPLACE INTO alerts ({ALERT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    [(a.alert_id, a.rule_id, a.device_id, a.state, a.severity, a.started_ns, _dumps(_body(a)),
                      max(int(a.peak_severity or 0), int(a.severity)), _text((a.site or {}).get("id")),
                      _text((a.site or {}).get("district")))
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

    def forget(self, alert_ids: Sequence[str], keys: Sequence[tuple[str, str]] = ()) -> None:
        """Delete alerts (and the flap histories of `keys`) that another worker owns now (partitioned mode:
        they moved with their partition). Their notices stay, as the log of what this store's engine sent."""
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany("DELETE FROM alerts WHERE alert_id=?", [(a,) for a in alert_ids])
                db.executemany("DELETE FROM flips WHERE rule_id=? AND device_id=?", [tuple(k) for k in keys])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def mark_delivery(self, key: str, sink: str, status: str, attempts: int, error: str | None = None,
                      reached: str | None = None) -> None:
        """status: sent | failed (not retryable) | pending (still retrying); error: why the last attempt
        failed; reached: whom a sent notice reached, when the sink says (a team receiver)."""
        with self._lock:
            self._db.execute(
                "UPDATE deliveries SET status=?, attempts=?, error=?, reached=?, done_at=? WHERE key=? AND sink=?",
                (status, attempts, error, reached, time.time() if status != "pending" else None, key, sink),
            )

    def prune(self, before_ns: int) -> dict[str, int]:
        """Forget what ended before `before_ns` (UTC ns): resolved alerts with their notices and
        deliveries (never a notice with a delivery still pending), alerts discarded while pending (their last
        detection before `before_ns`), silences that ended or expired, and applied operator commands. Open
        alerts, pending deliveries and active silences always stay. Returns the rows deleted per table.

        Its searches go through indexes (`alerts_ended`, `notices_alert`, the deliveries' key, `commands_received`):
        the rows it visits grow with what it deletes, not with what the store keeps."""
        before_s = before_ns / 1e9
        with self._lock:
            db = self._db
            db.execute("BEGIN IMMEDIATE")
            try:
                db.execute("CREATE TEMP TABLE IF NOT EXISTS gone (alert_id TEXT PRIMARY KEY)")
                db.execute("DELETE FROM gone")
                # `+d.status`: each alert's few deliveries are found by notice key, never by scanning every
                # pending delivery (a sink down for hours leaves thousands) for each old alert.
                db.execute(
                    f"INSERT INTO gone SELECT alert_id FROM alerts WHERE {CLOSED_STATES} "
                    f"AND {ENDED_NS} < ? AND NOT EXISTS ("
                    "  SELECT 1 FROM notices n JOIN deliveries d ON d.key = n.key "
                    "  WHERE n.alert_id = alerts.alert_id AND +d.status = 'pending')", (before_ns,))
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
        return _loaded(rows, lambda r: _alert(r[0]), "open alert")

    def flips(self) -> dict[tuple[str, str], Sequence[int]]:
        with self._lock:
            rows = self._db.execute("SELECT rule_id, device_id, body FROM flips").fetchall()
        return dict(_loaded(rows, lambda r: ((r[0], r[1]), [int(t) for t in json.loads(r[2])]), "flap history"))

    def silences(self, include_ended: bool = False) -> list[Silence]:
        with self._lock:
            rows = self._db.execute("SELECT body FROM silences ORDER BY expires_ns").fetchall()
        out = _loaded(rows, lambda r: _silence(json.loads(r[0])), "silence")
        return out if include_ended else [s for s in out if s.ended_by is None]

    def meta(self, k: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT v FROM meta WHERE k=?", (k,)).fetchone()
        return row[0] if row else None

    def last_write_ns(self) -> int | None:
        """When the store was last written (the newest mtime of the file and its WAL), wall UTC ns;
        None for an in-memory store."""
        if str(self.path) == ":memory:":
            return None
        times = []
        for p in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                st = p.stat()
            except OSError:
                continue
            # A reader opening the store creates an empty WAL: that is not a write.
            if st.st_size:
                times.append(st.st_mtime_ns)
        return max(times) if times else None

    def pending_deliveries(self) -> list[tuple[Notice, str, int]]:
        """Every (notice, sink, due_ns) not yet sent or failed, in notice order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT n.key, n.alert_id, n.seq, n.transition, n.ts_ns, n.body, d.sink, d.due_ns "
                "FROM deliveries d JOIN notices n ON n.key = d.key WHERE d.status = 'pending' "
                "ORDER BY d.due_ns, n.ts_ns, n.seq"
            ).fetchall()
            known, parsed = self._pending_parsed, {}

            def notice(r: Any) -> tuple[Notice, str, int]:
                n = known.get(r[0])
                if n is None:
                    n = Notice(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]))
                parsed[n.key] = n
                return n, r[6], int(r[7])

            out = _loaded(rows, notice, "pending delivery")
            self._pending_parsed = parsed  # only what is still pending: bounded by the queue
            return out

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

    def notices(self, alert_id: str) -> list[tuple[Notice, list[tuple[str, str, int, str | None]]]]:
        """The notices of an alert with their deliveries (sink, status, attempts, whom it reached or None)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, alert_id, seq, transition, ts_ns, body FROM notices WHERE alert_id=? ORDER BY seq",
                (alert_id,),
            ).fetchall()
            out = []
            for r in rows:
                d = self._db.execute("SELECT sink, status, attempts, reached FROM deliveries WHERE key=? ORDER BY sink",
                                     (r[0],)).fetchall()
                out.append((Notice(r[0], r[1], r[2], r[3], r[4], json.loads(r[5])), [tuple(x) for x in d]))
        return out

    def delivery_counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status").fetchall()
        return dict(rows)

    # ----- the command inbox (CLI and MQTT commands) ----------------------------------------------
    # A row's status: pending (validated, to apply), applied, failed (applying it went wrong: never
    # tried again) or refused (it did not validate: recorded with its reason, never applied). Rows of
    # earlier versions have no status; unapplied ones are pending until the engine marks them.

    def add_command(self, source: str, command: Any, author: str | None = None, author_name: str | None = None,
                    status: str = "pending", result: str | None = None) -> int:
        """Record a command; `command` is a dict (stored as JSON) or its text already bounded
        (alerts.commands.record_form). A row that is not pending is recorded as handled now."""
        body = command if isinstance(command, str) else json.dumps(command, sort_keys=True)
        now = time.time()
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO commands (received_at, source, body, applied_at, result, author, author_name, status) "
                "VALUES (?,?,?,?,?,?,?,?)",
                (now, source, body, None if status == "pending" else now, result, author, author_name, status))
            if cur.lastrowid is None:  # never after an INSERT into a rowid table; sqlite3 types it optional
                raise RuntimeError("alert store: the command row got no id")
            return cur.lastrowid

    def unapplied_commands(self) -> list[StoredCommand]:
        """Commands not yet handled, oldest first. Never raises for a row's content: a body that is not
        a JSON object comes back with `error` set, for the engine to mark failed."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, source, body, author, author_name FROM commands WHERE applied_at IS NULL ORDER BY id"
            ).fetchall()
        out = []
        for cid, source, body, author, name in rows:
            cmd, error = None, None
            try:
                cmd = json.loads(body)
            except (TypeError, ValueError, RecursionError) as exc:
                error = f"stored body is not JSON ({type(exc).__name__})"
            out.append(StoredCommand(cid, _text_or_none(source), cmd, _text_or_none(author), _text_or_none(name), error))
        return out

    def mark_command(self, command_id: int, result: str, status: str | None = None) -> None:
        """Mark a command handled: `status` applied | failed (default: from the result, "ok..." or not)."""
        if status is None:
            status = "applied" if result.startswith("ok") else "failed"
        with self._lock:
            self._db.execute("UPDATE commands SET applied_at=?, result=?, status=? WHERE id=?",
                             (time.time(), result, status, command_id))

    def command(self, command_id: int) -> tuple[Any, float | None, str | None] | None:
        """(body, applied_at, result) of a command, or None."""
        with self._lock:
            row = self._db.execute("SELECT body, applied_at, result FROM commands WHERE id=?", (command_id,)).fetchone()
        return (json.loads(row[0]), row[1], row[2]) if row else None

    def command_rows(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest commands with who sent them and what became of them (for review and tests)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, received_at, source, body, applied_at, result, author, author_name, status "
                "FROM commands ORDER BY id DESC LIMIT ?", (limit,)).fetchall()
        keys = ("id", "received_at", "source", "body", "applied_at", "result", "author", "author_name", "status")
        return [dict(zip(keys, r)) for r in rows]


@dataclass(frozen=True)
class StoredCommand:
    """A command row to apply: `command` is the decoded body (None with `error` when it is unreadable);
    `author` is None in rows written before commands had an authenticated author."""

    id: int
    source: str | None
    command: object
    author: str | None
    author_name: str | None
    error: str | None = None


def _text_or_none(v: object) -> str | None:
    return v if isinstance(v, str) else None


def _alert(body: str) -> Alert:
    d = json.loads(body)
    for k in ("value", "limit", "peak_value"):
        if d.get(k) is None:
            d[k] = float("nan")
    # Stores written before peak_severity existed: the best we know is the stored severity.
    if d.get("peak_severity") is None:
        d["peak_severity"] = d.get("severity", 0)
    return Alert.from_dict(d)


def _silence(body: dict[str, Any]) -> Silence:
    s = Silence(**body)
    if not (isinstance(s.starts_ns, int) and isinstance(s.expires_ns, int) and isinstance(s.matchers, dict)):
        raise ValueError("silence times must be integers and its matchers a mapping")
    return s
