"""Benchmark: partitioned workers on the 3-node NATS cluster against the single-Mosquitto service (issue 15).

The same streams in each set-up, each set-up on a fresh InfluxDB database: `single` (one `citywatch run` on
Mosquitto, MQTT 3.1.1 like the cluster), `auto1` (one `citywatch run --partitions auto` worker), `auto2` (two)
and `failover` (two, one SIGKILLed a third into the first shape's stream; --no-failover leaves it out).

Shapes (--shapes, default both; bench/bench_throughput.py's messages), each device one paho QoS 1 client with a
persistent session (on the first node, failing over to the next), as fast as acks come back (at most 100
unacked messages per device):
  batch: every JSON device of the inventory but the probe (48), each message a minute batch of 60 samples 1 s
         apart (--samples), --readings readings;
  fast:  8 noise devices, one reading per message, --fast-readings readings.
Event times continue from set-up to set-up (the devices keep reporting), so a restored detector snapshot
never sees a reading twice.

Per set-up and shape:
- landed readings/s: readings over the time from the first publish until InfluxDB counts all of them;
- alert latency p99: meanwhile a probe gas device (not in the stream) alternates over and under its
  G-highhigh limit at 4 Hz, and an operator's client on the alert topic times publish -> notice (alerts.yaml
  is replaced by one MQTT sink without group timers or flap damping, as in bench_throughput.py);
- idle cost: before the streams, --idle-s seconds with only the probe running: CPU ms per second of each worker
  and broker node (leases, timers, snapshot saves), the fixed cost a set-up pays whatever its load;
- detected readings/s: the same readings over the time until the detectors have evaluated all of them too
  (citywatch_detection_rows_queued 0 on every worker's Prometheus endpoint; they run behind the acks);
- CPU cost: utime+stime from /proc/<pid>/stat (with the process's live descendants) from the first publish
  until the detectors have caught up, in
  CPU milliseconds per 1,000 readings, of the workers (sum, and each), of each broker node (NATS: the mean
  of the three; Mosquitto), of InfluxDB and of this process (the publishers and the probe). Cost per reading
  and per message follow from the two shapes (two equations, two unknowns), printed at the end.
The failover gap: from the kill until the survivor serves every partition (mostly the lease TTL,
connections.cluster.lease_ttl_s, 10 s). A run that did not land every reading reports `<shape>_<mode>_lost`.

Run:  .venv/bin/python bench/bench_cluster.py [--readings 100000] [--fast-readings 20000] [--samples 60]
      [--batch-rate R] [--fast-rate R] [--shapes batch,fast] [--modes single,auto1,auto2,failover]
      [--no-failover] [--quick] [--keep]
      (unpaced, the default, the detectors fall behind and the alert latency is their backlog; --batch-rate and
      --fast-rate pace the publishers, in readings/s, for the latency at a rate the set-up sustains)
      (--quick: 3,000 + 600 readings, for a check that it runs; its figures mean nothing)
Ends: RESULT bench_cluster readings=.. fast_readings=.. samples=.. load_start=.. load_end=.. then per shape and
      mode (<shape>_<mode>_): readings_s=.. detected_readings_s=.. alert_p99_ms=.. alerts=.. worker_cpu_ms_per_1k=..
      node_cpu_ms_per_1k=.. influx_cpu_ms_per_1k=.. pub_cpu_ms_per_1k=.. steps=.. (detector steps of each worker,
      citywatch_detection_steps_total) [alerts_missing=..]; failover_gap_s=..;
      per mode with both shapes (<mode>_): worker_cpu_ms_per_msg=.. worker_cpu_us_per_reading=..
      node_cpu_ms_per_msg=.. node_cpu_us_per_reading=.. idle_worker_cpu_ms_s=.. idle_node_cpu_ms_s=..
On the shared 2-core machine the publishers, three nodes, InfluxDB and the workers share the CPUs: compare
CPU costs, not wall-clock rates.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_throughput import ALERTS_YAML, Shape  # noqa: E402

from citywatch.cluster import NatsCluster  # noqa: E402
from config import load_config  # noqa: E402
from tests.integration.test_cluster import FailoverDevice, cluster_config  # noqa: E402
from tests.integration.test_cluster_auto import AutoWorker, every_partition_once, owners  # noqa: E402
from tests.integration.test_ingest_harness import ServiceProcess, config_copy  # noqa: E402
from tests.servers import InfluxServer, MosquittoServer, service_env_for  # noqa: E402

MODES = ("single", "auto1", "auto2", "failover")
STEPS = "citywatch_detection_steps_total"
TICK_S = os.sysconf("SC_CLK_TCK")


# ----- CPU time from /proc ---------------------------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def tree_cpu_s(pid: int | None) -> float:
    """utime+stime, in seconds, of `pid` and its live descendants (0.0 for a process that is gone)."""
    if pid is None:
        return 0.0
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            f = _stat(int(entry))
            if f is not None:
                parents.setdefault(int(f[1]), []).append(int(entry))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        f = _stat(p)
        if f is None:
            continue
        total += (int(f[11]) + int(f[12])) / TICK_S  # fields 14 and 15 of stat: utime, stime
        todo.extend(parents.get(p, []))
    return total


def load_avg() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99)) if values else float("nan")


# ----- InfluxDB ---------------------------------------------------------------------------------------------

PROBE_ID = ""  # the probe device, left out of the counts (set in main)


def count(influx, database: str) -> int:
    """Readings of the streams in `database` (the probe's own readings not counted)."""
    total = 0
    for measurement, field in (("noise", "leq"), ("gas_pressure", "p")):
        res = influx.query(f'SELECT count("{field}") FROM "{measurement}" WHERE "device_id" != \'{PROBE_ID}\'',
                           db=database)
        for s in res[0].get("series", []) if res else []:
            total += int(s["values"][0][1])
    return total


# A count scans every point of the database (hundreds of thousands here: tens of ms of InfluxDB's CPU each): the
# polls wait this many times as long as the last count took, so counting takes at most a tenth of a core from
# what the bench measures (bench_throughput once lost much of the machine to its own counts).
COUNT_DUTY = 10


def landed(influx, database: str, expected: int, t0: float, timeout_s: float = 300) -> tuple[int, float]:
    deadline = time.monotonic() + timeout_s
    while True:
        c0 = time.monotonic()
        n = count(influx, database)
        if n >= expected or time.monotonic() >= deadline:
            return n, time.monotonic() - t0
        time.sleep(max(0.2, COUNT_DUTY * (time.monotonic() - c0)))


def metric(procs: list, name: str) -> list[float]:
    """The unlabelled Prometheus sample `name` of each process (their endpoints, found in their logs); inf for a
    process whose endpoint or sample cannot be read."""
    out = []
    for p in procs:
        m = re.search(r"Prometheus metrics at (http://\S+/metrics)", p.log_text())
        try:
            if m is None:
                raise OSError("no metrics endpoint logged yet")
            with urllib.request.urlopen(m.group(1), timeout=5) as r:
                text = r.read().decode()
        except OSError:
            out.append(float("inf"))
            continue
        q = re.search(rf"(?m)^{re.escape(name)} (\S+)$", text)
        out.append(float(q.group(1)) if q else float("inf"))
    return out


def detection_queued(procs: list) -> float:
    """Readings handed to the detectors and not yet evaluated, summed over the processes; inf while one cannot
    be read."""
    return sum(metric(procs, "citywatch_detection_rows_queued"))


def detected(procs: list, timeout_s: float = 300) -> bool:
    """Wait (bounded) until the detectors of every process have evaluated all they were handed."""
    deadline = time.monotonic() + timeout_s
    while detection_queued(procs) > 0:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


# ----- the stream and the probe -------------------------------------------------------------------------------

def publish(shape: Shape, pubs: dict, readings: int, on_progress=None, rate: float = 0.0) -> tuple[int, int]:
    """Publish at least `readings` readings of `shape`, round robin over its devices, at most `rate` readings/s
    (0: as fast as acks come back); returns (readings, messages)."""
    sent = msgs = i = 0
    devs = shape.devices
    t0 = time.monotonic()
    while sent < readings:
        if rate > 0:
            ahead = sent / rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(ahead)
        d = devs[i % len(devs)]
        p = pubs[d.id]
        p.publish(f"city/xm/{d.kind}/{d.site}/{d.id}/data", shape.lines(d, 1).rstrip(b"\n"))
        sent += shape.samples
        msgs += 1
        i += 1
        while p.published - p.acked > 100:
            time.sleep(0.001)
        if on_progress is not None:
            on_progress(sent)
    return sent, msgs


class Probe:
    """A gas device over and under its G-highhigh limit at 4 Hz, and an operator's client on the alert topic:
    publish -> notice latency, by the notice's `ts_ns` (the probe reading's time)."""

    def __init__(self, device, password: str, operator: tuple[str, str], node: tuple[str, int]):
        self.device = device
        self.sent: dict[int, float] = {}
        self.lat: list[tuple[float, float]] = []  # (monotonic publish time, ms)
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-alert-sub-{time.monotonic_ns()}",
                               protocol=mqtt.MQTTv311)
        self.sub.username_pw_set(*operator)
        self.sub.on_connect = lambda c, u, f, rc, p=None: c.subscribe("city/xm/alerts/#", qos=1)
        self.sub.on_subscribe = lambda *a: subscribed.set()
        self.sub.on_message = self._on_message
        self.sub.connect(*node)
        self.sub.loop_start()
        if not subscribed.wait(30):
            raise RuntimeError("the probe's alert subscriber could not subscribe")
        self.pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-probe-{time.monotonic_ns()}",
                               protocol=mqtt.MQTTv311)
        self.pub.username_pw_set(device.id, password)
        self.pub.connect(*node)
        self.pub.loop_start()
        mop, full = float(device.mop_kpa or 0), float(device.full_scale_kpa or 0)
        self.high_kpa = (mop + min(full, 2 * mop)) / 2  # above the MOP (G-highhigh), within the sensor's range
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _on_message(self, client, userdata, msg) -> None:
        t = time.monotonic()
        if "/active/" in msg.topic or not msg.payload:
            return
        n = json.loads(msg.payload)
        if n.get("rule_id") == "G-highhigh" and n.get("device", {}).get("id") == self.device.id:
            with self.lock:
                t_pub = self.sent.pop(n.get("ts_ns"), None)
                if t_pub is not None:
                    self.lat.append((t_pub, (t - t_pub) * 1000))

    def _loop(self) -> None:
        high, last, d = True, 0, self.device
        while not self.stop_event.wait(0.25):
            ts = max(int(time.time() * 1000), last + 1)
            last = ts
            body = json.dumps({"schema": "xm.gas.v1", "device_id": d.id, "site_id": d.site,
                               "samples": [{"ts": ts, "values": {"p": self.high_kpa if high else d.set_pressure_kpa,
                                                                 "batt_v": 3.5}}]}).encode()
            with self.lock:
                self.sent[ts * 1_000_000] = time.monotonic()
            self.pub.publish(f"city/xm/gas/{d.site}/{d.id}/data", body, qos=1)
            high = not high

    def window(self, t_from: float, t_to: float) -> list[float]:
        with self.lock:
            return [ms for t, ms in self.lat if t_from <= t <= t_to]

    def close(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        for c in (self.pub, self.sub):
            c.disconnect()
            c.loop_stop()


# ----- one set-up ---------------------------------------------------------------------------------------------

def worker_alerts_yaml(cfg_dir: Path, work: Path, client_id: str) -> None:
    """bench_throughput's alerts.yaml (one MQTT sink, no group timers, no flap damping), with this worker's
    alert client id (two workers with one id take each other's sessions over)."""
    (cfg_dir / "alerts.yaml").write_text(ALERTS_YAML.replace("STORE", str(work / "alerts.sqlite"))
                                         + f"  mqtt_client_id: {client_id}\n")


def start_setup(mode: str, work: Path, mosq, influx, cluster, db: str):
    """The service processes of `mode`, ready; returns (processes, broker MQTT nodes, broker pids)."""
    env = dict(os.environ)
    if mode == "single":
        env.update(service_env_for(mosq, influx))
        env["CITYWATCH_INFLUX_DATABASE"] = db
        d = work / mode
        cfg_dir = config_copy(d)
        conn = cfg_dir / "connections.yaml"
        conn.write_text(conn.read_text().replace("protocol: mqtt5", "protocol: mqtt311"))
        worker_alerts_yaml(cfg_dir, d, f"citywatch-alerts-{mode}")
        ingest = cfg_dir / "ingest.yaml"  # Prometheus on any free port (logged): the detection backlog is read there
        text, k = re.subn(r"(?m)^    port: 9464\b", "    port: 0", ingest.read_text(), count=1)
        if k != 1:
            raise SystemExit("bench_cluster: no ingest.metrics_http.port 9464 in config/ingest.yaml")
        ingest.write_text(text)
        return [ServiceProcess(cfg_dir, env, d / "citywatch.log").start()], [(mosq.host, mosq.port)], [mosq.pid]
    env.update(influx.env())
    env.update(cluster.env())
    env["CITYWATCH_INFLUX_DATABASE"] = db
    env["CITYWATCH_CREDENTIALS"] = str(mosq.credentials_path)
    procs = []
    for w in range(1 if mode == "auto1" else 2):  # auto2 and failover: two workers
        d = work / f"{mode}-w{w}"
        d.mkdir()
        cfg_dir = cluster_config(d, w)
        worker_alerts_yaml(cfg_dir, d, f"citywatch-alerts-{mode}w{w}")
        procs.append(AutoWorker(cfg_dir, env, d / "citywatch.log", f"{mode}w{w}").start())
    deadline = time.monotonic() + 60
    while not (every_partition_once(owners(procs)) and all(p.owned() for p in procs)):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mode}: partitions not divided: {owners(procs)}")
        time.sleep(0.1)
    nodes = [(n.split(":")[0], int(n.split(":")[1])) for n in cluster.mqtt_nodes]
    return procs, nodes, [n.pid for n in cluster.nodes]


def run_shape(mode: str, shape: Shape, n_readings: int, rate: float, procs: list, nodes, node_pids, influx, db: str,
              mosq, results: dict) -> dict:
    pubs = {dv.id: FailoverDevice(dv.id, mosq.credentials.devices[dv.id], nodes) for dv in shape.devices}
    time.sleep(1.0)  # connected before the first publish
    before = count(influx, db)
    killed: dict[str, float] = {}
    cpu0 = {"workers": [tree_cpu_s(p.proc.pid) for p in procs], "nodes": [tree_cpu_s(p) for p in node_pids],
            "influx": tree_cpu_s(influx.pid), "pub": sum(os.times()[:2]),
            "steps": metric(procs, STEPS)}
    victim_cpu: list[float] = []

    def progress(sent: int) -> None:
        if mode == "failover" and not killed and sent >= n_readings // 3:
            victim = procs[0]
            victim_cpu.append(tree_cpu_s(victim.proc.pid) - cpu0["workers"].pop(0))
            victim.kill()
            procs.remove(victim)
            killed["at"] = time.monotonic()
        if killed and "gap" not in killed and sent % (shape.samples * 50) == 0 and every_partition_once(owners(procs)):
            killed["gap"] = time.monotonic() - killed["at"]

    t0 = time.monotonic()
    sent, msgs = publish(shape, pubs, n_readings, progress, rate)
    if killed and "gap" not in killed:
        deadline = time.monotonic() + 60
        while not every_partition_once(owners(procs)) and time.monotonic() < deadline:
            time.sleep(0.1)
        killed["gap"] = time.monotonic() - killed["at"]
    n, secs = landed(influx, db, before + sent, t0)
    n -= before
    caught_up = detected(procs)  # the CPU of detection is counted too: the detectors run behind the acks
    t1 = time.monotonic()
    # Detector steps of each worker over the run (the probe's included); a killed worker's are not known.
    steps = [b - a for a, b in zip(cpu0["steps"][len(cpu0["steps"]) - len(procs):], metric(procs, STEPS))]
    workers = victim_cpu + [tree_cpu_s(p.proc.pid) - c for p, c in zip(procs, cpu0["workers"])]
    node_cpu = [tree_cpu_s(p) - c for p, c in zip(node_pids, cpu0["nodes"])]
    influx_cpu = tree_cpu_s(influx.pid) - cpu0["influx"]
    pub_cpu = sum(os.times()[:2]) - cpu0["pub"]
    for p in pubs.values():
        p.close()
    k = 1000.0 / max(sent, 1)
    r = {"readings_s": n / secs, "window": (t0, t1), "worker_cpu": sum(workers), "workers": workers,
         "nodes": node_cpu, "node_cpu": float(np.mean(node_cpu)), "sent": sent, "msgs": msgs}
    key = f"{shape.name}_{mode}_"
    results[key + "readings_s"] = f"{n / secs:.0f}"
    results[key + "detected_readings_s"] = f"{n / (t1 - t0):.0f}" if caught_up else "nan"
    results[key + "alert_p99_ms"] = "nan"  # set by alert_latency() once the notices are in
    results[key + "worker_cpu_ms_per_1k"] = f"{sum(workers) * 1000 * k:.0f}"
    results[key + "node_cpu_ms_per_1k"] = f"{np.mean(node_cpu) * 1000 * k:.0f}"
    results[key + "influx_cpu_ms_per_1k"] = f"{influx_cpu * 1000 * k:.0f}"
    results[key + "pub_cpu_ms_per_1k"] = f"{pub_cpu * 1000 * k:.0f}"
    results[key + "steps"] = "+".join(f"{x:.0f}" for x in steps)
    if n != sent:
        results[key + "lost"] = str(sent - n)
    if "gap" in killed:
        results["failover_gap_s"] = f"{killed['gap']:.1f}"
    broker = "Mosquitto" if mode == "single" else "NATS nodes " + "/".join(f"{c * 1000 * k:.0f}" for c in node_cpu)
    print(f"{mode} {shape.name}: {n:,} of {sent:,} readings ({msgs:,} messages) in InfluxDB, {secs:.1f} s from the "
          f"first publish: {n / secs:,.0f} readings/s" + (f" (paced at {rate:,.0f}/s)" if rate > 0 else "")
          + (f"; detectors caught up after {t1 - t0:.1f} s" if caught_up else "; detectors NOT caught up in 300 s")
          + (f"; failover gap {killed['gap']:.1f} s" if "gap" in killed else ""), flush=True)
    print(f"  CPU ms per 1,000 readings: workers {sum(workers) * 1000 * k:.0f} ("
          + " + ".join(f"{c * 1000 * k:.0f}" for c in workers) + f"), {broker} "
          + (f"{node_cpu[0] * 1000 * k:.0f}" if mode == "single" else "")
          + f", InfluxDB {influx_cpu * 1000 * k:.0f}, publishers {pub_cpu * 1000 * k:.0f}; load {load_avg()}", flush=True)
    print("  detector steps: " + " + ".join(f"{x:.0f}" for x in steps)
          + f" ({sent / max(sum(steps), 1):.1f} readings a step)", flush=True)
    return r


def idle_cost(mode: str, procs: list, node_pids: list, seconds: float, results: dict) -> None:
    """CPU of each worker and broker node with no stream, only the probe (4 readings/s, each an alert transition):
    the fixed cost a set-up pays whatever its load (leases, timers, snapshot saves), in CPU ms per second."""
    if seconds <= 0:
        return
    w0, n0 = [tree_cpu_s(p.proc.pid) for p in procs], [tree_cpu_s(p) for p in node_pids]
    time.sleep(seconds)
    w = [(tree_cpu_s(p.proc.pid) - c) * 1000 / seconds for p, c in zip(procs, w0)]
    n = [(tree_cpu_s(p) - c) * 1000 / seconds for p, c in zip(node_pids, n0)]
    results[f"{mode}_idle_worker_cpu_ms_s"] = "/".join(f"{x:.0f}" for x in w)
    results[f"{mode}_idle_node_cpu_ms_s"] = "/".join(f"{x:.0f}" for x in n)
    print(f"{mode} idle (probe only, {seconds:.0f} s): CPU ms per second: workers " + " + ".join(f"{x:.0f}" for x in w)
          + ", broker node(s) " + "/".join(f"{x:.0f}" for x in n), flush=True)


def alert_latency(probe: Probe, mode: str, runs: dict[str, dict], results: dict, drain_s: float = 20.0) -> None:
    """p99 of publish -> notice for the probe readings published during each shape's run, once the notices of
    the last run are in (bounded wait: `drain_s`); a probe reading without its notice by then is counted missing."""
    deadline = time.monotonic() + drain_s
    while time.monotonic() < deadline:
        with probe.lock:
            waiting = [t for t in probe.sent.values() if time.monotonic() - t > 1.0]
        if not waiting:
            break
        time.sleep(0.2)
    with probe.lock:
        missing = list(probe.sent.values())
    for name, r in runs.items():
        lat = probe.window(*r["window"])
        miss = sum(1 for t in missing if r["window"][0] <= t <= r["window"][1])
        key = f"{name}_{mode}_"
        results[key + "alert_p99_ms"] = f"{p99(lat):.0f}"
        results[key + "alerts"] = str(len(lat))
        if miss:
            results[key + "alerts_missing"] = str(miss)
        print(f"{mode} {name}: alert latency p99 {p99(lat):.0f} ms, median {np.median(lat) if lat else float('nan'):.0f} ms,"
              f" max {max(lat) if lat else float('nan'):.0f} ms over {len(lat)} probe notices"
              + (f" ({miss} probe readings without a notice)" if miss else ""), flush=True)


def per_message_and_reading(batch: dict, fast: dict, key: str = "worker_cpu") -> tuple[float, float] | None:
    """CPU = a * messages + b * readings, from the two shapes (`key`: worker_cpu, the workers' sum, or node_cpu,
    one broker node's): (a in ms per message, b in us per reading)."""
    m = np.array([[batch["msgs"], batch["sent"]], [fast["msgs"], fast["sent"]]], dtype=float)
    try:
        a, b = np.linalg.solve(m, np.array([batch[key], fast[key]]))
    except np.linalg.LinAlgError:
        return None
    return a * 1000, b * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--readings", type=int, default=100_000, help="readings of the batch shape (default 100,000)")
    ap.add_argument("--fast-readings", type=int, default=20_000, help="readings of the fast shape (default 20,000)")
    ap.add_argument("--batch-rate", type=float, default=0.0,
                    help="publish the batch shape at this many readings/s (default 0: as fast as acks come back)")
    ap.add_argument("--fast-rate", type=float, default=0.0, help="the same for the fast shape")
    ap.add_argument("--samples", type=int, default=60, help="readings per message of the batch shape (default 60)")
    ap.add_argument("--shapes", default="batch,fast", help="batch, fast or both (default batch,fast)")
    ap.add_argument("--modes", default=",".join(MODES), help="set-ups, of " + ", ".join(MODES))
    ap.add_argument("--idle-s", type=float, default=5.0,
                    help="seconds of the fixed-cost measurement before each set-up's streams (default 5; 0: none)")
    ap.add_argument("--no-failover", action="store_true", help="leave out the run that kills a worker")
    ap.add_argument("--quick", action="store_true", help="3,000 + 600 readings: that it runs, not figures")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args()
    if args.quick:
        args.readings, args.fast_readings = 3000, 600
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    modes = [m.strip() for m in args.modes.split(",") if m.strip() and not (args.no_failover and m.strip() == "failover")]
    if args.batch_rate < 0 or args.fast_rate < 0:
        ap.error("--batch-rate and --fast-rate must be 0 (unpaced) or more")
    if args.readings < 1 or args.fast_readings < 1 or not 1 <= args.samples <= 1000:
        ap.error("--readings and --fast-readings must be at least 1, --samples between 1 and 1000")
    if not shapes or any(s not in ("batch", "fast") for s in shapes) or len(set(shapes)) != len(shapes):
        ap.error(f"--shapes takes batch and/or fast, not {args.shapes!r}")
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        ap.error(f"--modes takes {', '.join(MODES)}, not {args.modes!r}")
    work = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    cfg = load_config()
    json_devs = [d for d in cfg.devices if d.protocol == "json" and d.kind in ("noise", "gas")]
    probe_dev = next(d for d in json_devs if d.kind == "gas")
    global PROBE_ID
    PROBE_ID = probe_dev.id
    now_ms = int(time.time() * 1000)
    # Event times: batch from 6 days ago (inside ingest.backfill_max_age_s), fast from 2 h ago, 10 ms apart.
    shape_of = {"batch": Shape("batch", [d for d in json_devs if d.id != probe_dev.id], args.samples,
                               now_ms - 6 * 86400_000, 1000),
                "fast": Shape("fast", [d for d in json_devs if d.kind == "noise"][:8], 1, now_ms - 2 * 3600_000, 10)}
    readings_of = {"batch": args.readings, "fast": args.fast_readings}
    rate_of = {"batch": args.batch_rate, "fast": args.fast_rate}
    load_start = load_avg()
    print(f"load average at start {load_start}; {os.cpu_count()} CPUs", flush=True)
    influx = InfluxServer(work / "influxdb")
    mosq = MosquittoServer(work / "mosquitto")
    influx.start()
    mosq.start()
    cluster = NatsCluster(work / "cluster", mosq.credentials, cfg, partitions=4)
    cluster.start()
    results: dict[str, str] = {}
    by_mode: dict[str, dict[str, dict]] = {}
    procs: list = []
    probe: Probe | None = None
    try:
        for mode in modes:
            db = f"bench_{mode}"
            influx.create_database(db)
            procs, nodes, node_pids = start_setup(mode, work, mosq, influx, cluster, db)
            probe = Probe(probe_dev, mosq.credentials.devices[probe_dev.id], mosq.credentials.operator, nodes[0])
            idle_cost(mode, procs, node_pids, args.idle_s, results)
            for name in shapes[:1] if mode == "failover" else shapes:
                by_mode.setdefault(mode, {})[name] = run_shape(mode, shape_of[name], readings_of[name], rate_of[name],
                                                               procs, nodes, node_pids, influx, db, mosq, results)
            alert_latency(probe, mode, by_mode[mode], results)
            probe.close()
            probe = None
            for p in procs:
                p.terminate()
                p.close()
            procs = []
        for mode, rs in by_mode.items():
            if "batch" in rs and "fast" in rs:
                for what in ("worker_cpu", "node_cpu"):
                    ab = per_message_and_reading(rs["batch"], rs["fast"], what)
                    if ab is not None:
                        results[f"{mode}_{what}_ms_per_msg"] = f"{ab[0]:.3f}"
                        results[f"{mode}_{what}_us_per_reading"] = f"{ab[1]:.1f}"
                        print(f"{mode}: {'workers' if what == 'worker_cpu' else 'one broker node'} CPU = {ab[0]:.3f} ms "
                              f"per message + {ab[1]:.1f} us per reading")
    finally:
        if probe is not None:
            probe.close()
        for p in procs:
            p.close()
        cluster.stop()
        mosq.stop()
        influx.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"work directory kept: {work}")
    print(f"RESULT bench_cluster readings={args.readings} fast_readings={args.fast_readings} samples={args.samples} "
          f"load_start={load_start} load_end={load_avg()} " + " ".join(f"{k}={v}" for k, v in results.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
