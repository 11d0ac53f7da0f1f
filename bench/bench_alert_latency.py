"""Benchmark: time from a device's publish to the alert notice on the MQTT alert topic, under steady load.

Starts a local Mosquitto (auth, ACL) and InfluxDB on free ports, runs the service with alerts
(`python -m citywatch run`, i.e. ingest + every shipped rule + the alert engine) and publishes, at a
steady rate, background readings (noise and gas devices, inside their limits) while one probe gas device
alternates over and under its G-highhigh limit. Each probe reading makes one transition (firing, then
resolved); the latency is from just before its publish to the notice's arrival at a subscriber of
`city/xm/alerts/#`.

With `--backfill-rows N` (e.g. 25000), one more gas device publishes, a third of the way into the measured
span, one valid message of N one-second samples ending now (a back-fill), its last sample over G-highhigh:
that notice marks the end of the device's backlog. The probes published meanwhile give the other devices'
latency during the back-fill (issue 10: one device's history must not hold the others' alerts).

`--ack-after spool|influxdb` writes `ingest.ack_after` into the config the bench generates, so an A/B of the
two ack paths on one tree is two commands run back to back (the machine is shared: alternate their order).

Run:  .venv/bin/python bench/bench_alert_latency.py [--rate 5000] [--duration 40] [--probe-hz 4] [--backfill-rows 25000]
      [--ack-after spool|influxdb]
Ends with: RESULT bench_alert_latency ack_after=.. rate=.. achieved_readings_s=.. probes=.. notices=.. p50_ms=..
           p99_ms=.. max_ms=.. load_start=1m/5m/15m load_end=1m/5m/15m
(and with a back-fill: backfill_rows=.. backfill_done_ms=.. during_probes=.. during_p50_ms=.. during_max_ms=..)
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
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
SAMPLES_PER_MESSAGE = 10


def load_avg() -> str:
    """The 1/5/15-minute load averages as `a/b/c` (the machine is shared: a result means little without them)."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def set_ack_after(ingest_yaml: Path, mode: str) -> None:
    """Write `ingest.ack_after: mode` into a copied config/ingest.yaml; SystemExit if it has no such key."""
    text, n = re.subn(r"(?m)^  ack_after: \w+", f"  ack_after: {mode}", ingest_yaml.read_text(), count=1)
    if not n:
        raise SystemExit(f"bench_alert_latency: --ack-after needs an `ingest.ack_after` line in {ingest_yaml}")
    ingest_yaml.write_text(text)


def client(cid: str, user: str, pw: str, port: int, on_message=None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, pw)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    if on_message:
        c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def payload(dev, ts_ms: list[int], kind: str, value: float) -> bytes:
    if kind == "noise":
        samples = [{"ts": t, "values": {"leq": value, "lmax": value + 8, "lmin": value - 5, "flag": "N"}} for t in ts_ms]
        doc = {"schema": "xm.noise.v1", "device_id": dev.id, "site_id": dev.site, "interval_s": 1, "samples": samples}
    else:
        samples = [{"ts": t, "values": {"p": value, "batt_v": 3.5}} for t in ts_ms]
        doc = {"schema": "xm.gas.v1", "device_id": dev.id, "site_id": dev.site, "samples": samples}
    return json.dumps(doc, separators=(",", ":")).encode()


def engine_only(cfg, env, creds, port: int, work: Path, n: int = 100) -> tuple[float, float]:
    """The alert engine's own share: an in-process AlertEngine with the MQTT sink, fed detections directly;
    time from `process()` to the notice at a subscriber. Runs while the background load still flows."""
    from alerts.engine import AlertEngine
    from alerts.store import AlertStore
    from core import Detections

    store = AlertStore(work / "engine-only.sqlite")
    # Its own MQTT client id: sharing the service's would make the broker drop one of the two.
    cfg = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"mqtt_client_id": "bench-engine"})})
    engine = AlertEngine(cfg, store, env=env)
    engine.start()
    got: dict[int, float] = {}
    user, pw = creds.tester

    def on_message(c, u, msg):
        if "/active/" in msg.topic or not msg.payload:
            return
        note = json.loads(msg.payload)
        if note.get("rule_id") == "BENCH":
            got[note["ts_ns"]] = time.monotonic()

    sub = client("bench-engine-sub", user, pw, port, on_message)
    sub.subscribe("city/xm/alerts/#", qos=1)
    time.sleep(0.5)
    sent: dict[int, float] = {}
    t0 = time.time_ns()
    for i in range(n):
        ts = t0 + i * 1_000_000
        sev = 4 if i % 2 == 0 else 0
        d = Detections(np.array([0], np.int32), np.array([ts]), np.array(["BENCH"], object), np.array(["noise"], object),
                       np.array([sev], np.int8), np.array([90.0]), np.array([70.0]), np.array([np.nan]), [{}])
        sent[ts] = time.monotonic()
        engine.process(d)
        time.sleep(0.05)
    deadline = time.monotonic() + 10
    while len(got) < n and time.monotonic() < deadline:
        time.sleep(0.05)
    engine.stop()
    sub.disconnect()
    sub.loop_stop()
    lat = np.array([(got[k] - sent[k]) * 1000 for k in sent if k in got] or [np.nan])
    return float(np.percentile(lat, 50)), float(np.percentile(lat, 99))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", type=float, default=5000, help="background readings per second")
    ap.add_argument("--duration", type=float, default=40, help="seconds of steady load measured")
    ap.add_argument("--warmup", type=float, default=5, help="seconds of load before probing")
    ap.add_argument("--probe-hz", type=float, default=4, help="probe readings per second")
    ap.add_argument("--rules", choices=["shipped", "probe"], default="shipped",
                    help="shipped: every rule of config/rules.yaml; probe: only G-highhigh (isolates detector cost)")
    ap.add_argument("--batch-age-ms", type=int, default=None,
                    help="override ingest.batch_max_age_ms (default: the shipped value)")
    ap.add_argument("--backfill-rows", type=int, default=0,
                    help="one device's back-fill of this many samples in one message, mid-run (0: none; at most "
                         "about 25000 fit in ingest.max_payload_bytes)")
    ap.add_argument("--ack-after", choices=["spool", "influxdb"], default=None,
                    help="override ingest.ack_after in the generated config (default: the shipped config's); "
                         "spool: ack once fsynced in the local spool, influxdb: once InfluxDB took the batch")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (service log, alert store)")
    args = ap.parse_args()
    load_start = load_avg()

    work = Path(tempfile.mkdtemp(prefix="bench-alert-"))
    cfg0 = load_config(None, env={})
    creds = Credentials.generate(cfg0.device_ids)
    mosq = MosquittoProcess(work / "mosquitto", free_port(), creds)
    influx = InfluxProcess(work / "influx", free_port(), free_port())
    svc = None
    try:
        mosq.start()
        influx.start()
        cfg_dir = work / "config"
        shutil.copytree(ROOT / "config", cfg_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        (cfg_dir / "alerts.yaml").write_text(ALERTS_YAML.replace("STORE", str(work / "alerts.sqlite")))
        if args.batch_age_ms is not None:
            ingest = (cfg_dir / "ingest.yaml").read_text()
            ingest = "\n".join(f"  batch_max_age_ms: {args.batch_age_ms}" if line.strip().startswith("batch_max_age_ms:")
                               else line for line in ingest.splitlines())
            (cfg_dir / "ingest.yaml").write_text(ingest + "\n")
        if args.ack_after is not None:
            set_ack_after(cfg_dir / "ingest.yaml", args.ack_after)
        if args.rules == "probe":
            (cfg_dir / "rules.yaml").write_text("rules:\n  - {id: G-highhigh, type: gas_highhigh, kind: gas}\n")
        user, pw = creds.collector
        env = {**os.environ, "CITYWATCH_MQTT_HOST": "127.0.0.1", "CITYWATCH_MQTT_PORT": str(mosq.port),
               "CITYWATCH_MQTT_USERNAME": user, "CITYWATCH_MQTT_PASSWORD": pw,
               **influx.env()}
        cfg = load_config(cfg_dir, env)
        (work / "cwd").mkdir()
        log = open(work / "service.log", "wb")
        svc = subprocess.Popen([sys.executable, "-m", "citywatch", "run", "--config", str(cfg_dir),
                                "--log-level", "WARNING"], env=env, stdout=log, stderr=subprocess.STDOUT,
                               cwd=str(work / "cwd"), start_new_session=True)
        time.sleep(3.0)  # the service connects (WARNING level logs nothing on success)
        if svc.poll() is not None:
            print((work / "service.log").read_text())
            return 1

        json_devs = [d for d in cfg.devices if d.protocol == "json"]
        probe = next(d for d in json_devs if d.kind == "gas")
        filler = next((d for d in json_devs if d.kind == "gas" and d is not probe), None) if args.backfill_rows else None
        background = [d for d in json_devs if d is not probe and d is not filler]
        tuser, tpw = creds.tester

        recv: list[tuple[float, dict]] = []
        backfill: dict[str, float] = {}
        lock = threading.Lock()

        def on_message(c, u, msg):
            t = time.monotonic()
            if "/active/" in msg.topic or not msg.payload:
                return
            n = json.loads(msg.payload)
            if n.get("rule_id") == "G-highhigh" and n["device"]["id"] == probe.id:
                with lock:
                    recv.append((t, n))
            elif filler is not None and n.get("rule_id") == "G-highhigh" and n["device"]["id"] == filler.id:
                backfill["done"] = backfill.get("done", t)

        sub = client("bench-sub", tuser, tpw, mosq.port, on_message)
        sub.subscribe("city/xm/alerts/#", qos=1)
        bg = client("bench-bg", tuser, tpw, mosq.port)
        pr = client("bench-probe", tuser, tpw, mosq.port)

        stop = threading.Event()
        sent = {"readings": 0}
        next_ts = {d.id: int(time.time() * 1000) - 60_000 for d in background + [probe]}

        def ts_for(dev, n: int) -> list[int]:
            # strictly increasing per device and never ahead of the wall clock
            start = max(next_ts[dev.id], int(time.time() * 1000) - 120_000)
            out = list(range(start, start + n))
            next_ts[dev.id] = start + n
            return out

        def background_loop():
            msg_rate = args.rate / SAMPLES_PER_MESSAGE
            period = 1.0 / msg_rate
            t_next = time.monotonic()
            i = 0
            while not stop.is_set():
                dev = background[i % len(background)]
                i += 1
                value = 50.0 if dev.kind == "noise" else dev.set_pressure_kpa
                bg.publish(f"city/xm/{dev.kind}/{dev.site}/{dev.id}/data",
                           payload(dev, ts_for(dev, SAMPLES_PER_MESSAGE), dev.kind, value), qos=1)
                sent["readings"] += SAMPLES_PER_MESSAGE
                t_next += period
                delay = t_next - time.monotonic()
                if delay > 0:
                    time.sleep(delay)

        th = threading.Thread(target=background_loop, daemon=True)
        th.start()
        time.sleep(args.warmup)

        probes: list[float] = []
        probe_ts: dict[int, float] = {}
        high = True
        t_end = time.monotonic() + args.duration
        t_backfill = time.monotonic() + args.duration / 3 if filler is not None else None
        readings0, t0 = sent["readings"], time.monotonic()
        while time.monotonic() < t_end:
            if t_backfill is not None and time.monotonic() >= t_backfill:
                t_backfill = None
                now_ms = int(time.time() * 1000)
                ts = list(range(now_ms - args.backfill_rows + 1, now_ms + 1))
                doc = {"schema": "xm.gas.v1", "device_id": filler.id, "site_id": filler.site,
                       "samples": [{"ts": t, "values": {"p": filler.set_pressure_kpa}} for t in ts[:-1]]
                       + [{"ts": ts[-1], "values": {"p": filler.mop_kpa * 1.5}}]}
                body = json.dumps(doc, separators=(",", ":")).encode()
                backfill["sent"] = time.monotonic()
                pr.publish(f"city/xm/gas/{filler.site}/{filler.id}/data", body, qos=1)
            p = probe.mop_kpa * 1.5 if high else probe.set_pressure_kpa
            ts = ts_for(probe, 1)
            body = payload(probe, ts, "gas", p)
            probes.append(time.monotonic())
            probe_ts[ts[0] * 1_000_000] = probes[-1]
            pr.publish(f"city/xm/gas/{probe.site}/{probe.id}/data", body, qos=1)
            high = not high
            time.sleep(1.0 / args.probe_hz)
        achieved = (sent["readings"] - readings0) / (time.monotonic() - t0)
        time.sleep(3.0)  # the last notices arrive
        if filler is not None:
            deadline = time.monotonic() + 60
            while "done" not in backfill and time.monotonic() < deadline:
                time.sleep(0.1)
        stop.set()
        th.join(5)

        with lock:
            got = list(recv)
        engine_p50, engine_p99 = engine_only(cfg, env, creds, mosq.port, work)
        # A notice's event time is its probe reading's time (for_s = clear_for_s = 0 for G-highhigh).
        lat = [(t_recv - probe_ts[n["ts_ns"]]) * 1000 for t_recv, n in got if n["ts_ns"] in probe_ts]
        kinds = [n["transition"] for _, n in got]
        expected = ["firing", "resolved"] * (len(probes) // 2) + (["firing"] if len(probes) % 2 else [])
        in_order = kinds == expected[: len(kinds)]
        lat_a = np.array(lat) if lat else np.array([np.nan])
        p50, p99, mx = np.percentile(lat_a, 50), np.percentile(lat_a, 99), np.max(lat_a)
        print(f"background readings/s target {args.rate:.0f}, achieved {achieved:.0f}; "
              f"probes {len(probes)}, notices {len(got)}, one per probe and in order: {in_order and len(got) == len(probes)}")
        print(f"publish -> alert notice latency: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {mx:.1f} ms")
        print(f"alert engine alone (detections -> notice at a subscriber, same broker, under the same load): "
              f"p50 {engine_p50:.1f} ms, p99 {engine_p99:.1f} ms")
        extra = ""
        if filler is not None:
            # Probes published while the back-fill was in flight (from its publish to its own notice).
            t_sent, t_done = backfill.get("sent", np.inf), backfill.get("done", np.inf)
            during = np.array([(t_recv - probe_ts[n["ts_ns"]]) * 1000 for t_recv, n in got
                               if n["ts_ns"] in probe_ts and t_sent <= probe_ts[n["ts_ns"]] <= t_done]
                              or [np.nan])
            done_ms = (t_done - t_sent) * 1000
            print(f"back-fill of {args.backfill_rows} samples by {filler.id}: its last sample's notice after "
                  f"{done_ms:.0f} ms; probes published meanwhile: {int(np.sum(~np.isnan(during)))}, latency p50 "
                  f"{np.nanpercentile(during, 50):.1f} ms, max {np.nanmax(during):.1f} ms")
            extra = (f" backfill_rows={args.backfill_rows} backfill_done_ms={done_ms:.0f} "
                     f"during_probes={int(np.sum(~np.isnan(during)))} during_p50_ms={np.nanpercentile(during, 50):.1f} "
                     f"during_max_ms={np.nanmax(during):.1f}")
        load_end = load_avg()
        print(f"load averages (1/5/15 min): {load_start} at the start, {load_end} at the end")
        print(f"RESULT bench_alert_latency ack_after={cfg.ingest.ack_after} rules={args.rules} "
              f"batch_age_ms={cfg.ingest.batch_max_age_ms} rate={args.rate:.0f} achieved_readings_s={achieved:.0f} "
              f"probes={len(probes)} notices={len(got)} p50_ms={p50:.1f} p99_ms={p99:.1f} max_ms={mx:.1f} "
              f"engine_p50_ms={engine_p50:.1f} engine_p99_ms={engine_p99:.1f}" + extra
              + f" load_start={load_start} load_end={load_end}")
        for c in (sub, bg, pr):
            c.disconnect()
            c.loop_stop()
        return 0
    finally:
        if svc is not None and svc.poll() is None:
            os.kill(svc.pid, signal.SIGTERM)
            try:
                svc.wait(30)
            except subprocess.TimeoutExpired:
                os.kill(svc.pid, signal.SIGKILL)
        influx.kill()
        mosq.kill()
        mosq.remove_broker_dir()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
