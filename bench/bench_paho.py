"""Benchmark: what one paho-mqtt subscriber can take from Mosquitto, by protocol, ack mode and receive path.

One local Mosquitto (the stack's raised limits, auth, ACL, persistence). For each variant, the subscriber's
persistent session is made and subscribed first; then 8 `mosquitto_pub -l` publishers (QoS 1) queue
--messages single-reading messages (`{"ts", "values": {leq, lmax, lmin, l90}}`, the issue 17 shape) into
it; then the subscriber process starts and drains the backlog, timed from its CONNACK to its last message.
CPU µs per message is the subscriber process's user + system CPU over the same span (all its threads),
divided by the messages it got. The publishers are not on the clock.

Variants (name = protocol-acks-client[-props][-xN]):
  protocol  v311 (MQTT 3.1.1, clean_session false) | v5 (MQTT 5, session expiry, Receive Maximum 20000)
  acks      auto (paho acks in its loop) | manual (an acking thread sends PUBACKs in batches every 2 ms, as
            the collector does after durability) | manual1 (one `client.ack` per message in on_message)
  client    paho (paho's own on_message path) | recv (ingest.collector.ReceiveClient: the collector's
            buffered reads and in-place PUBLISH decoding)
  props     the publishers attach two MQTT 5 user properties to each message (v5 subscribers get them)
  xN        N subscriber processes on one `$share/bench/...` shared subscription (MQTT 5 on Mosquitto)
The order of the variants is shuffled per round (--rounds, best of rounds per variant).

Run:  .venv/bin/python bench/bench_paho.py [--messages 40000] [--rounds 2] [--variants v5-auto-paho,...]
Ends with: RESULT bench_paho messages=.. then per variant <name>_msg_s=.. <name>_cpu_us=..
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEVICES = 8
TOPIC_PREFIX = "city/xm/internal/bench/paho"  # the collector account may read and write here (stack ACL)
DEFAULT_VARIANTS = ("v311-auto-paho", "v311-manual-paho", "v311-manual1-paho", "v5-auto-paho", "v5-manual-paho",
                    "v5-manual-paho-props", "v5-manual1-paho", "v311-manual-recv", "v5-manual-recv",
                    "v5-manual-recv-props", "v5-manual-paho-x2", "v5-manual-recv-x2")


def parse_variant(name: str) -> dict:
    """`v5-manual-recv-props-x2` -> its settings; raises SystemExit naming what is wrong."""
    parts = name.split("-")
    if len(parts) < 3 or parts[0] not in ("v311", "v5") or parts[1] not in ("auto", "manual", "manual1") \
            or parts[2] not in ("paho", "recv"):
        raise SystemExit(f"bench_paho: variant {name!r}: expected (v311|v5)-(auto|manual|manual1)-(paho|recv)"
                         f"[-props][-xN]")
    v = {"name": name, "proto": parts[0], "acks": parts[1], "client": parts[2], "props": False, "procs": 1}
    for extra in parts[3:]:
        if extra == "props":
            v["props"] = True
        elif extra.startswith("x") and extra[1:].isdigit() and int(extra[1:]) >= 1:
            v["procs"] = int(extra[1:])
        else:
            raise SystemExit(f"bench_paho: variant {name!r}: unknown part {extra!r} (props, xN)")
    if v["procs"] > 1 and v["proto"] != "v5":
        raise SystemExit(f"bench_paho: variant {name!r}: a shared subscription needs v5 on Mosquitto")
    return v


def wait_for(cond, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


# ----- the subscriber process ----------------------------------------------------------------------------------

def child(args) -> int:
    """Subscriber process: --prime makes and subscribes the persistent session; else drain and print JSON."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from ingest.collector import ReceiveClient

    v5 = args.proto == "v5"
    manual = args.acks != "auto"
    clean = args.clean
    cls = ReceiveClient if args.client == "recv" else mqtt.Client
    if v5:
        c = cls(CallbackAPIVersion.VERSION2, client_id=args.cid, protocol=mqtt.MQTTv5, manual_ack=manual)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0 if clean else 3600
        props.ReceiveMaximum = 20000
    else:
        c = cls(CallbackAPIVersion.VERSION2, client_id=args.cid, protocol=mqtt.MQTTv311, clean_session=clean,
                manual_ack=manual)
        props = None
    c.username_pw_set(args.user, args.pw)
    c.max_queued_messages_set(0)
    got = [0]
    mids: list[int] = []
    t_conn: list[tuple[float, float]] = []
    subscribed = threading.Event()

    cpu = time.process_time  # user + system CPU of all this process's threads, in fractional seconds

    def on_connect(client, userdata, flags, rc, properties=None):
        t_conn.append((time.time(), cpu()))
        if args.prime:
            client.subscribe(args.topic, qos=1)

    def on_subscribe(*a):
        subscribed.set()

    if args.acks == "manual1":
        def count(mid: int) -> None:
            got[0] += 1
            c.ack(mid, 1)
    elif args.acks == "manual":
        def count(mid: int) -> None:
            got[0] += 1
            mids.append(mid)
    else:
        def count(mid: int) -> None:
            got[0] += 1

    if args.client == "recv":
        c.on_publish_received = lambda topic, payload, mid, qos, retain: count(mid)
    else:
        c.on_message = lambda client, userdata, msg: count(msg.mid)
    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    if v5:
        c.connect("127.0.0.1", args.port, clean_start=clean, properties=props)
    else:
        c.connect("127.0.0.1", args.port)
    c.loop_start()
    if clean:  # a clean connect ends the persistent session: later variants' messages are not queued for it
        ok = wait_for(lambda: bool(t_conn), 10)
        c.disconnect()
        c.loop_stop()
        return 0 if ok else 1
    if args.prime:
        ok = subscribed.wait(10)
        c.disconnect()
        c.loop_stop()
        return 0 if ok else 1

    def acker() -> None:  # the collector's batched PUBACKs (ingest.collector.MqttCollector.ack)
        while True:
            time.sleep(0.002)
            n = len(mids)
            if n:
                batch = mids[:n]
                del mids[:n]
                blob = b"".join(b"\x40\x02" + m.to_bytes(2, "big") for m in batch)
                c._packet_queue(0x40, blob, 0, 0)

    if args.acks == "manual":
        threading.Thread(target=acker, daemon=True).start()
    samples: list[tuple[float, int, float]] = []
    last_change = time.monotonic()
    while True:
        time.sleep(0.02)
        n = got[0]
        samples.append((time.time(), n, cpu()))
        if len(samples) > 1 and n != samples[-2][1]:
            last_change = time.monotonic()
        if n >= args.expect or time.monotonic() - last_change > args.idle_s:
            break
    time.sleep(0.1)  # the last acks go out before the session is left
    c.disconnect()
    c.loop_stop()
    final = samples[-1][1]
    end = next(s for s in samples if s[1] == final)
    start_t, start_cpu = t_conn[0] if t_conn else (samples[0][0], samples[0][2])
    print(json.dumps({"got": final, "t0": start_t, "t1": end[0], "cpu_s": end[2] - start_cpu}), flush=True)
    return 0


# ----- the parent ----------------------------------------------------------------------------------------------

def line(i: int, ts: int) -> str:
    v = 50.0 + (i % 17) * 0.3
    return f'{{"ts":{ts},"values":{{"leq":{v:.1f},"lmax":{v + 8:.1f},"lmin":{v - 5:.1f},"l90":{v - 3:.1f}}}}}'


def publish(port: int, user: str, pw: str, n: int, props: bool, t0_ms: int) -> float:
    """Queue n messages from DEVICES `mosquitto_pub -l` processes (QoS 1); returns the seconds it took."""
    per = [n // DEVICES + (1 if i < n % DEVICES else 0) for i in range(DEVICES)]
    procs = []
    start = time.monotonic()
    for d, k in enumerate(per):
        cmd = ["mosquitto_pub", "-h", "127.0.0.1", "-p", str(port), "-u", user, "-P", pw, "-q", "1", "-l",
               "-t", f"{TOPIC_PREFIX}/dev{d}", "-i", f"bench-paho-pub-{d}-{os.getpid()}", "-M", "1000", "-V", "5"]
        if props:
            cmd += ["-D", "publish", "user-property", "site", "S01", "-D", "publish", "user-property", "fw", "1.4.2"]
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        procs.append((p, "\n".join(line(i, t0_ms + i * 100) for i in range(k)) + "\n"))
    threads = [threading.Thread(target=p.communicate, args=(data.encode(),), daemon=True) for p, data in procs]
    for th in threads:
        th.start()
    for th in threads:
        th.join(300)
    bad = [p.returncode for p, _ in procs if p.returncode != 0]
    if bad:
        raise RuntimeError(f"mosquitto_pub failed (exit codes {bad})")
    return time.monotonic() - start


def run_variant(v: dict, port: int, user: str, pw: str, n: int, run_no: int) -> dict:
    # A group of its own per variant and round: a shared group also hands messages to its offline members.
    group = f"b{run_no}{v['name'].replace('-', '')}"
    topic = f"{TOPIC_PREFIX}/#" if v["procs"] == 1 else f"$share/{group}/{TOPIC_PREFIX}/#"
    base = [sys.executable, __file__, "--child", "--proto", v["proto"], "--acks", v["acks"], "--client", v["client"],
            "--port", str(port), "--user", user, "--pw", pw, "--topic", topic, "--expect", str(n)]
    cids = [f"bench-paho-{v['name']}-{run_no}-{k}" for k in range(v["procs"])]
    for cid in cids:
        if subprocess.run(base + ["--cid", cid, "--prime"], timeout=60).returncode:
            raise RuntimeError(f"{v['name']}: the subscriber could not subscribe")
    publish(port, user, pw, n, v["props"], int(time.time() * 1000))
    time.sleep(0.5)
    procs = [subprocess.Popen(base + ["--cid", cid], stdout=subprocess.PIPE, text=True) for cid in cids]
    outs = [json.loads(p.communicate(timeout=600)[0].strip().splitlines()[-1]) for p in procs]
    for cid in cids:
        subprocess.run(base + ["--cid", cid, "--clean"], timeout=60)
    got = sum(o["got"] for o in outs)
    span = max(o["t1"] for o in outs) - min(o["t0"] for o in outs)
    cpu = sum(o["cpu_s"] for o in outs)
    return {"got": got, "msg_s": got / span if span > 0 else 0.0, "cpu_us": cpu / got * 1e6 if got else 0.0,
            "split": [o["got"] for o in outs]}


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=40_000, help="messages per variant and round (default 40000)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds; each variant's best round counts (default 2)")
    ap.add_argument("--variants", default=",".join(DEFAULT_VARIANTS), help="comma-separated variant names")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--prime", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--clean", action="store_true", help=argparse.SUPPRESS)
    for name in ("proto", "acks", "client", "user", "pw", "topic", "cid"):
        ap.add_argument(f"--{name}", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--idle-s", type=float, default=2.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if args.messages < DEVICES or args.rounds < 1:
        raise SystemExit(f"bench_paho: --messages must be at least {DEVICES} and --rounds at least 1")
    variants = [parse_variant(x.strip()) for x in args.variants.split(",") if x.strip()]

    from citywatch.localstack import Credentials, MosquittoProcess, free_port
    from config import load_config

    cfg = load_config(ROOT / "config", env={})
    creds = Credentials.generate(cfg.device_ids)
    work = Path(tempfile.mkdtemp(prefix="bench_paho_"))
    mosq = MosquittoProcess(work / "mosquitto", free_port(), creds)
    mosq.start()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # the broker is still killed (finally below)
    user, pw = creds.collector
    best: dict[str, dict] = {}
    print(f"bench_paho: {args.messages:,} messages per variant, {args.rounds} round(s); load {loadavg()}")
    try:
        for r in range(args.rounds):
            order = variants[:]
            random.shuffle(order)
            for v in order:
                res = run_variant(v, mosq.port, user, pw, args.messages, r)
                lost = args.messages - res["got"]
                print(f"  round {r + 1} {v['name']:24s} {res['msg_s']:9,.0f} msg/s  {res['cpu_us']:6.1f} CPU µs/msg"
                      f"{'  split ' + '/'.join(map(str, res['split'])) if v['procs'] > 1 else ''}"
                      f"{f'  LOST {lost}' if lost else ''}  load {loadavg()}", flush=True)
                if lost:
                    res["msg_s"] = 0.0  # a variant that lost messages does not count
                if v["name"] not in best or res["msg_s"] > best[v["name"]]["msg_s"]:
                    best[v["name"]] = res
    finally:
        mosq.kill()
        mosq.remove_broker_dir()
        shutil.rmtree(work, ignore_errors=True)
    parts = [f"messages={args.messages}"]
    for v in variants:
        b = best[v["name"]]
        key = v["name"].replace("-", "_")
        parts.append(f"{key}_msg_s={b['msg_s']:.0f} {key}_cpu_us={b['cpu_us']:.1f}")
    print(f"load {loadavg()}")
    print("RESULT bench_paho " + " ".join(parts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
