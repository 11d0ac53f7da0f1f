"""The typed fast path of decode_many (ingest/codecs/json_typed.py, issue 17): it is taken for well-formed payloads,
its rows are exactly the rows the orjson path gives, and anything unusual falls back to the orjson path, which names it.
(tests/unit/ingest/test_decode_many.py compares whole decode_many outcomes with `decode` on mutated payloads.)"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import load_config
from core import ReadingBatch
from ingest import decoder as decoder_module
from ingest.codecs.json_envelope import decode_json, encode_batch, envelope_of
from ingest.codecs.json_typed import decode_typed, typed_rows
from ingest.decode_worker import _decode_one_by_one, decode_chunk
from ingest.decoder import Decoded, Decoder
from ingest.validation import Rows, extract_rows

CFG = load_config("config")
NOW_MS = int(time.time() * 1000)
RECV = NOW_MS * 1_000_000
T = NOW_MS - 60_000
NOISE = CFG.device("XM0001NOISE")
GAS = CFG.device("XMG0017")  # full scale 250 kPa
NOISE_TOPIC = f"city/xm/noise/{NOISE.site}/{NOISE.id}/data"
GAS_TOPIC = f"city/xm/gas/{GAS.site}/{GAS.id}/data"
GOOD = '"leq":61.8,"lmax":78.2,"lmin":52.0,"l10":65.1,"l50":60.2,"l90":55.3,"flag":"N"'


def sample(values: str = GOOD, ts: object = T) -> str:
    return f'{{"ts":{ts},"values":{{{values}}}}}'


def noise(*samples: str, head: str = "") -> bytes:
    """A noise envelope of the given sample texts (JSON text, so that it can hold what json.dumps never writes)."""
    env = head or f'"schema":"xm.noise.v1","device_id":"{NOISE.id}","site_id":"{NOISE.site}","seq":7,' \
                  '"sent_at":"2026-12-07T08:00:00Z","interval_s":60'
    return ("{" + env + ',"samples":[' + ",".join(samples) + "]}").encode()


def batch60(flag: str = "N", t0: int = T) -> bytes:
    values = {"leq": 61.8, "lmax": 78.2, "lmin": 52.0, "l10": 65.1, "l50": 60.2, "l90": 55.3, "flag": flag}
    return encode_batch(NOISE.id, NOISE.site, "noise", [(t0 - 60_000 * j, values) for j in range(60)], 1, 60, NOW_MS)


def gas(values: str = '"p":100.0,"batt_v":3.4', units: str = "") -> bytes:
    head = f'"schema":"xm.gas.v1","device_id":"{GAS.id}","site_id":"{GAS.site}"'
    head += f',"units":{units}' if units else ""
    return noise(sample(values), sample(values, T - 300_000), head=head)


# (name, topic, payload, whether json_typed decodes it). Every case is also decoded by decode_many and by decode,
# which must agree (the typed ones: on the typed path; the others: on the orjson path).
CASES: list[tuple[str, str, bytes, bool]] = [
    # --- well-formed: the typed path --------------------------------------------------------------------------
    ("batch60", NOISE_TOPIC, batch60(), True),
    ("batch60_flag_d_refused", NOISE_TOPIC, batch60("D"), True),
    ("batch60_all_in_the_future", NOISE_TOPIC, batch60(t0=NOW_MS + 10**8), True),
    ("mixed_flags_and_gaps", NOISE_TOPIC, noise(sample(), sample('"leq":62,"flag":"C"', T + 1),
                                                sample('"la":63.5,"leq":null,"flag":null', T + 2),
                                                sample('"leq":-0.0,"rain":0', T + 3)), True),
    ("only_zeros_in_a_column", NOISE_TOPIC, noise(sample('"leq":61.8,"rain":0'), sample('"leq":61.9,"rain":0', T + 1)),
     True),
    ("rows_refused_by_checks", NOISE_TOPIC, noise(sample(), sample(ts=T // 1000), sample(ts=NOW_MS + 10**9),
                                                  sample('"leq":500,"lmax":600'), sample('"lmax":70,"lmin":50'),
                                                  sample('"leq":80,"lmax":78.2'), sample()), True),
    ("ts_at_the_clamp_limits", NOISE_TOPIC, noise(sample(ts=8_999_999_999_999), sample(ts=-8_999_999_999_999)), True),
    ("huge_int_value_is_a_float_on_both_paths", NOISE_TOPIC, noise(sample('"leq":123456789012345678901234567890')),
     True),
    ("value_just_below_1e300", NOISE_TOPIC, noise(sample('"leq":9.99e299')), True),
    ("escaped_key", NOISE_TOPIC, noise(sample('"le\\u0071":61.8')), True),
    ("duplicate_key_both_numbers", NOISE_TOPIC, noise(sample('"leq":50,' + GOOD)), True),
    ("duplicate_sample_key_both_ints", NOISE_TOPIC, noise('{"ts":1,"values":{"leq":61.8},"ts":' + str(T) + "}"), True),
    ("envelope_without_optional_keys", NOISE_TOPIC, b'{"samples":[' + sample().encode() + b"]}", True),
    ("interval_float", NOISE_TOPIC, noise(sample(), head='"interval_s":60.5'), True),
    ("samples_beside_ts_and_values", NOISE_TOPIC, noise(sample(), head=f'"ts":{T},"values":{{"leq":1}}'), True),
    ("thingsboard_body", NOISE_TOPIC, sample().encode(), True),
    ("thingsboard_body_with_null_samples", NOISE_TOPIC, sample().replace('{"ts"', '{"samples":null,"ts"').encode(),
     True),
    ("thingsboard_body_with_envelope_keys", NOISE_TOPIC, sample().replace('{"ts"', '{"device_id":"XX","ts"').encode(),
     True),
    ("thingsboard_array", NOISE_TOPIC, ("[" + sample() + "," + sample(ts=T + 1) + "]").encode(), True),
    ("gas", GAS_TOPIC, gas(), True),
    ("gas_mpa", GAS_TOPIC, gas('"p":0.1,"batt_v":3.4', '{"p":"MPa"}'), True),
    ("gas_fault_band_flag_t", GAS_TOPIC, gas('"p":300.0'), True),
    ("gas_unit_refused_by_decoder", GAS_TOPIC, gas(units='{"p":"bar"}'), True),
    ("schema_of_the_other_kind", NOISE_TOPIC, noise(sample(), head='"schema":"xm.gas.v1"'), True),
    ("envelope_of_another_device", NOISE_TOPIC, noise(sample(), head='"device_id":"XM0002NOISE"'), True),
    ("envelope_of_another_site", NOISE_TOPIC, noise(sample(), head='"site_id":"HL-2025-102"'), True),
    ("del_byte_in_a_string", NOISE_TOPIC, noise(sample(), head='"sent_at":"2026\x7f"'), True),
    # --- unusual: the orjson path -------------------------------------------------------------------------------
    ("float_ts", NOISE_TOPIC, noise(sample(ts=f"{T}.0")), False),
    ("exponent_ts", NOISE_TOPIC, noise(sample(ts="1.7e12")), False),
    ("string_ts", NOISE_TOPIC, noise(sample(ts='"2026-12-07T08:00:00Z"')), False),
    ("null_ts", NOISE_TOPIC, noise(sample(ts="null")), False),
    ("ts_beyond_64_bits", NOISE_TOPIC, noise(sample(ts=2**64)), False),
    ("ts_beyond_the_clamp_limit", NOISE_TOPIC, noise(sample(ts=9_000_000_000_000)), False),
    ("bool_value", NOISE_TOPIC, noise(sample('"leq":true')), False),
    ("string_number", NOISE_TOPIC, noise(sample('"leq":"61.8"')), False),
    ("array_value", NOISE_TOPIC, noise(sample('"leq":[61.8]')), False),
    ("nested_junk_in_an_unknown_key", NOISE_TOPIC, noise(sample(GOOD + ',"junk":' + "[" * 900 + "]" * 900)), False),
    ("too_deep_for_json", NOISE_TOPIC, noise(sample(GOOD + ',"junk":' + "[" * 5000 + "]" * 5000)), False),
    ("unknown_value_name", NOISE_TOPIC, noise(sample(GOOD + ',"rssi":-70')), False),
    ("value_of_the_other_kind", NOISE_TOPIC, noise(sample(GOOD + ',"p":1')), False),
    ("nan_literal", NOISE_TOPIC, noise(sample('"leq":NaN')), False),
    ("infinity_literal", NOISE_TOPIC, noise(sample('"leq":Infinity')), False),
    ("minus_infinity_literal", NOISE_TOPIC, noise(sample('"lmin":-Infinity,"leq":50')), False),
    ("overflowing_float", NOISE_TOPIC, noise(sample('"leq":1e400')), False),
    ("value_1e308", NOISE_TOPIC, noise(sample('"leq":1e308')), False),
    ("value_minus_1e300", NOISE_TOPIC, noise(sample('"leq":-1e300')), False),
    ("int_value_beyond_1e300", NOISE_TOPIC, noise(sample('"leq":' + "9" * 301)), False),
    ("missing_values", NOISE_TOPIC, noise(f'{{"ts":{T}}}'), False),
    ("null_values", NOISE_TOPIC, noise(f'{{"ts":{T},"values":null}}'), False),
    ("missing_ts", NOISE_TOPIC, noise(f'{{"values":{{{GOOD}}}}}'), False),
    ("values_an_array", NOISE_TOPIC, noise(f'{{"ts":{T},"values":[1]}}'), False),
    ("sample_not_an_object", NOISE_TOPIC, noise(sample(), "61.8"), False),
    ("extra_sample_key", NOISE_TOPIC, noise(sample().replace('{"ts"', '{"seq":1,"ts"')), False),
    ("extra_envelope_key", NOISE_TOPIC, noise(sample(), head='"fw":"1.2"'), False),
    ("flag_letter_unknown", NOISE_TOPIC, noise(sample('"leq":61.8,"flag":"X"')), False),
    ("flag_lower_case", NOISE_TOPIC, noise(sample('"leq":61.8,"flag":"n"')), False),
    ("flag_two_letters", NOISE_TOPIC, noise(sample('"leq":61.8,"flag":"NN"')), False),
    ("flag_a_number", NOISE_TOPIC, noise(sample('"leq":61.8,"flag":1')), False),
    ("duplicate_key_bad_then_good", NOISE_TOPIC, noise(sample('"leq":"x","leq":61.8')), False),
    ("duplicate_flag_bad_then_good", NOISE_TOPIC, noise(sample('"leq":61.8,"flag":"X","flag":"N"')), False),
    ("empty_samples", NOISE_TOPIC, noise(), False),
    ("empty_array", NOISE_TOPIC, b"[]", False),
    ("samples_not_a_list", NOISE_TOPIC, b'{"samples":{"ts":1}}', False),
    ("thingsboard_without_values", NOISE_TOPIC, f'{{"ts":{T}}}'.encode(), False),
    ("object_without_samples", NOISE_TOPIC, b'{"leq":61.8}', False),
    ("unknown_schema", NOISE_TOPIC, noise(sample(), head='"schema":"xm.noise.v2"'), False),
    ("seq_beyond_64_bits", NOISE_TOPIC, noise(sample(), head=f'"seq":{2**64}'), False),
    ("seq_a_float", NOISE_TOPIC, noise(sample(), head='"seq":1.5'), False),
    ("interval_zero", NOISE_TOPIC, noise(sample(), head='"interval_s":0'), False),
    ("interval_beyond_a_day", NOISE_TOPIC, noise(sample(), head='"interval_s":86401'), False),
    ("interval_bool", NOISE_TOPIC, noise(sample(), head='"interval_s":true'), False),
    ("units_not_strings", GAS_TOPIC, gas(units='{"p":5}'), False),
    ("units_false", GAS_TOPIC, gas(units="false"), False),
    ("device_id_a_number", NOISE_TOPIC, noise(sample(), head='"device_id":1'), False),
    ("control_byte_in_a_string", NOISE_TOPIC, noise(sample(), head='"sent_at":"2026\x01"'), False),
    ("byte_order_mark", NOISE_TOPIC, b"\xef\xbb\xbf" + noise(sample()), False),
    ("invalid_utf8", NOISE_TOPIC, noise(sample(), head='"sent_at":"\xff"').replace(b"\xc3\xbf", b"\xff"), False),
    ("lone_surrogate", NOISE_TOPIC, noise(sample(), head='"sent_at":"\\ud800"'), False),
    ("trailing_garbage", NOISE_TOPIC, noise(sample()) + b" x", False),
    ("truncated", NOISE_TOPIC, noise(sample())[:-3], False),
]
IDS = [c[0] for c in CASES]


def kind_of(topic: str) -> str:
    return topic.split("/")[2]


def assert_same_rows(got: Rows, want: Rows) -> None:
    """Bit for bit (NaN and -0.0 included); `raw` aside, which the typed path leaves empty."""
    got.to_arrays()
    want.to_arrays()
    assert want.failed == {} and got.failed == {}
    assert got.ts_ms.dtype == want.ts_ms.dtype and got.ts_ms.tobytes() == want.ts_ms.tobytes()
    assert set(got.values) == set(want.values)
    for k in want.values:
        assert got.values[k].dtype == np.float64 and got.values[k].tobytes() == want.values[k].tobytes(), k
    assert got.quality.dtype == want.quality.dtype and got.quality.tobytes() == want.quality.tobytes()


def assert_same_batch(a: ReadingBatch | None, b: ReadingBatch | None) -> None:
    if a is None or b is None:
        assert a is None and b is None
        return
    assert a.sensor.tobytes() == b.sensor.tobytes() and a.ts_ns.tobytes() == b.ts_ns.tobytes()
    assert a.quality.tobytes() == b.quality.tobytes()
    for k in set(a.values) | set(b.values):
        assert a.column(k).tobytes() == b.column(k).tobytes(), k


def assert_same_outcome(got: Decoded, want: Decoded) -> None:
    assert [(r.reason, r.detail, r.row, r.index, r.field) for r in got.rejects] == \
        [(r.reason, r.detail, r.row, r.index, r.field) for r in want.rejects]
    assert (got.kind, got.device_id, got.site_id, got.status) == (want.kind, want.device_id, want.site_id, want.status)
    assert_same_batch(got.batch, want.batch)
    assert_same_batch(got.flagged, want.flagged)
    assert (got.flagged_pos is None) == (want.flagged_pos is None)
    if got.flagged_pos is not None:
        assert got.flagged_pos.tolist() == want.flagged_pos.tolist()


@pytest.mark.parametrize(("name", "topic", "payload", "typed"), CASES, ids=IDS)
def test_the_typed_decode_gives_the_orjson_rows_or_declines(name, topic, payload, typed):
    kind = kind_of(topic)
    env = decode_typed(payload, kind)
    assert (env is not None) == typed
    if env is None:
        return
    ref = envelope_of(decode_json(payload))
    fields = ("form", "schema", "device_id", "site_id", "seq", "interval_s", "sent_at", "units")
    assert [(getattr(env, f), type(getattr(env, f))) for f in fields] == \
        [(getattr(ref, f), type(getattr(ref, f))) for f in fields]
    got = typed_rows(env.samples, kind)
    assert_same_rows(got, extract_rows(ref.samples, kind, columnar=False))  # the cell-by-cell reference
    assert_same_rows(typed_rows(env.samples, kind), extract_rows(ref.samples, kind))


@pytest.mark.parametrize(("name", "topic", "payload", "typed"), CASES, ids=IDS)
def test_decode_many_gives_what_decode_gives_on_either_path(name, topic, payload, typed):
    msgs = [(topic, payload, RECV), (NOISE_TOPIC, batch60(), RECV), (topic, payload, RECV + 1)]
    _, outcomes = Decoder(CFG)._decode_many(msgs)  # the combined path itself, not its fallback
    for got, msg in zip(outcomes, msgs):
        assert_same_outcome(got, Decoder(CFG).decode(*msg))


def test_a_chunk_of_the_cases_gives_the_dead_letters_of_message_by_message():
    """Dead-letter records carry the refused rows as sent: the typed path parses their payloads again."""
    msgs = [(topic, payload, RECV + i) for i, (_, topic, payload, _) in enumerate(CASES)]
    got = decode_chunk(Decoder(CFG), msgs, 4096, CFG)
    want = _decode_one_by_one(Decoder(CFG), msgs, 4096)
    assert [d.to_json() for d in got.deadletters] == [d.to_json() for d in want.deadletters]
    assert_same_batch(got.batch, want.batch)
    assert_same_batch(got.flagged, want.flagged)


class Counting:
    """Wraps a function and counts its calls (and the calls that returned None)."""

    def __init__(self, fn):
        self.fn, self.calls, self.nones = fn, 0, 0

    def __call__(self, *args):
        self.calls += 1
        out = self.fn(*args)
        self.nones += out is None
        return out


def test_the_typed_path_is_taken_for_well_formed_payloads(monkeypatch):
    good = [(NOISE_TOPIC, batch60(), RECV), (GAS_TOPIC, gas(), RECV), (NOISE_TOPIC, sample().encode(), RECV),
            (GAS_TOPIC, gas('"p":0.1', '{"p":"MPa"}'), RECV)]
    typed, parsed = Counting(decode_typed), Counting(decode_json)
    monkeypatch.setattr(decoder_module, "decode_typed", typed)
    monkeypatch.setattr(decoder_module, "decode_json", parsed)
    batch, outcomes = Decoder(CFG)._decode_many(good)
    assert (typed.calls, typed.nones, parsed.calls) == (4, 0, 0)  # orjson never ran
    assert len(batch) == 60 + 2 + 1 + 2 and not any(o.rejects for o in outcomes)
    # A refused row: its payload alone is parsed again (orjson), for the row as sent in its reject.
    refused = noise(sample(), sample(ts=NOW_MS + 10**9))
    _, outcomes = Decoder(CFG)._decode_many([*good, (NOISE_TOPIC, refused, RECV)])
    assert (typed.calls, typed.nones, parsed.calls) == (9, 0, 1)
    [reject] = outcomes[-1].rejects
    assert (reject.reason, reject.index, reject.row) == ("ts_future", 1, json.loads(sample(ts=NOW_MS + 10**9)))
    # An unusual payload: the typed decode declines, orjson decides.
    _, outcomes = Decoder(CFG)._decode_many([(NOISE_TOPIC, noise(sample('"leq":"61.8"')), RECV)])
    assert (typed.calls, typed.nones, parsed.calls) == (10, 1, 2)
    assert [r.reason for r in outcomes[0].rejects] == ["not_a_number"]


NUMBER_TEXTS = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(-(2**80), 2**80).map(str),
    st.from_regex(r"-?(0|[1-9][0-9]{0,25})(\.[0-9]{1,25})?([eE][+-]?[0-9]{1,3})?", fullmatch=True),
    st.from_regex(r"[-+0-9.eE]{1,8}", fullmatch=True),  # mostly not JSON numbers at all
)


@settings(max_examples=300, deadline=None)
@given(NUMBER_TEXTS, st.sampled_from(["leq", "ts", "interval_s"]))
def test_any_number_text_decodes_as_orjson_reads_it(text, where):
    """msgspec and orjson parse numbers separately: where the typed path takes a number, its value is orjson's."""
    if where == "ts":
        payload = noise(sample(ts=text))
    elif where == "interval_s":
        payload = noise(sample(), head=f'"interval_s":{text}')
    else:
        payload = noise(sample(f'"leq":{text},"lmax":140'))
    env = decode_typed(payload, "noise")
    if env is not None:
        ref = envelope_of(decode_json(payload))
        assert (env.interval_s, type(env.interval_s)) == (ref.interval_s, type(ref.interval_s))
        assert_same_rows(typed_rows(env.samples, "noise"), extract_rows(ref.samples, "noise", columnar=False))
    msg = (NOISE_TOPIC, payload, RECV)
    assert_same_outcome(Decoder(CFG)._decode_many([msg])[1][0], Decoder(CFG).decode(*msg))
