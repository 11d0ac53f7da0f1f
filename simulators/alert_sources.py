"""Read the alerts a pipeline raised, for scoring: a JSONL capture of the alert topic, the alert SQLite
store (`sqlite:PATH`) or the InfluxDB `alerts` measurement (`influx:URL/DB`). Each yields one
ScoredAlert per alert lifecycle that fired, with the highest severity the alert reached (an alert's
current severity follows its latest detection and may have fallen since its peak):

- store:   the alert's `peak_severity` (older stores without it: the stored severity)
- notices: the maximum over the alert's notices of `severity` and `peak_severity` (a rise that was
           muted sent no notice, but a later notice carries it as its peak)
- influx:  the maximum over the alert's transitions of the `severity` tag
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import sqlite3
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from config.connections import Influx, basic_auth
from core.severity import SEVERITY_NAMES
from core.shown import shown
from simulators.scoring import ScoredAlert, parse_time_ms

_SEVERITY_RANK = {"": 0, "clear": 0, "blue": 1, "yellow": 2, "orange": 3, "red": 4}
# alert ids are `{rule}.{device}.{YYYYmmddTHHMMSSmmm}Z` (alerts.model.alert_id_for): the start is in the id.
_ID_STAMP = re.compile(r"\.(\d{8}T\d{6})(\d{3})Z$")


class AlertSourceError(ValueError):
    """The alert source cannot be read or holds something that is not an alert."""


class AlertSourceUnreachable(AlertSourceError):
    """InfluxDB did not answer (refused, timed out, host not found). url: the server; reason: the
    underlying error, for the one line every command prints (citywatch.errors)."""

    def __init__(self, url: str, reason: BaseException) -> None:
        super().__init__(f"cannot reach InfluxDB at {url}: {reason}")
        self.url, self.reason = url, reason


def load_alerts(source: str, influx_auth: tuple[str, str] | None = None) -> list[ScoredAlert]:
    """Alerts from `source`: `sqlite:PATH`, `influx:URL/DB` (e.g. influx:http://127.0.0.1:8086/citywatch)
    or a path to a JSONL capture of the alert topic. Raises AlertSourceError.

    influx_auth: (user, password) for `influx:`; default: the account in the variables CITYWATCH_INFLUX_USERNAME
    and CITYWATCH_INFLUX_PASSWORD (those `connections.influx` names by default), if set.
    """
    if source.startswith("sqlite:"):
        return from_sqlite(source[len("sqlite:"):])
    if source.startswith("influx:"):
        url, _, db = source[len("influx:"):].rstrip("/").rpartition("/")
        if not url or not db:
            raise AlertSourceError(f"expected influx:URL/DB, e.g. influx:http://127.0.0.1:8086/citywatch; got {source!r}")
        return from_influx(url, db, auth=influx_auth or Influx().credentials())
    return from_notices(Path(source))


def start_from_id(alert_id: str) -> int | None:
    m = _ID_STAMP.search(alert_id)
    if not m:
        return None
    t = dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000) + int(m.group(2))


def highest_severity(*names: object) -> str:
    """The highest of severity names ("" when none is a severity); unknown names rank as nothing."""
    best = ""
    for name in names:
        text = str(name or "")
        if _SEVERITY_RANK.get(text, 0) > _SEVERITY_RANK.get(best, 0):
            best = text
    return best


def from_notice_payloads(notices: list[dict[str, Any]]) -> list[ScoredAlert]:
    """One ScoredAlert per alert_id from notice payloads (engine notices: alert_id, rule_id, site{id},
    device{id}, severity, peak_severity, transition, start_ts); the highest severity any notice
    reported, current or peak, wins."""
    by_id: dict[str, dict[str, Any]] = {}
    for n in notices:
        if not isinstance(n, dict) or "alert_id" not in n or "rule_id" not in n:
            continue
        if n.get("transition") not in (None, "firing", "severity", "escalated", "repeat", "acknowledged",
                                       "flapping", "resolved"):
            continue
        a = by_id.setdefault(n["alert_id"], {"severity": "", "start": None, "fired": False})
        a["rule_id"] = n["rule_id"]
        device_doc, site_doc = n.get("device"), n.get("site")
        dev: dict[str, Any] = device_doc if isinstance(device_doc, dict) else {}
        site: dict[str, Any] = site_doc if isinstance(site_doc, dict) else {}
        a["device_id"] = dev.get("id") or n.get("device_id") or ""
        a["site_id"] = site.get("id") or n.get("site_id") or ""
        if n.get("transition", "firing") != "resolved" or n.get("firing_ts"):
            a["fired"] = True
        a["severity"] = highest_severity(a["severity"], n.get("severity"), n.get("peak_severity"))
        if n.get("run_id"):
            a["run_id"] = str(n["run_id"])
        start = n.get("start_ts")
        if start:
            a["start"] = parse_time_ms(start)
    out: list[ScoredAlert] = []
    for alert_id, a in by_id.items():
        if not a["fired"]:
            continue
        start = a["start"] if a["start"] is not None else start_from_id(alert_id)
        if start is None:
            continue
        out.append(ScoredAlert(alert_id, a["rule_id"], a["device_id"], a["site_id"], start, a["severity"],
                               a.get("run_id", "")))
    return sorted(out, key=lambda x: (x.start_ms, x.alert_id))


def from_notices(path: Path) -> list[ScoredAlert]:
    """A JSONL capture of the alert topic: lines of `citywatch record` ({topic, payload|payload_b64}),
    `mosquitto_sub -v` (`topic {json}`), or bare notice JSON objects."""
    notices: list[dict[str, Any]] = []
    try:
        fh = open(path, "rb")  # decoded line by line, so an undecodable byte is reported with its line
    except OSError as exc:
        raise AlertSourceError(f"cannot read {path}: {exc}") from None
    with fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                raise AlertSourceError(f"{path}:{lineno}: not UTF-8 text ({exc.reason} at column {exc.start + 1})") from None
            if not line:
                continue
            try:
                doc = _line_doc(line)
            except ValueError:  # a payload_b64 that is not base64
                doc = None
            if doc is None:
                raise AlertSourceError(f"{path}:{lineno}: neither a notice, a record line nor `topic payload`")
            if isinstance(doc, dict) and "alert_id" in doc:
                problem = _notice_problem(doc)
                if problem:
                    raise AlertSourceError(f"{path}:{lineno}: {problem}")
                notices.append(doc)
    return from_notice_payloads(notices)


def _notice_problem(n: dict[str, Any]) -> str | None:
    """What makes a notice unreadable (a non-text id, a start that is not a time), or None."""
    for key in ("alert_id", "rule_id"):
        if key in n and not isinstance(n[key], str):
            return f"{key} must be a string, got {shown(n[key])}"
    if n.get("start_ts"):
        try:
            parse_time_ms(n["start_ts"])
        except ValueError as exc:
            return f"start_ts: {exc}"
    return None


def _line_doc(line: str) -> Any:
    """The JSON document a line carries (a notice, if anything): {} for a line of another topic, None for
    a line of no known shape."""
    try:
        doc = json.loads(line)
    except json.JSONDecodeError:
        topic, _, rest = line.partition(" ")
        try:
            return json.loads(rest) if rest else {}
        except json.JSONDecodeError:
            return {} if topic.startswith("city/") else None
    if isinstance(doc, dict) and "topic" in doc and ("payload" in doc or "payload_b64" in doc):
        raw = doc["payload"] if "payload" in doc else base64.b64decode(doc["payload_b64"]).decode("utf-8", "replace")
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return {}   # retained `active` state strings and other non-notice payloads
    return doc


def stored_severity(body: dict[str, Any]) -> str:
    """The highest severity of a stored alert body: `peak_severity`, or `severity` in older stores."""
    codes = [body.get("severity"), body.get("peak_severity")]
    return highest_severity(*(SEVERITY_NAMES.get(int(c), "") for c in codes
                              if isinstance(c, (int, float)) and c == c))


def from_sqlite(path: str) -> list[ScoredAlert]:
    """The alert store: every alert that reached `firing` (firing_ns set)."""
    if not Path(path).is_file():
        raise AlertSourceError(f"no alert store at {path}")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        rows = db.execute("SELECT body FROM alerts").fetchall()
        db.close()
    except sqlite3.Error as exc:
        raise AlertSourceError(f"{path}: {exc}") from None
    out: list[ScoredAlert] = []
    for (body,) in rows:
        a = json.loads(body)
        if a.get("firing_ns") is None:
            continue
        site = a.get("site") or {}
        out.append(ScoredAlert(a["alert_id"], a["rule_id"], a.get("device_id", ""), site.get("id", ""),
                               int(a["started_ns"]) // 1_000_000, stored_severity(a)))
    return sorted(out, key=lambda x: (x.start_ms, x.alert_id))


def from_influx(url: str, database: str, measurement: str = "alerts", timeout_s: float = 30.0,
                auth: tuple[str, str] | None = None) -> list[ScoredAlert]:
    """The InfluxDB `alerts` measurement written by the Influx sink (v1 /query): one point per transition.
    auth: (user, password) sent as HTTP basic auth, or None."""
    # `*`: every tag and field, so a `peak_severity` field is used if the sink writes one.
    q = f'SELECT * FROM "{measurement}"'
    params = urllib.parse.urlencode({"db": database, "q": q, "epoch": "ms"})
    req = urllib.request.Request(f"{url.rstrip('/')}/query?{params}", headers=basic_auth(auth))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            doc = json.loads(resp.read())
    except urllib.error.HTTPError as exc:  # it answered: an unknown database, a refused account
        try:
            detail = json.loads(exc.read() or b"{}").get("error") or exc.reason
        except (ValueError, AttributeError, OSError):
            detail = exc.reason
        raise AlertSourceError(f"cannot query {url} db {database}: HTTP {exc.code}: {detail}") from None
    except OSError as exc:  # urllib's URLError included: nothing answered
        raise AlertSourceUnreachable(url, exc) from None
    except ValueError as exc:
        raise AlertSourceError(f"cannot query {url} db {database}: {exc}") from None
    return from_influx_result(doc, url)


def from_influx_result(doc: dict[str, Any], where: str = "influx") -> list[ScoredAlert]:
    """Alerts from a v1 /query response over the `alerts` measurement; severity = the highest over the
    alert's transitions (the `severity` tag of each point, and a `peak_severity` field where present)."""
    notices: list[dict[str, Any]] = []
    for result in doc.get("results", []):
        if "error" in result:
            raise AlertSourceError(f"{where}: {result['error']}")
        for series in result.get("series", []):
            cols = series["columns"]
            for row in series["values"]:
                r = dict(zip(cols, row))
                notices.append({
                    "alert_id": r.get("alert_id"), "rule_id": r.get("rule_id"), "transition": r.get("transition"),
                    "severity": r.get("severity"), "peak_severity": r.get("peak_severity"),
                    "device_id": r.get("device_id") or "", "site_id": r.get("site_id") or "",
                    "run_id": r.get("run_id") or "",
                })
    return from_notice_payloads([n for n in notices if n["alert_id"]])
