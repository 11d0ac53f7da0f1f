"""Two InfluxDB targets (`connections.influx_replicas`): one of them is stopped by pid mid-stream and started
again; the service keeps acking meanwhile (its own spool holds that target's share), and every reading lands
exactly once in both, counted by InfluxQL."""

from __future__ import annotations

import re
import time
import urllib.request

import pytest

from citywatch.localstack import free_port
from ingest.spool import SpoolWriter
from tests.integration.test_ingest_harness import (
    GAS,
    NOISE_JSON,
    ServiceProcess,
    Stream,
    config_copy,
    counts,
    wait_counts,
)
from tests.servers import InfluxServer

pytestmark = pytest.mark.integration

DEVICES = [NOISE_JSON[0], NOISE_JSON[1], GAS[0], GAS[1]]


@pytest.fixture
def influx_b(tmp_path):
    """A second InfluxDB 1.x (the replica `b`), started like the `influx` fixture's; killed by pid after the test."""
    server = InfluxServer(tmp_path / "influxdb_b")
    server.start()
    yield server
    server.kill()


def _config(tmp_path, replica_url: str, metrics_port: int, ack_after: str):
    cfg_dir = config_copy(tmp_path, metrics_interval_s=1, ack_after=ack_after)
    conn = cfg_dir / "connections.yaml"
    text = conn.read_text()
    assert text.count("  influx_replicas: []") == 1
    conn.write_text(text.replace("  influx_replicas: []", f"""  influx_replicas:
    - name: b
      url: {replica_url}
      username_env: CITYWATCH_INFLUX_B_USERNAME
      password_env: CITYWATCH_INFLUX_B_PASSWORD"""))
    ingest = cfg_dir / "ingest.yaml"
    text = ingest.read_text()
    assert text.count("    port: 9464 ") == 1
    ingest.write_text(text.replace("    port: 9464 ", f"    port: {metrics_port} "))
    return cfg_dir


def _metric(port: int, sample: str) -> float | None:
    """One sample (name with its labels) from the service's Prometheus endpoint; None when it is not there."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    m = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def _acked(port: int) -> int:
    """messages_acked from the service's Prometheus endpoint (read whichever InfluxDB is down)."""
    return int(_metric(port, "citywatch_messages_acked_total") or 0)


def _wait_metric(port: int, sample: str, ok, timeout_s: float) -> float | None:
    deadline = time.monotonic() + timeout_s
    got = _metric(port, sample)
    while not (got is not None and ok(got)) and time.monotonic() < deadline:
        time.sleep(0.25)
        got = _metric(port, sample)
    return got


def _wait_acked(port: int, n: int, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    got = _acked(port)
    while got < n and time.monotonic() < deadline:
        time.sleep(0.25)
        got = _acked(port)
    return got


@pytest.mark.parametrize("stopped, ack_after", [("replica", "spool"), ("primary", "spool"), ("replica", "influxdb")])
def test_one_target_stopped_mid_stream_every_reading_lands_once_in_both(stopped, ack_after, tmp_path, mosquitto,
                                                                        influx, influx_b, service_env):
    port = free_port()
    cfg_dir = _config(tmp_path, influx_b.url, port, ack_after)
    env = dict(service_env, CITYWATCH_INFLUX_B_USERNAME=influx_b.username,
               CITYWATCH_INFLUX_B_PASSWORD=influx_b.password)
    svc = ServiceProcess(cfg_dir, env, tmp_path / "citywatch.log").start()
    try:
        down = influx_b if stopped == "replica" else influx
        spool = tmp_path / "var" / "spool"
        down_spool = spool / "replicas" / "b" if stopped == "replica" else spool
        stream = Stream(mosquitto, DEVICES, messages=3000, samples_per_message=5, rate=600).start()
        stream.wait_sent(600)
        down.stop()  # by pid (SIGTERM)
        stream.join()
        # Every message is acked while one target is down: the down target's own spool holds its share.
        assert _wait_acked(port, stream.messages, 60) == stream.messages
        assert SpoolWriter.inspect(down_spool).records > 0
        expected = stream.expected()
        # The other target took every reading meanwhile, without waiting for the one that is down.
        up = influx if stopped == "replica" else influx_b
        assert wait_counts(up, expected, 60) == expected
        what = f"InfluxDB replica b ({influx_b.url})" if stopped == "replica" else "InfluxDB"
        assert svc.wait_log(f"{what} unreachable (", 10)
        # The replica's state reaches the Prometheus endpoint, labelled by its name.
        spooled = 'citywatch_replica_spool_records{replica="b"}'
        if stopped == "replica":
            assert _wait_metric(port, 'citywatch_replica_influxdb_up{replica="b"}', lambda v: v == 0, 10) == 0
            assert (_wait_metric(port, spooled, lambda v: v > 0, 10) or 0) > 0
        down.start()
        assert wait_counts(down, expected, 120) == expected
        assert _wait_metric(port, 'citywatch_replica_influxdb_up{replica="b"}', lambda v: v == 1, 30) == 1
        assert _wait_metric(port, spooled, lambda v: v == 0, 30) == 0
        assert counts(up) == expected
        assert svc.terminate() == 0
        assert SpoolWriter.inspect(spool).records == 0
        assert SpoolWriter.inspect(spool / "replicas" / "b").records == 0
        assert "back" in svc.log_text()
    finally:
        svc.close()
