"""The console's history and site pages in a real browser (issue 11 items 3 and 5): Debian's chromium driven by
Playwright against `citywatch console` (and, for the site page, a real Mosquitto, InfluxDB and `citywatch run`).

History: resolved alerts written into the alert store through AlertStore.commit (the engine's own write path)
are searched by site and severity in the form; the rows narrow, the per-day chart counts match, the CSV
download holds the same alerts (BOM, quoting, +08:00 times); bad parameters answer 400 with the reason; a row
opens its alert page, whose site name opens the site page.
Site page: a map marker click opens /sites/<id>; the page lists the site's devices, draws the noise chart from
the device series API and shows the site's live active alert; a gas site lists its devices and its alert.
Screenshots: docs/screenshots/history-1366x768.png, docs/screenshots/site-<id>-1920x1080.png (and the
artifacts dir var/screenshots/)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import shutil
import time
import urllib.parse
from pathlib import Path

import pytest

import tests.integration.test_console_browser as console_browser
from alerts.store import AlertStore
from config import load_config
from tests.integration.test_alerts_service import gas_payload
from tests.integration.test_console_browser import (  # noqa: F401
    OPERATOR_PW,
    browser,
    login,
    shot,
    stack,
)
from tests.unit.alerts.helpers import publish
from tests.unit.console.test_history import resolved_alert

pytestmark = pytest.mark.integration

DOCS_SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
NS = 1_000_000_000
SEV_CODES = {"blue": 1, "yellow": 2, "orange": 3, "red": 4}


def doc_shot(page, name: str) -> Path:
    """A screenshot in the test artifacts (var/screenshots) copied to docs/screenshots for the README."""
    path = shot(page, name)
    DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, DOCS_SCREENSHOTS / path.name)
    return path


def local_days_ago(cfg, days: int, hour: int, minute: int = 0) -> str:
    """'YYYY-MM-DD HH:MM' local (the city's zone), `days` before today."""
    today = dt.datetime.now(cfg.time.tz).date()
    return f"{today - dt.timedelta(days=days)} {hour:02d}:{minute:02d}"


def site_label(cfg, site_id: str) -> dict:
    s = cfg.site(site_id)
    return {"id": s.id, "name": s.name, "address": s.address, "district": s.district, "lat": s.lat, "lon": s.lon,
            "crs": s.crs}


def history_alerts(cfg):
    """24 resolved alerts over the last 6 days on four sites (noise and gas), one older than the default
    week and one still firing (neither is in the default search)."""
    noise = [d for d in cfg.devices if d.kind == "noise"][:3]
    gas = next(d for d in cfg.devices if d.kind == "gas")
    out = []
    sevs = ["red", "orange", "yellow", "blue"]
    for i in range(24):
        dev = gas if i % 4 == 3 else noise[i % 3]
        rule = "G-low" if dev.kind == "gas" else ("N-night" if i % 2 else "N-day")
        sev = SEV_CODES[sevs[(i * 7) % 4]]
        hour = 8 + i % 12 if rule != "N-night" else (22 + i % 8) % 24   # night alerts at night
        a = resolved_alert(rule, dev.id, site_label(cfg, dev.site), local_days_ago(cfg, 1 + i % 6, hour, i),
                           minutes=5 + i, severity=1, peak=sev)
        a.device = {"id": dev.id, "mn": dev.id, "kind": dev.kind}
        if dev.kind == "gas":   # a low pressure in kPa against its level
            a.value, a.peak_value, a.limit = 1.9, 1.62, round(0.8 * dev.set_pressure_kpa, 2)
            a.context = {"unit": "kPa"}
        else:
            a.limit = 70.0 if rule == "N-day" else 55.0
            a.peak_value = a.limit + 4.0 * sev + i * 0.1   # the louder, the more severe
        out.append(a)
    out[0].acked_by, out[0].acked_by_name = "console:duty", "值班员 林"
    out[0].ack_note = '已派人到场, "噪声" 已降\n第二行'
    out.append(resolved_alert("N-day", noise[0].id, site_label(cfg, noise[0].site), local_days_ago(cfg, 20, 9)))
    out.append(resolved_alert("N-day", noise[0].id, site_label(cfg, noise[0].site), local_days_ago(cfg, 1, 3),
                              state="firing"))
    return out


def expected(alerts, cfg, site: str | None = None, severity: str | None = None):
    today = dt.datetime.now(cfg.time.tz).date()
    first = today - dt.timedelta(days=6)
    rows = []
    for a in alerts:
        day = dt.datetime.fromtimestamp(a.started_ns / NS, cfg.time.tz).date()
        if a.state != "resolved" or not first <= day <= today:
            continue
        if site and a.site["id"] != site or severity and a.peak_severity != SEV_CODES[severity]:
            continue
        rows.append((a.started_ns, a.alert_id, day))
    rows.sort(key=lambda r: (-r[0], r[1]))
    per_day = [sum(1 for r in rows if r[2] == first + dt.timedelta(days=i)) for i in range(7)]
    return [r[1] for r in rows], per_day


def chart_day_totals(page) -> list[int]:
    return page.evaluate("(() => { const s = window.cwDayChart.getOption().series;"
                         " return s[0].data.map((_, i) => s.reduce((n, x) => n + x.data[i], 0)); })()")


def test_history_search_day_counts_csv_and_links(stack, browser):  # noqa: F811
    s = stack
    cfg = load_config(s["cfg_dir"], s["env"])
    alerts = history_alerts(cfg)
    console = s["console"].start()
    ctx, page = login(browser, console.url, "duty", OPERATOR_PW)
    # no alert store yet: the page says it cannot read it (never an empty history that looks like a quiet week)
    r = ctx.request.get(console.url + "/history")
    assert r.status == 503 and f"无法读取告警库 {s['store']}" in r.text()
    assert not s["store"].exists()
    store = AlertStore(s["store"])
    store.commit(alerts, [])
    store.close()

    # the default search: the last 7 local days, newest first, counts per day drawn
    page.click("#nav-history")
    page.wait_for_selector("#day-chart[data-ready]")
    all_ids, all_days = expected(alerts, cfg)
    assert len(all_ids) == 24
    assert page.get_attribute("#history-count", "data-total") == "24"
    assert page.locator("#history tbody tr").evaluate_all("rs => rs.map(r => r.dataset.alertId)") == all_ids
    assert chart_day_totals(page) == all_days
    doc_shot(page, "history-1366x768")

    # search by site and severity in the form: the rows and the day counts narrow to that site's red alerts
    site = alerts[0].site["id"]
    want, want_days = expected(alerts, cfg, site=site, severity="red")
    assert 0 < len(want) < 24
    page.select_option("#h-site", site)
    page.check("#h-severity input[value='red']")
    page.click("#h-search")
    page.wait_for_url(lambda u: "severity=red" in u)
    page.wait_for_selector("#day-chart[data-ready]")
    assert page.get_attribute("#history-count", "data-total") == str(len(want))
    assert page.locator("#history tbody tr").evaluate_all("rs => rs.map(r => r.dataset.alertId)") == want
    assert set(page.locator("#history td.site").all_inner_texts()) == {cfg.site(site).name}
    assert page.locator("#history tr.sev-red").count() == len(want)
    assert chart_day_totals(page) == want_days
    assert page.evaluate("window.cwDayChart.getOption().series.find(x => x.name === '红色').data") == want_days

    # the CSV export of the current search: an attachment, UTF-8 with BOM, the same alerts in the same order
    with page.expect_download() as info:
        page.click("#csv-link")
    download = info.value
    assert download.suggested_filename.startswith("citywatch-history-") and download.suggested_filename.endswith(".csv")
    body = Path(download.path()).read_bytes()
    assert body.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"), newline="")))
    assert [r["alert_id"] for r in rows] == want
    assert {r["site_id"] for r in rows} == {site} and {r["peak_severity"] for r in rows} == {"red"}
    assert all(r["started"].endswith("+08:00") and r["resolved"].endswith("+08:00") for r in rows)
    noted = next(r for r in rows if r["alert_id"] == alerts[0].alert_id)
    assert noted["ack_note"] == '已派人到场, "噪声" 已降\n第二行' and noted["acked_by_name"] == "值班员 林"
    csv_url = console.url + page.get_attribute("#csv-link", "href")
    r = ctx.request.get(csv_url)
    assert r.status == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.headers["content-disposition"].startswith('attachment; filename="citywatch-history-')

    # bad parameters: 400 with the reason, on the page and on the export; no session, no export
    r = ctx.request.get(console.url + "/history?from=2026-13-01")
    assert r.status == 400 and "from: no such date, got &#39;2026-13-01&#39;" in r.text()
    r = ctx.request.get(console.url + "/history.csv?from=2020-01-01")
    assert r.status == 400 and "from..to: at most 92 days" in r.text()
    r = ctx.request.get(console.url + "/history.csv?per_page=100000")
    assert r.status == 400 and "per_page: must be one of 25, 50, 100, 200, got 100000" in r.text()
    anon = browser.new_context()
    assert anon.request.get(csv_url, max_redirects=0).status == 401
    assert anon.request.get(console.url + "/history", max_redirects=0).status == 303
    anon.close()

    # paging: 24 alerts at 25 a page fit one page; at 50 (default) too; the unfiltered search in English
    page.goto(console.url + "/history?per_page=25&from=" + urllib.parse.quote(
        str(dt.datetime.now(cfg.time.tz).date() - dt.timedelta(days=6))))
    assert page.inner_text("#page-of").strip() == "第 1 / 1 页"
    page.click("a.lang")
    page.wait_for_selector("th:text-is('District')")

    # a row opens its alert page, whose site name opens the site page
    page.locator(f"tr[data-alert-id='{all_ids[0]}'] td.rule a").click()
    page.wait_for_url(lambda u: u.endswith("/alerts/" + urllib.parse.quote(all_ids[0])))
    assert page.inner_text("#alert-id") == all_ids[0]
    page.click("#site-link")
    first_site = next(a for a in alerts if a.alert_id == all_ids[0]).site["id"]
    page.wait_for_url(f"**/sites/{first_site}")
    assert page.locator("#site-devices tbody tr").count() >= 1
    ctx.close()


NOISE_RULES = console_browser.RULES_YAML + """\
  - {id: N-day, type: noise_day_limit, kind: noise, clear_for_s: 0}
  - {id: N-night, type: noise_night_limit, kind: noise, clear_for_s: 0}
"""


@pytest.fixture
def noise_rules(monkeypatch):
    """The stack's rules with the day and night noise limits too (the stack fixture reads RULES_YAML)."""
    monkeypatch.setattr(console_browser, "RULES_YAML", NOISE_RULES)


def loud_minutes(device, minutes: int) -> tuple[list[int], bytes]:
    """One-minute readings ending at the last whole minute: 60 dB(A), then 85 dB(A) for the last 30 minutes
    (over the day and the night limit, whichever is in force)."""
    end_ms = int(time.time() // 60 * 60 * 1000)
    ts = [end_ms - (minutes - 1 - i) * 60_000 for i in range(minutes)]
    leq = [60.0 if i < minutes - 30 else 85.0 for i in range(minutes)]
    samples = [{"ts": t, "values": {"leq": v, "lmax": v + 8, "lmin": v - 6, "l90": v - 4, "flag": "N"}}
               for t, v in zip(ts, leq, strict=True)]
    return ts, json.dumps({"schema": "xm.noise.v1", "device_id": device.id, "site_id": device.site, "interval_s": 60,
                           "samples": samples}).encode()


def test_map_click_opens_the_site_page_with_devices_chart_and_alerts(noise_rules, stack, browser):  # noqa: F811
    s = stack
    cfg = load_config(s["cfg_dir"], s["env"])
    noise = next(d for d in cfg.devices if d.kind == "noise" and d.protocol == "json")
    gas = s["dev"]
    s["svc"].start()
    console = s["console"].start()
    ts, body = loud_minutes(noise, 90)
    publish(s["mosquitto"], f"city/xm/noise/{noise.site}/{noise.id}/data", body, who=noise.id)
    publish(s["mosquitto"], f"city/xm/gas/{gas.site}/{gas.id}/data", gas_payload(gas, gas.mop_kpa * 1.5), who=gas.id)
    ctx, page = login(browser, console.url, "duty", OPERATOR_PW, viewport=(1920, 1080))
    # both alerts are live on the board before we look at the map
    page.locator(f"tr.sev-row:has(td.device:text-is('{gas.id}'))").wait_for()
    page.locator(f"tr.sev-row:has(td.device:text-is('{noise.id}'))").wait_for()

    # a click on the noise site's marker opens its page
    page.click("#nav-map")
    page.wait_for_selector("body[data-map-ready]")
    site = cfg.site(noise.site)
    x, y = page.evaluate(f"window.cwMap.convertToPixel({{geoIndex: 0}}, [{site.lon}, {site.lat}])")
    box = page.locator("#map").bounding_box()
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_url(f"**/sites/{site.id}")

    # the site's facts, its devices linking their pages, its chart and its live alert
    assert site.address in page.inner_text("#site-facts") and site.district in page.inner_text("#site-district")
    assert page.inner_text("#site-coords").startswith(f"{site.lat:.5f}, {site.lon:.5f}")
    links = page.locator("#site-devices a").evaluate_all("as => as.map(a => a.getAttribute('href'))")
    assert links == [f"/devices/{d.id}" for d in cfg.devices if d.site == site.id]
    chart = page.locator(f".site-chart[data-device='{noise.id}']")
    chart.locator("canvas").first.wait_for()
    data = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:   # the service writes to InfluxDB in batches: wait for the last reading
        data = ctx.request.get(f"{console.url}/api/devices/{noise.id}/series?hours=3").json()
        if data["series"]["t_ms"] and data["series"]["t_ms"][-1] == ts[-1]:
            break
        time.sleep(0.3)
    assert data["newest_ms"] == ts[-1]
    page.reload()   # the page's first load may have come before InfluxDB had the readings
    page.wait_for_selector(f".site-chart[data-device='{noise.id}'][data-points='{len(ts)}']")
    opt = page.evaluate(f"(() => {{ const o = window.cwSiteCharts['{noise.id}'].getOption();"
                        " return o.series.map(s => ({name: s.name, step: s.step || null, n: s.data.length,"
                        " last: s.data.length ? s.data[s.data.length - 1] : null})); })()")
    assert [o["name"] for o in opt] == ["Leq（1 分钟能量平均）", "Lmax", "L90", "现行限值"]
    # the chart draws the API's energy-mean Leq (console.series), not a second averaging of its own
    assert opt[0]["n"] == len(ts) and opt[0]["last"] == [ts[-1], data["series"]["leq"][-1]]
    assert opt[3]["step"] == "end"
    row = page.locator("#site-alert-rows tr.sev-row")
    row.first.wait_for()
    assert noise.id in row.first.inner_text() and row.count() == 1
    page.wait_for_selector("#banner.fresh")
    page.wait_for_selector(f".chart-age[data-for='{noise.id}']:has-text('最新读数')")
    doc_shot(page, f"site-{site.id}-1920x1080")

    # the gas site: four devices, no noise chart, its red alert, which links its alert page
    page.goto(f"{console.url}/sites/{gas.site}")
    page.wait_for_selector("body[data-alerts-ready]")
    assert page.locator("#site-devices tbody tr").count() == sum(1 for d in cfg.devices if d.site == gas.site)
    assert page.locator("#site-no-noise").count() == 1
    gas_row = page.locator(f"#site-alert-rows tr.sev-red:has(td.device:text-is('{gas.id}'))")
    gas_row.wait_for()
    href = gas_row.locator("a").get_attribute("href")
    assert href.startswith("/alerts/G-highhigh.")
    # an unknown site is a 404 that names it
    r = ctx.request.get(console.url + "/sites/NO-SUCH-SITE")
    assert r.status == 404 and "NO-SUCH-SITE" in r.text()
    ctx.close()
