"""The console's silences (issue 11, item 4): the page of active silences, a preview of the open alerts a
silence would mute now, and the silence and unsilence actions. Like the ack, every action goes to the alert
store's command inbox as `console:<login>`, is validated by alerts.commands and applied by the running service;
`send_command` is that one path, shared with the ack."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from alerts import commands as command_rules
from alerts.muting import Silence
from alerts.terminal import freshness, short_id
from citywatch.commands.alerts import muted_now
from console.i18n import words
from console.users import Session

if TYPE_CHECKING:
    from console.app import Console

log = logging.getLogger(__name__)

COMMAND_WAIT_S = 5.0      # how long an action waits for the service to apply it before answering "queued"
FORM_MATCHERS = ("site_id", "device_id", "rule_id")   # what the console's form silences by
DRAFT_KEYS = ("matchers", "expires", "comment")       # the JSON body of a silence or its preview
PREVIEW_MAX = 200         # alerts listed by a preview (the count is always exact)
MUTES_SHOWN = 5           # alerts named per silence on the page, then "+N"


def console_author(session: Session) -> command_rules.Author:
    """The author of a console user's commands: `console:<login>` with the account's display name."""
    return command_rules.Author(f"console:{session.user.username}", session.user.name)


def _error(status: int, text: str) -> JSONResponse:
    return JSONResponse({"ok": False, "result": f"error: {text}"}, status_code=status)


def operator_session(app: Console, request: Request, may_not: str) -> Session | JSONResponse:
    """The session of a request that changes something, or the refusal to answer: 401 without a login, 403
    without the CSRF token (header X-CSRF-Token) or without the operator role (`may_not` says what the role
    may not do, e.g. "silence alerts")."""
    session = app.session(request)
    if session is None:
        return _error(401, "not logged in")
    if not app.csrf_ok(request, session):
        return _error(403, "missing or wrong CSRF token")
    if not session.user.may("operator"):
        log.warning("console: %s (%s) tried to %s without the operator role", session.user.username,
                    session.user.role, may_not)
        return _error(403, f"your role may not {may_not}")
    return session


async def json_object(request: Request) -> dict | JSONResponse:
    """The request's JSON object body (at most MAX_PAYLOAD_BYTES), or a 400 answer saying what is wrong."""
    raw = await request.body()
    if len(raw) > command_rules.MAX_PAYLOAD_BYTES:
        return _error(400, f"the body is {len(raw)} bytes, at most {command_rules.MAX_PAYLOAD_BYTES}")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
        return _error(400, "the body must be JSON")
    if not isinstance(body, dict):
        return _error(400, "the body must be a JSON object")
    return body


async def send_command(app: Console, session: Session, cmd: dict) -> JSONResponse:
    """Validate `cmd` as the session's user, store it in the command inbox and wait up to COMMAND_WAIT_S for
    the service's result. A command that does not validate is recorded as refused (400); the service's
    "ok..." is 200, its error 409; no result in time is 202 ("queued": applied when the service runs)."""
    author = console_author(session)
    source = f"console:{session.user.username}"
    store = app.store()
    try:
        valid = command_rules.validate(cmd, app.cfg, author)
    except ValueError as exc:
        # Recorded too, never applied: the audit log shows what was tried and why it was refused.
        await asyncio.to_thread(store.add_command, source, command_rules.record_form(cmd), author.account,
                                author.name, "refused", f"error: {exc}")
        return _error(400, str(exc))
    cid = await asyncio.to_thread(store.add_command, source, valid, author.account, author.name)
    deadline = time.monotonic() + COMMAND_WAIT_S
    while time.monotonic() < deadline:
        row = await asyncio.to_thread(store.command, cid)
        if row and row[1] is not None:
            result = row[2] or ""
            ok = result.startswith("ok")
            return JSONResponse({"ok": ok, "result": result, "command_id": cid}, status_code=200 if ok else 409)
        await asyncio.sleep(0.1)
    return JSONResponse({"ok": True, "queued": True, "command_id": cid,
                         "result": f"queued as command {cid}: the service applies it on its next tick"},
                        status_code=202)


# ----- what the page shows (pure) -------------------------------------------------------------------

def matcher_label(cfg, w: dict, key: str, value: str) -> str:
    """One matcher as an officer reads it: `设备 XMG0003`, `工地/站点 Siming residential block 1 (SM-2025-101)`,
    `规则 燃气压力高高 (G-highhigh)`; other labels as `key=value`."""
    if key == "site_id":
        site = next((s for s in cfg.sites if s.id == value), None)
        return f"{w['col.site']} {site.name} ({value})" if site else f"{w['col.site']} {value}"
    if key == "device_id":
        return f"{w['col.device']} {value}"
    if key == "rule_id":
        name = w["rules"].get(value)
        return f"{w['col.rule']} {name} ({value})" if name else f"{w['col.rule']} {value}"
    return f"{key}={value}"


def silence_rows(cfg, w: dict, silences: list[Silence], open_alerts: list, now_ns: int) -> list[dict]:
    """The silences neither ended nor expired at `now_ns` (the engine's clock, see `engine_now`), soonest to
    expire first, each with the open alerts it mutes (`mutes`: (alert_id, short id), at most MUTES_SHOWN;
    `mutes_count`: all). A silence that starts after `now_ns` is listed too: it started at the engine's
    clock when applied, which a heartbeat read a moment earlier has not reached yet."""
    rows = []
    live = (s for s in silences if s.ended_by is None and s.expires_ns > now_ns)
    for s in sorted(live, key=lambda s: (s.expires_ns, s.id)):
        hit = [a for a in open_alerts if all(a.labels().get(k) == v for k, v in s.matchers.items())]
        rows.append({
            "id": s.id, "by": s.by, "comment": s.comment, "starts_ns": s.starts_ns, "expires_ns": s.expires_ns,
            "remaining_s": max(0.0, (s.expires_ns - now_ns) / 1e9),
            "matchers": [matcher_label(cfg, w, k, v) for k, v in s.matchers.items()],
            "mutes": [(a.alert_id, short_id(a)) for a in hit[:MUTES_SHOWN]], "mutes_count": len(hit),
        })
    return rows


def preview_item(a, w: dict) -> dict:
    """An open alert as the preview lists it."""
    unit = (a.context or {}).get("unit", "")
    value = "" if a.value != a.value else f"{a.value:g} / {a.limit:g} {unit}".strip()  # NaN: no value
    return {"alert_id": a.alert_id, "short_id": short_id(a), "severity": a.severity_name,
            "rule": w["rules"].get(a.rule_id, a.rule_id), "site": a.site.get("name") or a.site.get("id", ""),
            "device_id": a.device_id, "state": a.state, "value": value, "acked_by": a.acked_by,
            "muted": a.muted}


def silences_touching(store, alert_id: str) -> list[dict]:
    """The silences (ended ones too) whose matchers name the alert and whose span overlaps its life: the
    evidence of what held its notices, for the alert page ([] for an unknown alert)."""
    alert = store.alert(alert_id)
    if alert is None:
        return []
    end = alert.resolved_ns or time.time_ns()
    labels = alert.labels()
    return [{"id": s.id, "by": s.by, "comment": s.comment, "starts_ns": s.starts_ns, "expires_ns": s.expires_ns,
             "ended_by": s.ended_by, "matchers": ", ".join(f"{k}={v}" for k, v in s.matchers.items())}
            for s in store.silences(include_ended=True)
            if all(labels.get(k) == v for k, v in s.matchers.items())
            and s.starts_ns <= end and s.expires_ns >= alert.started_ns]


def draft(body: dict) -> dict:
    """The silence command of a form's JSON body {"matchers": {...}, "expires": "2h", "comment": "..."}.
    Raises ValueError naming a key the form does not send (the validator checks the values)."""
    extra = sorted(set(body) - set(DRAFT_KEYS))
    if extra:
        raise ValueError(f"{', '.join(map(repr, extra))}: unknown key; keys: {', '.join(DRAFT_KEYS)}")
    return {"action": "silence", **body}


# ----- handlers ----------------------------------------------------------------------------------------

def payload_labels(a: dict) -> dict[str, str]:
    """The silence-matcher labels of an alert as the service publishes it (the board's rows), the same keys as
    `Alert.labels()`."""
    site_v, dev_v = a.get("site"), a.get("device")
    site: dict = site_v if isinstance(site_v, dict) else {}
    dev: dict = dev_v if isinstance(dev_v, dict) else {}
    return {"alert_id": str(a.get("alert_id", "")), "rule_id": str(a.get("rule_id", "")),
            "device_id": str(dev.get("id", "")), "site_id": str(site.get("id", "")),
            "district": str(site.get("district", "")), "category": str(a.get("category", "")),
            "severity": str(a.get("severity", ""))}


def silenced_alerts(silences: list[Silence], alerts: list[dict], now_ns: int) -> dict[str, dict]:
    """alert_id -> the active silence that mutes it now ({id, by, expires_ns}; the one ending last when several
    do): what the board marks, so a muted alert never looks like one the duty officers are being told about."""
    live = sorted((s for s in silences if s.active(now_ns)), key=lambda s: -s.expires_ns)
    out: dict[str, dict] = {}
    if not live:
        return out
    for a in alerts:
        labels = payload_labels(a)
        for s in live:
            if all(labels.get(k) == v for k, v in s.matchers.items()):
                out[labels["alert_id"]] = {"id": s.id, "by": s.by, "expires_ns": s.expires_ns}
                break
    return out


def engine_now(fresh) -> int:
    """The engine's clock now, from a store's Freshness: a silence runs in the engine's time. A wall-clock
    engine's time is the wall clock (also when it has stopped: its silences expire all the same); an event-clock
    engine's is its last heartbeat or watermark."""
    if fresh.as_of_ns is None:
        return time.time_ns()
    return max(fresh.as_of_ns, time.time_ns()) if fresh.clock == "wall" else fresh.as_of_ns


async def silences_page(request: Request) -> Response:
    """GET /silences[?site_id=&device_id=&rule_id=]: the active silences and, for operators, the form,
    prefilled from the query (the alert page's "silence this device / site / rule" links)."""
    app: Console = request.app.state.console
    session = app.session(request)
    if session is None:
        return RedirectResponse("/login", status_code=303)
    lang = app.lang(request)
    w = words(lang)

    def load():
        store = app.store()
        fresh = freshness(store)
        now = engine_now(fresh)
        return fresh, now, silence_rows(app.cfg, w, store.silences(), store.alerts(("pending", "firing"),
                                                                                   limit=100_000), now)

    fresh, now, rows = await asyncio.to_thread(load)
    prefill = {k: request.query_params.get(k, "")[:command_rules.MAX_LABEL_VALUE] for k in FORM_MATCHERS}
    max_s = app.cfg.alerting.silence_max_s
    default = "2h" if max_s >= 7200 else command_rules.format_duration(max_s)
    may = session.user.may("operator")
    return app.templates.TemplateResponse(request, "silences.html", {
        "w": w, "user": session.user, "csrf": session.csrf, "rows": rows, "may_silence": may,
        "prefill": prefill, "default_expires": default, "max_text": command_rules.format_duration(max_s),
        "sites": app.cfg.sites, "devices": app.cfg.devices, "rules": app.cfg.rules,
        "service_alive": fresh.alive, "as_of_ns": now,
        "created": request.query_params.get("created", "")[:64], "ended": request.query_params.get("ended", "")[:64],
        "boot": json.dumps({"words": w, "csrf": session.csrf if may else "", "may_silence": may, "now_ns": now,
                            "autopreview": may and any(prefill.values())},
                           ensure_ascii=False).replace("<", "\\u003c"),
    })


async def _silence_request(request: Request) -> tuple[Console, Session, dict] | JSONResponse:
    """The app, the operator's session and the silence command of the request's body, or the refusal."""
    app: Console = request.app.state.console
    session = operator_session(app, request, "silence alerts")
    if isinstance(session, JSONResponse):
        return session
    body = await json_object(request)
    if isinstance(body, JSONResponse):
        return body
    try:
        return app, session, draft(body)
    except ValueError as exc:
        return _error(400, str(exc))


async def api_preview(request: Request) -> Response:
    """POST /api/silences/preview, JSON {"matchers", "expires", "comment"} (operator, X-CSRF-Token): the
    silence validated as it would be sent (a missing comment is allowed here) and the open alerts it mutes
    now. Nothing is stored."""
    asked = await _silence_request(request)
    if isinstance(asked, JSONResponse):
        return asked
    app, session, cmd = asked
    try:
        # The comment is asked for at the confirmation; the preview may come first (an alert page's link).
        valid = command_rules.validate({**cmd, "comment": cmd.get("comment") or "-"}, app.cfg,
                                        console_author(session))
    except ValueError as exc:
        return _error(400, str(exc))
    w = words(app.lang(request))

    def load():
        store = app.store()
        return engine_now(freshness(store)), muted_now(store, valid["matchers"])

    now, hit = await asyncio.to_thread(load)
    hit.sort(key=lambda a: (-a.severity, a.started_ns))
    return JSONResponse({
        "ok": True, "matchers": valid["matchers"], "expires_s": valid["expires_s"],
        "expires": command_rules.format_duration(valid["expires_s"]),
        "until_ns": now + int(valid["expires_s"] * 1e9),
        "labels": [matcher_label(app.cfg, w, k, v) for k, v in valid["matchers"].items()],
        "count": len(hit), "alerts": [preview_item(a, w) for a in hit[:PREVIEW_MAX]],
    })


async def api_silence(request: Request) -> Response:
    """POST /api/silences, JSON {"matchers": {"device_id": ...}, "expires": "2h", "comment": "..."} (operator,
    X-CSRF-Token): the silence sent as console:<login>; answers the service's result and the silence id."""
    asked = await _silence_request(request)
    if isinstance(asked, JSONResponse):
        return asked
    app, session, cmd = asked
    # Our own id, so the answer (and the page it leads to) can name the silence before the service applies it.
    cmd["id"] = uuid.uuid4().hex[:12]
    resp = await send_command(app, session, cmd)
    if resp.status_code in (200, 202):
        answer = json.loads(bytes(resp.body))
        answer["silence_id"] = cmd["id"]
        return JSONResponse(answer, status_code=resp.status_code)
    return resp


async def api_unsilence(request: Request) -> Response:
    """POST /api/silences/{silence_id}/unsilence (operator, X-CSRF-Token): end the silence now."""
    app: Console = request.app.state.console
    session = operator_session(app, request, "end silences")
    if isinstance(session, JSONResponse):
        return session
    return await send_command(app, session, {"action": "unsilence", "silence_id": request.path_params["silence_id"]})
