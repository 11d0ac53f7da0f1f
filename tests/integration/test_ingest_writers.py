"""The InfluxDB transports against real servers: v1 (`/write`) on InfluxDB 1.x with its 400 and 413 answers,
and v2 (influxdb-client, `/api/v2/write`) on VictoriaMetrics, which serves that endpoint."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from citywatch.localstack import free_port
from core import ReadingBatch
from ingest.influx_writer import RejectedWriteError, RetryableWriteError, V1Writer, V2Writer
from ingest.lineproto import encode
from tests.integration.test_ingest_harness import (  # noqa: F401 - fixture
    CFG,
    GAS,
    NOISE_JSON,
    ServiceProcess,
    Stream,
    config_copy,
    service_factory,
)
from tests.servers import InfluxServer

pytestmark = pytest.mark.integration

VM_BINARY = shutil.which("victoria-metrics") or "/usr/bin/victoria-metrics"


class VictoriaMetrics:
    """victoria-metrics on a free port with its data in a temporary directory; stopped by pid."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = 30) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "vm.log", "ab")
        self.proc = subprocess.Popen(
            [VM_BINARY, "-httpListenAddr", f"127.0.0.1:{self.port}", "-storageDataPath", str(self.directory / "data")],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("victoria-metrics did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def export(self, name_regex: str) -> list[dict]:
        """Series whose name matches, through /api/v1/export (one JSON object per line)."""
        urllib.request.urlopen(self.url + "/internal/force_flush", timeout=10).read()
        q = urllib.parse.quote('{__name__=~"' + name_regex + '"}')
        with urllib.request.urlopen(f"{self.url}/api/v1/export?match[]={q}", timeout=10) as r:
            return [json.loads(line) for line in r.read().decode().splitlines() if line.strip()]


@pytest.fixture
def victoria(tmp_path):
    # scripts/bootstrap.sh (make test) installs Debian's victoria-metrics: a missing binary is a failure.
    assert Path(VM_BINARY).exists(), f"{VM_BINARY} missing: run scripts/bootstrap.sh"
    for attempt in range(3):  # a free port can be taken by another test's server between probe and bind
        vm = VictoriaMetrics(tmp_path / f"vm{attempt}")
        try:
            vm.start()
            break
        except RuntimeError:
            if attempt == 2:
                raise
    yield vm
    vm.stop()


def _batch(n: int, t0_ns: int) -> ReadingBatch:
    dev = CFG.device_index(NOISE_JSON[0].id)
    leq = 50 + np.arange(n) / 10
    return ReadingBatch(np.full(n, dev), t0_ns + np.arange(n) * 1_000_000_000,
                        {"leq": leq, "lmax": leq + 10, "lmin": leq - 10})


def test_v2_writer_lands_points_on_a_v2_write_endpoint(victoria):
    t0 = (time.time_ns() // 1_000_000_000 - 600) * 1_000_000_000
    batch = _batch(50, t0)
    w = V2Writer(victoria.url, bucket="citywatch", org="city", token="unused")
    assert w.ping()
    w.write(encode(batch, CFG))
    w.close()
    deadline = time.monotonic() + 20
    series = []
    while time.monotonic() < deadline:
        series = victoria.export("noise_leq")
        if series and len(series[0]["timestamps"]) >= 50:
            break
        time.sleep(0.2)
    # VictoriaMetrics names series <measurement>_<field> and keeps millisecond timestamps.
    assert len(series) == 1
    s = series[0]
    assert s["metric"]["device_id"] == NOISE_JSON[0].id and s["metric"]["site_id"] == NOISE_JSON[0].site
    assert s["timestamps"] == (batch.ts_ns // 1_000_000).tolist()
    assert s["values"] == pytest.approx(batch.values["leq"].tolist())
    assert {x["metric"]["__name__"] for x in victoria.export("noise_.*")} == {"noise_leq", "noise_lmax", "noise_lmin",
                                                                               "noise_flag"}


def test_service_with_api_v2_writes_through_influxdb_client(tmp_path, mosquitto, victoria):
    cfg_dir = config_copy(tmp_path)
    conn = (cfg_dir / "connections.yaml").read_text()
    conn = conn.replace("bucket: null", "bucket: citywatch").replace("org: null", "org: city")
    (cfg_dir / "connections.yaml").write_text(conn)
    # The fixture's environment points at InfluxDB 1.x; this run goes to VictoriaMetrics with api v2.
    env = dict(os.environ)
    env.update({"CITYWATCH_MQTT_HOST": mosquitto.host, "CITYWATCH_MQTT_PORT": str(mosquitto.port),
                "CITYWATCH_MQTT_USERNAME": mosquitto.credentials.collector[0],
                "CITYWATCH_MQTT_PASSWORD": mosquitto.credentials.collector[1],
                "CITYWATCH_INFLUX_URL": victoria.url, "CITYWATCH_INFLUX_API": "v2"})
    svc = ServiceProcess(cfg_dir, env, tmp_path / "citywatch.log")
    try:
        svc.start()
        stream = Stream(mosquitto, [GAS[0], GAS[1]], messages=40, samples_per_message=5).start()
        stream.join()
        deadline = time.monotonic() + 30
        total = 0
        while time.monotonic() < deadline:
            # Distinct (series, ms): VictoriaMetrics keeps duplicate samples unless told to deduplicate.
            total = sum(len(set(s["timestamps"])) for s in victoria.export("gas_pressure_p"))
            if total >= 200:
                break
            time.sleep(0.3)
        assert total == 200
        assert svc.terminate() == 0
    finally:
        svc.close()


def test_v1_writer_dead_letters_only_the_lines_influx_refuses(influx):
    w = V1Writer(influx.url, influx.database, influx.username, influx.password)
    t = time.time_ns()
    w.write(f"noise,device_id=A leq=60.5 {t}\n".encode())
    # `leq` is a float field now: an integer value for it is a type conflict (HTTP 400, partial write).
    lines = b"".join(
        f"noise,device_id=A leq={'61i' if i in (3, 7) else '62.5'} {t + i + 1}\n".encode() for i in range(10)
    )
    with pytest.raises(RejectedWriteError) as info:
        w.write(lines)
    refused = info.value.lines.split(b"\n")
    assert refused == [f"noise,device_id=A leq=61i {t + 4}".encode(), f"noise,device_id=A leq=61i {t + 8}".encode()]
    assert "conflict" in info.value.message
    assert influx.count("noise", "leq") == 9


def test_v1_writer_splits_a_batch_the_server_finds_too_large(tmp_path):
    server = InfluxServer(tmp_path / "small")
    conf = server.conf.read_text().replace("max-body-size = 0", "max-body-size = 4000")
    server.conf.write_text(conf)
    server.start()
    try:
        w = V1Writer(server.url, server.database, server.username, server.password)
        t = time.time_ns()
        lines = b"".join(f"noise,device_id=B leq={50 + i % 40}.5 {t + i}\n".encode() for i in range(1000))
        assert len(lines) > 10 * 4000
        status, _, _ = w._post(lines)
        assert status == 413  # the server really refuses the whole body
        w.write(lines)
        assert server.count("noise", "leq") == 1000
    finally:
        server.kill()


def test_v1_writer_reports_a_down_server_as_retryable():
    w = V1Writer(f"http://127.0.0.1:{free_port()}", "citywatch", timeout_s=2)
    with pytest.raises(RetryableWriteError):
        w.write(b"noise,device_id=C leq=1.5 1\n")
    assert not w.ping()


def test_v2_writer_reports_a_down_server_as_retryable():
    w = V2Writer(f"http://127.0.0.1:{free_port()}", bucket="b", org="o", token="t", timeout_s=2)
    with pytest.raises(RetryableWriteError):
        w.write(b"noise,device_id=C leq=1.5 1\n")
    assert not w.ping()
    w.close()
