"""Benchmark: the whole service as users run it (`citywatch run`, every shipped rule on) under two stream shapes.

Shapes (issue 17), published by `mosquitto_pub -l` processes (one per device, its own account, QoS 1):
  single: 8 noise devices, each message one ThingsBoard-style reading `{"ts", "values": {leq, lmax, lmin, l90}}`;
  batch:  every JSON device of the inventory (gas and noise), each message a 60-sample batch (1 s apart).
For each shape: InfluxDB's own ingest of the shape, over a sustained volume (below); a bare paho QoS 1
subscriber's rate for the same publishers and messages (same broker, same run); then a paced ramp of steps
(single 1,000-65,000 readings/s, batch 15,000-470,000/s: on past what a quiet machine sustains, so the ramp ends
at a failing step and the sustained rate is measured, not capped by the list) until a step loses or lags (its readings not all in InfluxDB within
--grace seconds of the step's end, or landing both while it publishes (a fit to the service's count of rows
InfluxDB accepted, scraped every 0.5 s) and until the last one landed at under --pace of the rate they were
published at, or the detectors' oldest waiting arrival older than --lag-s);
the sustained rate is the best passing step's readings over the time until its last one was written (the
service's count, then checked by counting them in InfluxDB); then a burst as fast as the publishers go, timed
the same way. InfluxDB's counts cover only the event times of the current step or burst (a count scans every
point in its window: over a whole run, 200 ms of InfluxDB's CPU each, which took the machine from the service
at the high steps when the bench counted every 0.5 s). Meanwhile a probe
gas device alternates over and under its G-highhigh limit at 4 Hz: publish -> alert notice latency on the
MQTT alert topic (alerts.yaml is replaced by one MQTT sink without group timers or flap damping, so the
latency is the pipeline's, not a routing policy's). The service's own view (detection backlog, late and
skipped alert ticks) is read from its Prometheus endpoint. Each step also says where the machine's cores went:
CPU per 1,000 readings of the service (main process, decode worker), Mosquitto, InfluxDB and the publishers
(/proc), with one decimal, and how busy the whole machine was.

InfluxDB's own ingest: the service's line protocol for the shape (the bench's messages with event times 12 h
before the service's, through the service's decoder and encoder, prepared before the clock starts; the time it
took is printed), POSTed straight to a new database of its own in `ingest.batch_max_rows`-line writes over one
keep-alive connection, as the service's writer does; the database is dropped afterwards. The volume is as many
readings as the ramp's top step writes (--step-s x its rate: 325,000 single, 2,350,000 batch by default), at
least the burst's; --influx-readings N to choose. Why the volume: a short write into a new database pays fixed
costs (shard creation, first writes) that a sustained stream does not, and the service's steps write a million
readings and more into a warm database: in one run (batch) 120,000 readings (the burst's volume) went in at
312,712/s, 3.8 InfluxDB CPU ms per 1,000 readings, and 1,200,000 at 469,464/s, 2.6 ms; in another, the default
2,350,020 at 555,180/s, 2.2 ms (its first 120,000 at 400,488/s, 2.9 ms). Both figures are printed:
over the first burst's worth of readings and over the whole volume; the whole volume's is the one in
`influx_ratio` and the RESULT.

Run:  .venv/bin/python bench/bench_throughput.py [--broker raised|stock] [--shapes single,batch]
      [--burst-single 50000] [--burst-batch 2000] [--influx-readings N] [--step-s 5] [--pace 0.95] [--rules on|off]
      [--ack-after spool|influxdb] [--influx-cpus LIST] [--profile DIR] [--keep]
      (--burst-single 100000 is the issue's burst. --shapes batch took 69 s in one run whose ramp ended at the
      180,000/s step, 12 s of it InfluxDB's own ingest (7.6 s preparing 2,350,020 readings); each further step
      adds 6-10 s, the high batch steps the most (their lines are built before each step). The default run,
      both shapes, takes about 3-4 minutes, more the further the ramps get)
Ends with: RESULT bench_throughput broker=.. then per shape (single_, batch_): sustained_readings_s=..
           bare_readings_s=.. bare_lost_msgs=.. ratio=.. influx_readings_s=.. (InfluxDB's own ingest over the
           whole volume) influx_ratio=.. failed_step=.. failed_step_taken_readings_s=..
           burst_readings_s=.. burst_lost=..
           alert_p99_ms=.. service_cpu_ms_per_1000=.. (main process + decode worker, at the best passing step, one
           decimal) others_cpu_ms_per_1000=.. (what shares the service's cores: Mosquitto, the publishers, the
           bench, InfluxDB unless --influx-cpus, same step) ceiling_ratio=.. (the rate a service costing nothing
           would reach on those cores, over InfluxDB's own ingest) service_budget_ms_per_1000=.. (what the service
           may cost for 80 % of InfluxDB's own ingest, issue 17's batch target; below 0: out of any service's reach);
           then alert_p99_ms=.. (whole run) ticks_skipped=.. behind_lines=..
           load_start=1m/5m/15m load_end=1m/5m/15m
With --influx-cpus (e.g. 1) InfluxDB runs on those CPUs alone and everything else (the service, Mosquitto, the
publishers, the bare subscriber, the bench and its direct writer) on the others, in InfluxDB's own ingest as in
the service's run: the database on cores of its own, as a deployment runs it on a machine of its own.
With --broker stock the bare subscriber gets an unpaced burst live (a stock broker keeps 1,000 queued
messages per session), and what the broker dropped even for it is reported.
Measures; changes nothing in the service.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the bench runs as a script from any directory: the project before its imports

from citywatch.localstack import Credentials, InfluxProcess, MosquittoProcess, free_port  # noqa: E402
from config import load_config  # noqa: E402

ALERTS_YAML = """
alerting:
  sinks:
    ops_mqtt: {type: mqtt, topic_prefix: city/xm/alerts, qos: 1, rate_per_s: 1000}
  route: {receivers: [ops_mqtt], group_by: [site_id, rule_id], group_wait_s: 0, group_interval_s: 0}
  flap_max_transitions: 1000000
  store_path: STORE
"""
# Mosquitto's own defaults, for --broker stock (the stack raises them: README "Broker settings").
STOCK_LIMITS = {"max_inflight_messages": "20", "max_queued_messages": "1000", "max_queued_bytes": "0"}
# Readings/s. Both ramps go on past what a quiet machine sustains (single 50,000/s and batch 210,000/s passed in
# one run each), so a ramp ends at a failing step and the sustained rate is measured, not the end of the list.
SINGLE_STEPS = (1000, 2000, 3000, 4500, 6000, 8000, 11000, 16000, 20000, 25000, 30000, 35000, 40000, 50000, 65000)
BATCH_STEPS = (15_000, 30_000, 60_000, 90_000, 120_000, 150_000, 180_000, 210_000, 240_000, 270_000, 300_000,
               340_000, 380_000, 420_000, 470_000)
# --influx-readings at most this: its line protocol (~110 bytes a reading) is held in memory before the clock.
INFLUX_READINGS_MAX = 20_000_000
BARE_PREFIX = "city/xm/internal/bench"
# A step's landing rate is fitted to InfluxDB counts taken every 0.5 s from this far into the step (before it,
# the readings of the step's first moments are still on their way) to its last publish.
LANDING_FROM_S = 1.0
# The service's counter of rows InfluxDB accepted (204): the landing rate while a step publishes and the moment
# its last reading landed come from it (a scrape), then InfluxDB's own count checks that every reading is there.
WRITTEN = "citywatch_rows_written_total"
# Issue 17: the batch shape's sustained rate at least this fraction of InfluxDB's own ingest.
INFLUX_TARGET = 0.8
STALL_ROWS = 100  # fewer rows than this written in 15 s: the burst stalled (the probe writes 4 a second)
_TICK = os.sysconf("SC_CLK_TCK")


def burst_tally(burst_readings: int, landed_before: int, landed_after: int) -> tuple[int, int]:
    """(landed, lost) of a burst of `burst_readings`, from the shape's readings in InfluxDB before and after it.
    Counted from what had landed, not from what had been sent: readings of an earlier step that a stock broker
    dropped are not the burst's losses. Late readings of an earlier step landing during the burst would count as
    the burst's, so the landed figure is capped at the burst's size."""
    landed = max(0, min(burst_readings, landed_after - landed_before))
    return landed, burst_readings - landed


def service_budget(cores: float, others_ms: float, influx_rate: float,
                   target: float = INFLUX_TARGET) -> tuple[float, float]:
    """What the machine leaves the service: (the readings/s a service costing nothing would reach; the CPU ms per
    1,000 readings the service may cost for `target` x InfluxDB's own ingest `influx_rate`, below 0 when even a
    service costing nothing would not reach it). cores: the CPUs the service shares with the others; others_ms:
    their CPU ms per 1,000 readings (Mosquitto, the publishers, the bench, and InfluxDB when it shares the cores).
    Both take the cores as 100 % usable, so both are upper bounds. NaN for both without a figure (no passing step:
    others_ms NaN, or no InfluxDB rate)."""
    if not (others_ms > 0 and influx_rate > 0 and cores > 0):
        return float("nan"), float("nan")
    return cores * 1e6 / others_ms, cores * 1e6 / (target * influx_rate) - others_ms


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process (all its threads) so far; 0 once it is gone."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / _TICK


def cpu_list(cpus) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def parse_cpus(text: str) -> set[int]:
    """--influx-cpus: '1' or '0,2' or '2-3'; at least one CPU left for everything else."""
    cpus: set[int] = set()
    for part in text.split(","):
        lo, _, hi = part.strip().partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"not a CPU list: {text!r} (e.g. 1, or 0,2, or 2-3)")
        cpus.update(range(int(lo), int(hi or lo) + 1))
    n = os.cpu_count() or 1
    if not cpus or max(cpus) >= n or len(cpus) >= n:
        raise ValueError(f"--influx-cpus {text!r}: CPUs 0-{n - 1} exist here, and one must be left for the rest")
    return cpus


def influx_readings_arg(text: str) -> int:
    """--influx-readings: a whole number from 0 (the default volume) to INFLUX_READINGS_MAX.

    Raises argparse.ArgumentTypeError (argparse prints it as a usage error)."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a whole number of readings, got {text!r}") from None
    if not 0 <= n <= INFLUX_READINGS_MAX:
        raise argparse.ArgumentTypeError(f"from 0 (the default volume) to {INFLUX_READINGS_MAX:,}, got {n:,}")
    return n


def influx_volume(requested: int, burst_readings: int, step_s: float, top_rate: int) -> int:
    """Readings for InfluxDB's own ingest of a shape: `requested` when above 0, else as many as the ramp's biggest
    step writes (`step_s` s at `top_rate` readings/s), and never fewer than the burst's `burst_readings`."""
    if requested > 0:
        return requested
    return max(burst_readings, int(step_s * top_rate))


def cut_bodies(lines: list[bytes], rows: int) -> tuple[list[bytes], list[bytes]]:
    """Write bodies of exactly `rows` newline-terminated lines from the front of `lines`; (bodies, lines left)."""
    full = len(lines) - len(lines) % rows
    return [b"\n".join(lines[i:i + rows]) + b"\n" for i in range(0, full, rows)], lines[full:]


def children(pid: int) -> list[int]:
    """The direct children of a process (the service's decode worker)."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return out


def machine_steal_s() -> float:
    """CPU seconds the hypervisor gave other machines so far (/proc/stat steal): a shared VM's share of `busy`."""
    return int(Path("/proc/stat").read_text().splitlines()[0].split()[8]) / _TICK


def machine_busy_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    v = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = v[3] + v[4]
    return (sum(v[:8]) - idle) / _TICK, sum(v[:8]) / _TICK


class Pub:
    """One `mosquitto_pub -l` (one device, one topic); lines written to its stdin become QoS 1 messages."""

    def __init__(self, port: int, user: str, pw: str, topic: str, cid: str):
        self.proc = subprocess.Popen(
            ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", pw, "-t", topic, "-q", "1",
             "-l", "-i", cid, "-M", "1000"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Shape:
    """Message lines for one stream shape: each device's own readings, with distinct event times."""

    def __init__(self, name: str, devices, samples: int, t0_ms: int, step_ms: int):
        self.name, self.devices, self.samples, self.step_ms = name, devices, samples, step_ms
        self.next_ms = {d.id: t0_ms for d in devices}
        self.t0_ms = t0_ms
        self.sent_readings = 0

    def lines(self, dev, n: int) -> bytes:
        """n messages (lines) of `dev`, event times continuing where its last message ended."""
        t = self.next_ms[dev.id]
        out = []
        for _ in range(n):
            ts = [t + j * self.step_ms for j in range(self.samples)]
            t += self.samples * self.step_ms
            if self.samples == 1:
                v = 50.0 + 3.0 * np.sin(ts[0] / 7000.0)
                out.append(f'{{"ts":{ts[0]},"values":{{"leq":{v:.1f},"lmax":{v + 8:.1f},"lmin":{v - 5:.1f},'
                           f'"l90":{v - 3:.1f}}}}}')
            elif dev.kind == "gas":
                smp = ",".join(f'{{"ts":{x},"values":{{"p":{dev.set_pressure_kpa * (1 + 0.004 * np.sin(x / 9000.0)):.3f}}}}}'
                               for x in ts)
                out.append(f'{{"schema":"xm.gas.v1","device_id":"{dev.id}","site_id":"{dev.site}","samples":[{smp}]}}')
            else:
                smp = ",".join(f'{{"ts":{x},"values":{{"leq":{44 + 2 * np.sin(x / 7000.0):.1f},"lmax":52.0,"lmin":39.0}}}}'
                               for x in ts)
                out.append(f'{{"schema":"xm.noise.v1","device_id":"{dev.id}","site_id":"{dev.site}","interval_s":1,'
                           f'"samples":[{smp}]}}')
        self.next_ms[dev.id] = t
        self.sent_readings += n * self.samples
        return ("\n".join(out) + "\n").encode()

    def span_ns(self) -> tuple[int, int]:
        return self.t0_ms * 1_000_000, (max(self.next_ms.values()) + 1) * 1_000_000


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bench_throughput_"))
        self.cfg0 = load_config(ROOT / "config", env={})
        self.creds = Credentials.generate(self.cfg0.device_ids)
        self.mosq = MosquittoProcess(self.work / "mosquitto", free_port(), self.creds)
        if args.broker == "stock":
            text = self.mosq.conf.read_text()
            for key, value in STOCK_LIMITS.items():
                text = re.sub(rf"(?m)^{key} .*$", f"{key} {value}", text)
            self.mosq.conf.write_text(text)
        self.influx = InfluxProcess(self.work / "influxdb", free_port(), free_port())
        self.svc = None
        self.metrics_url = None
        self.probe_lat: list[tuple[float, float]] = []  # (monotonic publish time, latency ms)
        self.step_cpu: list[tuple[int, dict, int, float]] = []  # (step, CPU s used, readings, s)
        self.best_cpu: dict[str, float] = {}  # shape -> service CPU ms per 1,000 readings at its best passing step
        # shape -> CPU ms per 1,000 readings of what shares the service's cores, at the same step
        self.best_others: dict[str, float] = {}
        self.counted_from: dict[str, tuple[int, int]] = {}  # shape -> (event time ns, readings landed before it)

    # ----- servers and the service ---------------------------------------------------------------------

    def start(self) -> None:
        pin = self.args.influx_cpus
        if pin:  # everything the bench starts inherits its affinity; InfluxDB alone is started on `pin`
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - pin)
        self.mosq.start()
        if pin:
            rest = os.sched_getaffinity(0)
            os.sched_setaffinity(0, pin)
            try:
                self.influx.start()
            finally:
                os.sched_setaffinity(0, rest)
            print(f"bench_throughput: InfluxDB on CPU {cpu_list(os.sched_getaffinity(self.influx.pid))}, "
                  f"everything else on CPU {cpu_list(rest)}")
        else:
            self.influx.start()
        cfg_dir = self.work / "config"
        shutil.copytree(ROOT / "config", cfg_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        (cfg_dir / "alerts.yaml").write_text(ALERTS_YAML.replace("STORE", str(self.work / "alerts.sqlite")))
        if self.args.ack_after:  # A/B of the ack paths in one tree (config/ingest.yaml ack_after)
            text = (cfg_dir / "ingest.yaml").read_text()
            text, n = re.subn(r"(?m)^  ack_after: \w+", f"  ack_after: {self.args.ack_after}", text, count=1)
            if not n:
                raise SystemExit("bench_throughput: --ack-after needs ingest.ack_after in config/ingest.yaml")
            (cfg_dir / "ingest.yaml").write_text(text)
        if self.args.rules == "off":  # ingest alone, for the profile with and without the detectors
            (cfg_dir / "rules.yaml").write_text("rules: []\n")
        ingest = (cfg_dir / "ingest.yaml").read_text()
        # Port 0: a free port, read from the service's log (several benches or services may run at once).
        (cfg_dir / "ingest.yaml").write_text(re.sub(r"(?m)^    port: 9464\b", "    port: 0", ingest, count=1))
        user, pw = self.creds.collector
        self.env = {**os.environ, "CITYWATCH_MQTT_HOST": "127.0.0.1", "CITYWATCH_MQTT_PORT": str(self.mosq.port),
                    "CITYWATCH_MQTT_USERNAME": user, "CITYWATCH_MQTT_PASSWORD": pw, **self.influx.env()}
        self.cfg = load_config(cfg_dir, self.env)
        (self.work / "cwd").mkdir()
        self.log_path = self.work / "service.log"
        with open(self.log_path, "wb") as out:  # the child keeps its own copy of the descriptor
            self.svc = subprocess.Popen([sys.executable, "-m", "citywatch", "run", "--config", str(cfg_dir)],
                                        env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                        cwd=str(self.work / "cwd"), start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            text = self.log_path.read_text(errors="replace")
            m = re.search(r"Prometheus metrics at (http://\S+/metrics)", text)
            if m and "connected to MQTT broker" in text:
                self.metrics_url = m.group(1)
                return
            if self.svc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError("citywatch run did not start:\n" + self.log_path.read_text()[-3000:])

    def stop(self) -> None:
        if self.svc is not None and self.svc.poll() is None:
            os.kill(self.svc.pid, signal.SIGTERM)
            try:
                self.svc.wait(120)
            except subprocess.TimeoutExpired:
                os.kill(self.svc.pid, signal.SIGKILL)
        self.influx.kill()
        self.mosq.kill()
        self.mosq.remove_broker_dir()

    def cpu(self, pubs: dict) -> dict[str, float]:
        """CPU seconds so far of the service (main process and decode worker), broker, InfluxDB, publishers
        and the machine: where the two cores go at each step."""
        main = self.svc.pid if self.svc is not None else None
        busy, total = machine_busy_s()
        return {"main": cpu_s(main), "decode": sum(cpu_s(c) for c in children(main)) if main else 0.0,
                "broker": cpu_s(self.mosq.pid), "influxdb": cpu_s(self.influx.pid),
                "publishers": sum(cpu_s(p.proc.pid) for p in pubs.values()), "bench": cpu_s(os.getpid()),
                "steal": machine_steal_s(), "busy": busy, "total": total}

    def scrape(self) -> dict[str, float]:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            text = r.read().decode()
        out = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                key = s.name + "".join(f"{{{k}={v}}}" for k, v in sorted(s.labels.items()))
                out[key] = s.value
        return out

    def count(self, shape: Shape, a: int, b: int) -> int:
        where = f"time >= {a} AND time < {b}"
        n = self.influx.count("noise", "leq", where)
        if shape.name == "batch":
            n += self.influx.count("gas_pressure", "p", where)
        return n

    def count_from_here(self, shape: Shape) -> None:
        """Before a step or the burst: count what landed before the event time every device has reached, once, so
        that `landed` counts only from there. A count scans every point in its window: over the whole run (1.4
        million points: 200 ms of InfluxDB's CPU each, measured) the bench's own polls took a large share of
        the machine from the service and InfluxDB at the high steps."""
        lo = min(shape.next_ms.values()) * 1_000_000
        self.counted_from[shape.name] = (lo, self.count(shape, shape.t0_ms * 1_000_000, lo))

    def landed(self, shape: Shape) -> int:
        """Readings of the shape in InfluxDB: those before the mark of `count_from_here` as counted then, plus a
        count of the window since (every reading of a device has a later event time than its earlier ones)."""
        a, b = shape.span_ns()
        lo, before = self.counted_from.get(shape.name, (a, 0))
        return before + self.count(shape, lo, b)

    # ----- the probe: publish -> alert notice -----------------------------------------------------------

    def start_probe(self) -> None:
        cfg = self.cfg
        probe = next(d for d in cfg.devices if d.kind == "gas" and d.protocol == "json" and d.id not in self.used)
        self.probe_dev = probe
        sent: dict[int, float] = {}
        tuser, tpw = self.creds.tester

        def on_message(c, u, msg):
            t = time.monotonic()
            if "/active/" in msg.topic or not msg.payload:
                return
            n = json.loads(msg.payload)
            if n.get("rule_id") == "G-highhigh" and n["device"]["id"] == probe.id and n["ts_ns"] in sent:
                t_pub = sent[n["ts_ns"]]
                self.probe_lat.append((t_pub, (t - t_pub) * 1000))

        self.sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-alert-sub", protocol=mqtt.MQTTv5)
        self.sub.username_pw_set(tuser, tpw)
        self.sub.on_message = on_message
        self.sub.connect("127.0.0.1", self.mosq.port)
        self.sub.subscribe("city/xm/alerts/#", qos=1)
        self.sub.loop_start()
        pr = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-probe", protocol=mqtt.MQTTv5)
        pr.username_pw_set(tuser, tpw)
        pr.connect("127.0.0.1", self.mosq.port)
        pr.loop_start()
        self.probe_stop = threading.Event()

        def loop():
            high = True
            last = 0
            while not self.probe_stop.wait(0.25):
                ts = max(int(time.time() * 1000), last + 1)
                last = ts
                p = probe.mop_kpa * 1.5 if high else probe.set_pressure_kpa
                body = json.dumps({"schema": "xm.gas.v1", "device_id": probe.id, "site_id": probe.site,
                                   "samples": [{"ts": ts, "values": {"p": p, "batt_v": 3.5}}]}).encode()
                sent[ts * 1_000_000] = time.monotonic()
                pr.publish(f"city/xm/gas/{probe.site}/{probe.id}/data", body, qos=1)
                high = not high
            pr.disconnect()
            pr.loop_stop()

        self.probe_thread = threading.Thread(target=loop, daemon=True)
        self.probe_thread.start()

    def probe_p99(self, t_from: float, t_to: float) -> tuple[float, int]:
        lat = [ms for t, ms in self.probe_lat if t_from <= t <= t_to]
        return (float(np.percentile(lat, 99)) if lat else float("nan")), len(lat)

    # ----- measurements --------------------------------------------------------------------------------

    def start_profile(self, name: str) -> subprocess.Popen | None:
        """--profile DIR: py-spy samples the service and its decode worker during the shape's ramp and burst."""
        if not self.args.profile:
            return None
        out = Path(self.args.profile)
        out.mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        path = out / f"{name}_rules_{self.args.rules}_{self.args.broker}.txt"
        print(f"  profiling into {path}")
        return subprocess.Popen([spy, "record", "--pid", str(self.svc.pid), "--subprocesses", "--rate", "97",
                                 "--format", "raw", "--threads", "--output", str(path), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop_profile(self, spy: subprocess.Popen | None) -> None:
        if spy is None:
            return
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        try:
            spy.wait(30)
        except subprocess.TimeoutExpired:
            spy.kill()

    def bare(self, shape: Shape, n_msgs: int) -> tuple[float, int]:
        """Readings/s a bare paho QoS 1 subscriber receives, for the same publishers and messages (as the
        service's account, on a subtree the service does not read). With raised broker limits the messages
        are queued in its persistent session first and the drain is timed (the publishers' CPU is not on the
        clock, as in bench_ingest); a stock broker drops a session's queue beyond 1,000 messages, so there
        the subscriber is online while the publishers send as fast as they go, and what the broker dropped
        even for it is reported (the ratio is then against a lossy figure). Returns (readings/s, messages lost)."""
        user, pw = self.creds.collector
        got = [0]
        done = threading.Event()
        queued = self.args.broker == "raised"

        def on_message(c, u, m):
            got[0] += 1
            if got[0] >= n_msgs:
                done.set()

        def connect(expiry: int) -> mqtt.Client:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = expiry
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-bare-{shape.name}", protocol=mqtt.MQTTv5)
            c.username_pw_set(user, pw)
            c.on_message = on_message
            c.connect("127.0.0.1", self.mosq.port, clean_start=not queued, properties=props)
            c.loop_start()
            return c

        sub = connect(600)
        sub.subscribe(f"{BARE_PREFIX}/#", qos=1)
        time.sleep(0.5)
        if queued:
            sub.disconnect()
            sub.loop_stop()
        devs = shape.devices[:8] if shape.samples == 1 else shape.devices
        pubs = [Pub(self.mosq.port, user, pw, f"{BARE_PREFIX}/{shape.name}/{d.id}", f"bench-bare-pub-{d.id}") for d in devs]
        per = [n_msgs // len(pubs) + (1 if i < n_msgs % len(pubs) else 0) for i in range(len(pubs))]
        probe_shape = Shape(shape.name, devs, shape.samples, shape.t0_ms, shape.step_ms)
        data = [probe_shape.lines(d, k) for d, k in zip(devs, per)]
        time.sleep(1.0)  # the publishers connect before the clock starts
        t0 = time.monotonic()
        threads = [threading.Thread(target=p.write, args=(b,), daemon=True) for p, b in zip(pubs, data)]
        for th in threads:
            th.start()
        if queued:
            for th in threads:
                th.join()
            for p in pubs:
                p.close()  # mosquitto_pub -l finishes its in-flight messages at the end of its input
            t0 = time.monotonic()
            sub = connect(0)
        last, last_t = -1, time.monotonic()
        while not done.wait(0.2):
            if got[0] != last:
                last, last_t = got[0], time.monotonic()
            elif time.monotonic() - last_t > 5:
                break  # a stock broker dropped some: the rate is of what arrived
        rate = got[0] / ((time.monotonic() if done.is_set() else last_t) - t0)
        if not queued:
            for p in pubs:
                p.close()
        sub.disconnect()
        sub.loop_stop()
        lost = n_msgs - got[0]
        print(f"  bare paho subscriber ({'queued backlog drained' if queued else 'live'}): {rate:,.0f} msg/s = "
              f"{rate * shape.samples:,.0f} readings/s ({got[0]:,} of {n_msgs:,} messages"
              f"{'' if not lost else f', {lost:,} never arrived'})")
        return rate * shape.samples, lost

    def wait_written_and_landed(self, shape: Shape, written: float, t0: float, grace_s: float) -> tuple[int, float]:
        """Wait (until `grace_s` from now) for the service's rows-written counter to reach `written` (InfluxDB
        answered 204 for them; a cheap scrape every 20 ms), then count the shape in InfluxDB: (readings counted,
        s from t0 until the last landed). If the count is short, poll InfluxDB until the grace is over."""
        deadline = time.monotonic() + grace_s
        while self.scrape().get(WRITTEN, 0.0) < written and time.monotonic() < deadline:
            time.sleep(0.02)
        t_land = time.monotonic() - t0
        n = self.landed(shape)
        if n < shape.sent_readings:
            n = self.wait_landed(shape, max(0.0, deadline - time.monotonic()), poll_s=0.1)
            t_land = time.monotonic() - t0
        return n, t_land

    def wait_landed(self, shape: Shape, grace_s: float, poll_s: float = 0.25) -> int:
        deadline = time.monotonic() + grace_s
        n = self.landed(shape)
        while n < shape.sent_readings and time.monotonic() < deadline:
            time.sleep(poll_s)
            n = self.landed(shape)
        return n

    def ramp(self, shape: Shape, pubs: dict, steps) -> tuple[float, dict]:
        """Paced steps until one loses or lags; returns (best passing achieved readings/s, the failing step)."""
        best, failed = 0.0, {}
        per_msg = shape.samples
        for rate in steps:
            msg_rate = rate / per_msg
            n_msgs = int(msg_rate * self.args.step_s)
            devs = list(pubs)
            per = [n_msgs // len(devs) + (1 if i < n_msgs % len(devs) else 0) for i in range(len(devs))]
            self.count_from_here(shape)  # before the step's lines move the devices' event times on
            # Lines prebuilt before the step (not on the clock), cut into 20 ms slices per device.
            ticks = max(1, int(self.args.step_s / 0.02))
            slices = {}
            for d, k in zip(devs, per):
                lines = shape.lines(d, k).splitlines(keepends=True)
                cuts = np.linspace(0, len(lines), ticks + 1).astype(int)
                slices[d.id] = [b"".join(lines[cuts[i]:cuts[i + 1]]) for i in range(ticks)]
            s0 = self.scrape()
            w0 = s0.get(WRITTEN, 0.0)
            c0 = self.cpu(pubs)
            t0 = time.monotonic()
            worst_age = 0.0
            landing: list[tuple[float, float]] = []  # (s into the step, rows InfluxDB accepted from the service)
            for i in range(ticks):
                for d in devs:
                    if slices[d.id][i]:
                        pubs[d].write(slices[d.id][i])
                ahead = t0 + (i + 1) * 0.02 - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
                if i % 25 == 0:
                    sc = self.scrape()
                    worst_age = max(worst_age, sc.get("citywatch_detection_oldest_age_seconds", 0.0))
                    if i * 0.02 >= LANDING_FROM_S:
                        landing.append((time.monotonic() - t0, sc.get(WRITTEN, 0.0) - w0))
            t_pub = time.monotonic() - t0
            landing.append((t_pub, self.scrape().get(WRITTEN, 0.0) - w0))
            n, t_land = self.wait_written_and_landed(shape, w0 + per_msg * n_msgs, t0, self.args.grace)
            c1 = self.cpu(pubs)
            s1 = self.scrape()
            worst_age = max(worst_age, s1.get("citywatch_detection_oldest_age_seconds", 0.0))
            achieved = per_msg * n_msgs / t_pub
            # What the service took in: the step's readings over the time until the last one was counted.
            took = per_msg * n_msgs / t_land
            # The rate readings landed at while publishing (least squares over the counts): a service that keeps
            # pace lands them at the published rate however long each takes to land, one that does not at less.
            landed_rate = (float(np.polyfit(*zip(*landing), 1)[0]) if len(landing) >= 3 else took)
            skipped = s1.get("citywatch_job_skipped_total{job=alerts_tick}", 0) - s0.get(
                "citywatch_job_skipped_total{job=alerts_tick}", 0)
            p99, k = self.probe_p99(t0, time.monotonic())
            missing = shape.sent_readings - n
            # Did not keep pace (it may still have caught up within the grace): both measures say so. The fit is
            # blind to a constant landing delay but, over ~10 counts, noisy; the rate until the last landed is
            # exact but counts the delay (0.3 s of a 5 s step is 6 %). Either alone fails steps that kept pace.
            slow = landed_rate < self.args.pace * achieved and took < self.args.pace * achieved
            ok = not missing and not slow and worst_age <= self.args.lag_s
            why = ([f"not all in InfluxDB within {self.args.grace:g} s"] if missing else []) + (
                [f"landed at {landed_rate / achieved:.1%} of the published rate while publishing and at "
                 f"{took / achieved:.1%} until the last landed, both under {self.args.pace:.0%}"]
                if slow else []) + ([f"detection wait over {self.args.lag_s:g} s"] if worst_age > self.args.lag_s else [])
            verdict = "ok" if ok else "LAGS (" + ", ".join(why) + ")"
            print(f"  step {rate:>7,} readings/s: published at {achieved:>9,.0f}/s, taken (landed while publishing) at "
                  f"{landed_rate:>9,.0f}/s = {landed_rate / achieved:.1%}, {took:,.0f}/s until the last landed; "
                  f"{'all in' if not missing else format(missing, ',') + ' not in'} InfluxDB {t_land - t_pub:.1f} s "
                  f"after the last publish; detection oldest wait {worst_age:.1f} s, alert ticks skipped "
                  f"{skipped:.0f}, probe p99 {p99:.0f} ms ({k}): {verdict}")
            used = {k: c1[k] - c0[k] for k in c0}
            per_k = 1000.0 / max(1, per_msg * n_msgs)
            named = ("main", "decode", "broker", "influxdb", "publishers", "bench")
            rest = used["busy"] - sum(used[k] for k in named)  # kernel threads, other processes of the machine
            print(f"    CPU ms per 1,000 readings: service {1000 * (used['main'] + used['decode']) * per_k:.1f} "
                  f"(main {1000 * used['main'] * per_k:.1f}, decode worker {1000 * used['decode'] * per_k:.1f}), "
                  f"broker {1000 * used['broker'] * per_k:.1f}, InfluxDB {1000 * used['influxdb'] * per_k:.1f}, "
                  f"publishers {1000 * used['publishers'] * per_k:.1f}, this bench {1000 * used['bench'] * per_k:.1f}, "
                  f"the rest {1000 * rest * per_k:.1f} (of it stolen by the hypervisor {1000 * used['steal'] * per_k:.1f}); "
                  f"machine {used['busy'] / max(used['total'], 1e-9):.0%} busy; service main process "
                  f"{used['main'] / t_land:.0%} of a core")
            self.step_cpu.append((rate, used, per_msg * n_msgs, t_land))
            if not ok:
                failed = {"rate": rate, "missing": missing, "detect_age_s": worst_age, "taken": landed_rate}
                n = self.wait_landed(shape, 60)  # let the step finish before the burst
                if n < shape.sent_readings:
                    print(f"    and LOSES: {shape.sent_readings - n:,} readings still not in InfluxDB a minute later")
                break
            if took >= best:  # the service's CPU per reading at the best passing step, for the RESULT line
                self.best_cpu[shape.name] = 1000 * (used["main"] + used["decode"]) * per_k
                sharing = ("broker", "publishers", "bench") + (() if self.args.influx_cpus else ("influxdb",))
                self.best_others[shape.name] = 1000 * sum(used[k] for k in sharing) * per_k
            best = max(best, took)
        return best, failed

    def burst(self, shape: Shape, pubs: dict, n_msgs: int) -> tuple[float, int, float]:
        """n_msgs messages as fast as the publishers go; (readings/s until all landed, readings lost, s)."""
        devs = list(pubs)
        per = [n_msgs // len(devs) + (1 if i < n_msgs % len(devs) else 0) for i in range(len(devs))]
        before = shape.sent_readings
        self.count_from_here(shape)
        # What had landed of the earlier steps: a step a stock broker dropped readings of never catches up, so
        # the burst's landings are counted from here, not from what was sent before it.
        landed_before = self.landed(shape)
        data = {d: shape.lines(d, k) for d, k in zip(devs, per)}
        want = shape.sent_readings
        t0 = time.monotonic()
        threads = [threading.Thread(target=pubs[d].write, args=(data[d],), daemon=True) for d in devs]
        for th in threads:
            th.start()
        worst_age = 0.0
        # The service's count of rows InfluxDB accepted (a scrape) until it has them all or stalls for 15 s,
        # then InfluxDB's own count (it scans every point of the burst: not every 50 ms).
        goal = self.scrape().get(WRITTEN, 0.0) + (want - before)
        last, last_t = -1.0, time.monotonic()
        while True:
            sc = self.scrape()
            worst_age = max(worst_age, sc.get("citywatch_detection_oldest_age_seconds", 0.0))
            w = sc.get(WRITTEN, 0.0)
            if w >= goal:
                last_t = time.monotonic()
                break
            if w >= last + STALL_ROWS:
                last, last_t = w, time.monotonic()
            elif time.monotonic() - last_t > 15:
                break  # no progress for 15 s (the probe's few rows a second are not progress)
            time.sleep(0.05)
        n = self.landed(shape)
        while n < want:  # short: count until InfluxDB's own count stops growing for 15 s (the rest is lost)
            time.sleep(0.25)
            m = self.landed(shape)
            if m != n:
                last_t = time.monotonic()
            elif time.monotonic() - last_t > 15:
                break
            n = m
        t = last_t - t0
        landed_burst, lost = burst_tally(want - before, landed_before, n)
        rate = landed_burst / t if t > 0 else float("nan")
        earlier = before - landed_before
        print(f"  burst of {n_msgs:,} messages ({want - before:,} readings): {landed_burst:,} landed in {t:.1f} s "
              f"= {rate:,.0f} readings/s; lost {lost:,}; detection oldest wait up to {worst_age:.1f} s"
              + (f" (the earlier steps' {earlier:,} missing readings not counted)" if earlier > 0 else ""))
        return rate, lost, worst_age

    def influx_direct(self, shape: Shape, round_msgs: int, readings: int) -> float:
        """InfluxDB's own ingest of this shape in this run: `readings` readings (rounded up to whole messages) of
        each device's stream with event times 12 h before the bench's, turned into exactly the line protocol the
        service writes (its decoder and encoder), POSTed to a new database of their own in batches of
        `ingest.batch_max_rows` lines over one keep-alive connection (as the service's writer does).

        The lines are prepared before the clock starts, in rounds of `round_msgs` messages spread over the
        devices (the burst's count: the first round is the lines the burst's volume alone would write), so only
        the line protocol is held, not the JSON. Prints the rate over the first round and over the whole volume;
        a short write into a new database pays fixed costs (shard creation, first writes) that a sustained
        stream does not. The database is dropped afterwards (no compactions of it while the service runs).
        Returns the whole volume's readings/s. Raises RuntimeError when the decoder refuses a reading or
        InfluxDB a write."""
        import base64
        import http.client

        from ingest.decoder import Decoder
        from ingest.lineproto import encode

        devs = list(shape.devices)
        # Event times 12 h before the bench's own (never in the future, inside the back-fill window).
        ghost = Shape(shape.name, devs, shape.samples, shape.t0_ms - 12 * 3600_000, shape.step_ms)
        n_msgs = -(-readings // shape.samples)
        round_msgs = max(1, round_msgs)
        rows = max(1, int(self.cfg.ingest.batch_max_rows))
        decoder = Decoder(self.cfg)
        bodies: list[bytes] = []
        pending: list[bytes] = []
        first_n = 0  # lines of the first round
        t_prep = time.monotonic()
        for done in range(0, n_msgs, round_msgs):
            k = min(round_msgs, n_msgs - done)
            per = [k // len(devs) + (1 if i < k % len(devs) else 0) for i in range(len(devs))]
            before = ghost.sent_readings
            now = time.time_ns()
            msgs = [(f"city/xm/{d.kind}/{d.site}/{d.id}/data", line, now)
                    for d, c in zip(devs, per) if c for line in ghost.lines(d, c).splitlines()]
            batch, decoded = decoder.decode_many(msgs)
            lines = encode(batch, self.cfg).splitlines()
            if len(lines) != ghost.sent_readings - before:
                refused = next((r for d in decoded for r in getattr(d, "rejects", None) or []), None)
                raise RuntimeError(f"bench_throughput: the decoder took {len(lines):,} of "
                                   f"{ghost.sent_readings - before:,} readings for InfluxDB's own ingest (e.g. {refused})")
            first_n = first_n or len(lines)
            full, pending = cut_bodies(pending + lines, rows)
            bodies += full
        if pending:
            bodies.append(b"\n".join(pending) + b"\n")
        prep_s = time.monotonic() - t_prep
        total = ghost.sent_readings
        # The write after which the first round is all in (bodies hold `rows` lines each but the last).
        mark = min(len(bodies) - 1, -(-first_n // rows) - 1)
        first_n = min(total, (mark + 1) * rows)
        db = f"direct_{shape.name}"
        self.influx.create_database(db)
        user, pw = self.influx.accounts.user
        auth = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        conn = http.client.HTTPConnection("127.0.0.1", self.influx.port, timeout=60)
        path = f"/write?db={db}&precision=ns"

        def cpu_now() -> tuple[float, float, float]:
            return cpu_s(self.influx.pid), cpu_s(os.getpid()), machine_busy_s()[0]

        c0 = cpu_now()
        t0 = time.monotonic()
        t_first, c_first = 0.0, c0
        for i, body in enumerate(bodies):
            conn.request("POST", path, body=body, headers={"Authorization": auth})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 204:
                raise RuntimeError(f"InfluxDB refused the direct write: HTTP {resp.status}")
            if i == mark:
                t_first, c_first = time.monotonic() - t0, cpu_now()
        t = time.monotonic() - t0
        c1 = cpu_now()
        conn.close()
        self.influx.query(f'DROP DATABASE "{db}"', method="POST", as_admin=True)
        rate = total / t if t > 0 else float("nan")
        per_k = 1e6 / max(1, total)  # CPU s -> ms per 1,000 readings
        mb = sum(len(b) for b in bodies) / 1e6
        print(f"  InfluxDB's own ingest: {total:,} readings of this shape (the service's line protocol, {mb:,.0f} MB "
              f"prepared in {prep_s:.1f} s) in {len(bodies)} writes of up to {rows:,} lines, one connection, into a "
              f"new database: {rate:,.0f} readings/s over the whole volume; CPU ms per 1,000 readings: InfluxDB "
              f"{(c1[0] - c0[0]) * per_k:.1f}, the writing client {(c1[1] - c0[1]) * per_k:.1f}, machine "
              f"{(c1[2] - c0[2]) * per_k:.1f} ({(c1[2] - c0[2]) / t / (os.cpu_count() or 1):.0%} busy)")
        if total > first_n:
            rest_n, rest_t = total - first_n, t - t_first
            print(f"    of it the first {first_n:,} readings (the burst's volume, into the new database) at "
                  f"{first_n / t_first:,.0f} readings/s, InfluxDB {(c_first[0] - c0[0]) * 1e6 / first_n:.1f} CPU ms "
                  f"per 1,000 readings; the other {rest_n:,} at {rest_n / rest_t if rest_t > 0 else float('nan'):,.0f}"
                  f" readings/s, InfluxDB {(c1[0] - c_first[0]) * 1e6 / rest_n:.1f} CPU ms per 1,000")
        return rate

    def run_shape(self, name: str) -> dict:
        cfg = self.cfg
        now_ms = int(time.time() * 1000)
        if name == "single":
            devs = [d for d in cfg.devices if d.kind == "noise" and d.protocol == "json"][:8]
            # 10 ms apart, from 2 h ago: distinct times, never in the future, far inside backfill_max_age_s.
            shape = Shape("single", devs, 1, now_ms - 2 * 3600_000, 10)
            steps, burst_n, bare_n = SINGLE_STEPS, self.args.burst_single, self.args.bare_single
        else:
            devs = [d for d in cfg.devices if d.protocol == "json" and d.id != self.probe_dev.id]
            # Minute batches of 1 s samples from 6 days ago (a fast stream of many devices is a back-fill in
            # event time: a live minute batch per device per minute would be a few hundred readings/s).
            shape = Shape("batch", devs, 60, now_ms - 6 * 86400_000, 1000)
            steps, burst_n, bare_n = BATCH_STEPS, self.args.burst_batch, self.args.bare_batch
        print(f"shape {name}: {len(devs)} devices, {shape.samples} reading(s) per message")
        t_start = time.monotonic()
        direct = self.influx_direct(shape, burst_n, influx_volume(self.args.influx_readings, burst_n * shape.samples,
                                                                  self.args.step_s, steps[-1]))
        bare, bare_lost = self.bare(shape, bare_n)
        spy = self.start_profile(name)
        pubs = {d: Pub(self.mosq.port, d.id, self.creds.devices[d.id], f"city/xm/{d.kind}/{d.site}/{d.id}/data",
                       f"bench-{d.id}") for d in devs}
        time.sleep(1.0)  # connected before the first step
        try:
            sustained, failed = self.ramp(shape, pubs, steps)
            b_rate, b_lost, _ = self.burst(shape, pubs, burst_n)
        finally:
            for p in pubs.values():
                p.close()
            self.stop_profile(spy)
        p99, k = self.probe_p99(t_start, time.monotonic())
        pin = self.args.influx_cpus
        cores = (os.cpu_count() or 1) - (len(pin) if pin else 0)
        others = self.best_others.get(name, float("nan"))
        ceiling, budget = service_budget(cores, others, direct)
        res = {"ceiling_ratio": ceiling / direct if direct else float("nan"), "budget": budget, "others": others,
               "bare": bare, "bare_lost": bare_lost, "sustained": sustained, "ratio": sustained / bare if bare else float("nan"),
               "failed": failed, "burst": b_rate, "burst_lost": b_lost, "burst_ratio": b_rate / bare if bare else float("nan"),
               "p99": p99, "probes": k, "influx": direct, "influx_ratio": sustained / direct if direct else float("nan")}
        print(f"  => sustained {sustained:,.0f} readings/s = {res['ratio']:.0%} of the bare subscriber, "
              f"{res['influx_ratio']:.0%} of InfluxDB's own ingest; burst drained "
              f"at {b_rate:,.0f}/s = {res['burst_ratio']:.0%}; alert latency p99 {p99:.0f} ms over {k} probe notices")
        print(f"  what the machine leaves the service (at the best passing step; {cores} core(s) shared with Mosquitto, "
              f"the publishers, the bench{'' if pin else ' and InfluxDB'}, taken as 100 % usable): those took "
              f"{others:.1f} CPU ms per 1,000 readings, so a service costing nothing would reach {ceiling:,.0f} "
              f"readings/s = {res['ceiling_ratio']:.0%} of InfluxDB's own ingest; at {INFLUX_TARGET:.0%} of it "
              f"({INFLUX_TARGET * direct:,.0f}/s) the service may cost {budget:.1f} CPU ms per 1,000 readings "
              f"(it took {self.best_cpu.get(name, float('nan')):.1f})")
        return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", choices=["raised", "stock"], default="raised",
                    help="raised: the stack's limits (README 'Broker settings'); stock: Mosquitto's defaults")
    ap.add_argument("--shapes", default="single,batch", help="comma-separated: single, batch")
    ap.add_argument("--step-s", type=float, default=5.0, help="seconds per ramp step (default 5)")
    ap.add_argument("--grace", type=float, default=2.0, help="a step's readings must all be in InfluxDB this many "
                    "seconds after its last publish (default 2); a passing step's rate is its readings over the "
                    "time until the last one was counted")
    ap.add_argument("--pace", type=float, default=0.95, help="a step lags when its readings landed, both while "
                    "it published (fit) and until the last one landed, at less than this fraction of the rate they "
                    "were published at (default 0.95: the service kept pace, not only caught up within --grace)")
    ap.add_argument("--lag-s", type=float, default=5.0, help="a step lags when an arrival waits longer than this "
                    "for the detectors (default 5)")
    ap.add_argument("--burst-single", type=int, default=50_000, help="messages of the single-reading burst "
                    "(default 50000; the issue's is 100000)")
    ap.add_argument("--burst-batch", type=int, default=2_000, help="60-sample messages of the batch burst")
    ap.add_argument("--influx-readings", type=influx_readings_arg, default=0, metavar="N", help="readings of "
                    "InfluxDB's own ingest per shape (default 0: as many as the ramp's top step writes, --step-s x "
                    f"its rate, at least the burst's; at most {INFLUX_READINGS_MAX:,})")
    ap.add_argument("--bare-single", type=int, default=40_000, help="messages for the bare subscriber, single")
    ap.add_argument("--bare-batch", type=int, default=3_000, help="messages for the bare subscriber, batch")
    ap.add_argument("--rules", choices=["on", "off"], default="on", help="on: every shipped rule (default); "
                    "off: an empty rule set (ingest alone, to see what detection costs)")
    ap.add_argument("--ack-after", choices=["spool", "influxdb"], default=None, help="override "
                    "ingest.ack_after (default: the shipped config's)")
    ap.add_argument("--influx-cpus", default=None, metavar="LIST", help="run InfluxDB alone on these CPUs (e.g. 1) "
                    "and everything else on the others, for InfluxDB's own ingest and the service's run alike")
    ap.add_argument("--profile", default=None, metavar="DIR", help="sample the service with py-spy (pip install "
                    "py-spy) during each shape's ramp and burst; collapsed stacks into DIR/<shape>_rules_<on|off>_<broker>.txt")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (service log, data)")
    args = ap.parse_args()
    if not 0 < args.pace <= 1:
        ap.error(f"--pace must be above 0 and at most 1, got {args.pace:g}")
    try:
        args.influx_cpus = parse_cpus(args.influx_cpus) if args.influx_cpus else None
    except ValueError as exc:
        ap.error(str(exc))
    if not shutil.which("mosquitto_pub"):
        print("bench_throughput: mosquitto_pub is missing (Debian package mosquitto-clients)", file=sys.stderr)
        return 1

    load_start = "/".join(f"{x:.2f}" for x in os.getloadavg())  # the machine is shared: say how busy it was
    b = Bench(args)
    t_all = time.monotonic()
    results = {}
    try:
        b.start()
        print(f"bench_throughput: {os.cpu_count()} CPUs, broker limits {args.broker}, work dir {b.work}; "
              f"metrics {b.metrics_url}")
        b.used = {d.id for d in b.cfg.devices if d.kind == "noise" and d.protocol == "json"}
        b.start_probe()
        for name in [s.strip() for s in args.shapes.split(",") if s.strip()]:
            results[name] = b.run_shape(name)
        b.probe_stop.set()
        b.probe_thread.join(5)
        time.sleep(1.0)
        s = b.scrape()
        log = b.log_path.read_text(errors="replace")
        behind = log.count("detection is falling behind")
        tick_late = log.count("alert tick is falling behind")
        p99_all, k_all = b.probe_p99(0, time.monotonic())
        print(f"service: detection 'falling behind' lines {behind}, alert-tick lateness lines {tick_late}; "
              f"alert ticks run {s.get('citywatch_job_runs_total{job=alerts_tick}', 0):.0f}, late "
              f"{s.get('citywatch_job_late_total{job=alerts_tick}', 0):.0f}, skipped "
              f"{s.get('citywatch_job_skipped_total{job=alerts_tick}', 0):.0f}; notices "
              f"{s.get('citywatch_alert_notices_total', 0):.0f}")
        print(f"alert latency over the whole run: p99 {p99_all:.0f} ms over {k_all} probe notices; "
              f"{time.monotonic() - t_all:.0f} s in all")
        parts = [f"broker={args.broker}", f"rules={args.rules}",
                 f"influx_cpus={cpu_list(args.influx_cpus) if args.influx_cpus else 'shared'}",
                 f"ack_after={getattr(b.cfg.ingest, 'ack_after', 'influxdb')}"]
        for name, r in results.items():
            parts += [f"{name}_sustained_readings_s={r['sustained']:.0f}", f"{name}_bare_readings_s={r['bare']:.0f}", f"{name}_bare_lost_msgs={r['bare_lost']}",
                      f"{name}_ratio={r['ratio']:.2f}", f"{name}_influx_readings_s={r['influx']:.0f}",
                      f"{name}_influx_ratio={r['influx_ratio']:.2f}", f"{name}_failed_step={r['failed'].get('rate', 0)}",
                      f"{name}_failed_step_taken_readings_s={r['failed'].get('taken', 0):.0f}",
                      f"{name}_burst_readings_s={r['burst']:.0f}", f"{name}_burst_lost={r['burst_lost']}",
                      f"{name}_alert_p99_ms={r['p99']:.0f}",
                      f"{name}_service_cpu_ms_per_1000={b.best_cpu.get(name, float('nan')):.1f}",
                      f"{name}_others_cpu_ms_per_1000={r['others']:.1f}", f"{name}_ceiling_ratio={r['ceiling_ratio']:.2f}",
                      f"{name}_service_budget_ms_per_1000={r['budget']:.1f}"]
        parts += [f"alert_p99_ms={p99_all:.0f}", f"ticks_skipped={s.get('citywatch_job_skipped_total{job=alerts_tick}', 0):.0f}",
                  f"behind_lines={behind}", f"load_start={load_start}",
                  "load_end=" + "/".join(f"{x:.2f}" for x in os.getloadavg())]
        print("RESULT bench_throughput " + " ".join(parts))
    finally:
        if getattr(b, "probe_stop", None) is not None:
            b.probe_stop.set()
        if getattr(b, "sub", None) is not None:
            b.sub.disconnect()
            b.sub.loop_stop()
        b.stop()
        if args.keep:
            print(f"work directory kept: {b.work}")
        else:
            shutil.rmtree(b.work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
