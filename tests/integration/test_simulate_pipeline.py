"""The same scenario through the real pipeline (collector -> InfluxDB -> detectors -> alert store) at two
speeds raises the same alerts, and the scorecard finds the faults of the simulated morning."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.alert_sources import from_sqlite
from simulators.scoring import TruthFault, parse_time_ms, score
from tests.integration.test_ingest_harness import ServiceProcess, config_copy, counts

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CITY_DAY = ROOT / "simulators" / "scenarios" / "city_day.yaml"
# Simulated time runs far ahead of (and, for 2025 dates, far behind) the wall clock: the receive-time
# plausibility window of ingest would refuse every reading, so these runs widen it.
TEN_YEARS_S = 10 * 365 * 86400


def settle(influx, timeout_s: float = 90.0) -> tuple[int, int]:
    """Poll the point counts until they stop growing (bounded); return them."""
    deadline = time.monotonic() + timeout_s
    last, stable_since = counts(influx), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = counts(influx)
        if now != last:
            last, stable_since = now, time.monotonic()
        elif time.monotonic() - stable_since >= 3.0:
            break
    return last


def run_scenario(tag: str, speed: list[str], mosquitto, influx, env: dict, tmp_path: Path, duration: str):
    proj = tmp_path / tag
    cfg_dir = config_copy(proj, future_skew_s=TEN_YEARS_S, backfill_max_age_s=TEN_YEARS_S)
    for name, old, new in (("connections.yaml", "client_id: citywatch-collector", f"client_id: cw-collector-{tag}"),
                           ("alerts.yaml", "mqtt_client_id: citywatch-alerts", f"mqtt_client_id: cw-alerts-{tag}")):
        p = cfg_dir / name
        text = p.read_text()
        assert old in text
        p.write_text(text.replace(old, new))
    svc = ServiceProcess(cfg_dir, env, proj / "pipeline.log").start(timeout_s=60)
    try:
        truth = proj / "truth.jsonl"
        r = subprocess.run([sys.executable, "-m", "citywatch", "simulate", str(CITY_DAY), *speed, "--duration", duration,
                            "--truth", str(truth), "--no-progress", "--host", mosquitto.host, "--port", str(mosquitto.port),
                            "--credentials", str(mosquitto.credentials_path)], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        points = settle(influx)
    finally:
        svc.terminate()
        svc.close()
    alerts = from_sqlite(str(proj / "var" / "alerts.sqlite"))
    return alerts, truth, points


def test_two_speeds_same_alerts_and_the_morning_faults_are_caught(mosquitto, influx, service_env, tmp_path):
    duration = "8h"   # 06:00-14:00: piling, regulator failure, flatline, open loop, battery fade
    a, truth, points_a = run_scenario("fast", ["--fast"], mosquitto, influx, service_env, tmp_path, duration)
    b, _, points_b = run_scenario("paced", ["--speed", "3600"], mosquitto, influx, service_env, tmp_path, duration)
    assert points_a == points_b and points_a[0] > 5000

    # The deadman (Offline) runs on the wall clock, so it depends on the speed by design; every other
    # rule runs on event time and must not.
    def key(alerts):
        return sorted((x.rule_id, x.device_id, x.start_ms, x.severity) for x in alerts if x.rule_id != "Offline")
    assert key(a) == key(b)
    assert key(a)

    records = [json.loads(ln) for ln in truth.read_text().splitlines()]
    meta = records[0]["scenario"]
    card = score([TruthFault.from_record(r) for r in records], a,
                 window=(parse_time_ms(meta["start"]), parse_time_ms(meta["end"])))
    caught = {f.id for f in card.caught}
    # Piling (N-day), regulator failing open (G-high/G-highhigh/G-low), flatline, battery fade. (The dead mic
    # from 13:00 flags D, rows ingest refuses; its N-data hourly valid-data rate is judged after 14:00.)
    assert {"F01", "F04", "F14", "F16"} <= caught, card.summary()
