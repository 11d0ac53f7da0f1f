"""Issue 12 (duty officers): with InfluxDB or the broker down, every command says so in one line, in the same
words, and exits 2 (citywatch.errors). Each command runs for real against a port of 127.0.0.1 where nothing
listens: a refused connection must fail at once, not after retries, and never as a traceback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from citywatch.localstack import free_port
from config import DEFAULT_CONFIG_DIR

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
HINT = "is the stack up? (scripts/stack.sh up; source .stack/env)"
# A refused connection fails at once; this only bounds a hang (interpreter start-up and the simulated
# feed take a few seconds on two shared cores; a retried time-out would take 15 s more).
BOUND_S = 90

# (command, service, arguments after `citywatch`); {influx}: the InfluxDB URL, {port}: the broker's port,
# {tmp}: the test's directory, {config}: a copy of the shipped config whose paths resolve under {tmp}.
COMMANDS = [
    ("status", "InfluxDB", ["status", "--config", "{config}"]),
    ("detect", "InfluxDB", ["detect", "--influx", "--since", "2025-06-01T12:00:00Z", "--until",
                            "2025-06-01T13:00:00Z", "--no-progress", "--config", "{config}"]),
    ("warmup", "InfluxDB", ["warmup", "--since", "2d", "--state", "{tmp}/state.npz", "--no-progress",
                            "--config", "{config}"]),
    ("score", "InfluxDB", ["score", "--truth", "{tmp}/truth.jsonl", "--alerts", "influx:{influx}/citywatch"]),
    ("replay", "the MQTT broker", ["replay", "{tmp}/feed.csv", "--fast", "--no-progress", "--config", "{config}",
                                   "--host", "127.0.0.1", "--port", "{port}", "--credentials", "{tmp}/creds.json"]),
    ("simulate", "the MQTT broker", ["simulate", str(ROOT / "simulators/scenarios/city_day.yaml"), "--fast",
                                     "--duration", "10m", "--no-progress", "--truth", "{tmp}/sim-truth.jsonl",
                                     "--config", "{config}", "--host", "127.0.0.1", "--port", "{port}",
                                     "--credentials", "{tmp}/creds.json"]),
    ("record", "the MQTT broker", ["record", "--out", "{tmp}/rec.jsonl", "--duration", "5s", "--config", "{config}",
                                   "--host", "127.0.0.1", "--port", "{port}", "--credentials", "{tmp}/creds.json"]),
]



@pytest.mark.parametrize("command,service,argv", COMMANDS, ids=[c[0] for c in COMMANDS])
def test_a_service_down_is_one_line_and_exit_2(tmp_path, command, service, argv):
    port = free_port()
    influx = f"http://127.0.0.1:{port}"
    config = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, config, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (tmp_path / "truth.jsonl").write_text("")
    (tmp_path / "feed.csv").write_text("ts,device_id,flag,leq,lmax,lmin\n2025-06-01T12:01:00Z,XM0001NOISE,N,57.3,66.0,49.2\n")
    (tmp_path / "creds.json").write_text(json.dumps({"devices": {}, "tester": {"username": "tester", "password": "x"}}))
    args = [a.format(influx=influx, port=port, tmp=tmp_path, config=config) for a in argv]
    # Nothing from a developer's sourced .stack/env: the closed port is the only address the command knows.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    env.update({"CITYWATCH_INFLUX_URL": influx, "CITYWATCH_MQTT_HOST": "127.0.0.1", "CITYWATCH_MQTT_PORT": str(port),
                "CITYWATCH_CREDENTIALS": str(tmp_path / "creds.json")})

    res = subprocess.run([sys.executable, "-m", "citywatch", *args], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=BOUND_S, check=False)

    where = influx if service == "InfluxDB" else f"127.0.0.1:{port}"
    assert "Traceback" not in res.stderr, res.stderr
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert lines == [f"citywatch {command}: cannot reach {service} at {where}: connection refused; {HINT}"], res.stderr
