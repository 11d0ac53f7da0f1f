"""The console's audit log (issue 11, item 4): every operator command in the alert store's command inbox (acks
with their comments, silences, unsilences; from the console, the terminal and MQTT), newest first, with its
author, time, target and what became of it (applied, or refused/failed with the reason). Read-only."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import sqlite3
import zoneinfo
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from alerts import commands as command_rules
from console.i18n import words

if TYPE_CHECKING:
    from console.app import Console

log = logging.getLogger(__name__)

PAGE_ROWS = 200
STATUSES = ("applied", "refused", "failed", "pending")
MAX_AUTHORS = 500       # authors offered by the filter
CST = zoneinfo.ZoneInfo("Asia/Shanghai")
_ISO_UTC = re.compile(r"\b(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.\d+)?Z\b")


def in_cst(text: str) -> str:
    """`... until 2026-12-06T14:02:40.026Z` -> `... until 2026-12-06 22:02:40 CST`: the service's results name
    UTC times; the console shows China Standard Time."""
    def local(m: re.Match) -> str:
        try:
            t = dt.datetime.fromisoformat(m.group(1)).replace(tzinfo=dt.UTC).astimezone(CST)
        except ValueError:  # looks like a time but is none (a refused command's text: month 13): as written
            return m.group(0)
        return t.strftime("%Y-%m-%d %H:%M:%S CST")
    return _ISO_UTC.sub(local, text)


def status_of(row: dict) -> str:
    """applied | refused | failed | pending; rows of stores older than the status column are judged by
    their result (as alerts.store.mark_command would have marked them)."""
    if row.get("status") in STATUSES:
        return row["status"]
    if row.get("applied_at") is None:
        return "pending"
    return "applied" if (row.get("result") or "").startswith("ok") else "failed"


def describe(body: str, cfg, w: dict) -> dict:
    """What a stored command did, for a row of the log: action (its id, or "?" for an unreadable body),
    target (text), link (an alert's page or None) and details (note, comment, duration)."""
    try:
        cmd = json.loads(body)
    except (TypeError, ValueError, RecursionError):
        cmd = None
    if not isinstance(cmd, dict):
        return {"action": "?", "target": "", "link": None, "details": str(body)[:200]}
    if set(cmd) == {"raw"}:  # a refused payload kept as text (alerts.commands.record_form)
        return {"action": "?", "target": "", "link": None, "details": str(cmd["raw"])[:200]}
    action = cmd.get("action") if cmd.get("action") in command_rules.ACTIONS else "?"
    out: dict[str, str | None] = {"action": action, "target": "", "link": None, "details": ""}
    if action == "ack":
        alert_id = cmd.get("alert_id")
        out["target"] = str(alert_id or "")[:200]
        if isinstance(alert_id, str) and alert_id:
            out["link"] = "/alerts/" + alert_id
        out["details"] = str(cmd.get("note") or "")[:command_rules.MAX_TEXT]
    elif action == "silence":
        m = cmd.get("matchers")
        if isinstance(m, dict):
            out["target"] = ", ".join(f"{k}={v}" for k, v in m.items())
        elif isinstance(m, list):
            out["target"] = ", ".join(map(str, m))
        if cmd.get("id"):
            out["target"] = f"{out['target']} [{cmd['id']}]"
        expires = cmd.get("expires")
        if expires is None and isinstance(cmd.get("expires_s"), (int, float)):
            expires = command_rules.format_duration(cmd["expires_s"])
        out["details"] = " · ".join(x for x in (f"{w['duration']} {expires}" if expires is not None else "",
                                                 str(cmd.get("comment") or "")[:command_rules.MAX_TEXT]) if x)
    elif action == "unsilence":
        out["target"] = str(cmd.get("silence_id") or "")[:200]
    else:
        out["details"] = json.dumps(cmd, ensure_ascii=False, sort_keys=True)[:200]
    return out


def audit_rows(db: sqlite3.Connection, cfg, w: dict, author: str = "", action: str = "", status: str = "",
               before: int | None = None, limit: int = PAGE_ROWS) -> list[dict]:
    """The newest commands (id < `before`) matching the filters (empty: any), at most `limit`."""
    where: list[str] = []
    args: list[object] = []
    if author:
        where.append("author = ?")
        args.append(author)
    if action:
        where.append("json_valid(body) AND json_extract(body, '$.action') = ?")
        args.append(action)
    if status == "pending":
        where.append("applied_at IS NULL")
    elif status in ("applied", "refused", "failed"):
        where.append("status = ?")
        args.append(status)
    if before is not None:
        where.append("id < ?")
        args.append(before)
    sql = ("SELECT id, received_at, source, body, applied_at, result, author, author_name, status FROM commands"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY id DESC LIMIT ?")
    keys = ("id", "received_at", "source", "body", "applied_at", "result", "author", "author_name", "status")
    rows = []
    for r in db.execute(sql, (*args, limit)):
        row = dict(zip(keys, r))
        row["status"] = status_of(row)
        row["result_text"] = in_cst(row["result"] or "")
        row.update(describe(row["body"], cfg, w))
        rows.append(row)
    return rows


def authors(db: sqlite3.Connection) -> list[str]:
    return [r[0] for r in db.execute("SELECT DISTINCT author FROM commands WHERE author IS NOT NULL ORDER BY author"
                                     " LIMIT ?", (MAX_AUTHORS,))]


async def audit_page(request: Request) -> Response:
    """GET /audit[?author=&action=&status=&before=ID]: the command log, newest first, PAGE_ROWS a page."""
    app: Console = request.app.state.console
    session = app.session(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    w = words(app.lang(request))
    q = request.query_params
    author = q.get("author", "")[:200]
    action = q.get("action", "") if q.get("action", "") in command_rules.ACTIONS else ""
    status = q.get("status", "") if q.get("status", "") in STATUSES else ""
    raw = q.get("before", "")
    before = int(raw) if raw.isascii() and raw.isdigit() and len(raw) < 19 else None

    def load():
        try:
            db = app.read_only()
        except sqlite3.Error as exc:
            return None, [], str(exc)
        try:
            return authors(db), audit_rows(db, app.cfg, w, author, action, status, before), None
        except sqlite3.Error as exc:
            log.warning("console: reading the command log: %s", exc)
            return None, [], str(exc)
        finally:
            db.close()

    who, rows, error = await asyncio.to_thread(load)
    older = None
    if len(rows) == PAGE_ROWS:
        older = "?" + request.url.include_query_params(before=rows[-1]["id"]).query
    return app.templates.TemplateResponse(request, "audit.html", {
        "w": w, "user": session.user, "csrf": session.csrf, "rows": rows, "authors": who or [],
        "actions": command_rules.ACTIONS, "statuses": STATUSES, "author": author, "action": action,
        "status": status, "older": older, "error": error,
    })
