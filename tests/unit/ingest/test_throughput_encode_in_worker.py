"""Line protocol encoded chunk by chunk where the rows are decoded (the decode worker, issue 17) is byte for byte
what encoding the whole flush in the collector's process gives; a chunk that came unencoded falls back to that."""

from __future__ import annotations

import json
import time
from pathlib import Path

from config import load_config
from ingest.batcher import MicroBatcher
from ingest.decode_worker import decode_chunk
from ingest.decoder import Decoder
from ingest.lineproto import encode

CFG = load_config(Path(__file__).resolve().parents[3] / "config", env={})
NOISE = [d for d in CFG.devices if d.kind == "noise" and d.protocol == "json"][:3]
GAS = [d for d in CFG.devices if d.kind == "gas" and d.protocol == "json"][:2]


def _msgs(t0_ms: int, n: int) -> list[tuple[str, bytes, int]]:
    out = []
    for i in range(n):
        d = (NOISE + GAS)[i % 5]
        ts = t0_ms + i * 10
        if d.kind == "noise":
            # Some messages lack lmax: rows of one flush carry different fields.
            values = {"leq": 50.0 + i % 7, "lmin": 40.5} | ({"lmax": 61.25} if i % 3 else {})
            body = {"ts": ts, "values": values}
        else:
            body = {"schema": "xm.gas.v1", "device_id": d.id, "site_id": d.site,
                    "samples": [{"ts": ts, "values": {"p": d.set_pressure_kpa + i % 4}}]}
        out.append((f"city/xm/{d.kind}/{d.site}/{d.id}/data", json.dumps(body).encode(), time.time_ns()))
    out.append(("city/xm/noise/nowhere/XX/data", b"not json", time.time_ns()))  # dead-lettered, no row
    return out


def test_chunks_encoded_in_the_worker_join_to_the_encoding_of_the_whole_flush():
    dec = Decoder(CFG)
    t0 = int(time.time() * 1000) - 3_600_000
    b = MicroBatcher(100_000, 60.0)
    for k in range(3):
        res = decode_chunk(dec, _msgs(t0 + k * 100_000, 40), 4096, CFG)
        assert res.lines is not None and len(res.batch) == 40 and res.deadletters
        b.add_many(res.batch, list(range(41)), res.deadletters, res.lines)
    flush = b.take()
    assert flush is not None and flush.encoded is not None and len(flush.batch) == 120
    assert b"".join(flush.encoded) == encode(flush.batch, CFG)
    assert b"".join(flush.encoded).count(b"\n") == 120


def test_a_chunk_decoded_without_encoding_makes_the_flush_encode_whole():
    dec = Decoder(CFG)
    t0 = int(time.time() * 1000) - 3_600_000
    b = MicroBatcher(100_000, 60.0)
    first = decode_chunk(dec, _msgs(t0, 10), 4096, CFG)
    second = decode_chunk(dec, _msgs(t0 + 100_000, 10), 4096)  # thread mode: no config, no lines
    assert second.lines is None
    b.add_many(first.batch, list(range(11)), first.deadletters, first.lines)
    b.add_many(second.batch, list(range(11)), second.deadletters, second.lines)
    assert b.take().encoded is None
    b.add_many(first.batch, list(range(11)), first.deadletters, first.lines)
    assert b.take().encoded == [first.lines]  # the next flush starts over
