"""The console's device page in a real browser (issue 11 item 3): a noise monitor's readings published through
the real broker and `citywatch run` into InfluxDB are drawn by `citywatch console` at /devices/<id> as Leq,
Lmax and L90 with the limit in force; the chart's Leq is the energy mean the detectors compute; the series
API wants a session, bounds its hours and answers 404 for an unknown device. Screenshot:
var/screenshots/device-<id>-1366x768.png. Fixtures from test_console_browser (same chromium launch)."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from config import load_config
from detectors.noise import energy_mean_db
from tests.integration.test_alerts_service import gas_payload
from tests.integration.test_console_browser import (  # noqa: F401
    OPERATOR_PW,
    WAIT_MS,
    browser,
    login,
    shot,
    stack,
)
from tests.unit.alerts.helpers import publish

pytestmark = pytest.mark.integration


def noise_minutes(device, minutes: int) -> tuple[list[int], list[float], bytes]:
    """`minutes` one-minute readings ending at the last whole minute, Leq swinging 58..78 dB(A)."""
    end_ms = int(time.time() // 60 * 60 * 1000)
    ts = [end_ms - (minutes - 1 - i) * 60_000 for i in range(minutes)]
    leq = [round(68.0 + 10.0 * float(np.sin(i / 4.0)), 1) for i in range(minutes)]
    samples = [{"ts": t, "values": {"leq": v, "lmax": v + 12, "lmin": v - 8, "l90": v - 6, "flag": "N"}}
               for t, v in zip(ts, leq, strict=True)]
    body = json.dumps({"schema": "xm.noise.v1", "device_id": device.id, "site_id": device.site, "interval_s": 60,
                       "samples": samples}).encode()
    return ts, leq, body


def test_noise_device_page_draws_energy_leq_and_the_limit(stack, browser):  # noqa: F811
    s = stack
    cfg = load_config(s["cfg_dir"], s["env"])
    dev = next(d for d in cfg.devices if d.kind == "noise" and d.protocol == "json")
    s["svc"].start()
    console = s["console"].start()
    ctx, page = login(browser, console.url, "duty", OPERATOR_PW)

    ts, leq, body = noise_minutes(dev, 90)
    publish(s["mosquitto"], f"city/xm/noise/{dev.site}/{dev.id}/data", body, who=dev.id)

    # the API: a session is needed, hours are bounded, an unknown device is 404
    api = f"{console.url}/api/devices/{dev.id}/series"
    assert ctx.request.get(f"{console.url}/api/devices/NO-SUCH/series?hours=3").status == 404
    assert ctx.request.get(api + "?hours=0").status == 400 and ctx.request.get(api + "?hours=73").status == 400
    anon = browser.new_context()
    assert anon.request.get(api + "?hours=3").status == 401
    anon.close()
    data = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:   # the service writes to InfluxDB in batches: wait for the last reading
        data = ctx.request.get(api + "?hours=3").json()
        if data["series"]["t_ms"] and data["series"]["t_ms"][-1] == ts[-1]:
            break
        time.sleep(0.3)
    assert data["error"] is None and data["newest_ms"] == ts[-1], data.get("error")
    got = dict(zip(data["series"]["t_ms"], data["series"]["leq"], strict=True))
    assert len(got) == len(ts)
    for t, v in zip(ts, leq, strict=True):
        assert got[t] == pytest.approx(energy_mean_db([v]), abs=0.01)
    assert data["series"]["lmax"][-1] == pytest.approx(leq[-1] + 12)
    assert data["series"]["l90"][-1] == pytest.approx(leq[-1] - 6)
    lim = [v for v in data["limit"]["limit_db"] if v is not None]
    assert lim and set(lim) <= {70.0, 55.0} | {float(x) for x in (cfg.noise.exam.class1_day_db,
                                                                   cfg.noise.exam.class1_night_db)}

    # the page: the chart's canvas, its Leq series the API's, the limit a step line, the data age stated
    page.goto(f"{console.url}/devices/{dev.id}")
    page.wait_for_selector("#chart canvas")
    page.wait_for_selector("#chart[data-points]")
    page.wait_for_selector("#data-age.fresh")
    assert "最新读数" in page.inner_text("#data-age")
    opt = page.evaluate("(() => { const o = window.cwChart.getOption();"
                        " return o.series.map(s => ({name: s.name, step: s.step || null, n: s.data.length,"
                        " last: s.data.length ? s.data[s.data.length - 1] : null})); })()")
    names = [o["name"] for o in opt]
    assert names[:3] == ["Leq（1 分钟能量平均）", "Lmax", "L90"] and names[3] == "现行限值", names
    assert opt[0]["n"] == len(ts) and opt[0]["last"] == [ts[-1], got[ts[-1]]]
    assert opt[3]["step"] == "end" and opt[3]["n"] >= 180
    shot(page, f"device-{dev.id}-1366x768")
    # the range buttons reload the chart for the chosen hours
    page.click("#ranges button[data-hours='24']")
    page.wait_for_selector("#chart[data-hours='24']", timeout=WAIT_MS)
    assert page.evaluate("window.cwChart.getOption().series[3].data.length") >= 1440
    ctx.close()


def test_board_row_and_alert_page_link_the_gas_device_page(stack, browser):  # noqa: F811
    s = stack
    dev = s["dev"]
    s["svc"].start()
    console = s["console"].start()
    ctx, page = login(browser, console.url, "duty", OPERATOR_PW)
    publish(s["mosquitto"], f"city/xm/gas/{dev.site}/{dev.id}/data", gas_payload(dev, dev.mop_kpa * 1.5), who=dev.id)
    # A locator, not an element handle: the board re-renders its rows on every event of the stream.
    row = page.locator(f"tr.sev-row:has(td.device:text-is('{dev.id}'))")
    row.wait_for()
    alert_id = row.get_attribute("data-alert-id")
    # the board row's chart link opens the gas device page: pressure with set pressure and the rules' levels
    row.locator("a.device-link").click()
    page.wait_for_url(f"**/devices/{dev.id}")
    page.wait_for_selector("#chart canvas")
    page.wait_for_selector("#chart[data-points]")
    page.wait_for_selector("#data-age.fresh")
    opt = page.evaluate("window.cwChart.getOption().series.map(s => [s.name, s.data.length ? s.data[0][1] : null])")
    levels = dict(opt)
    # every reading lies inside the drawn time axis (a point past its end would be clipped away)
    assert page.evaluate("(() => { const o = window.cwChart.getOption(); const d = o.series[0].data;"
                         " return d.every(p => p[0] <= o.xAxis[0].max && p[0] >= o.xAxis[0].min); })()")
    assert levels["压力"] == pytest.approx(dev.mop_kpa * 1.5) and levels["设定压力"] == dev.set_pressure_kpa
    assert levels["高高压 G-highhigh"] <= dev.mop_kpa and levels["高压告警 G-high"] > dev.set_pressure_kpa
    assert any(name.startswith("低压告警 G-low") for name, _ in opt)
    shot(page, f"device-{dev.id}-1366x768")
    # the alert page links the same device page
    page.goto(f"{console.url}/alerts/{alert_id}")
    assert page.get_attribute("#device-link", "href") == f"/devices/{dev.id}"
    ctx.close()
