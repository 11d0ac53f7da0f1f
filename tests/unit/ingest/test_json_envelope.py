"""JSON envelope codec: round trips, the ThingsBoard forms, and the shapes it refuses."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.timefmt import iso_utc_ms
from ingest.codecs.errors import DecodeError
from ingest.codecs.json_envelope import decode_envelope, encode_batch


def test_encode_matches_the_domain_example():
    doc = json.loads(encode_batch("XM0001NOISE", "JM-2025-017", "noise", [(1748788200000, {"leq": 61.8, "flag": "N"})],
                                  18231, 60, 1748788205000))
    assert doc == {
        "schema": "xm.noise.v1", "device_id": "XM0001NOISE", "site_id": "JM-2025-017", "seq": 18231,
        "sent_at": "2025-06-01T14:30:05Z", "interval_s": 60,
        "samples": [{"ts": 1748788200000, "values": {"leq": 61.8, "flag": "N"}}],
    }


def test_iso_keeps_milliseconds_only_when_present():
    assert iso_utc_ms(1748788205000) == "2025-06-01T14:30:05Z"
    assert iso_utc_ms(1748788205007) == "2025-06-01T14:30:05.007Z"


values = st.dictionaries(st.sampled_from(["leq", "lmax", "p", "batt_v"]), st.floats(-1e6, 1e6), min_size=1)


@given(
    samples=st.lists(st.tuples(st.integers(0, 2**53), values), min_size=1, max_size=70),
    kind=st.sampled_from(["noise", "gas"]),
    seq=st.integers(0, 2**40),
    units=st.none() | st.just({"p": "MPa"}),
)
def test_round_trip(samples, kind, seq, units):
    env = decode_envelope(encode_batch("D1", "S1", kind, samples, seq, 60, 1748788205000, units=units))
    assert env.form == "envelope" and env.kind == kind
    assert (env.device_id, env.site_id, env.seq, env.interval_s) == ("D1", "S1", seq, 60)
    assert env.units == (units or {})
    assert [(s["ts"], s["values"]) for s in env.samples] == samples


def test_thingsboard_object_and_array():
    one = decode_envelope(b'{"ts": 1748788200000, "values": {"leq": 61.8}}')
    assert one.form == "thingsboard" and one.kind is None
    assert one.samples == [{"ts": 1748788200000, "values": {"leq": 61.8}}]
    many = decode_envelope(b'[{"ts": 1, "values": {}}, {"ts": 2, "values": {}}]')
    assert many.form == "thingsboard_array" and len(many.samples) == 2


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"\xff\xfe{}", "binary_garbage"),
        (b"{", "invalid_json"),
        (b"[" * 100_000, "invalid_json"),
        (b"null", "bad_schema"),
        (b"[]", "bad_schema"),
        (b'"text"', "bad_schema"),
        (b'{"a": 1}', "bad_schema"),
        (b'{"samples": {}}', "bad_schema"),
        (b'{"samples": []}', "bad_schema"),
        (b'{"schema": "xm.water.v1", "samples": [{}]}', "bad_schema"),
        (b'{"schema": [], "samples": [null]}', "bad_schema"),
        (b'{"device_id": 7, "samples": [{}]}', "bad_schema"),
        (b'{"seq": "7", "samples": [{}]}', "bad_schema"),
        (b'{"interval_s": -1, "samples": [{}]}', "bad_schema"),
        (b'{"units": ["MPa"], "samples": [{}]}', "bad_schema"),
    ],
)
def test_refused_shapes(payload, reason):
    with pytest.raises(DecodeError) as exc:
        decode_envelope(payload)
    assert exc.value.reason == reason


def test_a_byte_order_mark_is_accepted():
    env = decode_envelope(b'\xef\xbb\xbf{"ts": 1748788200000, "values": {"leq": 61.8}}')
    assert env.samples == [{"ts": 1748788200000, "values": {"leq": 61.8}}]
