"""The device page's gas profile band, battery and data-quality charts in a real browser (issue 11 item 3),
against a real InfluxDB and `citywatch console`:

- a gas device (XMG0001: a sample every 5 min, a report every hour): pressure with the learned time-of-week
  profile and G-leak's band, where the band is the detectors' own `GasProfile` restored from the state
  snapshot the service writes (here: learned from a week of readings by the detectors and saved with
  `detectors.snapshot`, as `citywatch warmup` does); battery voltage with the battery rule's levels; valid
  readings per hour against the 12 expected, with a 3-hour silence (longer than Offline's 2 h 05 min) shaded;
- a noise monitor: its Leq chart as before, no battery, data quality against N-data's 75 % with a 20-minute
  gap.

Screenshots: var/screenshots/device-gas-<id>-1366x768.png and device-noise-<id>-1366x768.png (printed)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from config import load_config
from detectors import snapshot
from detectors.context import Round
from detectors.gas import GasProfile
from detectors.registry import RuleSet
from ingest.influx_writer import make_writer
from ingest.lineproto import encode
from tests.integration.test_console_browser import (  # noqa: F401
    OPERATOR_PW,
    browser,
    login,
    shot,
    stack,
)
from tests.unit.detectors.helpers import batch

pytestmark = pytest.mark.integration

NS = 1_000_000_000
RULES_YAML = """
rules:
  - {id: G-highhigh, type: gas_highhigh, kind: gas, clear_for_s: 0}
  - {id: G-leak, type: gas_leak_cusum, kind: gas}
  - {id: Batt, type: battery, kind: gas, clear_for_s: 21600}
  - {id: N-data, type: noise_data_quality, kind: noise}
  - {id: Offline, type: deadman, kind: any}
"""


def local_hour(ts_ns: np.ndarray) -> np.ndarray:
    return ((ts_ns // NS + 8 * 3600) % 86400) / 3600.0


def demand(p_set: float, ts_ns: np.ndarray) -> np.ndarray:
    """A main's daily profile: 2 % of set pressure lower around 08:00 and 18:30 local time (domain.md G1)."""
    h = local_hour(ts_ns)
    return p_set * (1 - 0.02 * np.exp(-((h - 8.0) ** 2) / 2.0) - 0.02 * np.exp(-((h - 18.5) ** 2) / 2.0)
                    + 0.01 * np.sin(2 * np.pi * h / 24))


def write(cfg, env, rows) -> None:
    writer = make_writer(cfg.connections.influx, env)
    try:
        for a in range(0, len(rows), 2000):
            writer.write(encode(batch(rows[a:a + 2000], cfg), cfg))
    finally:
        writer.close()


@pytest.fixture
def charts(stack):  # noqa: F811
    s = stack
    cfg_dir = s["cfg_dir"]
    (cfg_dir / "rules.yaml").write_text(RULES_YAML)
    th = cfg_dir / "thresholds.yaml"
    text = th.read_text()
    assert "    min_weeks: 2 " in text
    th.write_text(text.replace("    min_weeks: 2 ", "    min_weeks: 1 ", 1))   # one week learns every hour
    cfg = load_config(cfg_dir, s["env"])
    return s, cfg


def test_gas_device_page_draws_the_learned_profile_band_battery_and_data_quality(charts, browser):  # noqa: F811
    s, cfg = charts
    dev = s["dev"]
    i = cfg.device_index(dev.id)
    step = dev.sample_s * NS
    minute = time.time_ns() // step * step
    # A week of fault-free readings up to 12 hours ago, learned by the detectors and saved as the service would.
    rules = RuleSet.from_config(cfg)
    t_hist = minute - 12 * 3600 * NS - np.arange(7 * 86400 * NS // step, 0, -1, dtype=np.int64) * step
    rng = np.random.default_rng(3)
    p_hist = demand(dev.set_pressure_kpa, t_hist) + rng.normal(0, 0.002 * dev.set_pressure_kpa, len(t_hist))
    hist = [(dev.id, int(t), {"p": float(p)}, None) for t, p in zip(t_hist, p_hist, strict=True)]
    for a in range(0, len(hist), 2000):
        rules.process(batch(hist[a:a + 2000], cfg))
    snapshot.save(rules, cfg.resolve_path(cfg.alerting.detector_state_path))

    # The last 12 hours in InfluxDB: a 3-hour silence, a fading battery with transmit dips (each report), and a
    # slow pressure loss in the last 90 minutes that leaves G-leak's band.
    t = minute - np.arange(12 * 3600 * NS // step - 1, -1, -1, dtype=np.int64) * step
    age_min = (minute - t) // (60 * NS)
    keep = ~((age_min >= 120) & (age_min < 300))
    t, age_min = t[keep], age_min[keep]
    p = demand(dev.set_pressure_kpa, t) + rng.normal(0, 0.002 * dev.set_pressure_kpa, len(t))
    p = p - np.where(age_min < 90, (90 - age_min) * 0.0004 * dev.set_pressure_kpa, 0.0)
    batt = np.round(np.linspace(3.45, 3.22, len(t)) - np.where(np.arange(len(t)) % 12 == 0, 0.15, 0.0), 2)
    write(cfg, s["env"], [(dev.id, int(a), {"p": float(b), "batt_v": float(c)}, None)
                          for a, b, c in zip(t, p, batt, strict=True)])

    console = s["console"].start()
    ctx, page = login(browser, console.url, "duty", OPERATOR_PW)
    data = ctx.request.get(f"{console.url}/api/devices/{dev.id}/series?hours=12").json()
    assert data["error"] is None and data["series"]["t_ms"][-1] == t[-1] // 1_000_000
    # the band is the live detectors' profile at the same minutes, G-leak's k sigma around it
    prof = data["profile"]
    assert prof["error"] is None and prof["learned_hours"] == 168 and prof["k_sigma"] == 0.5
    ts = np.array(prof["t_ms"], np.int64) * 1_000_000
    gp = next(c for c in rules.components if isinstance(c, GasProfile))
    rnd = Round(np.full(len(ts), i, np.int32), ts, None, np.zeros(len(ts), np.int8), rules.inv.calendar, once=False)
    expect, learned = gp.baseline(rnd.view(gp.group))
    assert learned.all() and prof["p_kpa"] == pytest.approx(np.round(expect, 2).tolist(), abs=0.006)
    assert np.max(np.abs(np.array(prof["p_kpa"]) - demand(dev.set_pressure_kpa, ts))) < 0.01 * dev.set_pressure_kpa
    # battery: each minute's reading with Batt's levels
    bat = data["battery"]
    shown = t // 1_000_000 > data["from_ms"]
    assert (bat["rule"], bat["yellow_v"], bat["orange_v"]) == ("Batt", 3.3, 3.1) and len(bat["v"]) == shown.sum()
    assert min(bat["v"]) == pytest.approx(float(batt[shown].min()))
    # data quality: 12 readings an hour expected (one per 5-min sample); the silence is longer than Offline's
    # 2 x 3600 s + 300 s
    q = data["quality"]
    assert q["expected"][0] == 12.0 and q["gap_rule"] == "Offline" and q["gap_after_s"] == 2 * 3600 + 300
    counted = t // 1_000_000 > q["t_ms"][0]
    assert sum(q["received"]) == counted.sum() == sum(q["valid"]) and 12 in q["received"]
    assert len(q["gaps"]) == 1 and q["gaps"][0]["to_ms"] - q["gaps"][0]["from_ms"] == 185 * 60_000

    page.goto(f"{console.url}/devices/{dev.id}")
    page.wait_for_selector("#chart[data-hours='3']")
    page.click("#ranges button[data-hours='12']")
    page.wait_for_selector("#chart[data-hours='12']")
    page.wait_for_selector("#battery-chart[data-points]")
    page.wait_for_selector("#quality-chart[data-gaps='1']")
    page.wait_for_selector("#data-age.fresh")
    opt = page.evaluate("window.cwChart.getOption().series.map(s => [s.name, s.data.length, s.stack || null])")
    names = [o[0] for o in opt]
    assert "学习曲线（一周各时段）" in names
    band = [o for o in opt if o[0].startswith("泄漏检测带 ±0.5σ")]
    assert len(band) == 2 and all(o[2] == "profile-band" and o[1] == len(ts) for o in band), opt
    drawn = page.evaluate("window.cwChart.getOption().series.find(s => s.name.startsWith('学习曲线')).data")
    assert [d[1] for d in drawn] == prof["p_kpa"]
    marks = page.evaluate("window.cwBattery.getOption().series[0].markLine.data.map(d => d.yAxis)")
    assert marks == [3.3, 3.1]
    areas = page.evaluate("window.cwQuality.getOption().series[0].markArea.data.map(a => [a[0].xAxis, a[1].xAxis])")
    assert areas == [[q["gaps"][0]["from_ms"], q["gaps"][0]["to_ms"]]]
    assert "检测器状态保存于" in page.inner_text("#profile-note")
    page.wait_for_timeout(300)   # the canvases' first frame (bounded)
    shot(page, f"device-gas-{dev.id}-1366x768")
    ctx.close()


def test_noise_device_page_shows_no_battery_and_data_quality_with_a_gap(charts, browser):  # noqa: F811
    s, cfg = charts
    dev = next(d for d in cfg.devices if d.kind == "noise" and d.protocol == "json")
    minute = time.time_ns() // (60 * NS) * 60 * NS
    # 4 hours: data quality counts from the start of the range's first hour, which may be 3 h 59 min ago
    t = minute - np.arange(245, -1, -1, dtype=np.int64) * 60 * NS
    age_min = (minute - t) // (60 * NS)
    keep = ~((age_min >= 60) & (age_min < 80))
    t = t[keep]
    rng = np.random.default_rng(5)
    leq = np.round(60 + 8 * np.sin(np.arange(len(t)) / 9.0) + rng.normal(0, 1.5, len(t)), 1)
    flags = np.where(np.arange(len(t)) % 29 == 7, "D", "N")        # a few readings flagged invalid (D)
    write(cfg, s["env"], [(dev.id, int(a), {"leq": float(v), "lmax": float(v) + 11, "l90": float(v) - 7}, f)
                          for a, v, f in zip(t, leq, flags, strict=True)])
    console = s["console"].start()
    ctx, page = login(browser, console.url, "duty", OPERATOR_PW)
    data = ctx.request.get(f"{console.url}/api/devices/{dev.id}/series?hours=3").json()
    assert data["error"] is None and "profile" not in data
    assert data["battery"]["v"] == [] and data["battery"]["rule"] is None
    q = data["quality"]
    assert (q["rule"], q["min_vdr"], q["gap_rule"], q["gap_after_s"]) == ("N-data", 0.75, "Offline", 2 * 60 + 300)
    counted = t // 1_000_000 > q["t_ms"][0]
    assert sum(q["received"]) == counted.sum() and sum(q["valid"]) == int((flags[counted] == "N").sum())
    assert [g["to_ms"] - g["from_ms"] for g in q["gaps"]] == [21 * 60_000]
    page.goto(f"{console.url}/devices/{dev.id}")
    page.wait_for_selector("#chart[data-points]")
    page.wait_for_selector("#quality-chart[data-gaps='1']")
    page.wait_for_selector("#data-age.fresh")
    assert page.evaluate("window.cwBattery.getOption().title[0].text") == "电池电压 — 该设备未上报电池电压"
    line = page.evaluate("window.cwQuality.getOption().series[0].markLine.data[0].yAxis")
    assert line == 75
    # the noise chart itself is unchanged: Leq, Lmax, L90 and the limit in force
    names = page.evaluate("window.cwChart.getOption().series.map(s => s.name)")
    assert names[:4] == ["Leq（1 分钟能量平均）", "Lmax", "L90", "现行限值"]
    page.wait_for_timeout(300)
    shot(page, f"device-noise-{dev.id}-1366x768")

    # the hours before a given moment: `end` (ms) is checked, and the page offers a silent device's last data
    api = f"{console.url}/api/devices/{dev.id}/series"
    bad = ctx.request.get(api + "?hours=3&end=yesterday")
    assert bad.status == 400 and "end must be a whole number of ms" in bad.json()["error"]
    assert ctx.request.get(api + "?hours=3&end=1000").status == 400
    end_ms = int(t[-1] // 1_000_000) - 100 * 60_000
    past = ctx.request.get(api + f"?hours=1&end={end_ms}").json()
    assert past["to_ms"] == end_ms and past["newest_ms"] == end_ms and past["latest_ms"] is None
    other = next(d for d in cfg.devices if d.kind == "noise" and d.protocol == "json" and d.id != dev.id)
    old = minute - 2 * 86400 * NS - np.arange(30, 0, -1, dtype=np.int64) * 60 * NS
    write(cfg, s["env"], [(other.id, int(a), {"leq": 55.0, "lmax": 66.0, "l90": 48.0}, None) for a in old])
    silent = ctx.request.get(f"{console.url}/api/devices/{other.id}/series?hours=3").json()
    assert silent["newest_ms"] is None and silent["latest_ms"] == old[-1] // 1_000_000
    page.goto(f"{console.url}/devices/{other.id}")
    page.click("#jump-latest")
    page.wait_for_url(f"**/devices/{other.id}?end={old[-1] // 1_000_000 + 60_000}")
    page.wait_for_selector("#chart[data-points='30']")
    assert "显示截至" in page.inner_text("#range-note")
    ctx.close()
