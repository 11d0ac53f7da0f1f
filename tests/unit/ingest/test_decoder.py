"""Decoder: topics, the inventory checks, batch contents (sensor index, UTC ns, kPa, quality), status
messages, HJ 212 frames, and that no input makes it raise."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from config import load_config
from core import FLAG_CODES
from ingest.codecs.hj212 import build_noise_frame
from ingest.codecs.json_envelope import encode_batch
from ingest.decoder import REASONS, Decoder

CFG = load_config("config")
NOW_MS = int(time.time() * 1000)
RECV = NOW_MS * 1_000_000
GOOD = {"leq": 61.8, "lmax": 78.2, "lmin": 52.0, "l10": 65.1, "l50": 60.2, "l90": 55.3}


def topic(device_id: str, channel: str = "data") -> str:
    d = CFG.device(device_id)
    return f"city/xm/{d.kind}/{d.site}/{d.id}/{channel}"


def test_single_reading_lands_with_sensor_index_and_utc_ns():
    dec = Decoder(CFG)
    payload = encode_batch("XM0003NOISE", "JM-2025-103", "noise", [(NOW_MS - 1000, {**GOOD, "flag": "N"})], 1, 60, NOW_MS)
    out = dec.decode(topic("XM0003NOISE"), payload, RECV)
    assert out.rejects == [] and out.status is None
    assert (out.kind, out.device_id, out.site_id) == ("noise", "XM0003NOISE", "JM-2025-103")
    b = out.batch
    assert b.sensor.dtype == np.int32 and b.ts_ns.dtype == np.int64 and b.quality.dtype == np.uint8
    assert b.sensor.tolist() == [CFG.device_index("XM0003NOISE")]
    assert b.ts_ns.tolist() == [(NOW_MS - 1000) * 1_000_000]
    assert {k: v.tolist() for k, v in b.values.items()} == {k: [v] for k, v in GOOD.items()}
    assert b.quality.tolist() == [0]


def test_sixty_sample_batch_and_thingsboard_forms():
    dec = Decoder(CFG)
    samples = [(NOW_MS - 60_000 * i, {**GOOD, "flag": "C" if i == 5 else "N"}) for i in range(60)]
    out = dec.decode(topic("XM0001NOISE"), encode_batch("XM0001NOISE", "SM-2025-101", "noise", samples, 1, 60, NOW_MS), RECV)
    assert out.rejects == [] and len(out.batch) == 60
    assert out.batch.ts_ns.tolist() == [ts * 1_000_000 for ts, _ in samples]
    assert out.batch.quality[5] == FLAG_CODES.index("C")
    tb = b'{"ts": %d, "values": {"leq": 60.0}}' % (NOW_MS - 5)
    assert len(dec.decode(topic("XM0001NOISE"), tb, RECV).batch) == 1
    arr = b"[%s, %s]" % (tb, tb.replace(b"60.0", b"61.0").replace(b"%d" % (NOW_MS - 5), b"%d" % (NOW_MS - 6)))
    assert dec.decode(topic("XM0001NOISE"), arr, RECV).batch.values["leq"].tolist() == [60.0, 61.0]


def test_gas_mpa_is_stored_as_kpa():
    dec = Decoder(CFG)
    payload = encode_batch("XMG0017", "GS-SM-07", "gas", [(NOW_MS, {"p": 0.1, "batt_v": 3.55, "rsrp": -90})], 1, 300,
                           NOW_MS, units={"p": "MPa"})
    out = dec.decode(topic("XMG0017"), payload, RECV)
    assert out.rejects == []
    assert out.batch.values["p"][0] == 100.0
    assert out.batch.values["batt_v"][0] == 3.55


def test_mixed_payload_keeps_the_valid_rows_in_order():
    dec = Decoder(CFG)
    samples = [(NOW_MS - 3000, GOOD), (NOW_MS - 2000, {**GOOD, "leq": "x"}), (NOW_MS - 1000, {**GOOD, "leq": 61.0})]
    out = dec.decode(topic("XM0001NOISE"), encode_batch("XM0001NOISE", "SM-2025-101", "noise", samples, 1, 60, NOW_MS), RECV)
    assert [r.reason for r in out.rejects] == ["not_a_number"]
    assert out.rejects[0].row == {"ts": NOW_MS - 2000, "values": {**GOOD, "leq": "x"}}
    assert out.batch.values["leq"].tolist() == [61.8, 61.0]


def test_hj212_frame_lands_in_utc_with_its_flag_as_quality():
    dec = Decoder(CFG)
    local = datetime.fromtimestamp(NOW_MS // 1000, tz=UTC).replace(tzinfo=None) + timedelta(hours=8)
    frame = build_noise_frame("XM0004NOISE", local, {"LA": 63.4, "Leq": 61.8, "LMx": 78.2}, {"LA": "C"})
    out = dec.decode("city/xm/hj212/XM0004NOISE", frame, RECV)
    assert out.rejects == [] and out.device_id == "XM0004NOISE" and out.kind == "noise"
    assert out.batch.ts_ns.tolist() == [(NOW_MS // 1000) * 1_000_000_000]
    assert out.batch.quality.tolist() == [FLAG_CODES.index("C")]
    assert out.batch.values["lmax"].tolist() == [78.2]


def test_hj212_to_a_gas_device_is_wrong_kind():
    out = Decoder(CFG).decode("city/xm/hj212/XMG0001", b"##0000", RECV)
    assert [r.reason for r in out.rejects] == ["wrong_kind"]


def test_status_messages():
    dec = Decoder(CFG)
    t = topic("XM0001NOISE", "status")
    for payload, status in [(b"online", "online"), (b"offline\n", "offline"), (b'{"status": "offline"}', "offline"),
                            (b'"online"', "online")]:
        out = dec.decode(t, payload, RECV)
        assert (out.status, out.rejects, len(out.batch)) == (status, [], 0)
    cleared = dec.decode(t, b"", RECV)
    assert cleared.status is None and cleared.rejects == []
    assert [r.reason for r in dec.decode(t, b"\x00\x01", RECV).rejects] == ["bad_status"]


def test_route_cache_keeps_answers_for_repeated_topics():
    dec = Decoder(CFG)
    for _ in range(3):
        assert [r.reason for r in dec.decode("city/xm/noise/X/Y/data", b"{}", RECV).rejects] == ["unknown_device"]


@settings(max_examples=500)
@given(
    topic=st.sampled_from([topic("XM0001NOISE"), topic("XMG0017"), "city/xm/hj212/XM0004NOISE", topic("XM0001NOISE", "status"),
                           "a/b", ""]),
    payload=st.one_of(
        st.binary(max_size=200),
        st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=5),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                         ["ts", "values", "samples", "leq", "p", "schema", "units", "flag", "x", "device_id",
                          "site_id", "seq", "interval_s", "sent_at", "status"]), c, max_size=6),
                     max_leaves=20).map(lambda d: __import__("json").dumps(d).encode()),
    ),
)
def test_never_raises_and_accounts_for_every_message(topic, payload):
    out = Decoder(CFG).decode(topic, payload, RECV)
    assert all(r.reason in REASONS and r.reason != "internal_error" for r in out.rejects), out.rejects
    if not out.rejects and out.status is None and len(out.batch) == 0:
        assert payload == b"" and topic.endswith("/status")
    # the combined path (not its fallback) agrees
    _, [many] = Decoder(CFG)._decode_many([(topic, payload, RECV)])
    assert [(r.reason, r.detail) for r in many.rejects] == [(r.reason, r.detail) for r in out.rejects]
    assert many.rows == len(out.batch)
