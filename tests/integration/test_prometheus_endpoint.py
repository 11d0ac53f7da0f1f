"""The self-metrics on the Prometheus endpoint and in `citywatch status` (issue 17): a real `citywatch run`
(real broker and InfluxDB, shipped config with one alert rule) scraped over HTTP; the counters, the
dead letters by reason, the detection backlog, the alert tick's runs and the alert latency move once
readings are published."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config import load_config
from tests.integration.test_alerts_service import ALERTS_YAML, RULES_YAML
from tests.unit.alerts.helpers import Subscriber, publish, write_config

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted label pairs): value} of one scrape."""
    with urllib.request.urlopen(url, timeout=10) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def wait_for(pred, timeout_s: float, poll_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = pred()
        if got:
            return got
        time.sleep(poll_s)
    return pred()


def test_a_running_service_serves_its_self_metrics_to_prometheus_and_status(tmp_path, mosquitto, influx, service_env):
    cfg_dir = write_config(tmp_path / "config", ALERTS_YAML.replace("STORE", str(tmp_path / "alerts.sqlite")), RULES_YAML)
    ingest = cfg_dir / "ingest.yaml"
    text = ingest.read_text()
    assert "    port: 9464" in text and "  metrics_interval_s: 5" in text
    ingest.write_text(text.replace("    port: 9464", "    port: 0", 1)
                      .replace("  metrics_interval_s: 5", "  metrics_interval_s: 1", 1))
    cfg = load_config(cfg_dir, service_env)
    dev = next(d for d in cfg.devices if d.kind == "gas" and d.protocol == "json")
    log_path = tmp_path / "run.log"
    (tmp_path / "cwd").mkdir()
    sub = Subscriber(mosquitto, ["city/xm/alerts/#"])
    with open(log_path, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen([sys.executable, "-m", "citywatch", "run", "--config", str(cfg_dir)], env=service_env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=str(tmp_path / "cwd"), start_new_session=True)
    try:
        def log_text() -> str:
            return log_path.read_text(errors="replace")

        assert wait_for(lambda: "connected to MQTT broker" in log_text() or proc.poll() is not None, 30)
        m = re.search(r"Prometheus metrics at (http://127\.0\.0\.1:(\d+)/metrics)", log_text())
        assert m, log_text()  # bound to the loopback address by default, the port picked is logged
        url = m.group(1)
        before = scrape(url)
        assert before[("citywatch_messages_received_total", ())] == 0
        assert before[("citywatch_detection_readings_total", ())] == 0
        assert before[("citywatch_alert_latency_seconds_count", ())] == 0
        assert before[("citywatch_spool_records", ())] == 0
        assert before[("citywatch_mqtt_connected", ())] == 1

        topic = f"city/xm/gas/{dev.site}/{dev.id}/data"
        now_ms = int(time.time() * 1000)
        for i, p in enumerate([dev.set_pressure_kpa] * 4 + [dev.mop_kpa * 1.5]):
            body = {"schema": "xm.gas.v1", "device_id": dev.id, "site_id": dev.site,
                    "samples": [{"ts": now_ms - 4000 + i * 1000, "values": {"p": p}}]}
            publish(mosquitto, topic, json.dumps(body).encode(), who=dev.id)
        publish(mosquitto, topic, b"{not json", who=dev.id)

        def moved():
            s = scrape(url)
            return s if (s[("citywatch_rows_written_total", ())] >= 5
                         and s.get(("citywatch_deadletter_rejects_total", (("reason", "invalid_json"),))) == 1
                         and s[("citywatch_alert_latency_seconds_count", ())] >= 1
                         and s[("citywatch_detection_readings_total", ())] >= 5
                         # the tick runs every second: on an idle machine the rest can be done before its first run
                         and s.get(("citywatch_job_runs_total", (("job", "alerts_tick"),)), 0) >= 1) else None

        after = wait_for(moved, 60)
        assert after, (scrape(url), log_text()[-3000:])
        assert after[("citywatch_messages_received_total", ())] == 6
        assert after[("citywatch_alert_notices_total", ())] >= 1
        assert after[("citywatch_detection_rows_queued", ())] == 0
        assert after[("citywatch_detection_steps_total", ())] >= 1
        assert after[("citywatch_job_runs_total", (("job", "alerts_tick"),))] >= 1
        assert ("citywatch_job_skipped_total", (("job", "alerts_tick"),)) in after
        # The firing notice's reading was published about now: its latency sits in a bucket under a minute.
        assert after[("citywatch_alert_latency_seconds_bucket", (("le", "60.0"),))] >= 1
        assert sub.wait_for(lambda msg: any(b'"firing"' in p for _, p, _ in sub.messages), 30)

        # `citywatch status` reads the same figures back from InfluxDB (written every second here).
        def status() -> str:
            out = subprocess.run([sys.executable, "-m", "citywatch", "status", "--config", str(cfg_dir)],
                                 env=service_env, capture_output=True, text=True, timeout=60, check=False)
            return out.stdout if "alert notices: 1" in out.stdout else ""

        text = wait_for(status, 30, 1.0)
        assert text, subprocess.run([sys.executable, "-m", "citywatch", "status", "--config", str(cfg_dir)],
                                    env=service_env, capture_output=True, text=True, timeout=60, check=False).stdout
        assert re.search(r"detection: keeping up: 0 readings queued, oldest handed over 0\.0 s ago, "
                         r"event-time lag 0\.0 s; \d+ steps", text), text
        assert re.search(r"alert tick: [\d,]+ runs, \d+ late, \d+ skipped", text), text
        assert re.search(r"alert notices: 1; firing latency p99 <= [\d.]+ s over 1 firing notices", text), text
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        sub.stop()
    assert proc.returncode == 0, log_path.read_text()[-3000:]
    with pytest.raises(OSError):  # stopped with the service
        urllib.request.urlopen(url, timeout=2)
