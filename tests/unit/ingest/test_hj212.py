"""HJ 212-2017 codec: CRC vectors, frame layout, parsing, Beijing time, error reasons, round trips."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.codecs.errors import DecodeError
from ingest.codecs.hj212 import _crc16_fast, build_noise_frame, crc16, encode_frame, parse_frame

# The public example (chenqi92/alltobs-hj212 README, length 0435, CRC 7d00).
PUBLIC = (
    b"##0435QN=20210301111100112;ST=21;CN=2011;PW=123456;MN=ZLDSZ20210127;Flag=8;CP=&&DataTime=20210301111100;"
    b"w01001-Rtd=8.33,w01001-Flag=N;w01009-Rtd=10.15,w01009-Flag=N;w01010-Rtd=9.7,w01010-Flag=N;w01014-Rtd=1425,"
    b"w01014-Flag=N;w01003-Rtd=13.10,w01003-Flag=N;w21011-Rtd=0,w21011-Flag=N;w21001-Rtd=3.563168,w21001-Flag=N;"
    b"w21003-Rtd=0.09055002,w21003-Flag=N;w01019-Rtd=4.102818,w01019-Flag=N;w01008-Rtd=0,w01008-Flag=N;w23002-Rtd=0,"
    b"w23002-Flag=N&&7d00\r\n"
)
# domain.md §1.5 noise example.
NOISE = (
    b"##0167QN=20250601223000000;ST=23;CN=2011;PW=123456;MN=XM0001NOISE;Flag=4;CP=&&DataTime=20250601223000;"
    b"LA-Rtd=63.4,LA-Flag=N;Leq-Rtd=61.8,Leq-Flag=N;LMx-Rtd=78.2,LMx-Flag=N&&DC41\r\n"
)


def segment(frame: bytes) -> bytes:
    return frame[6:-6]


def test_crc_vectors():
    assert len(segment(PUBLIC)) == 435
    assert crc16(segment(PUBLIC)) == 0x7D00
    assert crc16(segment(NOISE)) == 0xDC41


@given(st.binary(max_size=300))
def test_table_crc_equals_the_reference_algorithm(data):
    assert _crc16_fast(data) == crc16(data)


def test_build_noise_frame_reproduces_the_domain_example():
    frame = build_noise_frame("XM0001NOISE", datetime(2025, 6, 1, 22, 30), {"LA": 63.4, "Leq": 61.8, "LMx": 78.2}, {})
    assert frame == NOISE
    # citywatch field names map to the HJ 212 codes.
    assert build_noise_frame("XM0001NOISE", datetime(2025, 6, 1, 22, 30), {"la": 63.4, "leq": 61.8, "lmax": 78.2}, {}) == NOISE


def test_encode_frame_layout():
    frame = encode_frame("QN=1;ST=23;CN=2011;MN=A;CP=&&&&")
    assert frame.startswith(b"##0031QN=1") and frame.endswith(b"\r\n")
    assert int(frame[-6:-2], 16) == crc16(b"QN=1;ST=23;CN=2011;MN=A;CP=&&&&")
    with pytest.raises(ValueError):
        encode_frame("x" * 10_000)


def test_parse_the_domain_example_converts_beijing_time_to_utc():
    f = parse_frame(NOISE)
    assert (f.st, f.cn, f.mn, f.flag, f.pw, f.qn) == (23, 2011, "XM0001NOISE", 4, "123456", "20250601223000000")
    assert f.values == {"la": 63.4, "leq": 61.8, "lmax": 78.2}
    assert f.flags == {"la": "N", "leq": "N", "lmax": "N"}
    assert f.data_time == datetime(2025, 6, 1, 22, 30)
    # 22:30 Beijing = 14:30 UTC
    assert f.ts_ms == calendar.timegm((2025, 6, 1, 14, 30, 0)) * 1000


def test_parse_the_public_example_has_no_noise_values_but_keeps_raw():
    f = parse_frame(PUBLIC)
    assert f.values == {}
    assert f.raw["w01014-Rtd"] == "1425"


def test_missing_crlf_and_lowercase_crc_are_accepted():
    assert parse_frame(NOISE[:-2]).values["leq"] == 61.8
    assert parse_frame(NOISE[:-6] + b"dc41").values["leq"] == 61.8


def test_minute_data_uses_avg_and_stamps_the_interval_end():
    frame = build_noise_frame("M1", datetime(2025, 6, 1, 22, 30), {"Leq": 60.0}, "N", cn=2051)
    assert b"Leq-Avg=60.0" in frame
    f = parse_frame(frame)
    assert f.values == {"leq": 60.0}
    assert f.ts_ms == (calendar.timegm((2025, 6, 1, 14, 31, 0))) * 1000


def test_the_2005_code_b03_is_leq():
    frame = encode_frame("ST=23;CN=2011;PW=1;MN=M1;CP=&&DataTime=20250601223000;B03-Rtd=58.1,B03-Flag=N&&")
    assert parse_frame(frame).values == {"leq": 58.1}


def test_data_flags_are_reported_per_field():
    frame = build_noise_frame("M1", datetime(2025, 6, 1, 22, 30), {"LA": 63.4, "Leq": 61.8}, {"Leq": "D"})
    assert parse_frame(frame).flags == {"la": "N", "leq": "D"}


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "hj212_format"),
        (b"QN=1;ST=23", "hj212_format"),
        (b"##01", "hj212_format"),
        (b"##ab67" + NOISE[6:], "hj212_format"),
        (b"##0168" + NOISE[6:], "hj212_length"),
        (NOISE[:-6] + b"DC42\r\n", "hj212_crc"),
        (NOISE[:-6] + b"ZZZZ\r\n", "hj212_format"),
        (NOISE[:30] + b"X" + NOISE[31:], "hj212_crc"),
        (encode_frame("ST=23;CN=2011;MN=M1;PW=1"), "hj212_format"),
        (encode_frame("ST=23;CN=2011;MN=M1;CP=&&Leq-Rtd=1&&"), "hj212_format"),
        (encode_frame("ST=23;CN=2011;MN=M1;CP=&&DataTime=2025;Leq-Rtd=1&&"), "hj212_format"),
        (encode_frame("ST=23;CN=2011;MN=M1;CP=&&DataTime=20250601223000;Leq-Rtd=loud&&"), "hj212_format"),
        (encode_frame("ST=x;CN=2011;MN=M1;CP=&&DataTime=20250601223000&&"), "hj212_format"),
        (encode_frame("ST=23;CN=2011;CP=&&DataTime=20250601223000&&"), "hj212_format"),
        (encode_frame("ST=23;CN=2021;MN=M1;CP=&&DataTime=20250601223000&&"), "hj212_unsupported"),
    ],
)
def test_bad_frames_raise_their_reason(data, reason):
    with pytest.raises(DecodeError) as exc:
        parse_frame(data)
    assert exc.value.reason == reason
    assert exc.value.detail


levels = st.floats(25, 140).map(lambda v: round(v, 1))
flag = st.sampled_from("NFMSDCTB")


@given(
    dt=st.datetimes(datetime(2001, 1, 1), datetime(2090, 1, 1)).map(lambda d: d.replace(microsecond=0)),
    values=st.dictionaries(st.sampled_from(["LA", "Leq", "LMx", "LMn", "L10", "L50", "L90", "L5", "L95"]), levels,
                           min_size=1),
    flags=st.dictionaries(st.sampled_from(["LA", "Leq", "LMx", "LMn", "L10", "L50", "L90", "L5", "L95"]), flag),
    mn=st.from_regex(r"[A-Za-z0-9]{1,24}", fullmatch=True),
)
def test_round_trip(dt, values, flags, mn):
    f = parse_frame(build_noise_frame(mn, dt, values, flags))
    names = {"LA": "la", "Leq": "leq", "LMx": "lmax", "LMn": "lmin", "L10": "l10", "L50": "l50", "L90": "l90",
             "L5": "l5", "L95": "l95"}
    assert f.mn == mn
    assert f.values == {names[k]: v for k, v in values.items()}
    assert f.flags == {names[k]: flags.get(k, "N") for k in values}
    assert f.ts_ms == calendar.timegm((dt - timedelta(hours=8)).timetuple()) * 1000


def test_an_aware_datetime_is_converted_to_beijing_time():

    aware = datetime(2025, 6, 1, 14, 30, tzinfo=UTC)
    assert build_noise_frame("XM0001NOISE", aware, {"LA": 63.4, "Leq": 61.8, "LMx": 78.2}, {}) == NOISE


def test_datatime_with_milliseconds():
    f = parse_frame(encode_frame("ST=23;CN=2011;PW=1;MN=M1;CP=&&DataTime=20250601223000250;Leq-Rtd=58.1,Leq-Flag=N&&"))
    assert f.ts_ms == calendar.timegm((2025, 6, 1, 14, 30, 0)) * 1000 + 250
