"""Silences and the audit log of the operations console (issue 11, item 4) in a real browser: Debian's chromium
through Playwright against a real Mosquitto, InfluxDB, `citywatch run` and `citywatch console`.

A gas reading through the broker fires a red alert; from its alert page the operator opens "silence this
device", sees the preview list the alert, confirms with a comment; the alert page shows it silenced and
`citywatch alerts list --silences` names console:<login>; unsilence ends it. A viewer has no silence control and
a forged silence is refused (403); a POST without the CSRF token is refused; a duration beyond
alerting.silence_max_s is refused with the limit; the audit page lists the ack, silence and unsilence with their
authors. Screenshots: var/screenshots/ and docs/screenshots/ (silences-1366x768.png, audit-1366x768.png).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from citywatch.localstack import free_port
from config import load_config
from tests.integration.test_alerts_service import gas_payload
from tests.integration.test_console_browser import (  # noqa: F401 - browser is a fixture used by name
    ALERTS_YAML,
    CONSOLE_YAML,
    OPERATOR_PW,
    RULES_YAML,
    VENDOR,
    VIEWER_PW,
    ConsoleProcess,
    browser,
    citywatch,
    csrf_of,
    login,
    shot,
)
from tests.integration.test_ingest_harness import ServiceProcess
from tests.unit.alerts.helpers import publish, write_config

pytestmark = pytest.mark.integration

DOCS_SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
MAX = "4h"   # alerting.silence_max_s of this test's config


@pytest.fixture
def stack(tmp_path, mosquitto, influx, service_env):
    store = tmp_path / "alerts.sqlite"
    alerts_yaml = ALERTS_YAML.replace("STORE", str(store)) + f"  silence_max_s: {MAX}\n"
    cfg_dir = write_config(tmp_path / "config", alerts_yaml, RULES_YAML)
    (cfg_dir / "oncall.yaml").unlink(missing_ok=True)   # it names sinks of the shipped alerts.yaml
    port = free_port()
    (cfg_dir / "console.yaml").write_text(CONSOLE_YAML.replace("PORT", str(port))
                                          .replace("USERS", str(tmp_path / "console_users.sqlite"))
                                          .replace("VENDOR", str(VENDOR)))
    env = dict(service_env)
    env["CITYWATCH_CONSOLE_MQTT_PASSWORD"] = mosquitto.credentials.console[1]
    for user, role, name, pw in (("duty", "operator", "值班员 林", OPERATOR_PW),
                                 ("watcher", "viewer", "Viewer Zhao", VIEWER_PW)):
        r = citywatch("users", "--config", str(cfg_dir), "add", user, "--role", role, "--name", name,
                      "--password-stdin", env=env, stdin=pw + "\n")
        assert r.returncode == 0, r.stderr
    cfg = load_config(cfg_dir, env)
    dev = next(d for d in cfg.devices if d.kind == "gas" and d.protocol == "json")
    svc = ServiceProcess(cfg_dir, env, tmp_path / "service.log")
    console = ConsoleProcess(cfg_dir, env, port, tmp_path / "console.log")
    yield {"cfg_dir": cfg_dir, "env": env, "store": store, "dev": dev, "svc": svc, "console": console,
           "mosquitto": mosquitto}
    console.kill()
    svc.kill()


def both_shots(page, name: str) -> None:
    """The test run's artifacts (var/screenshots, as the other browser tests) and the README's docs/screenshots."""
    path = shot(page, name)
    DOCS_SHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, DOCS_SHOTS / path.name)


def silences_json(s) -> list[dict]:
    r = citywatch("alerts", "--store", str(s["store"]), "list", "--silences", "--json", env=s["env"])
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


def test_operator_silences_a_device_from_its_alert_and_the_audit_log_shows_it(stack, browser):
    s = stack
    dev, console = s["dev"], s["console"]
    s["svc"].start()
    console.start()
    ctx, page = login(browser, console.url, "duty", OPERATOR_PW)
    csrf = csrf_of(page)
    publish(s["mosquitto"], f"city/xm/gas/{dev.site}/{dev.id}/data", gas_payload(dev, dev.mop_kpa * 1.5), who=dev.id)
    row = page.locator(f"tr.sev-row:has(td.device:text-is('{dev.id}'))")
    row.wait_for()
    alert_id = row.get_attribute("data-alert-id")

    # an ack with a comment, through the console's API (the audit log shows it below)
    r = ctx.request.post(f"{console.url}/api/alerts/{alert_id}/ack", data=json.dumps({"note": "已派抢修队"}),
                         headers={"Content-Type": "application/json", "X-CSRF-Token": csrf})
    assert r.status == 200, r.text()

    # from the alert page: "silence this device" opens the form prefilled, and the preview lists the alert
    page.goto(f"{console.url}/alerts/{alert_id}")
    assert "未静默" in page.inner_text("#alert-muted")
    page.click("#silence-device")
    page.wait_for_url("**/silences?device_id=*")
    assert page.input_value("#m-device_id") == dev.id
    page.locator("#preview-alerts li").first.wait_for()   # previewed on arrival
    assert page.locator("#preview-alerts li").count() == 1
    assert f"G-highhigh.{dev.id}" in page.inner_text("#preview-alerts")
    assert "该静默现在会屏蔽 1 条活动告警" in page.inner_text("#preview-count")

    # a duration beyond alerting.silence_max_s is refused with the limit, in the form and through the API
    page.fill("#expires", "5h")
    assert page.locator("#preview").is_hidden()            # the preview was of other values: confirm waits
    page.click("#silence-preview")
    page.wait_for_selector("#silence-error:has-text('at most 14400 s (4h, alerting.silence_max_s)')")
    body = {"matchers": {"device_id": dev.id}, "expires": "5h", "comment": "too long"}
    r = ctx.request.post(f"{console.url}/api/silences", data=json.dumps(body),
                         headers={"Content-Type": "application/json", "X-CSRF-Token": csrf})
    assert r.status == 400 and r.json()["result"] == ("error: expires: at most 14400 s (4h, alerting.silence_max_s),"
                                                      " got '5h'")
    # ... and a POST without the CSRF token is refused, even from the operator
    body["expires"] = "1h"
    r = ctx.request.post(f"{console.url}/api/silences", data=json.dumps(body),
                         headers={"Content-Type": "application/json"})
    assert r.status == 403 and "CSRF" in r.json()["result"]
    assert silences_json(s) == []

    # preview again, comment, confirm: the page lists the silence by the console user
    page.fill("#expires", "2h")
    page.fill("#comment", "管网检修，已通知燃气公司")
    page.click("#silence-preview")
    page.locator("#preview-alerts li").first.wait_for()
    both_shots(page, "silence-preview-1366x768")
    page.click("#silence-confirm")
    page.wait_for_url("**/silences?created=*")
    (sil,) = silences_json(s)
    assert (sil["by"], sil["comment"], sil["matchers"]) == ("console:duty", "管网检修，已通知燃气公司",
                                                            {"device_id": dev.id})
    listed = page.locator(f"#silence-{sil['id']}")
    assert "console:duty" in listed.inner_text() and f"G-highhigh.{dev.id}" in listed.inner_text()
    assert "CST" in listed.inner_text()
    r = citywatch("alerts", "--store", str(s["store"]), "list", "--silences", env=s["env"])
    assert "console:duty" in r.stdout and sil["id"] in r.stdout

    # the alert page shows it silenced once the service has marked it (its next ticks)
    deadline = time.monotonic() + 30
    while True:
        page.goto(f"{console.url}/alerts/{alert_id}")
        if sil["id"] in page.inner_text("#alert-muted") or time.monotonic() > deadline:
            break
        page.wait_for_timeout(500)
    assert f"已静默（{sil['id']}）" in page.inner_text("#alert-muted")
    assert "console:duty" in page.inner_text("#alert-silences")
    shot(page, "alert-silenced-1366x768")
    # the board keeps the alert and marks it silenced, with who and until when
    page.goto(f"{console.url}/")
    tag = page.locator(f'#alerts tr[data-alert-id="{alert_id}"].silenced .silenced-tag')
    tag.wait_for(timeout=15_000)
    assert "console:duty" in tag.inner_text() and "已静默至" in tag.inner_text()
    shot(page, "board-silenced-1366x768")

    # a viewer sees the silence but has no control, and a forged silence with its own token is refused
    vctx, vpage = login(browser, console.url, "watcher", VIEWER_PW)
    vcsrf = csrf_of(vpage)
    vpage.goto(f"{console.url}/silences")
    vpage.locator(f"#silence-{sil['id']}").wait_for()
    assert vpage.locator("#silence-form").count() == 0 and vpage.locator(".unsilence-button").count() == 0
    assert vpage.locator("#viewer-note").is_visible()
    for url in (f"{console.url}/api/silences", f"{console.url}/api/silences/{sil['id']}/unsilence"):
        r = vctx.request.post(url, data=json.dumps({"matchers": {"device_id": dev.id}, "expires": "1h",
                                                    "comment": "forged"}),
                              headers={"Content-Type": "application/json", "X-CSRF-Token": vcsrf})
        assert r.status == 403 and "role" in r.json()["result"], url
    vpage.goto(f"{console.url}/alerts/{alert_id}")
    assert vpage.locator("#silence-links").count() == 0
    vctx.close()
    assert [x["id"] for x in silences_json(s)] == [sil["id"]]

    # the silences page as the duty officer sees it
    page.goto(f"{console.url}/silences")
    page.locator(f"#silence-{sil['id']}").wait_for()
    both_shots(page, "silences-1366x768")

    # unsilence ends it
    page.click(f"#silence-{sil['id']} .unsilence-button")
    assert sil["id"] in page.inner_text("#unsilence-what")
    page.click("#unsilence-send")
    page.wait_for_url("**/silences?ended=*")
    page.locator("#no-silences").wait_for()
    assert silences_json(s) == []
    # ... and the board's mark goes with it
    page.goto(f"{console.url}/")
    page.locator(f'#alerts tr[data-alert-id="{alert_id}"]').wait_for()
    page.locator(f'#alerts tr[data-alert-id="{alert_id}"].silenced').wait_for(state="detached", timeout=15_000)

    # the audit log: newest first, every action with its author and result; filtered by action
    page.goto(f"{console.url}/audit")
    rows = page.locator("#audit tbody tr")
    actions = [(rows.nth(i).get_attribute("data-action"), rows.nth(i).get_attribute("data-author"))
               for i in range(rows.count())]
    assert actions == [("unsilence", "console:duty"), ("silence", "console:duty"), ("silence", "console:duty"),
                       ("ack", "console:duty")], actions
    text = page.inner_text("#audit")
    assert "已派抢修队" in text and "管网检修" in text and "已拒绝" in text and "at most 14400 s" in text
    assert "已执行" in text and "CST" in text and "值班员 林" in text
    assert "forged" not in text   # the viewer's forged requests never reached the inbox
    both_shots(page, "audit-1366x768")
    page.select_option("#f-action", "silence")
    page.click("#f-apply")
    page.wait_for_url("**/audit?*action=silence*")
    assert page.locator("#audit tbody tr").count() == 2
    ctx.close()
