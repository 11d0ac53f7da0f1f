"""decode_chunk decodes a chunk in one Decoder.decode_many call (issue 17: the decode worker's cost per message);
its result is exactly what decoding the chunk message by message gives: rows, line protocol, dead letters with
their reasons and rows, device statuses, ignored command messages and flag-only rows. A failure of the combined
path falls back to the message-by-message path."""

from __future__ import annotations

import json
import random
import time
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from config import load_config
from core import ReadingBatch
from ingest.codecs.hj212 import build_noise_frame
from ingest.codecs.json_envelope import encode_batch
from ingest.decode_worker import ChunkResult, _decode_one_by_one, decode_chunk
from ingest.decoder import Decoder
from ingest.lineproto import encode
from tests.unit.ingest.bad_inputs import catalogue

CFG = load_config("config")
NOW_MS = int(time.time() * 1000)
CATALOGUE = [(c.topic, c.payload) for c in catalogue(NOW_MS, 4096)]
NOISE = {"leq": 61.8, "lmax": 78.2, "lmin": 52.0, "l10": 65.1, "l50": 60.2, "l90": 55.3, "flag": "N"}
HJ_DEV = CFG.device("XM0004NOISE")


def good(device_id: str, k: int, t0: int, flag: str = "N") -> tuple[str, bytes]:
    d = CFG.device(device_id)
    if d.kind == "noise":
        samples = [(t0 - 60_000 * j, NOISE | {"flag": flag}) for j in range(k)]
    else:
        samples = [(t0 - 300_000 * j, {"p": d.set_pressure_kpa, "batt_v": 3.4}) for j in range(k)]
    return f"city/xm/{d.kind}/{d.site}/{d.id}/data", encode_batch(d.id, d.site, d.kind, samples, 1, 60, NOW_MS)


def single(device_id: str, ts: int) -> tuple[str, bytes]:
    """A ThingsBoard single reading, the shape of issue 17's stream."""
    d = CFG.device(device_id)
    body = {"ts": ts, "values": {"leq": 61.8, "lmax": 78.2, "lmin": 52.0, "l90": 55.3}}
    return f"city/xm/{d.kind}/{d.site}/{d.id}/data", json.dumps(body).encode()


def frame(flag: str, ts_ms: int) -> tuple[str, bytes]:
    local = datetime.fromtimestamp(ts_ms // 1000, tz=UTC).replace(tzinfo=None) + timedelta(hours=8)
    mn = HJ_DEV.mn_or_id
    return f"city/xm/hj212/{mn}", build_noise_frame(mn, local, {"LA": 63.4, "Leq": 61.8, "LMx": 78.2},
                                                    {"LA": "N", "Leq": flag, "LMx": "N"})


def assert_same_batch(a: ReadingBatch, b: ReadingBatch) -> None:
    assert np.array_equal(a.sensor, b.sensor) and np.array_equal(a.ts_ns, b.ts_ns)
    assert np.array_equal(a.quality, b.quality)
    for k in set(a.values) | set(b.values):
        assert np.array_equal(a.column(k), b.column(k), equal_nan=True), k


def assert_same(got: ChunkResult, want: ChunkResult) -> None:
    assert_same_batch(got.batch, want.batch)
    assert got.lines == want.lines
    assert [d.to_json() for d in got.deadletters] == [d.to_json() for d in want.deadletters]
    assert got.statuses == want.statuses
    assert got.ignored == want.ignored
    assert_same_batch(got.flagged, want.flagged)
    assert got.flagged_at.tolist() == want.flagged_at.tolist()
    assert_same_batch(got.with_flagged(), want.with_flagged())


def one_by_one(msgs: list[tuple[str, bytes, int]]) -> ChunkResult:
    """The reference: the message-by-message path, encoded as decode_chunk encodes."""
    want = _decode_one_by_one(Decoder(CFG), msgs, 4096)
    want.lines = encode(want.batch, CFG)
    return want


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32), st.integers(1, 80))
def test_a_chunk_decoded_together_is_the_chunk_decoded_message_by_message(seed, n):
    rng = random.Random(seed)
    devices = ["XM0001NOISE", "XM0002NOISE", "XMG0001", "XMG0017"]
    msgs = []
    for _ in range(n):
        r = rng.random()
        t = NOW_MS - rng.randint(0, 3) * 1000
        if r < 0.2:
            topic, payload = rng.choice(CATALOGUE)
        elif r < 0.3:
            topic, payload = frame(rng.choice("NNDM"), t)
        elif r < 0.35:
            d = CFG.device(rng.choice(devices))
            topic, payload = f"city/xm/{d.kind}/{d.site}/{d.id}/status", rng.choice([b"online", b"offline", b"x"])
        elif r < 0.4:
            d = CFG.device(rng.choice(devices))
            topic, payload = f"city/xm/{d.kind}/{d.site}/{d.id}/cmd", b'{"reboot": true}'
        elif r < 0.7:
            topic, payload = single(rng.choice(devices[:2]), t)
        else:
            topic, payload = good(rng.choice(devices), rng.choice([1, 2, 20, 60]), t, rng.choice("NNNNDM"))
        msgs.append((topic, payload, (NOW_MS + rng.randint(0, 2000)) * 1_000_000))
    assert_same(decode_chunk(Decoder(CFG), msgs, 4096, CFG), one_by_one(msgs))


def test_the_fields_of_an_out_of_range_row_are_named_in_one_order_whatever_came_before_in_the_chunk():
    """Regression (CI, 2026-12-06): a chunk's columns are in first-seen order, so a row without leq before an
    out-of-range row named its fields "lmax,leq" where the message alone gave "leq,lmax"."""
    d = CFG.device("XM0001NOISE")
    topic = f"city/xm/noise/{d.site}/{d.id}/data"
    first = encode_batch(d.id, d.site, "noise", [(NOW_MS, {"lmax": 78.2, "lmin": 52.0})], 1, 60, NOW_MS)
    loud = encode_batch(d.id, d.site, "noise", [(NOW_MS - 60_000, NOISE | {"leq": 500.0, "lmax": 600.0})], 2, 60,
                        NOW_MS)
    msgs = [(topic, first, NOW_MS * 1_000_000), (topic, loud, NOW_MS * 1_000_000)]
    got = decode_chunk(Decoder(CFG), msgs, 4096, CFG)
    assert_same(got, one_by_one(msgs))
    assert json.loads(got.deadletters[-1].to_json())["rows"][0]["field"] == "leq,lmax"


def test_every_bad_input_of_the_catalogue_keeps_its_dead_letter_and_reason():
    msgs = [(t, p, NOW_MS * 1_000_000) for t, p in CATALOGUE]
    got = decode_chunk(Decoder(CFG), msgs, 4096, CFG)
    assert_same(got, one_by_one(msgs))
    assert len(got.deadletters) >= len(CATALOGUE) - sum(1 for t, _ in CATALOGUE if t.endswith("/status"))


def test_a_failing_combined_path_falls_back_to_message_by_message(monkeypatch):
    msgs = [(*single("XM0001NOISE", NOW_MS - k * 1000), NOW_MS * 1_000_000) for k in range(5)]
    msgs.append(("city/xm/noise/nowhere/XX/data", b"not json", NOW_MS * 1_000_000))
    dec = Decoder(CFG)

    def broken(messages):
        raise RuntimeError("bug")

    monkeypatch.setattr(dec, "decode_many", broken)
    got = decode_chunk(dec, msgs, 4096, CFG)
    assert_same(got, one_by_one(msgs))
    assert len(got.batch) == 5 and [d.reason for d in got.deadletters] == ["unknown_device"]
