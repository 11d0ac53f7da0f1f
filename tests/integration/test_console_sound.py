"""The board's alert sound (issue 11): a new red alert beeps (a Web Audio oscillator generated in the page, no
audio file) and stays highlighted until acknowledged; a yellow one does not beep; the mute switch holds across
reloads (localStorage); until a click on the page lets it play sound, the board says so.

Debian's chromium through Playwright against a real Mosquitto, InfluxDB, `citywatch run` and `citywatch console`.
board.js counts the beeps it played in `window.__cwBeeps` (and those the browser would not play yet in
`window.__cwBeepsBlocked`).
"""

from __future__ import annotations

import pytest

from citywatch.localstack import free_port
from config import load_config
from detectors.context import Inventory
from tests.integration.test_alerts_service import gas_payload
from tests.integration.test_console_browser import (
    CHROMIUM,
    CHROMIUM_ARGS,
    CONSOLE_YAML,
    OPERATOR_PW,
    VENDOR,
    WAIT_MS,
    ConsoleProcess,
    citywatch,
    shot,
)
from tests.integration.test_ingest_harness import ServiceProcess
from tests.unit.alerts.helpers import publish, write_config

pytestmark = pytest.mark.integration

ALERTS_YAML = """
alerting:
  sinks:
    ops_mqtt: {type: mqtt, topic_prefix: city/xm/alerts, qos: 1}
  route: {receivers: [ops_mqtt], group_wait_s: 0, group_interval_s: 0, repeat_interval_s: 100000}
  retry: {initial_s: 0.1, max_s: 0.5}
  store_path: STORE
  command_topic: city/xm/alerts/cmd
  operators: [{username: operator, name: "Duty officer Wang"}]
"""
# G-high is yellow, G-highhigh red (detectors/gas.py).
RULES_YAML = """
rules:
  - {id: G-high, type: gas_high, kind: gas, clear_for_s: 0}
  - {id: G-highhigh, type: gas_highhigh, kind: gas, clear_for_s: 0}
"""
AUTOPLAY = "--autoplay-policy=no-user-gesture-required"


@pytest.fixture
def sound_stack(tmp_path, mosquitto, influx, service_env):
    cfg_dir = write_config(tmp_path / "config", ALERTS_YAML.replace("STORE", str(tmp_path / "alerts.sqlite")),
                           RULES_YAML)
    (cfg_dir / "oncall.yaml").unlink(missing_ok=True)   # its teams name the shipped alerts.yaml's sinks
    port = free_port()
    (cfg_dir / "console.yaml").write_text(CONSOLE_YAML.replace("PORT", str(port))
                                          .replace("USERS", str(tmp_path / "console_users.sqlite"))
                                          .replace("VENDOR", str(VENDOR)))
    env = dict(service_env)
    env["CITYWATCH_CONSOLE_MQTT_PASSWORD"] = mosquitto.credentials.console[1]
    r = citywatch("users", "--config", str(cfg_dir), "add", "duty", "--role", "operator", "--name", "值班员 林",
                  "--password-stdin", env=env, stdin=OPERATOR_PW + "\n")
    assert r.returncode == 0, r.stderr
    cfg = load_config(cfg_dir, env)
    inv = Inventory(cfg)
    gas = [d for d in cfg.devices if d.kind == "gas" and d.protocol == "json"][:3]

    def yellow_kpa(dev) -> float:
        """A pressure over G-high's level and under G-highhigh's: a yellow alert only."""
        i = inv.ids.index(dev.id)
        high = float(inv.rel_high[i]) * float(inv.p_set[i])
        highhigh = float(inv.highhigh_kpa[i])
        assert high < highhigh, (dev.id, high, highhigh)
        return (high + highhigh) / 2

    svc = ServiceProcess(cfg_dir, env, tmp_path / "service.log")
    console = ConsoleProcess(cfg_dir, env, port, tmp_path / "console.log")
    svc.start()
    console.start()
    yield {"console": console, "mosquitto": mosquitto, "gas": gas, "yellow_kpa": yellow_kpa}
    console.kill()
    svc.kill()


def open_board(url: str, args: list[str]):
    """(playwright, browser, page) logged in as the operator on the board."""
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS + args)
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    ctx.set_default_timeout(WAIT_MS)
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url + "/login")
    page.fill("#username", "duty")
    page.fill("#password", OPERATOR_PW)
    page.click("#login-submit")
    page.wait_for_selector("#alerts")
    page.errors = errors
    return pw, browser, page


def fire(s, dev, p_kpa: float) -> None:
    publish(s["mosquitto"], f"city/xm/gas/{dev.site}/{dev.id}/data", gas_payload(dev, p_kpa), who=dev.id)


def row(page, rule_id: str, dev):
    # A locator, not an element handle: the board rebuilds a row when its alert changes.
    return page.locator(f"tr.sev-row[data-alert-id^='{rule_id}.{dev.id}.']")


def test_a_new_red_alert_beeps_a_yellow_one_does_not_and_mute_is_remembered(sound_stack):
    s = sound_stack
    quiet, loud, later = s["gas"]
    pw, browser, page = open_board(s["console"].url, [AUTOPLAY])
    try:
        # With autoplay allowed the page may play sound at once: no hint, the switch says the sound is on.
        assert page.locator("#sound-toggle").inner_text() == "告警声音：开"
        assert page.locator("#sound-hint").is_hidden()
        assert page.evaluate("[window.__cwBeeps, window.__cwBeepsBlocked]") == [0, 0]

        # a yellow alert: a row, no beep (board.js decides on the event, before the row is drawn)
        fire(s, quiet, s["yellow_kpa"](quiet))
        row(page, "G-high", quiet).wait_for()
        assert "sev-yellow" in row(page, "G-high", quiet).get_attribute("class")
        assert page.evaluate("window.__cwBeeps") == 0

        # a red alert: one beep, and the row highlighted until acknowledged
        fire(s, loud, loud.mop_kpa * 1.5)
        red = row(page, "G-highhigh", loud)
        red.wait_for()
        assert "unacked-red" in red.get_attribute("class")
        assert page.evaluate("window.__cwBeeps") == 1
        shot(page, "board-sound-on-1366x768")
        red.locator(".ack-button").click()
        page.fill("#ack-note", "on my way")
        page.click("#ack-send")
        page.locator(f"tr.sev-row.sev-red:not(.unacked-red)[data-alert-id^='G-highhigh.{loud.id}.']").wait_for()
        assert page.evaluate("window.__cwBeeps") == 1     # the ack's update is not a new red alert

        # mute: remembered by the browser across a reload; a new red alert is then silent
        page.click("#sound-toggle")
        assert page.locator("#sound-toggle").inner_text() == "告警声音：关（已静音）"
        assert page.evaluate("localStorage.getItem('citywatch.sound')") == "off"
        page.reload()
        row(page, "G-highhigh", loud).wait_for()     # the snapshot is on the board
        assert page.locator("#sound-toggle").inner_text() == "告警声音：关（已静音）"
        assert page.locator("#sound-toggle").get_attribute("aria-pressed") == "true"
        fire(s, later, later.mop_kpa * 1.5)
        row(page, "G-highhigh", later).wait_for()
        assert page.evaluate("[window.__cwBeeps, window.__cwBeepsBlocked]") == [0, 0]
        # the alerts already on the board when the page loaded never beep either: only new ones do
        page.click("#sound-toggle")
        assert page.evaluate("localStorage.getItem('citywatch.sound')") == "on"
        page.reload()
        row(page, "G-highhigh", later).wait_for()
        assert page.evaluate("window.__cwBeeps") == 0
        assert page.errors == []
    finally:
        browser.close()
        pw.stop()


def test_the_board_asks_for_a_click_before_it_can_beep(sound_stack):
    s = sound_stack
    loud = s["gas"][1]
    pw, browser, page = open_board(s["console"].url, [])   # the browser's own autoplay rule
    try:
        # A fresh navigation to the board (no click on it yet): the page may not play sound, and says so.
        page.goto(s["console"].url + "/")
        page.locator("#sound-hint").wait_for()
        assert "点击页面任意处" in page.inner_text("#sound-hint")
        shot(page, "board-sound-hint-1366x768")
        page.click("#count")    # any click on the page
        page.locator("#sound-hint").wait_for(state="hidden")
        fire(s, loud, loud.mop_kpa * 1.5)
        row(page, "G-highhigh", loud).wait_for()
        assert page.evaluate("[window.__cwBeeps, window.__cwBeepsBlocked]") == [1, 0]
    finally:
        browser.close()
        pw.stop()
