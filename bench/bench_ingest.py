"""Benchmark of ingest on one broker and one database: what the parts can do, and what citywatch does end to end.

Measures, on the same local Mosquitto (auth, ACL, persistence, raised limits) and InfluxDB 1.x:
  1. bare paho-mqtt QoS 1 subscriber: messages/s it receives from a backlog queued in its persistent session;
  2. InfluxDB: points/s it accepts as line protocol in 5,000-point batches (one client, sequential);
  3. `citywatch run` end to end: readings landed in InfluxDB per second (counted there), for a backlog of
     single-reading messages and one of 60-sample batch messages (queued while it was stopped, then started);
  4. collector memory (RSS) while devices publish at a steady rate for --duration seconds.

Run:  .venv/bin/python bench/bench_ingest.py [--messages 50000] [--batch-messages 8000] [--duration 30] [--repeat 2]
      (--duration 300 for the 5-minute memory run)
Ends with: RESULT bench_ingest bare_sub_msg_s=.. influx_points_s=.. cw_single_readings_s=.. single_ratio=..
           cw_batch60_readings_s=.. batch_ratio=.. rss_start_mb=.. rss_end_mb=.. rss_max_mb=..
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from citywatch.localstack import Credentials, InfluxProcess, MosquittoProcess, free_port  # noqa: E402
from config import load_config  # noqa: E402
from core import ReadingBatch  # noqa: E402
from ingest.influx_writer import V1Writer  # noqa: E402
from ingest.lineproto import encode  # noqa: E402


def client(cid: str, user: str, pw: str, port: int, persistent: bool = False, on_message=None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, pw)
    c.max_inflight_messages_set(500)
    c.max_queued_messages_set(0)
    if on_message:
        c.on_message = on_message
    props = None
    if persistent:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600
    c.connect("127.0.0.1", port, clean_start=not persistent, properties=props)
    c.loop_start()
    return c


class Publisher:
    """Device publishers (one client per device, its own credentials) publishing prebuilt payloads."""

    def __init__(self, devices, creds: Credentials, port: int):
        self.devices = devices
        self.clients = {d.id: client(f"bench-{d.id}", d.id, creds.devices[d.id], port) for d in devices}
        self.acked = 0
        for c in self.clients.values():
            c.on_publish = self._on_publish

    def _on_publish(self, *a) -> None:
        self.acked += 1

    def publish_all(self, payloads: list[tuple[str, str, bytes]], rate: float = 0.0) -> float:
        """Publish (device_id, topic, payload) in order at `rate` msg/s (0: as fast as acks allow);
        wait until the broker acked them all; return the publish rate."""
        start = time.monotonic()
        base = self.acked
        for i, (dev, topic, payload) in enumerate(payloads):
            self.clients[dev].publish(topic, payload, qos=1)
            if rate:
                ahead = (i + 1) / rate - (time.monotonic() - start)
                if ahead > 0:
                    time.sleep(ahead)
            elif i - (self.acked - base) > 5000:
                time.sleep(0.001)  # keep paho's queue short
        deadline = time.monotonic() + 300
        while self.acked - base < len(payloads) and time.monotonic() < deadline:
            time.sleep(0.005)
        return len(payloads) / (time.monotonic() - start)

    def close(self) -> None:
        for c in self.clients.values():
            c.disconnect()
            c.loop_stop()


def payloads(devices, n_messages: int, samples: int, t0_ms: int) -> tuple[list, int]:
    """Prebuilt gas messages with distinct (device, ts) for every reading; returns (messages, readings)."""
    out = []
    for i in range(n_messages):
        d = devices[i % len(devices)]
        seq = i // len(devices)
        base = t0_ms + seq * samples * 10
        smp = [{"ts": base + j * 10, "values": {"p": round(d.set_pressure_kpa * (1 + 0.01 * ((i + j) % 7)), 3)}}
               for j in range(samples)]
        body = json.dumps({"schema": "xm.gas.v1", "device_id": d.id, "site_id": d.site, "samples": smp}).encode()
        out.append((d.id, f"city/xm/gas/{d.site}/{d.id}/data", body))
    return out, n_messages * samples


BARE_PREFIX = "city/xm/internal/bench/"
bare_cpu_us = [0.0]  # CPU µs per message of the last bare-subscriber run (this process)


class TesterPublisher(Publisher):
    """Publishes as the service's account under city/xm/internal/bench/, a subtree the collector does not
    subscribe to (its session must not queue the bare subscriber's messages) and the only one outside the
    device topics that the broker's ACL lets an account both write and read."""

    def __init__(self, creds: Credentials, port: int):
        self.acked = 0
        c = client("bench-tester-pub", *creds.collector, port)
        c.on_publish = self._on_publish
        self.clients = {"tester": c}

    def publish_all(self, payloads, rate: float = 0.0) -> float:
        moved = [("tester", BARE_PREFIX + topic.split("/", 3)[3], body) for _, topic, body in payloads]
        return super().publish_all(moved, rate)


def bare_subscriber_rate(mosq, creds: Credentials, pub: Publisher, msgs) -> float:
    user, pw = creds.collector
    sub = client("bench-bare-sub", user, pw, mosq.port, persistent=True)
    done = threading.Event()
    sub.subscribe(BARE_PREFIX + "#", qos=1)
    time.sleep(0.5)
    sub.disconnect()
    sub.loop_stop()
    tester = TesterPublisher(creds, mosq.port)
    tester.publish_all(msgs)
    tester.close()
    n = len(msgs)
    got = [0]

    def on_message(c, u, m):
        got[0] += 1
        if got[0] >= n:
            done.set()

    t0 = time.monotonic()
    c0 = time.process_time()
    sub = client("bench-bare-sub", user, pw, mosq.port, persistent=True, on_message=on_message)
    done.wait(300)
    rate = got[0] / (time.monotonic() - t0)
    bare_cpu_us[0] = (time.process_time() - c0) / max(1, got[0]) * 1e6
    sub.disconnect()
    sub.loop_stop()
    # End the session, so that the broker does not keep queueing for it during the citywatch runs.
    sub = client("bench-bare-sub", user, pw, mosq.port, persistent=False)
    time.sleep(0.2)
    sub.disconnect()
    sub.loop_stop()
    return rate


def influx_ingest_rate(influx, cfg, points: int, rnd: int = 0) -> float:
    w = V1Writer(influx.url, "bench_raw", influx.username, influx.password)
    influx.create_database("bench_raw")  # as admin, granted to the citywatch account the writer uses
    idx = np.array([cfg.device_index(d.id) for d in cfg.devices if d.kind == "gas"])
    t0 = time.time_ns() - (3 * 86400 - rnd * 3600) * 10**9
    bodies = []
    for start in range(0, points, 5000):
        n = min(5000, points - start)
        rows = np.arange(start, start + n)
        batch = ReadingBatch(idx[rows % len(idx)], t0 + rows * 1_000_000, {"p": 2.0 + (rows % 100) / 100})
        bodies.append(encode(batch, cfg))
    t = time.monotonic()
    for body in bodies:
        w.write(body)
    return points / (time.monotonic() - t)


def rss_mb(pid: int) -> float:
    """RSS of a process and its children (the decode worker), MB."""
    total = 0.0
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            return float("nan")
    return total


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by a process and its live children (the decode worker)."""
    tick = os.sysconf("SC_CLK_TCK")
    pids = [pid]
    try:
        pids += [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    total = 0.0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, IndexError, ValueError):
            pass
    return total


def settle(pid: int, busy_s: float = 0.05, timeout_s: float = 60.0) -> None:
    """Wait (bounded) until a process uses less than `busy_s` CPU seconds per second."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        c0 = cpu_s(pid)
        time.sleep(1.0)
        if cpu_s(pid) - c0 < busy_s:
            return


class Collector:
    """`citywatch run` as a subprocess against the bench servers."""

    def __init__(self, work: Path, env: dict):
        self.work = work
        self.env = env
        self.proc = None
        self.log = work / "citywatch.log"

    def start(self) -> float:
        """Start and wait until connected; return the monotonic time of the connection."""
        offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "citywatch", "run", "--config", str(self.work / "config"), "--log-level", "INFO"],
            env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, cwd=str(self.work / "cwd"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if "connected to MQTT broker" in self.log.read_text(errors="replace")[offset:]:
                return time.monotonic()
            if self.proc.poll() is not None:
                break
            time.sleep(0.01)
        raise RuntimeError("citywatch did not connect:\n" + self.log.read_text()[-3000:])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(120)


def wait_count(influx, target: int, t0_ms: int, timeout_s: float = 900) -> float:
    """Poll until `target` gas points with ts >= t0_ms (one run's range: a cheap count) are in InfluxDB."""
    where = f"time >= {t0_ms * 1_000_000}"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if influx.count("gas_pressure", "p", where) >= target:
            return time.monotonic()
        time.sleep(0.25)
    raise RuntimeError(f"only {influx.count('gas_pressure', 'p', where)} of {target} points landed")


def end_to_end(coll: Collector, pub: Publisher, influx, msgs, readings: int, t0_ms: int) -> tuple[float, list]:
    """Queue `msgs` while the collector is stopped, start it, time until every reading is counted."""
    pub.publish_all(msgs)
    t0 = coll.start()
    rss = []
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            rss.append(rss_mb(coll.proc.pid))

    th = threading.Thread(target=sample, daemon=True)
    cpu0 = cpu_s(coll.proc.pid)
    th.start()
    t1 = wait_count(influx, readings, t0_ms)
    cpu = cpu_s(coll.proc.pid) - cpu0
    stop.set()
    th.join()
    coll.stop()
    return readings / (t1 - t0), rss, cpu / readings * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=50_000, help="single-reading messages per run (default 50000)")
    ap.add_argument("--batch-messages", type=int, default=8_000, help="60-sample messages (default 8000)")
    ap.add_argument("--influx-points", type=int, default=300_000, help="points for the InfluxDB rate (default 300000)")
    ap.add_argument("--duration", type=float, default=30, help="seconds of the steady memory run (300 = 5 min)")
    ap.add_argument("--rate", type=float, default=1000, help="messages/s of the memory run (10-sample messages)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, data) afterwards")
    ap.add_argument("--repeat", type=int, default=2, help="rounds of the rate measurements; best of each (default 2)")
    args = ap.parse_args()

    cfg = load_config(ROOT / "config")
    gas = [d for d in cfg.devices if d.kind == "gas"]
    work = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    (work / "cwd").mkdir()
    shutil.copytree(ROOT / "config", work / "config", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    creds = Credentials.generate(cfg.device_ids)
    mosq = MosquittoProcess(work / "mosquitto", free_port(), creds)
    influx = InfluxProcess(work / "influxdb", free_port(), free_port())
    mosq.start()
    influx.start()
    env = dict(os.environ)
    env.update({
        "CITYWATCH_MQTT_HOST": "127.0.0.1", "CITYWATCH_MQTT_PORT": str(mosq.port),
        "CITYWATCH_MQTT_USERNAME": creds.collector[0], "CITYWATCH_MQTT_PASSWORD": creds.collector[1],
        **influx.env(),
    })
    coll = Collector(work, env)
    pub = Publisher(gas, creds, mosq.port)
    try:
        print(f"bench_ingest: work dir {work}; {os.cpu_count()} CPUs")
        t0_ms = time.time_ns() // 1_000_000 - 6 * 86400_000
        # Each figure is the best of --repeat rounds, measured in turn, so that a busy moment on a shared
        # machine does not decide a ratio. Every round writes its own time range (counts stay exact).
        bare = ingest = cw_single = cw_batch = 0.0
        rss1: list[float] = []
        coll.start()  # creates the collector's persistent session
        coll.stop()
        for rnd in range(args.repeat):
            base = t0_ms + rnd * 86400_000
            single, n_single = payloads(gas, args.messages, 1, base)
            batch, n_batch = payloads(gas, args.batch_messages, 60, base + 12 * 3600_000)
            # InfluxDB compacts in the background after a burst; each measurement starts from a quiet server.
            settle(influx.pid)
            b = bare_subscriber_rate(mosq, creds, pub, single)
            settle(influx.pid)
            s, r1, s_cpu = end_to_end(coll, pub, influx, single, n_single, base)
            settle(influx.pid)
            c, r2, c_cpu = end_to_end(coll, pub, influx, batch, n_batch, base + 12 * 3600_000)
            settle(influx.pid)
            i = influx_ingest_rate(influx, cfg, args.influx_points, rnd)
            print(f"round {rnd + 1}: bare {b:,.0f} msg/s, InfluxDB {i:,.0f} points/s, citywatch single {s:,.0f} "
                  f"readings/s ({s / b:.0%}), batch {c:,.0f} readings/s ({c / i:.0%}); CPU per reading: bare "
                  f"subscriber {bare_cpu_us[0]:.0f} µs, citywatch single {s_cpu:.0f} µs, batch {c_cpu:.1f} µs")
            bare, ingest, cw_single, cw_batch = max(bare, b), max(ingest, i), max(cw_single, s), max(cw_batch, c)
            rss1 += r1 + r2
        rss2: list[float] = []
        print(f"1. bare paho subscriber, QoS 1:        {bare:>10,.0f} msg/s  ({args.messages:,} queued messages)")
        print(f"2. InfluxDB line protocol, 5,000/batch: {ingest:>10,.0f} points/s ({args.influx_points:,} points)")
        print(f"3a. citywatch, single-reading messages:{cw_single:>10,.0f} readings/s = {cw_single / bare:.0%} of bare")
        print(f"3b. citywatch, 60-sample messages:     {cw_batch:>10,.0f} readings/s = {cw_batch / ingest:.0%} of "
              f"InfluxDB ({args.batch_messages:,} messages)")

        # Steady run: devices publish live while the collector runs; RSS sampled every second.
        n_live = int(args.duration * args.rate)
        live, n_live_readings = payloads(gas, n_live, 10, t0_ms + 5 * 86400_000 + 3600_000)
        coll.start()
        rss: list[float] = []
        stop = threading.Event()

        def sample():
            while not stop.wait(1.0):
                rss.append(rss_mb(coll.proc.pid))

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        achieved = pub.publish_all(live, rate=args.rate)
        wait_count(influx, n_live_readings, t0_ms + 5 * 86400_000 + 3600_000)
        stop.set()
        th.join()
        coll.stop()
        rss = [r for r in rss if r == r]
        q = max(1, len(rss) // 4)
        first, last = float(np.median(rss[:q])), float(np.median(rss[-q:]))
        print(f"4. memory over {args.duration:.0f} s at {achieved:,.0f} msg/s ({n_live_readings:,} readings): "
              f"RSS first quarter {first:.1f} MB, last quarter {last:.1f} MB, max {max(rss):.1f} MB")
        print(f"   (RSS during the backlog runs: max {max(rss1 + rss2 + [0]):.1f} MB)")
        print(f"RESULT bench_ingest bare_sub_msg_s={bare:.0f} influx_points_s={ingest:.0f} "
              f"cw_single_readings_s={cw_single:.0f} single_ratio={cw_single / bare:.2f} "
              f"cw_batch60_readings_s={cw_batch:.0f} batch_ratio={cw_batch / ingest:.2f} "
              f"rss_start_mb={first:.1f} rss_end_mb={last:.1f} rss_max_mb={max(rss):.1f} duration_s={args.duration:.0f}")
    finally:
        coll.stop()
        pub.close()
        mosq.kill()
        mosq.remove_broker_dir()
        influx.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
