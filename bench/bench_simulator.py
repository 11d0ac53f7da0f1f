"""Benchmark: readings per second the simulator publishes to a local Mosquitto in batched payloads.

Starts its own broker (the test fixtures' MosquittoServer: auth, ACL, persistence) on a free port in a
temporary directory, simulates the example inventory, encodes the readings in batches of --batch
samples per JSON envelope, publishes them as the devices (QoS 1) as fast as the broker acknowledges,
and prints figures. The last line is `RESULT bench_simulator key=value ...`.

    .venv/bin/python bench/bench_simulator.py [--days 6] [--batch 100]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from config import load_config  # noqa: E402
from ingest.codecs.json_envelope import encode_batch  # noqa: E402
from simulators.feed import Message, simulate_device  # noqa: E402
from simulators.publisher import BrokerCredentials, FeedPublisher  # noqa: E402
from simulators.scenario import load_scenario  # noqa: E402
from tests.servers import MosquittoServer  # noqa: E402


def batched_feed(scenario, cfg, batch: int) -> list[Message]:
    out = []
    for d in scenario.devices:
        dev = cfg.device(d)
        s = simulate_device(dev, scenario)
        names = list(s.values)
        cols = [s.values[k].tolist() for k in names]
        ts = s.ts_ms.tolist()
        flags = s.flags.tolist() if s.flags is not None else None
        topic = f"city/xm/{dev.kind}/{dev.site}/{dev.id}/data"
        for seq, i in enumerate(range(0, len(ts), batch), 1):
            samples = []
            for r in range(i, min(i + batch, len(ts))):
                v = {k: c[r] for k, c in zip(names, cols) if c[r] == c[r]}
                if flags is not None:
                    v["flag"] = flags[r]
                samples.append((ts[r], v))
            payload = encode_batch(dev.id, dev.site, dev.kind, samples, seq, dev.sample_s, samples[-1][0])
            out.append(Message(samples[-1][0], dev.id, topic, payload, len(samples)))
    out.sort(key=lambda m: (m.t_ms, m.device))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=float, default=6.0, help="simulated days of the example inventory (default 6)")
    ap.add_argument("--batch", type=int, default=100, help="samples per payload (default 100)")
    args = ap.parse_args()

    cfg = load_config(ROOT / "config")
    scenario = load_scenario(ROOT / "simulators" / "scenarios" / "city_day.yaml", cfg)
    scenario = scenario.with_duration(args.days * 86400)
    t = time.perf_counter()
    feed = batched_feed(scenario, cfg, args.batch)
    build_s = time.perf_counter() - t
    readings = sum(m.n for m in feed)
    mb = sum(len(m.payload) for m in feed) / 1e6
    print(f"feed: {len(feed)} messages, {readings} readings, {mb:.1f} MB, built in {build_s:.2f} s "
          f"({readings / build_s:,.0f} readings/s simulate+encode)")

    with tempfile.TemporaryDirectory() as tmp:
        broker = MosquittoServer(Path(tmp) / "mosquitto")
        broker.start()
        try:
            c = broker.credentials
            pub = FeedPublisher(broker.host, broker.port, BrokerCredentials(dict(c.devices), c.tester), max_inflight=1000)
            pub.connect({m.device for m in feed})
            t = time.perf_counter()
            result = pub.run(feed, speed=None)
            wall = time.perf_counter() - t
            pub.close()
        finally:
            broker.kill()
            broker.remove_broker_dir()
    rate = readings / wall
    print(f"published {result['messages']} messages ({readings} readings) to 127.0.0.1:{broker.port} "
          f"with QoS 1, every PUBACK received, in {wall:.2f} s")
    print(f"{rate:,.0f} readings/s, {result['messages'] / wall:,.0f} messages/s, {mb / wall:.1f} MB/s")
    print(f"RESULT bench_simulator readings_per_s={rate:.0f} messages_per_s={result['messages'] / wall:.0f} "
          f"batch={args.batch} readings={readings} target_met={int(rate >= 100_000)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
