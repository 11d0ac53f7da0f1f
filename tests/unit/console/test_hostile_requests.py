"""Hostile HTTP requests against the console (found by an audit, each reproduced first): bodies bounded in size,
type and time before the app reads them; logins limited also when they arrive together; InfluxDB reads on threads
of their own, bounded, so a slow InfluxDB never holds an officer's ack or login; inputs that used to answer 500."""

from __future__ import annotations

import asyncio
import re
import threading

import httpx2
import pytest

from console import app as console_app
from tests.unit.console.test_silences import OPERATOR_PW, VIEWER_PW, client, console_env  # noqa: F401 - fixture


def _app(env):
    return env["app"]


def test_a_multipart_login_is_refused_before_anything_is_spooled(console_env, tmp_path, monkeypatch):
    spool = tmp_path / "spool"
    spool.mkdir()
    monkeypatch.setenv("TMPDIR", str(spool))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(spool))
    c, _ = client(_app(console_env), "watcher", VIEWER_PW)
    r = c.post("/login", data={"username": "duty"}, files={"password": ("a", b"x" * 200_000)})
    assert r.status_code == 415 and "multipart" in r.json()["error"]
    assert list(spool.iterdir()) == []


def test_a_body_over_the_limit_is_refused_by_its_length_or_as_it_streams(console_env):
    c, csrf = client(_app(console_env), "duty", OPERATOR_PW)
    big = b'{"note": "' + b"x" * (console_app.MAX_BODY_BYTES + 1) + b'"}'
    alert = "N-day.XM0001NOISE.20250601T143000Z"
    r = c.post(f"/api/alerts/{alert}/ack", content=big, headers={"X-CSRF-Token": csrf,
                                                                 "Content-Type": "application/json"})
    assert r.status_code == 413

    def chunks():  # no Content-Length: chunked, counted as it arrives
        for _ in range(40):
            yield b"x" * 1024

    r = c.post("/api/silences/preview", content=chunks(), headers={"X-CSRF-Token": csrf})
    assert r.status_code == 413
    # A body within the limit still reaches the route (the route refuses it for its own reasons).
    r = c.post("/api/silences/preview", content=b"[" * 5000, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 400 and r.json()["result"] == "error: the body must be JSON"  # was RecursionError: 500


def test_a_body_that_never_arrives_is_answered_408(console_env, monkeypatch):
    monkeypatch.setattr(console_app, "BODY_TIMEOUT_S", 0.2)
    limited = console_app._BodyLimit(console_app.Starlette())
    sent = []

    async def receive():
        await asyncio.sleep(5)  # a client that declared a body and sends nothing

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "headers": [(b"content-length", b"100")], "path": "/login"}
    asyncio.run(asyncio.wait_for(limited(scope, receive, send), 3))
    assert sent[0]["status"] == 408


def test_pages_that_answered_500(console_env):
    env = console_env
    c, csrf = client(_app(env), "duty", OPERATOR_PW)
    # A refused command whose text holds a date that does not exist (month 13) broke /audit for everyone.
    r = c.post("/api/silences", json={"matchers": {"device_id": "2026-13-01T00:00:00Z"}, "expires": "1h",
                                      "comment": "x"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 400
    page = c.get("/audit")
    assert page.status_code == 200 and "2026-13-01T00:00:00Z" in page.text
    # "²".isdigit() is True and int("²") raises.
    assert c.get("/audit", params={"before": "²"}).status_code == 200
    assert c.get("/history", params={"per_page": "²"}).status_code == 400
    assert c.get("/history", params={"page": "²"}).status_code == 400


def test_logins_arriving_together_are_limited_as_one_after_another(console_env, monkeypatch):
    """Every attempt is counted before its password is checked: 12 wrong passwords sent at once got 12 x 401
    with the limit at 3 (each checked the limit before any had failed)."""
    app = _app(console_env)
    limit = console_env["cfg"].console.login_max_failures
    users = app.state.console.users
    real, gate = users.verify, threading.Event()

    def slow_verify(username, password):
        gate.wait(5)  # every attempt is in before any password is checked
        return real(username, password)

    monkeypatch.setattr(users, "verify", slow_verify)

    async def attempts():
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://console") as ac:
            tries = [asyncio.create_task(ac.post("/login", data={"username": "watcher", "password": "wrong"}))
                     for _ in range(12)]
            await asyncio.sleep(0.3)
            gate.set()
            return [r.status_code for r in await asyncio.gather(*tries)]

    codes = asyncio.run(attempts())
    assert sorted(codes) == [401] * limit + [429] * (12 - limit)


def test_a_success_does_not_count_against_the_client(console_env):
    app = _app(console_env)
    limit = console_env["cfg"].console.login_max_failures
    for _ in range(limit + 2):
        client(app, "watcher", VIEWER_PW)  # each a 303 (asserted in `client`)
    assert app.state.console.limiter.retry_after("client:testclient", "user:watcher") == 0


def test_influx_reads_are_bounded_and_never_hold_logins_or_acks(console_env, monkeypatch):
    """A slow InfluxDB (here: reads that wait on a gate) used to fill the thread pool that also serves logins,
    acks and the store: 24 chart requests held an ack for 40 s. Now the charts have threads of their own, at most
    INFLUX_READS_PER_USER of one account in hand (then 503), and an ack goes through meanwhile."""
    env = console_env
    env["ticker"].start()
    app = _app(env)
    gate = threading.Event()
    started = []

    def stuck_series(*args, **kwargs):
        started.append(threading.current_thread().name)
        gate.wait(10)
        return {"points": []}

    monkeypatch.setattr(console_app, "device_series", stuck_series)
    dev = env["dev"][0].id

    async def scenario():
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://console") as viewer, \
                httpx2.AsyncClient(transport=transport, base_url="http://console") as duty:
            for c, user, pw in ((viewer, "watcher", VIEWER_PW), (duty, "duty", OPERATOR_PW)):
                assert (await c.post("/login", data={"username": user, "password": pw})).status_code == 303
            charts = [asyncio.create_task(viewer.get(f"/api/devices/{dev}/series", params={"hours": 3}))
                      for _ in range(console_app.INFLUX_READS_PER_USER + 2)]
            await asyncio.sleep(0.3)
            csrf = re.search(r'"csrf": "([^"]+)"', (await duty.get("/")).text).group(1)
            alert_id = next(a.alert_id for a in env["engine"].active() if a.device_id == dev)
            ack = await asyncio.wait_for(duty.post(f"/api/alerts/{alert_id}/ack", json={"note": "on it"},
                                                   headers={"X-CSRF-Token": csrf}), 8)
            refused = [t.result().status_code for t in charts if t.done()]
            gate.set()
            codes = [r.status_code for r in await asyncio.gather(*charts)]
            return ack.status_code, refused, codes

    ack_status, refused, codes = asyncio.run(scenario())
    assert ack_status == 200
    assert refused == [503, 503]
    assert sorted(codes) == [200] * console_app.INFLUX_READS_PER_USER + [503, 503]
    assert started and all(name.startswith("console-influx") for name in started)


@pytest.mark.parametrize("status", [413, 415])
def test_refusals_carry_the_security_headers(console_env, status):
    c = client(_app(console_env), "watcher", VIEWER_PW)[0]
    if status == 413:
        r = c.post("/logout", content=b"x" * (console_app.MAX_BODY_BYTES + 10))
    else:
        r = c.post("/logout", files={"f": ("a", b"x")})
    assert r.status_code == status and r.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("origin, status", [
    ("https://evil.example", 403), ("null", 403), ("http://testserver.evil", 403),
    ("http://testserver", 303), ("https://testserver", 303), (None, 303),
])
def test_a_login_from_another_site_is_refused(console_env, origin, status):
    """Login CSRF: another site's form could log the officer's browser in as an account of its choosing, whose
    name would then sign the officer's acks. Browsers say where a POST comes from (Origin)."""
    from starlette.testclient import TestClient
    headers = {"Origin": origin} if origin else {}
    r = TestClient(_app(console_env)).post("/login", data={"username": "watcher", "password": VIEWER_PW},
                                           headers=headers, follow_redirects=False)
    assert r.status_code == status


def test_an_ack_from_another_site_is_refused_even_with_the_session(console_env):
    c, csrf = client(_app(console_env), "duty", OPERATOR_PW)
    r = c.post("/api/alerts/N-day.XM0001NOISE.20250601T143000Z/ack", json={"note": "x"},
               headers={"X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert r.status_code == 403 and "another site" in r.json()["error"]
