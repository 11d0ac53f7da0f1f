"""Decoder.decode_many gives, message by message, exactly what Decoder.decode gives."""

from __future__ import annotations

import json
import random
import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from config import load_config
from core import ReadingBatch
from ingest.codecs.json_envelope import encode_batch
from ingest.decoder import Decoder
from tests.unit.ingest.bad_inputs import catalogue

CFG = load_config("config")
NOW_MS = int(time.time() * 1000)
CATALOGUE = [(c.topic, c.payload) for c in catalogue(NOW_MS, 4096)]
NOISE = {"leq": 61.8, "lmax": 78.2, "lmin": 52.0, "l10": 65.1, "l50": 60.2, "l90": 55.3, "flag": "N"}


def good(device_id: str, k: int, t0: int, mpa: bool = False) -> tuple[str, bytes]:
    d = CFG.device(device_id)
    if d.kind == "noise":
        samples = [(t0 - 60_000 * j, NOISE) for j in range(k)]
    else:
        p = d.set_pressure_kpa / (1000 if mpa else 1)
        samples = [(t0 - 300_000 * j, {"p": p, "batt_v": 3.4}) for j in range(k)]
    return (f"city/xm/{d.kind}/{d.site}/{d.id}/data",
            encode_batch(d.id, d.site, d.kind, samples, 1, 60, NOW_MS, units={"p": "MPa"} if mpa else None))


# JSON texts json.dumps does not write, put where a number, a flag or an envelope field belongs: decode_many takes
# well-formed payloads on its typed path (ingest/codecs/json_typed.py) and must fall back on these, or agree.
NUMBER_TEXTS = ["NaN", "Infinity", "-Infinity", "1e400", "1e308", "-1e300", "9.99e299", "18446744073709551616",
                "123456789012345678901234567890", "true", '"61.8"', "[61.8]", '{"a": [[1]]}', "null", "-0.0", "61",
                "61.0", "1.7e12"]
FLAG_TEXTS = ['"X"', '"n"', '"NN"', "1", "null", '"D"', '"T"', "[]"]
ENVELOPE_TEXTS = {
    "schema": ['"xm.gas.v1"', '"xm.noise.v2"', "null", "1"], "device_id": ['"XM0002NOISE"', "null", "1"],
    "seq": ["18446744073709551616", "9223372036854775808", "1.5", '"1"', "null"],
    "interval_s": ["0", "86401", "60.5", '"60"', "true", "null"],
    "units": ['{"p": "bar"}', '{"p": 5}', "null", "{}", "false"],
    "sent_at": ['"2026\x7f"', "1", "null"], "samples": ["[]", "null", "{}"],
}


def mutate(rng: random.Random, payload: bytes) -> bytes:
    try:
        doc = json.loads(payload)
    except ValueError:
        return payload
    s = rng.choice(doc["samples"])
    ts0 = doc["samples"][0]["ts"]
    key = rng.choice(list(s["values"]))
    raw: dict[str, str] = {}  # sentinel -> the JSON text it stands for
    r = rng.random()
    if r < 0.4:
        s["values"][key] = rng.choice([None, "x", 1e9, -3.0, 0.0, 200.0, float("inf"), s["values"][key]])
    elif r < 0.6:
        s["values"][key] = "@v@"
        raw["v"] = rng.choice(FLAG_TEXTS if key == "flag" else NUMBER_TEXTS)
    elif r < 0.7:  # a duplicate key, before or after the one sent
        dup = {"@d@": 0}
        s["values"] = dup | s["values"] if rng.random() < 0.5 else s["values"] | dup
        raw["d"] = json.dumps(rng.choice([key, "leq", "flag"])) + ": " + rng.choice(NUMBER_TEXTS + FLAG_TEXTS)
    elif r < 0.8:  # a key the typed path does not know
        target = rng.choice([doc, s, s["values"]])
        target["@k@"] = 0
        raw["k"] = json.dumps(rng.choice(["junk", "rssi", "p", "fw"])) + ": " + rng.choice(["1", '"x"', "[[[]]]"])
    elif r < 0.9:
        field = rng.choice(list(ENVELOPE_TEXTS))
        doc[field] = "@e@"
        raw["e"] = rng.choice(ENVELOPE_TEXTS[field])
    else:
        s["ts"] = "@t@"
        raw["t"] = rng.choice(["1.7e12", f"{ts0}.0", "18446744073709551616", "9000000000000",
                               "-9223372036854775809", "true", '"1"', "null"])
    if rng.random() < 0.2 and s["ts"] != "@t@":
        s["ts"] = rng.choice([s["ts"] // 1000, 0, s["ts"] + 10**8, ts0])
    text = json.dumps(doc)
    for name, token in raw.items():
        text = text.replace(f'"@{name}@": 0' if name in "dk" else f'"@{name}@"', token)
    return text.encode()


def assert_same(a: ReadingBatch, b: ReadingBatch) -> None:
    assert np.array_equal(a.sensor, b.sensor) and np.array_equal(a.ts_ns, b.ts_ns)
    assert np.array_equal(a.quality, b.quality)
    for k in set(a.values) | set(b.values):
        assert np.array_equal(a.column(k), b.column(k), equal_nan=True), k


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 60))
def test_decode_many_equals_decode_one_by_one(seed, n):
    rng = random.Random(seed)
    devices = ["XM0001NOISE", "XM0002NOISE", "XMG0001", "XMG0017"]
    messages = []
    for _ in range(n):
        r = rng.random()
        if r < 0.25:
            topic, payload = rng.choice(CATALOGUE)
        else:
            dev = rng.choice(devices)
            topic, payload = good(dev, rng.choice([1, 1, 2, 20, 60]), NOW_MS - rng.randint(0, 3) * 1000,
                                  mpa=rng.random() < 0.3)
            if r < 0.6:
                payload = mutate(rng, payload)
        messages.append((topic, payload, (NOW_MS + rng.randint(0, 2000)) * 1_000_000))
    dec = Decoder(CFG)
    batch, outcomes = dec._decode_many(messages)  # the combined path itself, not its fallback
    singles = [Decoder(CFG).decode(*m) for m in messages]
    assert len(outcomes) == len(messages)
    for got, want in zip(outcomes, singles):
        assert [(r.reason, r.detail, r.row) for r in got.rejects] == [(r.reason, r.detail, r.row) for r in want.rejects]
        assert (got.kind, got.device_id, got.site_id, got.status) == (want.kind, want.device_id, want.site_id, want.status)
        assert got.rows == len(want.batch)
        assert_same(got.batch, want.batch)
    assert_same(batch, ReadingBatch.concat([s.batch for s in singles if len(s.batch)]))


def test_decode_many_of_nothing():
    batch, outcomes = Decoder(CFG).decode_many([])
    assert len(batch) == 0 and outcomes == []
