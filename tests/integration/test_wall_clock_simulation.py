"""A simulation fed to a service on the wall clock (issue 12): the service announces its clock on
city/xm/internal/service/<client id> (retained), `citywatch simulate` reads it and warns, and the service, which
refuses the simulated readings as ts_too_old, says so once with the fix (CITYWATCH_CLOCK=event)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_ingest_harness import ServiceProcess, config_copy

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = """\
scenario:
  name: wall_clock_check
  seed: 3
  start: "2025-06-02T08:00"
  duration: 3h
  history: 0s
  devices: [XM0001NOISE, XM0002NOISE]
  faults: []
"""


def test_simulate_warns_about_a_wall_clock_service_which_logs_the_refusals_once(mosquitto, influx, service_env,
                                                                                tmp_path):
    cfg_dir = config_copy(tmp_path / "proj")   # the shipped default: clock: wall
    assert "  clock: wall" in (cfg_dir / "ingest.yaml").read_text()
    svc = ServiceProcess(cfg_dir, service_env, tmp_path / "proj" / "run.log").start()
    try:
        scen = tmp_path / "scenario.yaml"
        scen.write_text(SCENARIO)
        r = subprocess.run([sys.executable, "-m", "citywatch", "simulate", str(scen), "--fast", "--no-progress",
                            "--config", str(cfg_dir), "--truth", str(tmp_path / "truth.jsonl"),
                            "--host", mosquitto.host, "--port", str(mosquitto.port),
                            "--credentials", str(mosquitto.credentials_path)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert r.returncode == 0, r.stderr
        assert "runs on the wall clock" in r.stderr and "CITYWATCH_CLOCK=event" in r.stderr, r.stderr
        # 2 devices x 180 one-minute samples, all of 2025: every one refused as too old, said once.
        assert svc.wait_log("refused as ts_too_old", 30), svc.log_tail()
        text = svc.log_text()
        assert text.count("most readings are refused as ts_too_old") == 1, text
        assert "CITYWATCH_CLOCK=event" in text
    finally:
        assert svc.terminate() == 0
        svc.close()

    # Stopped gracefully, the service cleared its announcement: a later simulation is not warned.
    r = subprocess.run([sys.executable, "-m", "citywatch", "simulate", str(scen), "--fast", "--no-progress",
                        "--config", str(cfg_dir), "--truth", str(tmp_path / "truth.jsonl"),
                        "--host", mosquitto.host, "--port", str(mosquitto.port),
                        "--credentials", str(mosquitto.credentials_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    assert "wall clock" not in r.stderr, r.stderr
