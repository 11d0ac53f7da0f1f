"""Line protocol: exact lines, tags from the inventory, escaping, NaN left out, row order kept."""

from __future__ import annotations

import re

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from config import load_config
from core import FLAG_CODES, NOISE_FIELDS, ReadingBatch
from ingest.lineproto import encode, escape_key, escape_measurement, escape_string_field

CFG = load_config("config")
N1 = CFG.device_index("XM0001NOISE")
G17 = CFG.device_index("XMG0017")


def test_noise_and_gas_lines():
    b = ReadingBatch(
        [N1, G17], [1748788200000000000, 1748788260000000000],
        {"leq": [61.8, np.nan], "lmax": [78.2, np.nan], "p": [np.nan, 100.0]}, [0, 5],
    )
    assert encode(b, CFG).decode().splitlines() == [
        'noise,device_id=XM0001NOISE,district=Siming,site_id=SM-2025-101 leq=61.8,lmax=78.2,flag="N" 1748788200000000000',
        'gas_pressure,device_id=XMG0017,district=Siming,pressure_class=medium_b,site_id=GS-SM-07 p=100.0,flag="C" '
        "1748788260000000000",
    ]


def test_empty_batch():
    assert encode(ReadingBatch(np.empty(0), np.empty(0)), CFG) == b""


def test_escaping():
    assert escape_measurement("a b,c") == "a\\ b\\,c"
    assert escape_key("x=y, z") == "x\\=y\\,\\ z"
    assert escape_string_field('say "hi" \\') == '"say \\"hi\\" \\\\"'
    assert escape_key("two\nlines") == "two\\ lines"
    assert escape_key("a\\b\\") == "a/b/"


LINE = re.compile(r'^(noise|gas_pressure),((?:[a-z_]+=[^ ,]+,?)+) ((?:[a-z0-9_]+=[-0-9.e+]+,)*)flag="([A-Z])" (-?\d+)$')


@given(st.lists(
    st.tuples(
        st.sampled_from([N1, G17, 0, len(CFG.devices) - 1]),
        st.integers(0, 2**62),
        st.lists(st.one_of(st.just(float("nan")), st.floats(-1e6, 1e6)), min_size=3, max_size=3),
        st.integers(0, 7),
    ),
    max_size=50,
))
def test_every_row_is_one_parsable_line_in_order(rows):
    names = ["leq", "l90", "p"]
    b = ReadingBatch(
        [r[0] for r in rows], [r[1] for r in rows],
        {k: [r[2][j] for r in rows] for j, k in enumerate(names)}, [r[3] for r in rows],
    )
    text = encode(b, CFG).decode()
    lines = text.split("\n")
    assert lines[-1] == "" and len(lines) == len(rows) + 1
    for (sensor, ts, vals, q), line in zip(rows, lines):
        m = LINE.match(line)
        assert m, line
        dev = CFG.devices[sensor]
        assert m.group(1) == ("noise" if dev.kind == "noise" else "gas_pressure")
        assert f"device_id={dev.id}" in m.group(2)
        fields = dict(kv.split("=") for kv in m.group(3).rstrip(",").split(",") if kv)
        assert {k: float(v) for k, v in fields.items()} == {k: v for k, v in zip(names, vals) if v == v}
        assert m.group(4) == FLAG_CODES[q] and int(m.group(5)) == ts


def test_all_noise_fields():
    b = ReadingBatch([N1], [1], {f: [30.0 + i] for i, f in enumerate(NOISE_FIELDS)})
    line = encode(b, CFG).decode()
    for f in NOISE_FIELDS:
        assert f" {f}=" in line or f",{f}=" in line


def test_the_float_text_cache_gives_exact_shortest_text():
    from ingest.lineproto import LineProtocolEncoder

    enc = LineProtocolEncoder(CFG)
    enc.CACHE_MAX = 50
    rng = np.random.default_rng(3)
    for _ in range(20):
        v = np.round(rng.normal(60, 5, 40), int(rng.integers(0, 4)))
        line_values = [line.split(" ")[1].split(",")[0] for line in enc.encode(ReadingBatch([N1] * 40, range(40), {"leq": v})).decode().splitlines()]
        assert line_values == [f"leq={x!r}" for x in v.tolist()]
