"""Shared helpers of the ingest integration tests: a `citywatch run` subprocess, device publishers, payloads.

Also holds the basic end-to-end test (paho and mosquitto_pub devices -> InfluxDB, counted by InfluxQL).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config import load_config

ROOT = Path(__file__).resolve().parents[2]
CFG = load_config(ROOT / "config")
NOISE_JSON = [d for d in CFG.devices if d.kind == "noise" and d.protocol == "json"]
GAS = [d for d in CFG.devices if d.kind == "gas"]

pytestmark = [pytest.mark.integration, pytest.mark.shared_influx]


def config_copy(tmp_path: Path, **ingest) -> Path:
    """A copy of the shipped config under tmp_path/config (spool and dead letters land in tmp_path/var).

    `ingest` overrides keys of the ingest section (for example batch_max_rows=500)."""
    dst = tmp_path / "config"
    dst.mkdir(parents=True, exist_ok=True)
    for f in (ROOT / "config").glob("*.yaml"):
        shutil.copy(f, dst / f.name)
    if ingest:
        text = (dst / "ingest.yaml").read_text().splitlines()
        out = []
        for line in text:
            key = line.strip().split(":")[0]
            if key in ingest and line.startswith("  "):
                out.append(f"  {key}: {ingest[key]}")
            else:
                out.append(line)
        (dst / "ingest.yaml").write_text("\n".join(out) + "\n")
    return dst


class ServiceProcess:
    """`citywatch run` as a subprocess (its own session), stopped by pid."""

    def __init__(self, config_dir: Path, env: dict, log_path: Path):
        self.config_dir = config_dir
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def launch(self) -> None:
        """Start the process (again, after a kill: the log goes on, `log_text` reads from here); do not wait."""
        if getattr(self, "_log", None):
            self._log.close()
        self._log = open(self.log_path, "ab")
        # Not the config's parent: a `config/` directory in the working directory would shadow the package.
        workdir = self.log_path.parent / "cwd"
        workdir.mkdir(exist_ok=True)
        self._offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "citywatch", "run", "--config", str(self.config_dir)],
            env=self.env, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=str(workdir),
        )

    def start(self, timeout_s: float = 30.0) -> ServiceProcess:
        """Launch and wait until the collector is connected; RuntimeError (the log's tail) if it is not."""
        self.launch()
        # A first connection the broker drops at once (seen under load: "connection lost: Unspecified error")
        # is retried by paho, and the log then says "back after" instead of "connected to".
        if not self.wait_log(("connected to MQTT broker", "(collector) back after"), timeout_s):
            self.kill()
            raise RuntimeError(f"citywatch run did not connect:\n{self.log_tail()}")
        return self

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")[self._offset:]

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_log(self, needle: str | tuple[str, ...], timeout_s: float) -> bool:
        """Whether the log (since this start) shows `needle` (or any of several) within `timeout_s`."""
        needles = (needle,) if isinstance(needle, str) else needle
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if any(n in self.log_text() for n in needles):
                return True
            if self.proc is not None and self.proc.poll() is not None:
                return any(n in self.log_text() for n in needles)
            time.sleep(0.05)
        return False

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait for the graceful stop; returns the exit code."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        os.kill(self.proc.pid, signal.SIGTERM)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def close(self) -> None:
        self.kill()
        if getattr(self, "_log", None):
            self._log.close()


def noise_payload(device, ts_ms: list[int], leq: float = 61.8) -> bytes:
    samples = [{"ts": t, "values": {"leq": leq, "lmax": leq + 15, "lmin": leq - 10, "flag": "N"}} for t in ts_ms]
    return json.dumps({"schema": "xm.noise.v1", "device_id": device.id, "site_id": device.site,
                       "interval_s": 60, "samples": samples}).encode()


def gas_payload(device, ts_ms: list[int], p: float | None = None) -> bytes:
    p = device.set_pressure_kpa if p is None else p
    samples = [{"ts": t, "values": {"p": p, "batt_v": 3.5}} for t in ts_ms]
    return json.dumps({"schema": "xm.gas.v1", "device_id": device.id, "site_id": device.site,
                       "samples": samples}).encode()


def data_topic(device) -> str:
    return f"city/xm/{device.kind}/{device.site}/{device.id}/data"


class DevicePublisher:
    """A paho client connected as one device (its own credentials), publishing at QoS 1."""

    def __init__(self, mosquitto, device_id: str):
        # A persistent session, as field devices keep: publishes cut short by a broker restart are resent.
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{device_id}", protocol=mqtt.MQTTv5)
        self.client.username_pw_set(device_id, mosquitto.credentials.devices[device_id])
        self.client.max_inflight_messages_set(200)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(1, 2)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
        self.client.connect(mosquitto.host, mosquitto.port, clean_start=False, properties=props)
        self.published = 0
        self.acked = 0
        self.client.on_publish = self._on_publish
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)
        self.published += 1

    def _on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.acked += 1

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until the broker acked every publish (bounded)."""
        deadline = time.monotonic() + timeout_s
        # Counted through on_publish, not wait_for_publish(): that raises for a message queued while the
        # broker was away, which paho still sends after reconnecting.
        while self.acked < self.published and time.monotonic() < deadline:
            time.sleep(0.01)
        if self.acked < self.published:
            raise RuntimeError(f"{self.published - self.acked} publish(es) not acknowledged by the broker in time")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def mosquitto_pub(mosquitto, device_id: str, topic: str, payload: bytes) -> None:
    """Publish once with the mosquitto_pub command-line client, QoS 1, as a device."""
    subprocess.run(
        ["mosquitto_pub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-u", device_id,
         "-P", mosquitto.credentials.devices[device_id], "-q", "1", "-t", topic, "-s"],
        input=payload, check=True, timeout=20, capture_output=True,
    )


def counts(influx) -> tuple[int, int]:
    """(noise points, gas points) in InfluxDB, by a field every row of our payloads carries."""
    return influx.count("noise", "leq"), influx.count("gas_pressure", "p")


def wait_counts(influx, expected: tuple[int, int], timeout_s: float) -> tuple[int, int]:
    """Poll the counts until they reach `expected` or the timeout passes (bounded); return the last counts."""
    deadline = time.monotonic() + timeout_s
    got = counts(influx)
    while got != expected and time.monotonic() < deadline:
        time.sleep(0.25)
        got = counts(influx)
    return got


class Stream:
    """Publishes a numbered stream of readings from several devices in a background thread.

    Every reading has a distinct (device, ts), so the expected point count is exact. `rate` in messages/s
    (0 = as fast as possible).
    """

    def __init__(self, mosquitto, devices, messages: int, samples_per_message: int = 1, rate: float = 0,
                 t0_ms: int | None = None):
        self.devices = devices
        self.messages = messages
        self.k = samples_per_message
        self.rate = rate
        self.t0_ms = t0_ms or (time.time_ns() // 1_000_000 - 3_600_000)
        self.publishers = {d.id: DevicePublisher(mosquitto, d.id) for d in devices}
        self.sent = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def expected(self) -> tuple[int, int]:
        noise = sum(1 for i in range(self.messages) if self.devices[i % len(self.devices)].kind == "noise")
        return noise * self.k, (self.messages - noise) * self.k

    def _run(self) -> None:
        try:
            start = time.monotonic()
            for i in range(self.messages):
                d = self.devices[i % len(self.devices)]
                seq = i // len(self.devices)
                ts = [self.t0_ms + (seq * self.k + j) * 10 for j in range(self.k)]
                payload = noise_payload(d, ts) if d.kind == "noise" else gas_payload(d, ts)
                self.publishers[d.id].publish(data_topic(d), payload)
                self.sent = i + 1
                if self.rate:
                    ahead = (i + 1) / self.rate - (time.monotonic() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            for p in self.publishers.values():
                p.flush(120)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc

    def start(self) -> Stream:
        self._thread.start()
        return self

    def wait_sent(self, n: int, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.sent < n and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)

    def join(self, timeout_s: float = 180) -> None:
        self._thread.join(timeout_s)
        assert not self._thread.is_alive(), "publisher did not finish in time"
        if self.error:
            raise self.error
        for p in self.publishers.values():
            p.close()


@pytest.fixture
def service_factory(tmp_path, service_env):
    """Start `citywatch run` processes on a copy of the config; every one is killed after the test."""
    procs: list[ServiceProcess] = []

    def make(config_dir: Path | None = None, **ingest) -> ServiceProcess:
        cfg_dir = config_dir or config_copy(tmp_path, **ingest)
        proc = ServiceProcess(cfg_dir, service_env, tmp_path / "citywatch.log")
        procs.append(proc)
        return proc.start()

    yield make
    for p in procs:
        p.close()


def test_readings_from_paho_and_mosquitto_pub_land_once(mosquitto, influx, service_factory):
    svc = service_factory()
    stream = Stream(mosquitto, [NOISE_JSON[0], GAS[0], GAS[1]], messages=600, samples_per_message=5).start()
    stream.join()
    # mosquitto_pub, the broker's own client, publishes a batch of 3 and a single-sample message.
    t = time.time_ns() // 1_000_000 - 60_000
    dev = NOISE_JSON[1]
    mosquitto_pub(mosquitto, dev.id, data_topic(dev), noise_payload(dev, [t, t + 1000, t + 2000]))
    mosquitto_pub(mosquitto, dev.id, data_topic(dev), noise_payload(dev, [t + 3000]))
    noise, gas = stream.expected()
    expected = (noise + 4, gas)
    assert wait_counts(influx, expected, 60) == expected
    # Redelivery: the very same messages again add no point (series + timestamp identify a point).
    mosquitto_pub(mosquitto, dev.id, data_topic(dev), noise_payload(dev, [t, t + 1000, t + 2000]))
    again = Stream(mosquitto, [NOISE_JSON[0], GAS[0], GAS[1]], messages=600, samples_per_message=5,
                   t0_ms=stream.t0_ms).start()
    again.join()
    marker_t = t + 10_000
    mosquitto_pub(mosquitto, dev.id, data_topic(dev), noise_payload(dev, [marker_t]))
    expected = (expected[0] + 1, expected[1])
    assert wait_counts(influx, expected, 60) == expected
    time.sleep(1.0)
    assert counts(influx) == expected
    assert svc.terminate() == 0
    assert "stopped" in svc.log_text()


def test_status_messages_land_and_status_command_reports(tmp_path, mosquitto, influx, service_factory, service_env):
    cfg_dir = config_copy(tmp_path, metrics_interval_s=0.5)
    svc = service_factory(cfg_dir)
    dev = GAS[2]
    pub = DevicePublisher(mosquitto, dev.id)
    pub.publish(f"city/xm/gas/{dev.site}/{dev.id}/status", b"online", retain=True)
    t = time.time_ns() // 1_000_000 - 10_000
    pub.publish(data_topic(dev), gas_payload(dev, [t, t + 1000]))
    pub.flush()
    pub.close()
    assert wait_counts(influx, (0, 2), 30) == (0, 2)
    deadline = time.monotonic() + 20
    status_points = 0
    while time.monotonic() < deadline and not status_points:
        status_points = influx.count("device_status", "online")
        time.sleep(0.1)
    assert status_points == 1
    # Self-metrics reach InfluxDB, and `citywatch status` shows them with the spool depth.
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not influx.count("citywatch_internal", "rows_written"):
        time.sleep(0.2)
    # The count of rows written is the lines InfluxDB got: 2 readings and the status line (the pipeline passes
    # the count it knows instead of counting the lines).
    written = 0
    while time.monotonic() < deadline and written < 3:
        res = influx.query('SELECT last("rows_written") FROM "citywatch_internal"')
        written = int(res[0]["series"][0]["values"][0][1])
        time.sleep(0.2)
    assert written == 3
    out = subprocess.run([sys.executable, "-m", "citywatch", "status", "--config", str(cfg_dir)], env=service_env,
                         capture_output=True, text=True, timeout=60, cwd=str(tmp_path / "cwd"))
    assert out.returncode == 0, out.stderr
    assert "spool" in out.stdout and "0 batch(es)" in out.stdout
    assert "rows_decoded" in out.stdout and "MQTT connected" in out.stdout
    assert svc.terminate() == 0


def test_mqtt_311_collector_lands_every_reading(tmp_path, mosquitto, influx, service_factory):
    cfg_dir = config_copy(tmp_path)
    conn = (cfg_dir / "connections.yaml").read_text().replace("protocol: mqtt5", "protocol: mqtt311")
    (cfg_dir / "connections.yaml").write_text(conn)
    svc = service_factory(cfg_dir)
    stream = Stream(mosquitto, [NOISE_JSON[0], GAS[0]], messages=3000).start()
    stream.join()
    assert wait_counts(influx, stream.expected(), 60) == stream.expected()
    assert svc.terminate() == 0


@pytest.mark.parametrize("decode_processes", [0, 1])
def test_in_process_service_calls_on_batch_and_on_decoded_with_every_row_in_order(
        tmp_path, mosquitto, influx, service_env, decode_processes):
    from citywatch.service import Service

    cfg = load_config(config_copy(tmp_path, batch_max_rows=50), env=service_env)
    svc = Service(cfg, env=service_env, decode_processes=decode_processes)
    seen, decoded = [], []
    svc.on_batch(lambda b: seen.append((len(b), b.ts_ns.copy())))
    svc.on_decoded(lambda b: decoded.append(b.ts_ns.copy()))
    svc.start()
    try:
        assert svc.collector.wait_connected(20)
        # Two halves, the second sent once the first is in InfluxDB: at least two batches whatever the
        # machine's load (a busy decode worker may hand over a whole burst as one chunk, one batch).
        t0 = time.time_ns() // 1_000_000 - 3_600_000
        first = Stream(mosquitto, [GAS[3]], messages=50, samples_per_message=3, t0_ms=t0).start()
        first.join()
        assert wait_counts(influx, first.expected(), 60) == first.expected()
        second = Stream(mosquitto, [GAS[3]], messages=50, samples_per_message=3, t0_ms=t0 + 10_000).start()
        second.join()
        total = tuple(a + b for a, b in zip(first.expected(), second.expected()))
        assert wait_counts(influx, total, 60) == total
    finally:
        assert svc.stop()
    assert sum(n for n, _ in seen) == 300 and len(seen) >= 2
    ts = [int(t) for _, arr in seen for t in arr]
    assert ts == sorted(ts)  # one device publishing in order: batches arrive in order
    # The detectors' early feed: the same rows, in the same order, chunk by chunk as they were decoded.
    assert [int(t) for arr in decoded for t in arr] == ts


def test_acks_reach_the_broker_so_a_restart_gets_no_redelivery(tmp_path, mosquitto, influx, service_factory):
    """Idempotent writes would hide lost acks from every count; here the second run must receive nothing."""
    cfg_dir = config_copy(tmp_path)
    svc = service_factory(cfg_dir)
    stream = Stream(mosquitto, [NOISE_JSON[0], GAS[0]], messages=3000).start()
    stream.join()
    assert wait_counts(influx, stream.expected(), 60) == stream.expected()
    assert svc.terminate() == 0
    svc = service_factory(cfg_dir)
    time.sleep(2.0)  # give the broker time to redeliver anything it still holds for the session
    assert svc.terminate() == 0  # the final self-metrics point is written on the way out
    res = influx.query('SELECT last("messages_received") FROM "citywatch_internal" WHERE "kind" = \'collector\'')
    assert res[0]["series"][0]["values"][0][1] == 0


@pytest.mark.parametrize("decode_processes", [1, 0], ids=["worker_process", "thread"])
def test_reload_adds_a_device_without_restart(tmp_path, mosquitto, influx, service_env, decode_processes):
    from citywatch.service import Service

    cfg_dir = config_copy(tmp_path)
    cfg = load_config(cfg_dir, env=service_env)
    svc = Service(cfg, env=service_env, decode_processes=decode_processes)
    svc.start()
    g = GAS[0]
    topic = f"city/xm/gas/{g.site}/TESTDEV1/data"

    def send(ts):
        pub = DevicePublisher(mosquitto, "TESTDEV1")
        body = json.dumps({"samples": [{"ts": ts, "values": {"p": g.set_pressure_kpa}}]}).encode()
        pub.publish(topic, body)
        pub.flush()
        pub.close()

    try:
        assert svc.collector.wait_connected(20)
        t = time.time_ns() // 1_000_000 - 60_000
        send(t)  # not in the inventory yet: dead-lettered
        store = tmp_path / "var" / "deadletter" / "deadletter.jsonl"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (store.exists() and "unknown_device" in store.read_text()):
            time.sleep(0.1)
        assert "unknown_device" in store.read_text()
        with open(cfg_dir / "inventory.yaml", "a") as f:
            f.write(f"  - id: TESTDEV1\n    kind: gas\n    site: {g.site}\n    report_interval_s: 900\n"
                    f"    pressure_class: {g.pressure_class}\n    set_pressure_kpa: {g.set_pressure_kpa}\n"
                    f"    mop_kpa: {g.mop_kpa}\n    full_scale_kpa: {g.full_scale_kpa}\n")
        svc.reload(load_config(cfg_dir, env=service_env))
        send(t + 1000)
        assert wait_counts(influx, (0, 1), 60) == (0, 1)
        res = influx.query("SELECT count(\"p\") FROM gas_pressure WHERE device_id = 'TESTDEV1'")
        assert res[0]["series"][0]["values"][0][1] == 1
    finally:
        assert svc.stop()
