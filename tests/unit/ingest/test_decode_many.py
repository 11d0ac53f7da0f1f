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


def mutate(rng: random.Random, payload: bytes) -> bytes:
    try:
        doc = json.loads(payload)
    except ValueError:
        return payload
    s = rng.choice(doc["samples"])
    key = rng.choice(list(s["values"]))
    s["values"][key] = rng.choice([None, "x", 1e9, -3.0, 0.0, 200.0, float("inf"), s["values"][key]])
    if rng.random() < 0.2:
        s["ts"] = rng.choice([s["ts"] // 1000, 0, s["ts"] + 10**8, doc["samples"][0]["ts"]])
    return json.dumps(doc).encode()


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
