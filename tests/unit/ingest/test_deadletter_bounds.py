"""Bounds of the dead-letter store (issue 10): one record per message, rotation inside one write, and a
per-device budget whose excess is counted and said once, so one device cannot rotate the others' away."""

from __future__ import annotations

import json
import logging
import time

import pytest

from config import load_config
from ingest.deadletter import CAPPED, DeadLetterRecord, DeadLetterStore, records_for
from ingest.decode_worker import decode_chunk
from ingest.decoder import Decoder

CFG = load_config("config")
GAS = next(d for d in CFG.devices if d.kind == "gas")
GAS_TOPIC = f"city/xm/gas/{GAS.site}/{GAS.id}/data"
RECV = 1_748_788_205_123_456_789
HOUR_NS = 3600 * 10**9


def rec(device="D", reason="invalid_json", payload=b"{", recv_ns=RECV) -> DeadLetterRecord:
    return DeadLetterRecord.build(reason, "detail", f"city/xm/noise/S/{device}/data", payload, recv_ns, device)


def size(r: DeadLetterRecord) -> int:
    return len(r.to_json()) + 1


def test_4000_refused_rows_are_one_record_with_the_payload_once_and_every_row_accounted():
    now = time.time_ns() // 1_000_000
    payload = json.dumps([{"ts": now - 1000 * i, "values": {"p": "x"}} for i in range(4000)]).encode()
    res = decode_chunk(Decoder(CFG), [(GAS_TOPIC, payload, now * 1_000_000)], 65536)
    [r] = res.deadletters
    assert r.rows_refused == 4000 and r.rows_by_reason == {"not_a_number": 4000} and len(r.reasons()) == 4000
    assert len(r.rows) == CFG.ingest.deadletter_rows_listed == 100
    assert r.rows[5] == {"index": 5, "reason": "not_a_number", "field": "p", "detail": "p must be a number, got 'x'"}
    assert r.truncated and r.payload_bytes == len(payload)
    # Bounded by the payload cap and the rows listed, not by the number of rows: under the payload's size.
    assert len(r.to_json()) < len(payload)


def test_rows_listed_is_a_limit_and_the_rest_are_counted():
    now = time.time_ns() // 1_000_000
    samples = [{"ts": now - 1000 * i, "values": {"p": "x" if i % 2 else float("nan")}} for i in range(10)]
    decoded = Decoder(CFG).decode(GAS_TOPIC, json.dumps(samples).encode(), now * 1_000_000)
    [r] = records_for(decoded, GAS_TOPIC, b"", now * 1_000_000, 100, rows_listed=3)
    assert [x["index"] for x in r.rows] == [0, 1, 2] and r.rows_refused == 10
    assert r.rows_by_reason == {"non_finite": 5, "not_a_number": 5}
    json.loads(r.to_json())  # strict JSON (the NaN row's copy says "nan")


def test_a_write_rotates_inside_itself_so_no_file_outgrows_the_limit(tmp_path):
    one = size(rec(payload=b"x" * 1000))
    store = DeadLetterStore(tmp_path, file_max_bytes=3 * one, files_kept=5)
    store.write([rec(reason=f"r{i}", payload=b"x" * 1000) for i in range(10)])  # one write of 10 records
    sizes = [p.stat().st_size for p in store.files()]
    assert len(sizes) == 4 and max(sizes) <= 3 * one
    assert [d["reason"] for d in store.read_all()] == [f"r{i}" for i in range(10)]


def test_a_record_larger_than_a_file_gets_a_file_of_its_own(tmp_path):
    store = DeadLetterStore(tmp_path, file_max_bytes=500, files_kept=5)
    store.write([rec(reason="a"), rec(reason="big", payload=b"x" * 2000), rec(reason="b")])
    assert [[json.loads(line)["reason"] for line in p.read_text().splitlines()] for p in store.files()] == [
        ["a"], ["big"], ["b"]]


def test_a_device_over_its_budget_is_counted_said_once_and_cannot_evict_another_device(tmp_path, caplog):
    big = b"x" * 4000
    one = size(rec("FLOOD", payload=big))
    store = DeadLetterStore(tmp_path, file_max_bytes=4 * one, files_kept=2, device_budget_bytes=3 * one,
                            budget_period_s=3600)
    store.write([rec("QUIET", reason="quiet")])
    with caplog.at_level(logging.WARNING, logger="ingest.deadletter"):
        results = [store.write([rec("FLOOD", payload=big)]) for _ in range(50)]
    assert [len(r.records) for r in results[:3]] == [1, 1, 1] and all(r.dropped == 0 for r in results[:3])
    # The first record over the budget is replaced by one notice; later ones are only counted.
    assert [x.reason for x in results[3].records] == [CAPPED] and results[3].dropped == 1
    assert all(r.records == [] and r.dropped == 1 for r in results[4:])
    assert store.dropped == 47
    assert len([m for m in caplog.messages if "went over its dead-letter budget" in m]) == 1
    kept = store.read_all()
    assert kept[0]["device_id"] == "QUIET"  # not rotated away by the flood
    assert [d["reason"] for d in kept].count(CAPPED) == 1
    assert "FLOOD went over its dead-letter budget" in kept[-1]["detail"]


def test_the_budget_starts_again_next_period_and_the_drops_of_the_last_one_are_logged(tmp_path, caplog):
    one = size(rec("D"))
    store = DeadLetterStore(tmp_path, device_budget_bytes=2 * one, budget_period_s=3600)
    t0 = (RECV // HOUR_NS) * HOUR_NS
    for i in range(5):
        store.write([rec("D", recv_ns=t0 + i)])
    with caplog.at_level(logging.WARNING, logger="ingest.deadletter"):
        nxt = store.write([rec("D", recv_ns=t0 + HOUR_NS)])
    assert len(nxt.records) == 1 and nxt.dropped == 0
    assert any("D: 3 dead letter(s)" in m for m in caplog.messages)  # 2 stored, 3 counted


def test_records_without_a_device_have_a_budget_per_reason(tmp_path):
    one = size(rec(None, reason="unknown_topic"))
    store = DeadLetterStore(tmp_path, device_budget_bytes=one, budget_period_s=3600)
    assert len(store.write([rec(None, reason="unknown_topic")] * 3).records) == 2  # one, and the notice
    assert len(store.write([rec(None, reason="influx_rejected")]).records) == 1  # another reason: its own budget


def test_a_failed_write_leaves_the_budget_as_it_was(tmp_path):
    one = size(rec("D"))
    store = DeadLetterStore(tmp_path, device_budget_bytes=one, budget_period_s=3600)
    (tmp_path / "deadletter.jsonl").mkdir()  # the disk refuses the file (even to root)
    with pytest.raises(OSError):
        store.write([rec("D")])
    (tmp_path / "deadletter.jsonl").rmdir()
    # The retry (the pipeline retries until the disk takes it) is judged as the first try was.
    again = store.write([rec("D")])
    assert len(again.records) == 1 and again.dropped == 0


def test_budget_settings_are_validated():
    with pytest.raises(ValueError):
        DeadLetterStore("/tmp/x", device_budget_bytes=0)
