"""Fair detection under a large batch (issue 10): one device's 25,000-sample back-fill must not hold another
device's alert, and the back-filling device must not go Offline while its own readings wait in our queue.
Real broker, InfluxDB and service (`python -m citywatch run`) with every shipped rule."""

from __future__ import annotations

import json
import math
import time

import pytest

from config import load_config
from tests.integration.test_alerts_service import ALERTS_YAML
from tests.integration.test_ingest_harness import ServiceProcess
from tests.unit.alerts.helpers import Subscriber, publish, write_config

pytestmark = pytest.mark.integration

BACKFILL_SAMPLES = 25_000  # one second apart: about 1.0 MB of JSON, inside ingest.max_payload_bytes


class TimedSubscriber(Subscriber):
    """A Subscriber that also notes when each alert notice arrived (monotonic seconds)."""

    def __init__(self, *args, **kwargs):
        self.arrived: list[tuple[float, dict]] = []
        super().__init__(*args, **kwargs)

    def _on_message(self, client, userdata, msg):
        t = time.monotonic()
        super()._on_message(client, userdata, msg)
        if "/active/" in msg.topic or "/cmd" in msg.topic or "/replies" in msg.topic or not msg.payload:
            return
        with self.lock:
            self.arrived.append((t, json.loads(msg.payload)))

    def first(self, rule_id: str, device_id: str, transition: str = "firing") -> float | None:
        with self.lock:
            return next((t for t, n in self.arrived if n.get("rule_id") == rule_id
                         and n["device"]["id"] == device_id and n.get("transition") == transition), None)


def backfill_payload(dev, n: int, last_p: float) -> bytes:
    """n one-second samples ending now, inside the limits (varied, so no flatline), the last one at last_p."""
    now_ms = int(time.time() * 1000)
    samples = [{"ts": now_ms - (n - 1 - i) * 1000,
                "values": {"p": round(dev.set_pressure_kpa * (1 + 0.004 * math.sin(i)), 2)}} for i in range(n - 1)]
    samples.append({"ts": now_ms, "values": {"p": last_p}})
    body = json.dumps({"schema": "xm.gas.v1", "device_id": dev.id, "site_id": dev.site, "samples": samples},
                      separators=(",", ":")).encode()
    return body


def one_reading(dev, p: float) -> bytes:
    return json.dumps({"schema": "xm.gas.v1", "device_id": dev.id, "site_id": dev.site,
                       "samples": [{"ts": int(time.time() * 1000), "values": {"p": p}}]}).encode()


def test_a_backfill_of_one_device_does_not_hold_another_devices_alert(tmp_path, mosquitto, influx, service_env):
    # Every shipped rule (rules.yaml of the shipped config): the per-reading cost that made the back-fill slow.
    cfg_dir = write_config(tmp_path / "config", ALERTS_YAML.replace("STORE", str(tmp_path / "alerts.sqlite")))
    cfg = load_config(cfg_dir, service_env)
    gas = [d for d in cfg.devices if d.kind == "gas" and d.protocol == "json"]
    a, b = gas[0], gas[1]
    body = backfill_payload(a, BACKFILL_SAMPLES, a.mop_kpa * 1.5)
    assert len(body) <= cfg.ingest.max_payload_bytes
    sub = TimedSubscriber(mosquitto, ["city/xm/alerts/#"])
    svc = ServiceProcess(cfg_dir, service_env, tmp_path / "service.log").start()
    try:
        t_a = time.monotonic()
        publish(mosquitto, f"city/xm/gas/{a.site}/{a.id}/data", body, who=a.id)
        t_b = time.monotonic()
        publish(mosquitto, f"city/xm/gas/{b.site}/{b.id}/data", one_reading(b, b.mop_kpa * 1.5), who=b.id)
        # A's last sample (over its G-highhigh limit) is evaluated after the whole back-fill.
        assert sub.wait_for(lambda m: sub.first("G-highhigh", a.id) is not None, 240), svc.log_text()[-3000:]
        assert sub.wait_for(lambda m: sub.first("G-highhigh", b.id) is not None, 30), svc.log_text()[-3000:]
        time.sleep(1.5)  # bounded: a (wrong) Offline of the back-filling device would show by now
        recv_a, recv_b = sub.first("G-highhigh", a.id), sub.first("G-highhigh", b.id)
        a_s, b_s = recv_a - t_a, recv_b - t_b
        # B's reading came after A's whole message, yet its alert is out long before A's back-fill is done:
        # a small fraction of A's processing time, measured in the same run (never absolute seconds).
        assert recv_b < recv_a, (a_s, b_s)
        assert b_s < 0.25 * a_s, f"B's alert took {b_s:.2f} s, A's back-fill {a_s:.2f} s"
        # While A's rows waited in the detector queue, the deadman held A: A never went Offline.
        with sub.lock:
            offline = [n for _, n in sub.arrived if n.get("rule_id") == "Offline" and n["device"]["id"] == a.id]
        assert offline == [], offline
        assert "detection/alert pipeline failed" not in svc.log_text()
    finally:
        svc.kill()
        sub.stop()
