"""Line protocol: exact lines, tags from the inventory, escaping, NaN left out, row order kept; byte for byte what a
plain per-row formatter gives, for batches of every shape; the float-text cache stays bounded."""

from __future__ import annotations

import math
import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from config import load_config
from core import FLAG_CODES, GAS_FIELDS, NOISE_FIELDS, ReadingBatch
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


# A plain per-row formatter, the reference the encoder is compared with byte for byte.
def _reference(batch: ReadingBatch, cfg=CFG) -> bytes:
    names = [f for f in (*NOISE_FIELDS, *GAS_FIELDS) if f in batch.values] + sorted(
        set(batch.values) - {*NOISE_FIELDS, *GAS_FIELDS})
    lines = []
    for i in range(len(batch)):
        d = cfg.devices[int(batch.sensor[i])]
        site = cfg.site(d.site) if d.site is not None else None
        tags = {"device_id": d.id, "site_id": d.site or "",
                "district": site.district if site is not None and site.district else "",
                "pressure_class": d.pressure_class if d.kind == "gas" and d.pressure_class else ""}
        tag_text = ",".join(f"{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v)
        fields = "".join(f"{escape_key(f)}={float(batch.values[f][i])!r}," for f in names
                         if not math.isnan(batch.values[f][i]))
        measurement = escape_measurement("noise" if d.kind == "noise" else "gas_pressure")
        lines.append(f'{measurement},{tag_text} {fields}flag="{FLAG_CODES[batch.quality[i]]}" {int(batch.ts_ns[i])}\n')
    return "".join(lines).encode()


SPECIAL = [0.0, -0.0, 1.0, -1.0, 100.0, 1e16, 1e22, -3e300, 1.7976931348623157e308, 5e-324, -2.2250738585072014e-308,
           0.1, 1 / 3, 123456789.125, float("inf"), float("-inf")]
EXTRA = ["zz_extra", "a b", "c,d", "k=v", "100%", "%s", "ünï", "back\\slash", "two\nlines", "a_first"]


@st.composite
def batches(draw):
    """Batches of every shape the encoder has a path for: sizes either side of its row thresholds, 0.1 dB steps
    (cached texts), continuous values (not cached), special values, NaN holes and all-NaN rows and columns,
    every flag code, timestamps of one width or of many (small, negative, the int64 extremes)."""
    n = draw(st.sampled_from([0, 1, 2, 3, 60, 127, 128, 129, 255, 256, 257, 700]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    names = draw(st.lists(st.sampled_from([*NOISE_FIELDS, *GAS_FIELDS, *EXTRA]), max_size=8, unique=True))
    values = {}
    for name in names:
        kind = draw(st.sampled_from(["steps", "continuous", "special", "mixed", "nan"]))
        col = {
            "steps": lambda: np.round(rng.normal(60, 5, n), 1),
            "continuous": lambda: rng.normal(300, 20, n),
            "special": lambda: rng.choice(SPECIAL, n),
            "mixed": lambda: np.where(rng.random(n) < 0.5, np.round(rng.normal(60, 5, n), 1), rng.choice(SPECIAL, n)),
            "nan": lambda: np.full(n, np.nan),
        }[kind]()
        col[rng.random(n) < draw(st.sampled_from([0.0, 0.1, 0.5, 0.95, 1.0]))] = np.nan
        values[name] = col
    ts_kind = draw(st.sampled_from(["now", "now_ms", "wide", "extremes"]))
    now = 1_748_788_200_000_000_000
    ts = {
        "now": lambda: now + rng.integers(-10**12, 10**12, n),
        "now_ms": lambda: now + rng.integers(-10**6, 10**6, n) * 10**6,
        "wide": lambda: rng.integers(0, 2**63 - 1, n) // 10 ** rng.integers(0, 19, n),
        "extremes": lambda: rng.choice([0, 1, -1, 9, 10, 2**63 - 1, -(2**63), 999_999_999_999_999_999], n),
    }[ts_kind]()
    sensor = rng.integers(0, len(CFG.devices), n)
    return ReadingBatch(sensor, ts, values, rng.integers(0, len(FLAG_CODES), n))


SMALL_CACHE = None


@settings(max_examples=300, deadline=None)
@given(batches())
def test_the_encoding_is_the_plain_per_row_formatting(batch):
    global SMALL_CACHE
    from ingest.lineproto import LineProtocolEncoder

    if SMALL_CACHE is None:
        SMALL_CACHE = LineProtocolEncoder(CFG)
        SMALL_CACHE.CACHE_MAX = 300  # cleared now and then, across examples
    want = _reference(batch)
    assert encode(batch, CFG) == want
    assert SMALL_CACHE.encode(batch) == want
    assert sum(len(d) + 1 for d in SMALL_CACHE._text.values()) == SMALL_CACHE._cached <= SMALL_CACHE.CACHE_MAX


def test_minus_zero_keeps_its_sign_whichever_zero_came_first():
    from ingest.lineproto import LineProtocolEncoder

    enc = LineProtocolEncoder(CFG)
    for first, second in ((0.0, -0.0), (-0.0, 0.0), (0.0, -0.0)):
        for n in (4, 400):  # texts per row, and texts of the distinct values
            b = ReadingBatch([N1] * n, range(n), {"leq": [first, second] * (n // 2)})
            assert enc.encode(b) == _reference(b)
            assert enc.encode(b).count(b"leq=-0.0,") == n // 2


def test_the_float_text_cache_stays_bounded():
    from ingest.lineproto import LineProtocolEncoder

    enc = LineProtocolEncoder(CFG)
    enc.CACHE_MAX = 1000
    rng = np.random.default_rng(5)
    for i in range(60):
        # 300 values, each twice (cached); a new set, and new field names, every batch.
        v = np.repeat(np.round(rng.normal(60, 30, 300), 2), 2)
        b = ReadingBatch([N1] * 600, range(600), {f"f{i}": v, f"g{i % 7}": v[::-1], "leq": v})
        assert enc.encode(b) == _reference(b)
        assert sum(len(d) + 1 for d in enc._text.values()) == enc._cached <= 1000
    # One column of more distinct values than the cache holds, each twice: formatted, not cached.
    v = np.repeat(np.arange(1500) / 8, 2)
    b = ReadingBatch([N1] * 3000, range(3000), {"leq": v})
    assert enc.encode(b) == _reference(b)
    assert enc._cached <= 1000
