"""The operations console in a real browser (issue 11): Debian's chromium driven by Playwright (never a
downloaded browser) against a real Mosquitto, InfluxDB, `citywatch run` and `citywatch console`.

A gas reading published by a device through the broker becomes a firing alert on the board; the duty
officer acks it with a comment and `citywatch alerts show` names the logged-in user; a viewer has no ack
button and a forged ack is refused; a POST without the CSRF token is refused; wrong passwords are refused and
rate-limited; the board reconnects after the console restarts; the banner turns red when the service stops
(cleanly or killed) and when the broker stops.
Screenshots of each view (1366x768 and 1920x1080) are saved under var/screenshots/ (printed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from citywatch.localstack import free_port
from config import load_config
from tests.integration.test_alerts_service import gas_payload
from tests.integration.test_ingest_harness import ServiceProcess
from tests.unit.alerts.helpers import Subscriber, publish, write_config

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "var" / "screenshots"
WAIT_MS = 30_000   # every browser wait is bounded by this
OPERATOR_PW = "duty-officer-pw-1"
VIEWER_PW = "viewer-password-1"

ALERTS_YAML = """
alerting:
  sinks:
    ops_mqtt: {type: mqtt, topic_prefix: city/xm/alerts, qos: 1}
  route: {receivers: [ops_mqtt], group_wait_s: 0, group_interval_s: 0, repeat_interval_s: 100000}
  retry: {initial_s: 0.1, max_s: 0.5}
  recovered_clear_after_s: 0
  store_path: STORE
  command_topic: city/xm/alerts/cmd
  operators: [{username: operator, name: "Duty officer Wang"}]
"""
RULES_YAML = """
rules:
  - {id: G-highhigh, type: gas_highhigh, kind: gas, clear_for_s: 0}
"""
CONSOLE_YAML = """
console:
  host: 127.0.0.1
  port: PORT
  users_path: USERS
  language: zh-CN
  login_max_failures: 3
  login_window_s: 300
  stale_after_s: 30
  vendor_dir: VENDOR
"""
# The front-end packages scripts/bootstrap.sh installs (npm), in the repository's var/.
VENDOR = Path(__file__).resolve().parents[2] / "var" / "console-vendor"


class ConsoleProcess:
    """`citywatch console` as a subprocess (its own session), stopped by pid."""

    def __init__(self, config_dir: Path, env: dict, port: int, log_path: Path):
        self.config_dir, self.env, self.port, self.log_path = config_dir, env, port, log_path
        self.proc: subprocess.Popen | None = None
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout_s: float = 30.0) -> ConsoleProcess:
        log = open(self.log_path, "ab")
        workdir = self.log_path.parent / "console-cwd"
        workdir.mkdir(exist_ok=True)
        self.proc = subprocess.Popen([sys.executable, "-m", "citywatch", "console", "--config", str(self.config_dir)],
                                     env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True, cwd=str(workdir))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/login", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"citywatch console did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None


def citywatch(*args: str, env: dict, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citywatch", *args], env=env, input=stdin, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def stack(tmp_path, mosquitto, influx, service_env):
    store = tmp_path / "alerts.sqlite"
    cfg_dir = write_config(tmp_path / "config", ALERTS_YAML.replace("STORE", str(store)), RULES_YAML)
    # The shipped on-call teams name the shipped alerts.yaml's sinks, which this test's alerts.yaml replaces.
    (cfg_dir / "oncall.yaml").unlink(missing_ok=True)
    port = free_port()
    (cfg_dir / "console.yaml").write_text(CONSOLE_YAML.replace("PORT", str(port))
                                          .replace("USERS", str(tmp_path / "console_users.sqlite"))
                                          .replace("VENDOR", str(VENDOR)))
    env = dict(service_env)
    env["CITYWATCH_CONSOLE_MQTT_PASSWORD"] = mosquitto.credentials.console[1]
    for user, role, name, pw in (("duty", "operator", "值班员 林", OPERATOR_PW), ("watcher", "viewer", "Viewer Zhao",
                                                                                     VIEWER_PW)):
        r = citywatch("users", "--config", str(cfg_dir), "add", user, "--role", role, "--name", name,
                      "--password-stdin", env=env, stdin=pw + "\n")
        assert r.returncode == 0, r.stderr
    assert (tmp_path / "console_users.sqlite").stat().st_mode & 0o777 == 0o600
    cfg = load_config(cfg_dir, env)
    dev = next(d for d in cfg.devices if d.kind == "gas" and d.protocol == "json")
    svc = ServiceProcess(cfg_dir, env, tmp_path / "service.log")
    console = ConsoleProcess(cfg_dir, env, port, tmp_path / "console.log")
    sub = Subscriber(mosquitto, ["city/xm/alerts/#"])
    yield {"cfg_dir": cfg_dir, "env": env, "store": store, "dev": dev, "svc": svc, "console": console,
           "mosquitto": mosquitto, "sub": sub, "tmp": tmp_path}
    sub.stop()
    console.kill()
    svc.kill()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def login(browser, url: str, user: str, password: str, viewport=(1366, 768)):
    ctx = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]}, locale="zh-CN")
    ctx.set_default_timeout(WAIT_MS)
    page = ctx.new_page()
    page.goto(url + "/login")
    page.fill("#username", user)
    page.fill("#password", password)
    page.click("#login-submit")
    page.wait_for_selector("#alerts")
    return ctx, page


def shot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    print(f"screenshot: {path}")
    return path


def csrf_of(page) -> str:
    return json.loads(page.inner_text("#boot"))["csrf"]


def test_duty_officer_acks_a_firing_alert_and_the_board_survives_restarts(stack, browser):
    s = stack
    svc, console, dev = s["svc"], s["console"], s["dev"]
    svc.start()
    console.start()
    print(f"screenshots in {SCREENSHOTS}")
    ctx, page = login(browser, console.url, "duty", OPERATOR_PW)
    assert "值班员 林" in page.inner_text("#who")

    # a device's over-pressure reading, through the broker and the service, fires a red alert on the board
    publish(s["mosquitto"], f"city/xm/gas/{dev.site}/{dev.id}/data", gas_payload(dev, dev.mop_kpa * 1.5), who=dev.id)
    # A locator, not an element handle: the board re-renders its rows on every event of the stream.
    row = page.locator(f"tr.sev-row:has(td.device:text-is('{dev.id}'))")
    row.wait_for()
    alert_id = row.get_attribute("data-alert-id")
    assert alert_id and alert_id.startswith("G-highhigh")
    assert "sev-red" in row.get_attribute("class") and "unacked-red" in row.get_attribute("class")
    text = row.inner_text()
    assert "燃气压力高高" in text and "kPa" in text and "未确认" in text, text
    page.wait_for_selector("#banner.fresh")
    assert "数据时间" in page.inner_text("#banner")
    shot(page, "board-firing-1366x768")
    wide, wpage = login(browser, console.url, "duty", OPERATOR_PW, viewport=(1920, 1080))
    wpage.wait_for_selector(f"tr[data-alert-id='{alert_id}']")
    wpage.wait_for_selector("#banner.fresh")
    shot(wpage, "board-firing-1920x1080")
    # the city map colours the alert's site by its worst active alert
    wpage.click("#nav-map")
    wpage.wait_for_selector("body[data-map-ready]")
    wpage.wait_for_selector("#banner.fresh")
    marks = dict(wpage.evaluate("window.cwMap.getOption().series[0].data.map(d => [d.site.id, d.severity])"))
    assert marks[dev.site] == "red" and sum(1 for v in marks.values() if v) == 1, marks
    shot(wpage, "map-firing-1920x1080")
    wide.close()

    # a POST without the CSRF token is refused, even from the logged-in operator
    r = ctx.request.post(f"{console.url}/api/alerts/{alert_id}/ack", data=json.dumps({"note": "x"}),
                         headers={"Content-Type": "application/json"})
    assert r.status == 403 and "CSRF" in r.json()["result"]

    # a viewer sees the alert, has no ack button, and a forged ack with its own CSRF token is refused
    vctx, vpage = login(browser, console.url, "watcher", VIEWER_PW)
    vpage.wait_for_selector(f"tr[data-alert-id='{alert_id}']")
    assert vpage.locator(".ack-button").count() == 0
    r = vctx.request.post(f"{console.url}/api/alerts/{alert_id}/ack", data=json.dumps({"note": "forged"}),
                          headers={"Content-Type": "application/json", "X-CSRF-Token": csrf_of(vpage)})
    assert r.status == 403 and "role" in r.json()["result"]
    shot(vpage, "board-viewer-1366x768")
    vctx.close()

    # the operator acks with a comment from the board; the row shows who, the highlight ends
    page.click(f"tr[data-alert-id='{alert_id}'] .ack-button")
    page.fill("#ack-note", "已派抢修队 crew sent")
    shot(page, "ack-dialog-1366x768")
    page.click("#ack-send")
    page.wait_for_selector(f"tr[data-alert-id='{alert_id}'] td.ack-state:has-text('已确认')")
    row = page.locator(f"tr[data-alert-id='{alert_id}']")
    assert "unacked-red" not in row.get_attribute("class")
    assert "值班员 林" in row.inner_text() and "crew sent" in row.inner_text()
    assert page.locator(f"tr[data-alert-id='{alert_id}'] .ack-button").count() == 0
    shot(page, "board-acked-1366x768")

    # `citywatch alerts show` reports the logged-in console user as the author
    r = citywatch("alerts", "--store", str(s["store"]), "show", alert_id, "--json", env=s["env"])
    assert r.returncode == 0, r.stderr
    a = json.loads(r.stdout)["alert"]
    assert (a["acked_by"], a["acked_by_name"], a["ack_note"]) == ("console:duty", "值班员 林", "已派抢修队 crew sent")

    # the alert page: its context, notices and the console's command
    page.goto(f"{console.url}/alerts/{alert_id}")
    assert alert_id in page.inner_text("#alert-id")
    assert "console:duty" in page.inner_text("#commands") and "applied" in page.inner_text("#commands")
    shot(page, "alert-page-1366x768")
    page.goto(console.url + "/")
    page.wait_for_selector(f"tr[data-alert-id='{alert_id}']")

    # the console restarts: the board says the console is gone, then reconnects by itself with the alert
    console.kill()
    page.wait_for_selector("#banner.stale")
    assert "控制台" in page.inner_text("#banner")
    console.start()
    page.wait_for_selector("#banner.fresh")
    page.wait_for_selector(f"tr[data-alert-id='{alert_id}'] td.ack-state:has-text('已确认')")

    # the service stops (cleanly, then by a crash: the broker's last will of its collector): the banner turns red
    svc.terminate()
    page.wait_for_selector("#banner.stale")
    assert "告警服务已停止" in page.inner_text("#banner")
    shot(page, "board-service-stopped-1366x768")
    svc.start()
    page.wait_for_selector("#banner.fresh")
    svc.kill()
    page.wait_for_selector("#banner.stale")
    assert "告警服务已停止" in page.inner_text("#banner")
    svc.start()
    page.wait_for_selector("#banner.fresh")

    # the broker stops: the banner turns red and says why, the alert stays visible (never an all-clear)
    s["mosquitto"].kill()
    page.wait_for_selector("#banner.stale")
    assert "断开" in page.inner_text("#banner")
    assert page.locator(f"tr[data-alert-id='{alert_id}']").count() == 1
    shot(page, "board-broker-down-1366x768")
    ctx.close()


def test_wrong_passwords_are_refused_and_rate_limited(stack, browser):
    s = stack
    console = s["console"]
    console.start()
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    ctx.set_default_timeout(WAIT_MS)
    page = ctx.new_page()
    page.goto(console.url + "/login")
    statuses = []
    for _ in range(4):   # login_max_failures is 3
        page.fill("#username", "duty")
        page.fill("#password", "not-the-password")
        with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as info:
            page.click("#login-submit")
        statuses.append(info.value.status)
        page.wait_for_selector("#login-error")
    assert statuses == [401, 401, 401, 429]
    assert "失败次数过多" in page.inner_text("#login-error")
    shot(page, "login-rate-limited-1366x768")
    # the right password is refused too while the user name is blocked
    page.fill("#username", "duty")
    page.fill("#password", OPERATOR_PW)
    with page.expect_response(lambda r: r.url.endswith("/login") and r.request.method == "POST") as info:
        page.click("#login-submit")
    assert info.value.status == 429
    # ... but another user from another client is not: the limit is per user name and per client address,
    # and this test's client is the same address, so that user is refused as well (the client key)
    req = urllib.request.Request(console.url + "/login", data=b"username=watcher&password=" + VIEWER_PW.encode(),
                                 method="POST", headers={"Content-Type": "application/x-www-form-urlencoded"})
    try:
        urllib.request.urlopen(req, timeout=10)
        code = 200
    except urllib.error.HTTPError as exc:
        code = exc.code
    assert code == 429
    # the session cookie of a good login is HttpOnly and SameSite=Strict (a fresh console: limits reset)
    console.kill()
    console.start()
    ctx2 = browser.new_context()
    p2 = ctx2.new_page()
    p2.set_default_timeout(WAIT_MS)
    p2.goto(console.url + "/login")
    p2.fill("#username", "watcher")
    p2.fill("#password", VIEWER_PW)
    p2.click("#login-submit")
    p2.wait_for_selector("#alerts")
    cookie = next(c for c in ctx2.cookies() if c["name"] == "cw_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    # logout needs the CSRF token too, and ends the session
    r = ctx2.request.post(console.url + "/logout", form={"csrf": "wrong"}, max_redirects=0)
    assert r.status == 403
    p2.click("#logout")
    p2.wait_for_selector("#login-form")
    assert ctx2.request.get(console.url + "/api/alerts").status == 401
    ctx2.close()
    ctx.close()


def test_map_shows_every_site_of_the_inventory(stack, browser):
    s = stack
    assert (VENDOR / "node_modules" / "echarts" / "dist" / "echarts.min.js").is_file(), \
        f"ECharts is not installed in {VENDOR}: run scripts/bootstrap.sh"
    s["console"].start()
    cfg = load_config(s["cfg_dir"], s["env"])
    ctx, page = login(browser, s["console"].url, "duty", OPERATOR_PW, viewport=(1920, 1080))
    page.click("#nav-map")
    page.wait_for_selector("body[data-map-ready]")
    data = page.evaluate("window.cwMap.getOption().series[0].data.map(d => [d.site.id, d.value[0], d.value[1]])")
    assert sorted(d[0] for d in data) == sorted(site.id for site in cfg.sites)
    assert all([site.lon, site.lat] == d[1:] for site in cfg.sites for d in data if d[0] == site.id)
    regions = page.evaluate("window.cwMap.getOption().geo[0].map")
    assert regions == "xiamen"
    page.wait_for_timeout(500)   # the first frame of the canvas (bounded)
    shot(page, "map-1920x1080")
    # English on request (zh-CN is the default of this config), kept for the next pages
    page.click("a.lang")
    page.wait_for_selector("#nav-map:text-is('City map')")
    page.click("a:text-is('Alert board')")
    page.wait_for_selector("th:text-is('Severity')")
    assert "No active alerts" in page.inner_text("#empty")
    ctx.close()
