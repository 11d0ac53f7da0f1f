"""`scripts/stack.sh up|status|down` on a directory that does not exist yet, as a new user runs it."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from citywatch.localstack import free_port
from config.connections import basic_auth

ROOT = Path(__file__).resolve().parents[2]


def _stack(action: str, stack_dir: Path, mqtt_port: int, influx_port: int) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "citywatch.localstack", action, "--dir", str(stack_dir),
         "--mqtt-port", str(mqtt_port), "--influx-port", str(influx_port)],
        cwd=ROOT, capture_output=True, text=True, timeout=180)


def _env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        out[key] = value
    return out


@pytest.fixture
def stack_dir():
    # A directory the broker's own user can traverse (as a checkout is), so its files stay inside it.
    base = Path(tempfile.mkdtemp(prefix="citywatch-stack-test-", dir="/tmp"))
    base.chmod(0o755)
    yield base / ".stack"
    shutil.rmtree(base, ignore_errors=True)


def test_first_up_on_a_new_directory_starts_both_servers_with_private_credentials(stack_dir):
    mqtt_port, influx_port = free_port(), free_port()
    try:
        up = _stack("up", stack_dir, mqtt_port, influx_port)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "mosquitto: started" in up.stdout and "influxd: started" in up.stdout
        for name in ("credentials.json", "env"):
            assert stat.S_IMODE((stack_dir / name).stat().st_mode) == 0o600, name
        env = _env_file(stack_dir / "env")

        # The collector's account from .stack/env connects and subscribes.
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.username_pw_set(env["CITYWATCH_MQTT_USERNAME"], env["CITYWATCH_MQTT_PASSWORD"])
        client.connect("127.0.0.1", mqtt_port)
        client.disconnect()

        # InfluxDB answers the citywatch account from .stack/env, and refuses anonymous queries.
        q = urllib.parse.urlencode({"q": "SHOW DATABASES"})
        req = urllib.request.Request(f"{env['CITYWATCH_INFLUX_URL']}/query?{q}", headers=basic_auth(
            (env["CITYWATCH_INFLUX_USERNAME"], env["CITYWATCH_INFLUX_PASSWORD"])))
        with urllib.request.urlopen(req, timeout=10) as resp:
            names = {v[0] for s in json.loads(resp.read())["results"][0]["series"] for v in s["values"]}
        assert "citywatch" in names
        with pytest.raises(urllib.error.HTTPError) as anon:
            urllib.request.urlopen(f"{env['CITYWATCH_INFLUX_URL']}/query?{q}", timeout=10)
        assert anon.value.code == 401

        again = _stack("up", stack_dir, mqtt_port, influx_port)
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stdout
        assert _env_file(stack_dir / "env") == env  # the same passwords on a second `up`
        assert _stack("status", stack_dir, mqtt_port, influx_port).returncode == 0
    finally:
        down = _stack("down", stack_dir, mqtt_port, influx_port)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "mosquitto: stopped" in down.stdout and "influxd: stopped" in down.stdout
    assert _stack("status", stack_dir, mqtt_port, influx_port).returncode == 1
    assert not os.path.exists(stack_dir / "mosquitto" / "mosquitto.pid")
