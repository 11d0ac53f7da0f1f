"""Hostile rows and payloads (issue 10): a row's trouble stays with that row, whatever it nests, and a huge
status payload is refused unparsed."""

from __future__ import annotations

import json
import time

import pytest

from config import load_config
from ingest.deadletter import DeadLetterRecord, records_for
from ingest.decode_worker import decode_chunk
from ingest.decoder import REASONS, Decoder, Reject
from ingest.validation import MAX_ROW_DEPTH

CFG = load_config("config")
GAS = next(d for d in CFG.devices if d.kind == "gas")
NOISE = next(d for d in CFG.devices if d.kind == "noise" and d.protocol == "json")
GAS_TOPIC = f"city/xm/gas/{GAS.site}/{GAS.id}/data"
STATUS_TOPIC = f"city/xm/noise/{NOISE.site}/{NOISE.id}/status"
NOW_MS = time.time_ns() // 1_000_000
RECV = NOW_MS * 1_000_000


def nested(n: int, inner: str = "1") -> str:
    return "[" * n + inner + "]" * n


def good(ts: int) -> str:
    return f'{{"ts":{ts},"values":{{"p":{GAS.set_pressure_kpa}}}}}'


@pytest.mark.parametrize("depth", [17, 600, 1000])
@pytest.mark.parametrize("where", ["value", "ts", "values", "sample", "flag"])
def test_a_deep_cell_refuses_its_row_only(depth, where):
    t = NOW_MS - 60_000
    deep = nested(depth)
    bad = {
        "value": f'{{"ts":{t + 1},"values":{{"p":{deep}}}}}',
        "ts": f'{{"ts":{deep},"values":{{"p":1}}}}',
        "values": f'{{"ts":{t + 1},"values":{deep}}}',
        "sample": deep,
        "flag": f'{{"ts":{t + 1},"values":{{"p":1,"flag":{deep}}}}}',
    }[where]
    payload = f"[{good(t)},{bad},{good(t + 2)}]".encode()
    res = decode_chunk(Decoder(CFG), [(GAS_TOPIC, payload, RECV)], 65536)
    assert len(res.batch) == 2  # both valid rows land
    [rec] = res.deadletters
    field = {"value": "p", "sample": "sample"}.get(where, where)
    assert rec.reason == "too_deep" and rec.rows == [{
        "index": 1, "reason": "too_deep", "field": field,
        "detail": f"{field} nests arrays or objects more than {MAX_ROW_DEPTH} levels deep"}]
    assert len(rec.to_json()) < 2 * len(payload) + 2000


def test_a_shallow_container_is_still_not_a_number_and_its_detail_is_short():
    t = NOW_MS - 60_000
    wide = json.dumps([list(range(1000))] * 3)
    payload = f'[{good(t)},{{"ts":{t + 1},"values":{{"p":{wide}}}}}]'.encode()
    out = Decoder(CFG).decode(GAS_TOPIC, payload, RECV)
    [rej] = out.rejects
    assert (rej.reason, rej.index, rej.field) == ("not_a_number", 1, "p") and len(rej.detail) < 80
    assert out.rows == 1


def test_a_deep_unknown_key_of_a_refused_row_is_cut_in_its_copy():
    t = NOW_MS - 60_000
    payload = f'[{good(t)},{{"ts":{t + 10**9},"values":{{"p":1,"junk":{nested(1000)}}}}}]'.encode()
    res = decode_chunk(Decoder(CFG), [(GAS_TOPIC, payload, RECV)], 65536)
    assert len(res.batch) == 1
    [rec] = res.deadletters
    assert rec.reason == "ts_future" and rec.rows[0]["field"] == "ts"
    assert "nested deeper than" in rec.to_json() and len(rec.to_json()) < 5000


def test_a_valid_row_beside_a_deep_one_passes_unchecked_junk_through_unharmed():
    t = NOW_MS - 60_000
    # An unknown key nesting deeply in a *valid* row is ignored, as any unknown telemetry is.
    payload = f'[{{"ts":{t},"values":{{"p":{GAS.set_pressure_kpa},"junk":{nested(900)}}}}}]'.encode()
    out = Decoder(CFG).decode(GAS_TOPIC, payload, RECV)
    assert out.rows == 1 and out.rejects == []


def test_building_a_record_never_raises_and_keeps_the_other_rows():
    class Hostile:
        def __str__(self):
            raise RuntimeError("no")

        def __repr__(self):
            raise RuntimeError("no")

    class D:  # a Decoded as the decoder hands it over
        device_id = GAS.id
        rejects = [Reject("not_a_number", Hostile(), {"ts": 1, "values": {"p": Hostile()}}, 0, "p"),
                   Reject("ts_future", "fine", {"ts": 2}, 1, "ts")]

    [rec] = records_for(D(), GAS_TOPIC, b"[]", RECV)
    assert [r["index"] for r in rec.rows] == [0, 1] and rec.rows[1]["detail"] == "fine"
    assert "could not be built" in rec.rows[0]["detail"]
    json.loads(rec.to_json())


def test_row_copies_are_bounded_in_breadth_and_string_length():
    row = {"ts": 1, "values": {f"k{i}": "v" * 10_000 for i in range(1000)}}
    r = DeadLetterRecord.build("ts_future", "d" * 10_000, GAS_TOPIC, b"", RECV, GAS.id, row)
    assert len(r.to_json()) < 20_000 and r.detail.endswith("...")


def test_a_huge_status_is_oversize_and_not_parsed():
    huge = b'{"status": "online", "pad": "' + b"x" * (10 * 2**20) + b'"}'
    out = Decoder(CFG).decode(STATUS_TOPIC, huge, RECV)
    assert out.status is None and [r.reason for r in out.rejects] == ["oversize"]
    assert "ingest.status_max_payload_bytes=4096" in out.rejects[0].detail
    [rec] = records_for(out, STATUS_TOPIC, huge, RECV, 65536)
    assert rec.truncated and len(rec.to_json()) < 70_000
    # A normal status is still read, and an empty one (a retained clear) is still nothing to record.
    assert Decoder(CFG).decode(STATUS_TOPIC, b'{"status": "offline"}', RECV).status == "offline"
    empty = Decoder(CFG).decode(STATUS_TOPIC, b"", RECV)
    assert empty.status is None and empty.rejects == []


def test_new_reasons_are_documented():
    assert {"too_deep", "deadletter_capped"} <= set(REASONS)
