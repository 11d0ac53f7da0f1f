"""Dead-letter records and the rotating JSONL store."""

from __future__ import annotations

import base64
import json

import pytest

from core.timefmt import iso_utc
from ingest.deadletter import DeadLetterRecord, DeadLetterStore

RECV = 1_748_788_205_123_456_789


def rec(reason="invalid_json", payload=b"{", **kw) -> DeadLetterRecord:
    return DeadLetterRecord.build(reason, "detail", "city/xm/noise/S/D/data", payload, RECV, **kw)


def test_record_fields_and_json():
    r = rec(device_id="D", row={"ts": 1, "values": {"leq": float("nan")}})
    d = json.loads(r.to_json())
    assert d["reason"] == "invalid_json" and d["topic"] == "city/xm/noise/S/D/data"
    assert d["payload"] == "{" and d["payload_encoding"] == "utf-8" and d["payload_bytes"] == 1
    assert d["truncated"] is False
    assert d["recv_time"] == "2025-06-01T14:30:05.123456Z" and d["recv_ns"] == RECV
    assert d["device_id"] == "D"
    assert d["row"] == {"ts": 1, "values": {"leq": "nan"}}


def test_binary_payload_is_base64():
    r = rec(payload=b"\xff\x00\x01")
    assert r.payload_encoding == "base64" and base64.b64decode(r.payload) == b"\xff\x00\x01"
    assert r.raw_payload() == b"\xff\x00\x01"


def test_payload_is_size_capped_and_says_so():
    r = rec(payload=b"x" * 1000, max_payload_bytes=100)
    assert r.truncated and r.payload == "x" * 100 and r.payload_bytes == 1000
    # a cut through a multi-byte character stays text
    r = rec(payload="噪".encode() * 100, max_payload_bytes=100)
    assert r.payload_encoding == "utf-8" and r.truncated and r.payload == "噪" * 33


def test_write_read_all_in_order(tmp_path):
    store = DeadLetterStore(tmp_path / "dl", file_max_bytes=10_000, files_kept=3)
    store.write([rec(reason=f"r{i}") for i in range(5)])
    store.write([])
    store.write([rec(reason="r5")])
    assert [d["reason"] for d in store.read_all()] == [f"r{i}" for i in range(6)]
    store.close()
    # a new store over the same directory appends
    again = DeadLetterStore(tmp_path / "dl", file_max_bytes=10_000, files_kept=3)
    again.write([rec(reason="r6")])
    assert [d["reason"] for d in again.read_all()][-2:] == ["r5", "r6"]


def test_rotation_keeps_files_kept_files(tmp_path):
    one = len(rec().to_json()) + 1
    store = DeadLetterStore(tmp_path, file_max_bytes=one * 2, files_kept=2)
    for i in range(10):
        store.write([rec(reason=f"r{i}")])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["deadletter.1.jsonl", "deadletter.2.jsonl", "deadletter.jsonl"]
    assert [d["reason"] for d in store.read_all()] == [f"r{i}" for i in range(4, 10)]


def test_a_torn_tail_is_skipped_and_not_glued_to_the_next_record(tmp_path):
    store = DeadLetterStore(tmp_path)
    store.write([rec(reason="a")])
    store.close()
    with open(tmp_path / "deadletter.jsonl", "ab") as fh:
        fh.write(b'{"reason": "torn')
    store = DeadLetterStore(tmp_path)
    store.write([rec(reason="b")])
    assert [d["reason"] for d in store.read_all()] == ["a", "b"]


def test_bad_arguments():
    with pytest.raises(ValueError):
        DeadLetterStore("/tmp/x", file_max_bytes=0)


def test_iso_ns():
    assert iso_utc(0, 6) == "1970-01-01T00:00:00.000000Z"
