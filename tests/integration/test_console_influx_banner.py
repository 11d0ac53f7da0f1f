"""The board's banner names InfluxDB when the console cannot reach it (issue 11: "turns red when the service,
the broker or InfluxDB is down"): the real InfluxDB is killed by pid and the board turns red saying since when;
restarted, the banner turns green again. The check itself (console/influx_watch.py) pings with the citywatch
account off the event loop and reports each change once. Fixtures from test_console_browser."""

from __future__ import annotations

import time

import pytest

from config import load_config
from console.influx_watch import InfluxWatch
from tests.integration.test_alerts_service import gas_payload
from tests.integration.test_console_browser import (  # noqa: F401
    OPERATOR_PW,
    browser,
    login,
    shot,
    stack,
)
from tests.unit.alerts.helpers import publish

pytestmark = pytest.mark.integration


def test_influx_watch_reports_each_change_once(influx, service_env, tmp_path):
    cfg = load_config(None, service_env)
    changes = []
    watch = InfluxWatch(cfg, service_env, changes.append)
    up = watch.check()
    assert up["ok"] is True and up["error"] is None and up["url"] == influx.url
    assert watch.check()["since"] == up["since"] and len(changes) == 1     # no change, no call
    influx.kill()
    down = watch.check()
    assert down["ok"] is False and "refused" in down["error"].lower(), down
    assert down["since"] >= up["checked"] and len(changes) == 2
    influx.start()
    assert watch.check()["ok"] is True and len(changes) == 3


def test_board_banner_turns_red_naming_influxdb_and_back(stack, browser, influx):  # noqa: F811
    s = stack
    dev = s["dev"]
    # A fast check: the banner follows InfluxDB within a second or two.
    console_yaml = s["cfg_dir"] / "console.yaml"
    console_yaml.write_text(console_yaml.read_text() + "  influx_check_s: 1\n")
    s["svc"].start()
    console = s["console"].start()
    ctx, page = login(browser, console.url, "duty", OPERATOR_PW)
    publish(s["mosquitto"], f"city/xm/gas/{dev.site}/{dev.id}/data", gas_payload(dev, dev.set_pressure_kpa), who=dev.id)
    page.wait_for_selector("#banner.fresh")

    influx.kill()
    page.wait_for_selector("#banner.stale:has-text('InfluxDB')")
    text = page.inner_text("#banner")
    assert text.startswith("InfluxDB 不可达（自 ") and "数据时间" in text, text
    shot(page, "board-influx-down-1366x768")
    # the map's and the site page's banners say the same (one function in common.js: the site page's copy of
    # the banner once missed InfluxDB)
    page.goto(console.url + "/map")
    page.wait_for_selector("#banner.stale:has-text('InfluxDB')")
    page.goto(console.url + f"/sites/{dev.site}")
    page.wait_for_selector("#banner.stale:has-text('InfluxDB')")
    page.goto(console.url + "/")
    page.wait_for_selector("#banner.stale:has-text('InfluxDB')")

    influx.start()
    # Something must have been heard within stale_after_s for the banner to be green: a fresh reading.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "InfluxDB" in page.inner_text("#banner"):
        time.sleep(0.2)
    publish(s["mosquitto"], f"city/xm/gas/{dev.site}/{dev.id}/data", gas_payload(dev, dev.set_pressure_kpa), who=dev.id)
    page.wait_for_selector("#banner.fresh")
    assert "InfluxDB" not in page.inner_text("#banner")
    ctx.close()
