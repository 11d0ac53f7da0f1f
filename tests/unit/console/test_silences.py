"""The console's silences and audit log (console/silences.py, console/audit.py) against a real alert store and
alert engine in this process: preview, silence and unsilence go through the store's command inbox as
console:<login> and are applied by the engine, as the running service does; every refusal is clear."""

from __future__ import annotations

import re
import threading
import time

import pytest
from starlette.testclient import TestClient

from alerts.commands import local_author
from alerts.muting import Silence
from alerts.store import AlertStore
from console import silences as console_silences
from console.app import create_app
from console.audit import describe, in_cst, status_of
from console.i18n import words
from console.silences import engine_now, matcher_label, silence_rows
from console.users import UserStore
from tests.unit.alerts.helpers import det, make_cfg, make_engine

OPERATOR_PW = "operator-password-1"
VIEWER_PW = "viewer-password-1"
W = words("en")


@pytest.fixture
def console_env(tmp_path, cheap_password_hashes):
    """The app on a store with two firing N-day alerts (devices 0 and 1), an engine ticking in a thread (the
    service), an operator `duty` and a viewer `watcher`."""
    store_path = tmp_path / "alerts.sqlite"
    cfg = make_cfg({"store_path": str(store_path), "silence_max_s": "4h"})
    cfg = cfg.model_copy(update={"console": cfg.console.model_copy(
        update={"users_path": str(tmp_path / "users.sqlite")})})
    engine, _ = make_engine(tmp_path, cfg, store=AlertStore(store_path))
    engine.process(det([(0, 0, "N-day", "red", 88.0, 70.0), (1, 0, "N-day", "orange", 76.0, 70.0)]))
    users = UserStore(tmp_path / "users.sqlite")
    users.add("duty", "值班员 林", "operator", OPERATOR_PW)
    users.add("watcher", "Viewer Zhao", "viewer", VIEWER_PW)
    stop = threading.Event()

    def service():
        while not stop.is_set():
            engine.tick()
            time.sleep(0.03)

    ticker = threading.Thread(target=service, daemon=True)
    app = create_app(cfg, {})
    yield {"cfg": cfg, "app": app, "engine": engine, "store": engine.store, "ticker": ticker,
           "dev": [cfg.devices[0], cfg.devices[1]]}
    stop.set()
    if ticker.is_alive():
        ticker.join(5)
    engine.stop()


def client(app, user: str, password: str) -> tuple[TestClient, str]:
    c = TestClient(app)
    r = c.post("/login", data={"username": user, "password": password}, follow_redirects=False)
    assert r.status_code == 303, r.text
    page = c.get("/")
    csrf = re.search(r'"csrf": "([^"]+)"', page.text).group(1)
    return c, csrf


def test_operator_previews_silences_and_unsilences_through_the_inbox(console_env):
    env = console_env
    env["ticker"].start()
    dev0 = env["dev"][0]
    c, csrf = client(env["app"], "duty", OPERATOR_PW)
    h = {"X-CSRF-Token": csrf}

    # the preview names the one open alert of the device, and stores nothing
    r = c.post("/api/silences/preview", json={"matchers": {"device_id": dev0.id}, "expires": "2h"}, headers=h)
    assert r.status_code == 200, r.text
    p = r.json()
    assert (p["count"], p["expires"], p["expires_s"]) == (1, "2h", 7200.0)
    assert [a["short_id"] for a in p["alerts"]] == [f"N-day.{dev0.id}"]
    assert p["alerts"][0]["severity"] == "red" and p["matchers"] == {"device_id": dev0.id}
    assert env["store"].command_rows() == []

    # a site by its name is what the validator knows too: both alerts' sites are distinct
    site = next(s for s in env["cfg"].sites if s.id == dev0.site)
    r = c.post("/api/silences/preview", json={"matchers": {"site_id": site.name}, "expires": "30m"}, headers=h)
    assert r.json()["matchers"] == {"site_id": site.id} and r.json()["count"] == 1

    # confirmed: applied by the engine, authored by the console user
    r = c.post("/api/silences", json={"matchers": {"device_id": dev0.id}, "expires": "2h",
                                      "comment": "管网检修 main under repair"}, headers=h)
    assert r.status_code == 200, r.text
    sid = r.json()["silence_id"]
    assert r.json()["ok"] and r.json()["result"].startswith(f"ok: silence {sid} until ")
    (s,) = env["store"].silences()
    assert (s.id, s.by, s.comment, s.matchers) == (sid, "console:duty", "管网检修 main under repair",
                                                   {"device_id": dev0.id})
    assert s.expires_ns - s.starts_ns == 7200 * 10**9
    row = env["store"].command_rows(1)[0]
    assert (row["author"], row["author_name"], row["source"], row["status"]) == (
        "console:duty", "值班员 林", "console:duty", "applied")

    # the page lists it with the alert it mutes, and an unsilence button
    page = c.get("/silences").text
    assert f'id="silence-{sid}"' in page and "console:duty" in page and f"N-day.{dev0.id}" in page
    assert 'class="unsilence-button"' in page and 'id="silence-form"' in page
    # the engine marks the alert muted by it (its notices are held)
    deadline = time.monotonic() + 10
    while env["engine"].alert(_alert_id(env, dev0.id)).muted != f"silence:{sid}" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert env["engine"].alert(_alert_id(env, dev0.id)).muted == f"silence:{sid}"

    # unsilence ends it now; a second unsilence is refused by the service with its reason
    r = c.post(f"/api/silences/{sid}/unsilence", headers=h)
    assert r.status_code == 200 and r.json()["result"] == "ok", r.text
    assert env["store"].silences() == []
    assert env["store"].silences(include_ended=True)[0].ended_by == "console:duty"
    r = c.post(f"/api/silences/{sid}/unsilence", headers=h)
    assert r.status_code == 409 and r.json()["result"] == f"error: no active silence {sid!r}"
    assert 'id="no-silences"' in c.get("/silences").text


def _alert_id(env, device_id: str) -> str:
    return next(a.alert_id for a in env["engine"].active() if a.device_id == device_id)


def test_refusals_are_clear_and_recorded(console_env):
    env = console_env
    env["ticker"].start()
    dev0 = env["dev"][0]
    c, csrf = client(env["app"], "duty", OPERATOR_PW)
    h = {"X-CSRF-Token": csrf}
    good = {"matchers": {"device_id": dev0.id}, "expires": "2h", "comment": "x"}

    # no CSRF token, or a wrong one: 403 before anything is read
    for headers in ({}, {"X-CSRF-Token": "wrong"}):
        for url in ("/api/silences", "/api/silences/preview", "/api/silences/abc/unsilence"):
            r = c.post(url, json=good, headers=headers)
            assert (r.status_code, r.json()["result"]) == (403, "error: missing or wrong CSRF token"), url
    # not logged in
    assert TestClient(env["app"]).post("/api/silences", json=good).status_code == 401

    # beyond alerting.silence_max_s (4h here): refused with the limit, at preview and at confirmation
    too_long = {**good, "expires": "5h"}
    message = "error: expires: at most 14400 s (4h, alerting.silence_max_s), got '5h'"
    r = c.post("/api/silences/preview", json=too_long, headers=h)
    assert (r.status_code, r.json()["result"]) == (400, message)
    r = c.post("/api/silences", json=too_long, headers=h)
    assert (r.status_code, r.json()["result"]) == (400, message)
    row = env["store"].command_rows(1)[0]
    assert (row["status"], row["result"], row["author"]) == ("refused", message, "console:duty")

    cases = [
        ({**good, "comment": " "}, "error: comment: required: say why the alerts are silenced"),
        ({**good, "expires": "soon"}, "error: expires: duration 'soon' must be a positive number with an optional "
                                      "unit s, m, h, d or w"),
        ({**good, "matchers": {}}, "error: matchers: at least one is required (a silence of everything is not "
                                   "allowed)"),
        ({**good, "matchers": {"device_id": dev0.id + "X"}}, f"error: matchers.device_id: unknown device "
                                                             f"'{dev0.id}X' (did you mean '{dev0.id}'?)"),
        ({**good, "by": "someone"}, "error: 'by': unknown key; keys: matchers, expires, comment"),
    ]
    for body, expected in cases:
        r = c.post("/api/silences", json=body, headers=h)
        assert (r.status_code, r.json()["result"]) == (400, expected), body
    for raw, expected in ((b"not json", "error: the body must be JSON"),
                          (b"[1]", "error: the body must be a JSON object"),
                          (b"{" + b" " * 9000 + b"}", "error: the body is 9002 bytes, at most 8192")):
        r = c.post("/api/silences", content=raw, headers={**h, "Content-Type": "application/json"})
        assert (r.status_code, r.json()["result"]) == (400, expected)
    assert env["store"].silences() == []


def test_a_viewer_sees_silences_but_may_not_change_them(console_env):
    env = console_env
    env["ticker"].start()
    op, op_csrf = client(env["app"], "duty", OPERATOR_PW)
    r = op.post("/api/silences", json={"matchers": {"rule_id": "N-day"}, "expires": "1h", "comment": "works"},
                headers={"X-CSRF-Token": op_csrf})
    sid = r.json()["silence_id"]
    v, csrf = client(env["app"], "watcher", VIEWER_PW)
    page = v.get("/silences").text
    assert f'id="silence-{sid}"' in page and "2" in page  # it mutes both alerts
    assert 'id="silence-form"' not in page and "unsilence-button" not in page and 'id="viewer-note"' in page
    for url, what in (("/api/silences", "silence alerts"), ("/api/silences/preview", "silence alerts"),
                      (f"/api/silences/{sid}/unsilence", "end silences")):
        r = v.post(url, json={"matchers": {"rule_id": "N-day"}, "expires": "1h", "comment": "forged"},
                   headers={"X-CSRF-Token": csrf})
        assert (r.status_code, r.json()["result"]) == (403, f"error: your role may not {what}")
    assert [s.id for s in env["store"].silences()] == [sid]
    # in English on request (zh-CN is the config's default)
    assert "您的角色（查看）只能查看静默" in page and ">审计日志</a>" in page
    v.cookies.set("cw_lang", "en")
    page = v.get("/silences").text
    assert "Your role (viewer) may see silences, not create or end them." in page and ">Audit log</a>" in page
    assert "Rule Daytime noise over limit (N-day)" in page
    assert "Audit log" in v.get("/audit").text and "Silence" in v.get("/audit").text


def test_without_the_service_a_silence_is_queued(console_env, monkeypatch):
    env = console_env   # the ticker is not started: nothing applies the inbox
    monkeypatch.setattr(console_silences, "COMMAND_WAIT_S", 0.3)
    c, csrf = client(env["app"], "duty", OPERATOR_PW)
    r = c.post("/api/silences", json={"matchers": {"rule_id": "N-day"}, "expires": "1h", "comment": "later"},
               headers={"X-CSRF-Token": csrf})
    assert r.status_code == 202 and r.json()["queued"] and r.json()["silence_id"]
    assert r.json()["result"].startswith("queued as command ")
    assert env["store"].command_rows(1)[0]["status"] == "pending"


def test_audit_page_lists_every_command_newest_first_and_filters(console_env):
    env = console_env
    env["ticker"].start()
    store = env["store"]
    dev0 = env["dev"][0]
    c, csrf = client(env["app"], "duty", OPERATOR_PW)
    h = {"X-CSRF-Token": csrf}
    alert_id = _alert_id(env, dev0.id)
    assert c.post(f"/api/alerts/{alert_id}/ack", json={"note": "crew sent 已派人"}, headers=h).status_code == 200
    sid = c.post("/api/silences", json={"matchers": {"device_id": dev0.id}, "expires": "1h", "comment": "repair"},
                 headers=h).json()["silence_id"]
    assert c.post("/api/silences", json={"matchers": {"device_id": dev0.id}, "expires": "9h", "comment": "long"},
                  headers=h).status_code == 400
    cli = local_author("alice")
    store.add_command("cli:alice", {"action": "unsilence", "silence_id": sid}, cli.account, cli.name)
    deadline = time.monotonic() + 10
    while store.silences() and time.monotonic() < deadline:
        time.sleep(0.05)

    page = c.get("/audit").text
    ids = [int(x) for x in re.findall(r'data-command-id="(\d+)"', page)]
    assert ids == sorted(ids, reverse=True) and len(ids) == 4
    rows = re.findall(r'data-action="([^"]*)" data-author="([^"]*)"', page)
    assert rows == [("unsilence", "local:alice"), ("silence", "console:duty"), ("silence", "console:duty"),
                    ("ack", "console:duty")]
    assert "crew sent 已派人" in page and "repair" in page and f"device_id={dev0.id} [{sid}]" in page
    assert "at most 14400 s" in page and "st-refused" in page and "st-applied" in page
    assert f'href="/alerts/{alert_id}"' in page

    only = c.get("/audit", params={"author": "local:alice"}).text
    assert re.findall(r'data-author="([^"]*)"', only) == ["local:alice"]
    acks = c.get("/audit", params={"action": "ack"}).text
    assert re.findall(r'data-action="([^"]*)"', acks) == ["ack"]
    refused = c.get("/audit", params={"status": "refused"}).text
    assert len(re.findall(r'data-command-id=', refused)) == 1
    # a viewer reads the log too; a stranger is sent to the login
    v, _ = client(env["app"], "watcher", VIEWER_PW)
    assert "local:alice" in v.get("/audit").text
    assert TestClient(env["app"]).get("/audit", follow_redirects=False).status_code == 303


def test_the_alert_page_links_to_a_prefilled_form_and_shows_the_silence(console_env):
    env = console_env
    # The page reads the mute from the store, where the engine writes a mute change at its next tick.
    env["ticker"].start()
    dev0 = env["dev"][0]
    c, csrf = client(env["app"], "duty", OPERATOR_PW)
    alert_id = _alert_id(env, dev0.id)
    page = c.get(f"/alerts/{alert_id}").text
    assert f'href="/silences?device_id={dev0.id}#new-silence"' in page
    assert f'href="/silences?site_id={dev0.site}#new-silence"' in page
    form = c.get("/silences", params={"device_id": dev0.id}).text
    assert f'id="m-device_id" name="device_id" list="device-ids" value="{dev0.id}"' in form
    assert '"autopreview": true' in form
    sid = c.post("/api/silences", json={"matchers": {"device_id": dev0.id}, "expires": "1h", "comment": "r"},
                 headers={"X-CSRF-Token": csrf}).json()["silence_id"]
    deadline = time.monotonic() + 15
    while f"silence:{sid}" != (env["store"].alert(alert_id).muted or "") and time.monotonic() < deadline:
        time.sleep(0.1)
    page = c.get(f"/alerts/{alert_id}").text
    assert f"Silenced ({sid})" in page or f"已静默（{sid}）" in page
    assert f"device_id={dev0.id}" in page and "console:duty" in page
    # a viewer gets no silence links
    v, _ = client(env["app"], "watcher", VIEWER_PW)
    assert 'id="silence-links"' not in v.get(f"/alerts/{alert_id}").text


# ----- pure parts -------------------------------------------------------------------------------------------

def test_silence_rows_are_the_active_ones_soonest_first_with_what_they_mute(console_env):
    env = console_env
    cfg = env["cfg"]
    alerts = env["engine"].active()
    dev0 = env["dev"][0]
    now = 10**18
    silences = [
        Silence("later", {"rule_id": "N-day"}, "lin", "c", now - 1, now + 7200 * 10**9),
        Silence("sooner", {"device_id": dev0.id}, "console:duty", "c", now - 1, now + 60 * 10**9),
        Silence("ended", {"rule_id": "N-day"}, "lin", "c", now - 1, now + 60 * 10**9, ended_by="lin"),
        Silence("expired", {"rule_id": "N-day"}, "lin", "c", now - 100, now - 1),
        # applied by the engine after the heartbeat that gave `now`: listed, not hidden
        Silence("just-applied", {"rule_id": "N-day"}, "lin", "c", now + 1, now + 9000 * 10**9),
    ]
    rows = silence_rows(cfg, W, silences, alerts, now)
    assert [r["id"] for r in rows] == ["sooner", "later", "just-applied"]
    assert (rows[0]["mutes_count"], rows[1]["mutes_count"], rows[0]["remaining_s"]) == (1, 2, 60.0)
    assert rows[0]["matchers"] == [f"Device {dev0.id}"]
    assert rows[1]["matchers"] == ["Rule Daytime noise over limit (N-day)"]
    site = cfg.sites[0]
    assert matcher_label(cfg, words("zh-CN"), "site_id", site.id) == f"工地/站点 {site.name} ({site.id})"
    assert matcher_label(cfg, W, "district", "Siming") == "district=Siming"


def test_engine_now_is_the_wall_clock_of_a_wall_clock_engine_and_the_store_clock_of_an_event_clock_one():
    from alerts.terminal import Freshness

    wall = time.time_ns()
    assert engine_now(Freshness(1_000, "event", None, None, None, wall)) == 1_000
    assert engine_now(Freshness(1_000, "wall", None, None, None, wall)) >= wall
    assert engine_now(Freshness(None, None, None, None, None, wall)) >= wall


@pytest.mark.parametrize("body, expected", [
    ('{"action": "ack", "alert_id": "N-day.X.1", "note": "sent"}',
     {"action": "ack", "target": "N-day.X.1", "link": "/alerts/N-day.X.1", "details": "sent"}),
    ('{"action": "silence", "matchers": {"site_id": "S1"}, "expires_s": 7200.0, "comment": "why", "id": "abc"}',
     {"action": "silence", "target": "site_id=S1 [abc]", "link": None, "details": "Duration 2h · why"}),
    ('{"action": "silence", "matchers": ["site_id=S1"], "expires": "99d", "comment": "c"}',
     {"action": "silence", "target": "site_id=S1", "link": None, "details": "Duration 99d · c"}),
    ('{"action": "unsilence", "silence_id": "abc"}',
     {"action": "unsilence", "target": "abc", "link": None, "details": ""}),
    ('{"raw": "garbage \\u0000"}', {"action": "?", "target": "", "link": None, "details": "garbage \x00"}),
    ('[1, 2]', {"action": "?", "target": "", "link": None, "details": "[1, 2]"}),
    ('not json', {"action": "?", "target": "", "link": None, "details": "not json"}),
    ('{"action": "reboot"}', {"action": "?", "target": "", "link": None, "details": '{"action": "reboot"}'}),
])
def test_describe_any_stored_body(body, expected):
    assert describe(body, None, W) == expected


def test_service_results_are_shown_in_china_standard_time():
    assert in_cst("ok: silence abc until 2026-12-06T14:02:40.026Z") == "ok: silence abc until 2026-12-06 22:02:40 CST"
    assert in_cst("error: no alert 'x'") == "error: no alert 'x'"


def test_status_of_old_rows_comes_from_the_result():
    assert status_of({"status": None, "applied_at": None}) == "pending"
    assert status_of({"status": None, "applied_at": 1.0, "result": "ok"}) == "applied"
    assert status_of({"status": None, "applied_at": 1.0, "result": "error: x"}) == "failed"
    assert status_of({"status": "refused", "applied_at": 1.0}) == "refused"


def test_the_audit_log_pages_back_200_at_a_time(console_env):
    env = console_env
    author = local_author("alice")
    for i in range(205):
        env["store"].add_command("cli:alice", {"action": "unsilence", "silence_id": f"s{i}"}, author.account,
                                 author.name, "refused", "error: test")
    c, _ = client(env["app"], "watcher", VIEWER_PW)
    first = c.get("/audit", params={"author": "local:alice"}).text
    assert len(re.findall(r"data-command-id=", first)) == 200 and ">s204<" in first.replace("\n", "")
    older = re.search(r'id="older" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert "author=local%3Aalice" in older
    second = c.get(older).text
    assert re.findall(r'<td class="target">([^<]*)</td>', second) == ["s4", "s3", "s2", "s1", "s0"]
    assert 'id="older"' not in second


def test_the_board_marks_the_alerts_an_active_silence_mutes():
    from alerts.muting import Silence
    from console.silences import silenced_alerts

    a = {"alert_id": "G-high.X1.1", "rule_id": "G-high", "severity": "red", "category": "gas",
         "device": {"id": "X1"}, "site": {"id": "S1", "district": "Siming"}}
    b = {**a, "alert_id": "N-day.N1.1", "rule_id": "N-day", "device": {"id": "N1"}, "site": None}
    now = 1_000
    site = Silence("s1", {"site_id": "S1"}, "console:lin", "works", 0, 2_000)
    later = Silence("s2", {"rule_id": "G-high"}, "local:chen", "drill", 0, 5_000)
    ended = Silence("s3", {"device_id": "N1"}, "console:lin", "x", 0, 5_000, ended_by="console:lin")
    expired = Silence("s4", {"device_id": "N1"}, "console:lin", "x", 0, 900)
    got = silenced_alerts([site, later, ended, expired], [a, b], now)
    # The silence ending last is named; an ended or expired silence marks nothing; a malformed site is no label.
    assert got == {"G-high.X1.1": {"id": "s2", "by": "local:chen", "expires_ns": 5_000}}
    assert silenced_alerts([], [a, b], now) == {}
    assert silenced_alerts([site], [a], 3_000) == {}
