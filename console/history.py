"""The console's history of resolved alerts (issue 11 item 5): a bounded search of the alert store by local
date range, site, district, rule and peak severity, paged, with counts per day and a CSV export of the search.
Query parsing, SQL building and CSV writing are pure functions; the two Starlette handlers are a thin layer."""

from __future__ import annotations

import asyncio
import bisect
import csv
import datetime as dt
import difflib
import io
import json
import re
import sqlite3
import urllib.parse
from dataclasses import dataclass, replace
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from alerts.store import ALERT_INDEX_COLUMNS
from console.i18n import words
from core.severity import SEVERITY_CODES, SEVERITY_NAMES

MAX_DAYS = 92              # the widest search: a quarter (the store is read without an index on time)
DEFAULT_DAYS = 7           # the search when none is given: the last week, today included
PAGE_SIZES = (25, 50, 100, 200)
DEFAULT_PAGE_SIZE = 50
MAX_EXPORT_ROWS = 50_000   # a CSV export, and the deepest page, stop here: narrow the search beyond it
MAX_TEXT = 64              # site, district and rule values are at most this long
SEVERITIES = ("red", "orange", "yellow", "blue")
PARAMS = ("from", "to", "site", "district", "rule", "severity", "page", "per_page")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Excel runs a cell that starts with one of these as a formula: free text gets a leading apostrophe (OWASP).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
CSV_COLUMNS = ("alert_id", "peak_severity", "rule_id", "rule_name", "site_id", "site_name", "district", "address",
               "device_id", "started", "firing", "resolved", "duration_s", "peak_value", "limit", "unit",
               "acked_by", "acked_by_name", "ack_note")
# An alert's severity in the history is the highest it reached (peak_severity), as for scoring and review;
# a body written before peak_severity existed has the stored severity only. The store keeps copies of the
# fields the search filters on in columns of their own (alerts/store.py ALERT_INDEX_COLUMNS, filled when the
# service opens the store); a store no service of this version has opened yet has only the bodies.
INDEXED_SQL = {"peak": "max(coalesce(peak_severity, 0), severity)", "site": "site_id", "district": "district"}


def _field(path: str) -> str:
    # json_extract raises on a damaged body and would fail the whole search: such a row has no such field.
    return f"(CASE WHEN json_valid(body) THEN json_extract(body, '{path}') END)"


BODY_SQL = {"peak": f"max(coalesce({_field('$.peak_severity')}, 0), severity)",
            "site": _field("$.site.id"), "district": _field("$.site.district")}


def column_sql(db: sqlite3.Connection) -> dict[str, str]:
    """The SQL of the peak severity, site and district for this store: its columns, or the bodies' fields."""
    have = {r[1] for r in db.execute("PRAGMA table_info(alerts)")}
    return INDEXED_SQL if have.issuperset(ALERT_INDEX_COLUMNS) else BODY_SQL


class QueryError(ValueError):
    """A search parameter out of bounds; the message names the parameter, the rule and the value received."""


@dataclass(frozen=True)
class HistoryQuery:
    """One search: local calendar days first_day..last_day (inclusive) of the alerts' start, optional filters,
    and the page shown. `severities` empty means any."""

    first_day: dt.date
    last_day: dt.date
    site: str | None = None
    district: str | None = None
    rule: str | None = None
    severities: tuple[str, ...] = ()
    page: int = 1
    per_page: int = DEFAULT_PAGE_SIZE

    @property
    def days(self) -> list[dt.date]:
        return [self.first_day + dt.timedelta(days=i) for i in range((self.last_day - self.first_day).days + 1)]

    def query_string(self, **change: Any) -> str:
        """The URL query of this search (with `change` applied), for paging links and the CSV export."""
        q = replace(self, **change) if change else self
        pairs = [("from", q.first_day.isoformat()), ("to", q.last_day.isoformat())]
        pairs += [(k, v) for k, v in (("site", q.site), ("district", q.district), ("rule", q.rule)) if v]
        pairs += [("severity", s) for s in q.severities]
        if q.page != 1:
            pairs.append(("page", str(q.page)))
        if q.per_page != DEFAULT_PAGE_SIZE:
            pairs.append(("per_page", str(q.per_page)))
        return urllib.parse.urlencode(pairs)


def parse_query(params: Any, today: dt.date) -> HistoryQuery:
    """A HistoryQuery from URL parameters (a Starlette QueryParams or a list of (key, value) pairs).

    `today` is the local date (the city's time zone). Empty values count as absent (a form's "any").
    Raises QueryError for an unknown or repeated parameter, a malformed or future date, a range past
    MAX_DAYS, an id or text that is too long or has odd characters, an unknown severity, a page size
    outside PAGE_SIZES or a page beyond MAX_EXPORT_ROWS."""
    items = list(params.multi_items()) if hasattr(params, "multi_items") else list(params)
    values: dict[str, list[str]] = {}
    for k, v in items:
        if k not in PARAMS:
            near = difflib.get_close_matches(k, PARAMS, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else f" (known: {', '.join(PARAMS)})"
            raise QueryError(f"unknown parameter {k[:40]!r}{hint}")
        v = v.strip()
        if v:
            values.setdefault(k, []).append(v)
    for k, vs in values.items():
        if k != "severity" and len(vs) > 1:
            raise QueryError(f"{k}: given {len(vs)} times, at most once")
    one = {k: vs[0] for k, vs in values.items()}

    last = _date(one["to"], "to") if "to" in one else today
    first = _date(one["from"], "from") if "from" in one else last - dt.timedelta(days=DEFAULT_DAYS - 1)
    if last > today:
        raise QueryError(f"to: {last.isoformat()} is after today ({today.isoformat()})")
    if first > last:
        raise QueryError(f"from: {first.isoformat()} is after to ({last.isoformat()})")
    span = (last - first).days + 1
    if span > MAX_DAYS:
        raise QueryError(f"from..to: at most {MAX_DAYS} days, got {span} ({first.isoformat()}..{last.isoformat()})")

    site = _ident(one.get("site"), "site")
    rule = _ident(one.get("rule"), "rule")
    district = one.get("district")
    if district is not None and (len(district) > MAX_TEXT or not district.isprintable()):
        raise QueryError(f"district: at most {MAX_TEXT} printable characters, got {district[:80]!r}")
    sevs = []
    for s in values.get("severity", []):
        if s not in SEVERITIES:
            raise QueryError(f"severity: must be one of {', '.join(SEVERITIES)}, got {s[:40]!r}")
        if s not in sevs:
            sevs.append(s)
    per_page = _int(one.get("per_page"), "per_page", DEFAULT_PAGE_SIZE)
    if per_page not in PAGE_SIZES:
        raise QueryError(f"per_page: must be one of {', '.join(map(str, PAGE_SIZES))}, got {per_page}")
    page = _int(one.get("page"), "page", 1)
    max_page = MAX_EXPORT_ROWS // per_page
    if not 1 <= page <= max_page:
        raise QueryError(f"page: must be 1..{max_page} with per_page {per_page}, got {page}")
    return HistoryQuery(first, last, site, district, rule, tuple(sorted(sevs, key=SEVERITIES.index)), page, per_page)


def _date(text: str, name: str) -> dt.date:
    if not _DATE.match(text):
        raise QueryError(f"{name}: must be a date YYYY-MM-DD, got {text[:40]!r}")
    try:
        d = dt.date.fromisoformat(text)
    except ValueError:
        raise QueryError(f"{name}: no such date, got {text!r}") from None
    if d.year < 2000:
        raise QueryError(f"{name}: must be 2000-01-01 or later, got {text!r}")
    return d


def _ident(text: str | None, name: str) -> str | None:
    if text is None:
        return None
    if len(text) > MAX_TEXT or not _ID.match(text):
        raise QueryError(f"{name}: must be an id of letters, digits, '.', '_' or '-' (at most {MAX_TEXT}), "
                         f"got {text[:80]!r}")
    return text


def _int(text: str | None, name: str, default: int) -> int:
    if text is None:
        return default
    if not (text.isascii() and text.isdigit()) or len(text) > 9:
        raise QueryError(f"{name}: must be a whole number, got {text[:40]!r}")
    return int(text)


# ----- SQL -------------------------------------------------------------------------------------------

def day_bounds(day: dt.date, tz: dt.tzinfo) -> tuple[int, int]:
    """UTC ns of the local midnight that starts `day` and of the one that ends it (23 or 25 h across DST)."""
    start = dt.datetime.combine(day, dt.time(), tz)
    end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), tz)
    return int(start.timestamp()) * 1_000_000_000, int(end.timestamp()) * 1_000_000_000


def filters(q: HistoryQuery, cols: dict[str, str] = INDEXED_SQL) -> tuple[str, list[Any]]:
    """The WHERE conditions of the search's filters, without the time range: (SQL, arguments)."""
    # `+state`: not the state index, whose row-by-row lookups cost more than a scan when most alerts are resolved.
    sql: list[str] = ["+state = 'resolved'"]
    args: list[Any] = []
    if q.site:
        sql.append(f"{cols['site']} = ?")
        args.append(q.site)
    if q.district:
        sql.append(f"{cols['district']} = ?")
        args.append(q.district)
    if q.rule:
        sql.append("rule_id = ?")
        args.append(q.rule)
    if q.severities:
        sql.append(f"{cols['peak']} IN ({','.join('?' * len(q.severities))})")
        args += [SEVERITY_CODES[s] for s in q.severities]
    return " AND ".join(sql), args


def where(q: HistoryQuery, tz: dt.tzinfo, cols: dict[str, str] = INDEXED_SQL) -> tuple[str, list[Any]]:
    """The full WHERE clause: the filters and the alerts' start inside the search's local days."""
    cond, args = filters(q, cols)
    t0 = day_bounds(q.first_day, tz)[0]
    t1 = day_bounds(q.last_day, tz)[1]
    # The plain columns first: SQLite tests the terms in order, and json_extract parses the body each time.
    return f"started_ns >= ? AND started_ns < ? AND {cond}", [t0, t1, *args]


def per_day(stamps: list[tuple[int, int]], days: list[dt.date], tz: dt.tzinfo) -> dict[str, list[int]]:
    """(started_ns, peak severity code) pairs -> severity name -> count per local day of `days` (consecutive).
    The day boundaries come from the time zone (not a fixed offset), so a day is always a local day; a stamp
    outside the days is not counted."""
    bounds = [day_bounds(d, tz)[0] for d in days] + [day_bounds(days[-1], tz)[1]] if days else []
    counts = {s: [0] * len(days) for s in SEVERITIES}
    for ts, sev in stamps:
        i = bisect.bisect_right(bounds, ts) - 1
        name = SEVERITY_NAMES.get(sev)
        if 0 <= i < len(days) and name in counts:
            counts[name][i] += 1
    return counts


@dataclass
class HistoryResult:
    total: int
    rows: list[dict[str, Any]]                       # the page's alerts (store bodies), newest start first
    days: list[str]                        # every local day of the search, oldest first
    per_day: dict[str, list[int]]          # severity name -> count per day (aligned with days)

    @property
    def day_totals(self) -> list[int]:
        return [sum(v[i] for v in self.per_day.values()) for i in range(len(self.days))]


def search(db: sqlite3.Connection, q: HistoryQuery, tz: dt.tzinfo, all_rows: bool = False) -> HistoryResult:
    """Run the search on an (read-only) alert store connection. all_rows: every matching alert (the CSV
    export; none when they are more than MAX_EXPORT_ROWS: the caller refuses by `total`), else the query's page."""
    cols = column_sql(db)
    sql, args = where(q, tz, cols)
    # One pass over the range's rows (the start-time index) for the total and the day counts.
    stamps = db.execute(f"SELECT started_ns, {cols['peak']} FROM alerts WHERE {sql}", args).fetchall()
    order = "ORDER BY started_ns DESC, alert_id"
    if all_rows and len(stamps) > MAX_EXPORT_ROWS:
        select, select_args = "SELECT body FROM alerts WHERE 0", []
    elif all_rows:
        select, select_args = f"SELECT body FROM alerts WHERE {sql} {order}", args
    else:
        # The page's rowids first, then their bodies: sorting the matches with their bodies costs 4x more.
        select = (f"SELECT body FROM alerts WHERE rowid IN (SELECT rowid FROM alerts WHERE {sql} {order} "
                  f"LIMIT ? OFFSET ?) {order}")
        select_args = [*args, q.per_page, (q.page - 1) * q.per_page]
    rows = []
    for (body,) in db.execute(select, select_args):
        try:
            rows.append(json.loads(body))
        except ValueError:
            continue   # a damaged row is left out, as the store's own loader does
    return HistoryResult(len(stamps), rows, [d.isoformat() for d in q.days], per_day(stamps, q.days, tz))


# ----- rows for the page and the CSV -------------------------------------------------------------------

def iso_local(ts_ns: int | None, tz: dt.tzinfo) -> str:
    """ISO 8601 local time with its UTC offset to the second (Asia/Shanghai: ...+08:00), '' for None."""
    if ts_ns is None:
        return ""
    return dt.datetime.fromtimestamp(ts_ns / 1e9, tz).isoformat(timespec="seconds")


def view_row(a: dict[str, Any], tz: dt.tzinfo) -> dict[str, Any]:
    """A stored alert body -> the fields the page and the CSV show (times local, severity its peak name)."""
    site = a.get("site") or {}
    ctx = a.get("context") or {}
    peak = max(int(a.get("peak_severity") or 0), int(a.get("severity") or 0))
    started, resolved = a.get("started_ns"), a.get("resolved_ns")
    return {
        "alert_id": a.get("alert_id", ""), "peak_severity": SEVERITY_NAMES.get(peak, "blue"),
        "rule_id": a.get("rule_id", ""), "site_id": site.get("id", ""), "site_name": site.get("name", ""),
        "district": site.get("district", ""), "address": site.get("address", ""), "device_id": a.get("device_id", ""),
        "started": iso_local(started, tz), "firing": iso_local(a.get("firing_ns"), tz),
        "resolved": iso_local(resolved, tz),
        "duration_s": round((resolved - started) / 1e9) if started and resolved else "",
        "peak_value": _num(a.get("peak_value")), "limit": _num(a.get("limit")), "unit": ctx.get("unit") or "",
        "acked_by": a.get("acked_by") or "", "acked_by_name": a.get("acked_by_name") or "",
        "ack_note": a.get("ack_note") or "",
    }


def _num(v: Any) -> float | str:
    return round(float(v), 2) if isinstance(v, (int, float)) else ""


def _cell(v: Any) -> str:
    if isinstance(v, str) and v.startswith(_FORMULA_START):
        return "'" + v
    return "" if v is None else str(v)


def csv_bytes(rows: list[dict[str, Any]], rule_names: dict[str, str]) -> bytes:
    """The CSV export: UTF-8 with a byte-order mark (Excel then reads Chinese right), CRLF lines, fields
    quoted when they hold a comma, quote or line break (RFC 4180), one header line of CSV_COLUMNS.
    `rows` are view_row() dicts; `rule_names` gives the rule_name column (the page's language)."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    w.writerow(CSV_COLUMNS)
    for r in rows:
        r = {**r, "rule_name": rule_names.get(r["rule_id"], r["rule_id"])}
        w.writerow([_cell(r[c]) for c in CSV_COLUMNS])
    return out.getvalue().encode("utf-8-sig")


# ----- handlers --------------------------------------------------------------------------------------------

def _today(tz: dt.tzinfo) -> dt.date:
    return dt.datetime.now(tz).date()


def _choices(cfg: Any, w: dict[str, Any]) -> dict[str, Any]:
    return {"sites": [(s.id, s.name) for s in cfg.sites],
            "districts": sorted({s.district for s in cfg.sites}),
            "rules": [(r.id, w["rules"].get(r.id, r.id)) for r in cfg.rules],
            "severities": SEVERITIES, "page_sizes": PAGE_SIZES}


def _shown(r: dict[str, Any]) -> dict[str, Any]:
    """A view_row with the page's texts: local times without the offset, the duration as h/m/s."""
    d = r["duration_s"]
    dur = "" if d == "" else (f"{d // 3600}h{d % 3600 // 60:02d}m" if d >= 3600 else
                              f"{d // 60}m{d % 60:02d}s" if d >= 60 else f"{d}s")
    return {**r, "started_text": r["started"][:19].replace("T", " "),
            "resolved_text": r["resolved"][:19].replace("T", " "), "duration_text": dur}


def _run(app: Any, q: HistoryQuery, tz: dt.tzinfo, all_rows: bool = False) -> HistoryResult:
    db = app.read_only()
    try:
        return search(db, q, tz, all_rows)
    finally:
        db.close()


async def history_page(request: Request) -> Response:
    """/history: the search form, the day chart (static/history.js), the page of alerts and paging links.
    A bad parameter answers 400 with the reason above the form (filled with the default search)."""
    app = request.app.state.console
    session = app.session(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    lang = app.lang(request)
    w = words(lang)
    tz = app.cfg.time.tz
    today = _today(tz)
    error, status, result = None, 200, None
    try:
        q = parse_query(request.query_params, today)
    except QueryError as exc:
        error, status = str(exc), 400
        q = parse_query([], today)
    if error is None:
        try:
            result = await asyncio.to_thread(_run, app, q, tz)
        except sqlite3.Error as exc:
            error, status = w["history_store_error"].format(path=app.store_path, why=exc), 503
    pages = max(1, -(-result.total // q.per_page)) if result else 1
    rows = [_shown(view_row(a, tz)) for a in result.rows] if result else []
    from console.app import VENDOR_FILES  # here: console.app imports this module for its route table
    missing = not (app.vendor_dir / "node_modules" / VENDOR_FILES["echarts.min.js"]).is_file()
    boot = {"words": w, "days": result.days if result else [], "per_day": result.per_day if result else {},
            "total": result.total if result else 0}
    page: Response = app.templates.TemplateResponse(request, "history.html", {
        "w": w, "user": session.user, "csrf": session.csrf, "q": q, "error": error, "result": result,
        "rows": rows, "pages": pages, "choices": _choices(app.cfg, w), "max_days": MAX_DAYS, "missing": missing,
        "site_ids": {s.id for s in app.cfg.sites},
        "searched_at": dt.datetime.now(tz).strftime("%Y-%m-%d %H:%M:%S"),
        "max_export": MAX_EXPORT_ROWS,
        "boot": json.dumps(boot, ensure_ascii=False).replace("<", "\\u003c"),
    }, status_code=status)
    return page


async def history_csv(request: Request) -> Response:
    """/history.csv?<the search>: every alert of the search as CSV (csv_bytes), as an attachment; 400 with
    the reason for a bad parameter or a search of more than MAX_EXPORT_ROWS alerts."""
    app = request.app.state.console
    session = app.session(request)
    if session is None:
        return Response("not logged in", status_code=401, media_type="text/plain; charset=utf-8")
    w = words(app.lang(request))
    tz = app.cfg.time.tz
    try:
        q = parse_query(request.query_params, _today(tz))
    except QueryError as exc:
        return Response(f"error: {exc}\n", status_code=400, media_type="text/plain; charset=utf-8")

    try:
        result = await asyncio.to_thread(_run, app, q, tz, True)
    except sqlite3.Error as exc:
        return Response(f"error: the alert store at {app.store_path} cannot be read: {exc}\n", status_code=503,
                        media_type="text/plain; charset=utf-8")
    if result.total > MAX_EXPORT_ROWS:
        return Response(f"error: the search matches {result.total} alerts, more than the {MAX_EXPORT_ROWS} an export may hold: "
                        "narrow the dates or add a filter\n", status_code=400, media_type="text/plain; charset=utf-8")
    body = csv_bytes([view_row(a, tz) for a in result.rows], w["rules"])
    name = f"citywatch-history-{q.first_day.isoformat()}_{q.last_day.isoformat()}.csv"
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{name}"'})
