"""Bad input through a real broker and `citywatch run`, as a flood: hundreds of seeded random mutations of
good payloads (bit flips, truncations, wrong types, garbage, HJ 212 frames with damaged bytes) interleaved
with good readings. Every message is accounted for (its rows land, or it has dead-letter records with the
reasons the decoder gives), every good reading lands once, and the collector keeps running.

The fixed catalogue of named bad inputs runs through the service in test_ingest_bad_inputs.py.
"""

from __future__ import annotations

import base64
import json
import os
import random
import time
from datetime import UTC, datetime, timedelta

import pytest

from config import load_config
from ingest.codecs.hj212 import build_noise_frame
from ingest.codecs.json_envelope import encode_batch
from ingest.decoder import Decoder
from tests.integration.test_ingest_bad_inputs import connect_tester, reasons_of
from tests.integration.test_ingest_harness import config_copy, service_factory  # noqa: F401 - fixture

pytestmark = [pytest.mark.integration, pytest.mark.shared_influx]

GOOD_DEV = "XM0003NOISE"  # only the good readings use this device: its point count is exact
FUZZ_JSON = ["XM0002NOISE", "XMG0002", "XMG0018"]
FUZZ_HJ = "XM0008NOISE"
FLOOD = 400
GOOD_EVERY = 4

NOISE = {"leq": 61.8, "lmax": 78.2, "lmin": 52.0, "l10": 65.1, "l50": 60.2, "l90": 55.3, "flag": "N"}
WEIRD = [None, "61.8", "", True, [], {}, -1, 0, 1e308, -1e308, 10**30, 999.9, 12, "N", "D", 3.3, float("nan")]


def _topic(cfg, device_id: str) -> str:
    d = cfg.device(device_id)
    return f"city/xm/{d.kind}/{d.site}/{d.id}/data"


def _valid(cfg, rng: random.Random, now_ms: int) -> tuple[str, bytes]:
    """A valid message of a fuzz device: a JSON envelope (noise or gas, 1-70 samples) or an HJ 212 frame."""
    if rng.random() < 0.3:
        local = datetime.fromtimestamp(now_ms // 1000 - rng.randint(60, 3600), tz=UTC).replace(tzinfo=None)
        frame = build_noise_frame(FUZZ_HJ, local + timedelta(hours=8), {"LA": 63.4, "Leq": 61.8, "LMx": 78.2}, {})
        return f"city/xm/hj212/{FUZZ_HJ}", frame
    dev = cfg.device(rng.choice(FUZZ_JSON))
    t0 = now_ms - rng.randint(120, 86_400) * 1000
    k = rng.choice([1, 1, 3, 60, 70])
    if dev.kind == "noise":
        samples = [(t0 - 60_000 * j, dict(NOISE)) for j in range(k)]
        units = None
    else:
        mpa = rng.random() < 0.3
        p = dev.set_pressure_kpa
        samples = [(t0 - 300_000 * j, {"p": p / 1000 if mpa else p, "batt_v": 3.5}) for j in range(k)]
        units = {"p": "MPa"} if mpa else None
    return _topic(cfg, dev.id), encode_batch(dev.id, dev.site, dev.kind, samples, rng.randint(0, 10**6), 60, now_ms,
                                             units=units)


def _mutate(cfg, rng: random.Random, now_ms: int) -> tuple[str, bytes]:
    topic, payload = _valid(cfg, rng, now_ms)
    how = rng.randrange(7)
    if how == 0:  # flip bits
        b = bytearray(payload)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return topic, bytes(b)
    if how == 1:  # truncate
        return topic, payload[: rng.randrange(len(payload))]
    if how == 2:  # replace one byte with a printable character
        i = rng.randrange(len(payload))
        return topic, payload[:i] + bytes([rng.randrange(32, 127)]) + payload[i + 1:]
    if how == 3:  # random bytes
        return topic, rng.randbytes(rng.randint(0, 300))
    if how == 4 and not topic.startswith("city/xm/hj212"):  # a weird value in a sample
        doc = json.loads(payload)
        s = rng.choice(doc["samples"])
        if rng.random() < 0.2:
            s["ts"] = rng.choice(WEIRD + [s["ts"] // 1000, s["ts"] + 10**9, 946684800000])
        else:
            s["values"][rng.choice(list(s["values"]))] = rng.choice(WEIRD)
        return topic, json.dumps(doc).encode()
    if how == 5:  # the right payload on a wrong topic (another site, kind or device, or a stray level)
        parts = topic.split("/")
        if parts[2] == "hj212":
            return f"city/xm/hj212/{rng.choice(['XM0012NOISE', 'NOPE', FUZZ_HJ + 'X'])}", payload
        # (the kind level stays noise|gas: the collector subscribes to those subtrees only)
        level = rng.choice([2, 3, 4])
        parts[level] = rng.choice(["noise", "gas"] if level == 2 else ["SM-2025-101", "XM0001NOISE", "x", ""])
        return "/".join(parts), payload
    return topic, payload  # some valid messages among the mutations


def _good(cfg, i: int, now_ms: int) -> tuple[str, bytes, int]:
    dev = cfg.device(GOOD_DEV)
    ts = now_ms - 3_600_000 + i * 1000
    return _topic(cfg, GOOD_DEV), encode_batch(dev.id, dev.site, "noise", [(ts, NOISE)], i, 60, now_ms), ts


def test_a_flood_of_mutated_payloads_is_fully_accounted_for(tmp_path, mosquitto, influx, service_factory):
    cfg_dir = config_copy(tmp_path)
    cfg = load_config(cfg_dir)
    svc = service_factory(cfg_dir)
    rng = random.Random(int(os.environ.get("CITYWATCH_FUZZ_SEED", "20260601")))  # fixed: reproducible
    now_ms = time.time_ns() // 1_000_000
    dec = Decoder(cfg)

    messages: list[tuple[str, bytes]] = []
    good_ts: list[int] = []
    for i in range(FLOOD):
        if i % GOOD_EVERY == 0:
            topic, payload, ts = _good(cfg, i, now_ms)
            good_ts.append(ts)
        else:
            topic, payload = _mutate(cfg, rng, now_ms)
        messages.append((topic, payload))

    pub = connect_tester(mosquitto)
    for topic, payload in messages:
        pub.publish(topic, payload, qos=1).wait_for_publish(20)
    # The last good reading is published after the flood: it lands only if the collector survived it.
    topic, payload, ts = _good(cfg, FLOOD, now_ms)
    pub.publish(topic, payload, qos=1).wait_for_publish(20)
    good_ts.append(ts)

    # What the decoder says of each message, at (almost) the receive time: messages are built with
    # timestamps minutes away from every limit, so the few seconds between here and there do not matter.
    expected_rejects = []
    for topic, payload in messages:
        out = dec.decode(topic, payload, time.time_ns())
        if out.rejects:
            expected_rejects.append((topic, payload, sorted(r.reason for r in out.rejects)))
    assert len(expected_rejects) >= FLOOD // 2

    good_idx = cfg.device_index(GOOD_DEV)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        n = influx.count("noise", "leq", f"device_id = '{GOOD_DEV}'")
        if n >= len(good_ts):
            break
        time.sleep(0.25)
    assert n == len(good_ts), f"{n} of {len(good_ts)} good readings landed (sensor {good_idx})"

    store = tmp_path / "var" / "deadletter"
    records = []
    for path in sorted(store.glob("deadletter*.jsonl"), key=lambda p: (p.name != "deadletter.jsonl", p.name),
                       reverse=True):
        records += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    groups: list[list[dict]] = []
    for rec in records:
        if groups and (groups[-1][0]["recv_ns"], groups[-1][0]["topic"]) == (rec["recv_ns"], rec["topic"]):
            groups[-1].append(rec)
        else:
            groups.append([rec])
    # One group per refused message, in publish order, with the decoder's reasons and the payload kept.
    assert len(groups) == len(expected_rejects)
    for (topic, payload, reasons), group in zip(expected_rejects, groups):
        assert group[0]["topic"] == topic
        assert len(group) == 1 and sorted(reasons_of(group[0])) == reasons  # one record per message
        rec = group[0]
        kept = base64.b64decode(rec["payload"]) if rec["payload_encoding"] == "base64" else rec["payload"].encode()
        assert rec["payload_bytes"] == len(payload)
        assert payload.startswith(kept) and (rec["truncated"] or len(kept) >= len(payload) - 3)
    assert svc.proc.poll() is None
    pub.disconnect()
    assert svc.terminate() == 0



def test_awkward_values_and_tags_land_exactly_as_encoded(influx):
    """Line protocol at the edges (tiny and huge floats, negative zero, every flag, tag values needing
    escapes) is accepted by a real InfluxDB and reads back bit for bit."""
    from config.model import Config
    from core import FLAG_CODES, ReadingBatch
    from ingest.lineproto import encode

    base = load_config()
    raw = base.model_dump(by_alias=True)
    raw["sites"][0]["district"] = 'Si ming, "old"=town\\'
    cfg = Config.model_validate(raw)
    idx = cfg.device_index(cfg.devices[0].id)
    gas = next(i for i, d in enumerate(cfg.devices) if d.kind == "gas")
    values = [1e-05, 4294967295.0, -0.0, 139.99999999999997, 25.0, 2.2250738585072014e-308, 1e300, 61.8]
    n = len(values)
    t0 = 1_748_788_200_000_000_000
    batch = ReadingBatch(
        [idx] * n + [gas], [t0 + i for i in range(n + 1)],
        {"leq": values + [float("nan")], "p": [float("nan")] * n + [-4.99]},
        [i % len(FLAG_CODES) for i in range(n)] + [0],
    )
    influx.write(encode(batch, cfg))
    res = influx.query('SELECT "leq", "flag", "district" FROM "noise" ORDER BY time')
    rows = res[0]["series"][0]["values"]
    assert [r[0] for r in rows] == [t0 + i for i in range(n)]
    assert [r[1] for r in rows] == values
    assert [r[2] for r in rows] == [FLAG_CODES[i % len(FLAG_CODES)] for i in range(n)]
    assert {r[3] for r in rows} == {'Si ming, "old"=town/'}  # a backslash cannot round-trip in 1.x tags
    assert influx.query('SELECT "p" FROM "gas_pressure"')[0]["series"][0]["values"] == [[t0 + n, -4.99]]
