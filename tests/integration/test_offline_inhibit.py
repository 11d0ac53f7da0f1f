"""Issue 10, Critical 3, end to end: a real broker and a real `citywatch run` (event clock). A gas device
silent for 3 h goes Offline; its normal 12-sample hourly envelope ending now resolves Offline; then
p = 5.25 kPa (over its MOP of 3.5 kPa) is a red G-highhigh notice on the MQTT alert topic, not muted."""

from __future__ import annotations

import json
import time

import pytest

from config import load_config
from tests.integration.test_ingest_harness import ServiceProcess
from tests.unit.alerts.helpers import Subscriber, publish, write_config

pytestmark = pytest.mark.integration

ALERTS_YAML = """
alerting:
  sinks:
    ops_mqtt: {type: mqtt, topic_prefix: city/xm/alerts, qos: 1}
  route: {receivers: [ops_mqtt], group_wait_s: 0, group_interval_s: 0, repeat_interval_s: 100000}
  inhibit:
    - {source_rule: [Offline], target_rule: [G-high, G-highhigh], equal: [device_id]}
  retry: {initial_s: 0.1, max_s: 0.5}
  store_path: STORE
"""
RULES_YAML = """
rules:
  - {id: G-high, type: gas_high, kind: gas}
  - {id: G-highhigh, type: gas_highhigh, kind: gas}
  - {id: Offline, type: deadman, kind: any}
"""
H_MS = 3600 * 1000


def envelope(dev, ts_ms: list[int], p: list[float]) -> bytes:
    return json.dumps({"schema": "xm.gas.v1", "device_id": dev.id, "site_id": dev.site,
                       "samples": [{"ts": t, "values": {"p": v, "batt_v": 3.5}} for t, v in zip(ts_ms, p)]}).encode()


def of(notices: list[dict], rule: str, device: str) -> list[dict]:
    return [n for n in notices if n["rule_id"] == rule and n["device"]["id"] == device]


def test_offline_resolves_on_the_hourly_envelope_and_over_pressure_is_a_red_notice(tmp_path, mosquitto, influx,
                                                                                    service_env):
    cfg_dir = write_config(tmp_path / "config", ALERTS_YAML.replace("STORE", str(tmp_path / "alerts.sqlite")),
                           RULES_YAML)
    env = {**service_env, "CITYWATCH_CLOCK": "event"}
    cfg = load_config(cfg_dir, env)
    dev = cfg.devices[cfg.device_index("XMG0001")]
    other = cfg.devices[cfg.device_index("XMG0002")]
    assert dev.set_pressure_kpa == 2.5 and dev.mop_kpa == 3.5 and dev.report_interval_s == 3600
    sub = Subscriber(mosquitto, ["city/xm/alerts/#"])
    svc = ServiceProcess(cfg_dir, env, tmp_path / "service.log")
    try:
        svc.start()
        now = int(time.time()) * 1000
        # The device's last reading is 3 h old; another device's reading moves event time to now.
        publish(mosquitto, f"city/xm/gas/{dev.site}/{dev.id}/data", envelope(dev, [now - 3 * H_MS], [2.5]), who=dev.id)
        publish(mosquitto, f"city/xm/gas/{other.site}/{other.id}/data", envelope(other, [now], [2.5]), who=other.id)
        assert sub.wait_for(lambda m: of(sub.notices(), "Offline", dev.id), 30), svc.log_text()
        assert [n["transition"] for n in of(sub.notices(), "Offline", dev.id)] == ["firing"]
        # Its normal hourly report: 12 samples 5 minutes apart, the newest 0.5 s before now (every
        # sample older than the tick that raised Offline).
        ts = [now - 500 - (11 - i) * 300_000 for i in range(12)]
        p = [2.45 + 0.01 * (i % 3) for i in range(12)]
        publish(mosquitto, f"city/xm/gas/{dev.site}/{dev.id}/data", envelope(dev, ts, p), who=dev.id)
        assert sub.wait_for(lambda m: len(of(sub.notices(), "Offline", dev.id)) >= 2, 30), svc.log_text()
        assert [n["transition"] for n in of(sub.notices(), "Offline", dev.id)] == ["firing", "resolved"]
        # Over-pressure: a red process alarm, delivered.
        publish(mosquitto, f"city/xm/gas/{dev.site}/{dev.id}/data", envelope(dev, [now + 1000], [5.25]), who=dev.id)
        assert sub.wait_for(lambda m: of(sub.notices(), "G-highhigh", dev.id), 30), svc.log_text()
        red = of(sub.notices(), "G-highhigh", dev.id)
        assert [(n["transition"], n["severity"]) for n in red] == [("firing", "red")]
        assert red[0]["value"] == 5.25 and red[0]["limit"] == 3.5
        assert "device_health" not in red[0]["context"]  # Offline is over: nothing to report
        topics = {t for t, _, _ in sub.messages}
        assert f"city/xm/alerts/gas/{dev.site}" in topics
        # G-high (yellow) of the same device is not inhibited either: Offline has resolved.
        assert sub.wait_for(lambda m: of(sub.notices(), "G-high", dev.id), 15), svc.log_text()
        assert "inhibited" not in svc.log_text()
    finally:
        svc.close()
        sub.stop()
