"""Row validation: units, timestamp limits, ranges, noise ordering, flags, duplicates; the numpy path
agrees with the row-by-row path on any input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import load_config
from ingest.validation import Limits, check_rows, extract_rows

CFG = load_config("config")
NOISE_DEV = CFG.device("XM0001NOISE")
GAS_DEV = CFG.device("XMG0017")  # full scale 250 kPa
LOW_GAS_DEV = CFG.device("XMG0001")  # full scale 10 kPa
NOW = 1_800_000_000_000
LIMITS = Limits(future_skew_ms=300_000, backfill_max_age_ms=7 * 86_400_000, refuse_flags=frozenset({2, 4}))
GOOD = {"leq": 61.8, "lmax": 78.2, "lmin": 52.0, "l10": 65.1, "l50": 60.2, "l90": 55.3}


def check(samples, kind="noise", device=NOISE_DEV, units=None, vectorized=None):
    rows = extract_rows(samples, kind)
    keep, rejects = check_rows(rows, kind, device, NOW, LIMITS, units, vectorized)
    rows.to_arrays()
    return rows, keep, [(i, reason) for i, reason, _ in rejects]


@pytest.mark.parametrize("vectorized", [False, True])
def test_mpa_is_converted_to_kpa(vectorized):
    rows, keep, rejects = check([{"ts": NOW, "values": {"p": 0.1}}], "gas", GAS_DEV, {"p": "MPa"}, vectorized)
    assert keep is None and rejects == []
    assert rows.values["p"][0] == pytest.approx(100.0)
    rows, _, rejects = check([{"ts": NOW, "values": {"p": 2500.0}}], "gas", LOW_GAS_DEV, {"p": "Pa"}, vectorized)
    assert rows.values["p"][0] == pytest.approx(2.5) and rejects == []


@pytest.mark.parametrize("vectorized", [False, True])
def test_gas_range_follows_the_device_full_scale(vectorized):
    # Valid: -5 .. 1.1 x FS (11 kPa for FS 10). Beyond that, up to 0.25 x FS lower or 2 x FS, a sensor-fault
    # reading kept with flag T (tests/unit/ingest/test_sensor_fault_and_clock.py); beyond the band, refused.
    samples = [{"ts": NOW - i, "values": {"p": p}} for i, p in enumerate([-5.0, -7.5, -7.6, 11.1, 20.0, 20.1])]
    _, _, rejects = check(samples, "gas", LOW_GAS_DEV, vectorized=vectorized)
    assert rejects == [(2, "out_of_range"), (5, "out_of_range")]


@pytest.mark.parametrize("vectorized", [False, True])
def test_timestamp_limits(vectorized):
    samples = [
        {"ts": NOW + 300_000, "values": GOOD},  # at the future limit: ok
        {"ts": NOW + 300_001, "values": GOOD},
        {"ts": NOW - 7 * 86_400_000, "values": GOOD},  # at the back-fill limit: ok
        {"ts": NOW - 7 * 86_400_000 - 1, "values": GOOD},
        {"ts": NOW // 1000, "values": GOOD},  # seconds
        {"ts": (NOW - 6 * 86_400_000) // 1000, "values": GOOD},  # seconds, back-filled
        {"ts": 946684800, "values": GOOD},  # 2000-01-01 in seconds: too old either way
        {"ts": 10**30, "values": GOOD},
        {"ts": -(10**30), "values": GOOD},
        {"ts": float(NOW - 1), "values": GOOD},
    ]
    _, _, rejects = check(samples, vectorized=vectorized)
    assert rejects == [
        (1, "ts_future"), (3, "ts_too_old"), (4, "ts_seconds_not_ms"), (5, "ts_seconds_not_ms"), (6, "ts_too_old"),
        (7, "ts_future"), (8, "ts_too_old"),
    ]


@pytest.mark.parametrize("vectorized", [False, True])
@pytest.mark.parametrize(
    "change, ok",
    [
        ({}, True),
        ({"lmax": 65.1}, True),  # lmax equal to l10: fine
        ({"lmax": 61.7}, False),  # lmax < leq
        ({"lmin": 61.9}, False),  # lmin > leq
        ({"l90": 60.3}, False),  # l90 > l50
        ({"l10": 60.1}, False),  # l10 < l50
        ({"l95": 56.0}, False),  # l95 > l90
        ({"l5": 79.0}, False),  # l5 > lmax
        ({"l50": None, "l90": 66.0}, False),  # l90 > l10 across a gap
        ({"lmin": None, "lmax": None, "l10": None, "l50": None, "l90": None}, True),
    ],
)
def test_noise_ordering(change, ok, vectorized):
    values = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    _, _, rejects = check([{"ts": NOW, "values": values}], vectorized=vectorized)
    assert rejects == ([] if ok else [(0, "noise_order")])


@pytest.mark.parametrize("vectorized", [False, True])
def test_flags_quality_and_refused_flags(vectorized):
    samples = [{"ts": NOW - i, "values": {**GOOD, "flag": f}} for i, f in enumerate("NFMSDCTB")]
    rows, keep, rejects = check(samples, vectorized=vectorized)
    assert rejects == [(2, "hj212_flag"), (4, "hj212_flag")]
    assert rows.quality.tolist() == list(range(8))


@pytest.mark.parametrize("vectorized", [False, True])
def test_duplicates_keep_the_first_valid_row(vectorized):
    samples = [
        {"ts": NOW, "values": {**GOOD, "leq": 999.0}},  # invalid: does not claim the timestamp
        {"ts": NOW, "values": GOOD},
        {"ts": NOW, "values": GOOD},
        {"ts": NOW - 1, "values": GOOD},
    ]
    _, keep, rejects = check(samples, vectorized=vectorized)
    assert rejects == [(0, "out_of_range"), (2, "duplicate_row")]
    assert keep.tolist() == [False, True, False, True]


def test_unknown_value_names_and_nulls_are_ignored():
    rows, keep, rejects = check([{"ts": NOW, "values": {**GOOD, "fw": 3, "note": "x", "l5": None}}])
    assert keep is None and rejects == []
    assert set(rows.values) == set(GOOD)


def test_a_bad_unit_rejects_every_row():
    _, keep, rejects = check([{"ts": NOW, "values": {"p": 1.0}}] * 2, "gas", GAS_DEV, {"p": "psi"})
    assert rejects == [(0, "bad_unit"), (1, "bad_unit")]


def test_huge_integers_are_out_of_range_not_a_crash():
    _, _, rejects = check([{"ts": NOW, "values": {**GOOD, "leq": 10**400}}])
    assert rejects == [(0, "out_of_range")]


cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.floats(20, 145), st.integers(-200, 200), st.none(),
    st.text(max_size=3), st.booleans(),
)
noise_values = st.dictionaries(
    st.sampled_from(["leq", "lmax", "lmin", "l5", "l10", "l50", "l90", "l95", "la", "sd", "flag", "x"]),
    cell | st.sampled_from(list("NFMSDCTBX")), max_size=8,
)
ts = st.one_of(
    st.integers(NOW - 8 * 86_400_000, NOW + 400_000), st.integers(0, 2 * 10**9), st.sampled_from([NOW, NOW - 1]),
    st.floats(allow_nan=True), st.none(), st.text(max_size=2),
)
sample = st.one_of(st.fixed_dictionaries({"ts": ts, "values": noise_values}), st.integers(), st.just({"ts": NOW}))


@settings(max_examples=300)
@given(st.lists(sample, min_size=1, max_size=40))
def test_numpy_path_equals_row_by_row_path(samples):
    a_rows, a_keep, a = check(samples, vectorized=False)
    b_rows, b_keep, b = check(samples, vectorized=True)
    assert a == b
    assert (a_keep is None) == (b_keep is None)
    assert np.array_equal(a_rows.ts_ms, b_rows.ts_ms)
    for k in a_rows.values:
        assert np.array_equal(a_rows.values[k], b_rows.values[k], equal_nan=True)
    # every row is accounted for: kept or rejected exactly once
    kept = len(samples) if a_keep is None else int(a_keep.sum())
    assert kept + len(a) == len(samples)
    if a_keep is not None:
        assert sorted(i for i, _ in a) == np.flatnonzero(~a_keep).tolist()
    # kept rows are finite where given, and in range
    keep = np.ones(len(samples), bool) if a_keep is None else a_keep
    for k, col in a_rows.values.items():
        assert not np.isinf(col[keep]).any()
        assert not ((col[keep] > 140) & ~np.isnan(col[keep])).any() or k in ("sd",)
    assert all(not math.isnan(v) for v in a_rows.ts_ms.astype(float))


@settings(max_examples=300)
@given(st.lists(sample, min_size=1, max_size=30) | st.lists(st.just({"ts": NOW, "values": GOOD}), min_size=1, max_size=30))
def test_columnar_extraction_equals_cell_by_cell(samples):
    a = extract_rows(samples, "noise", columnar=False)
    b = extract_rows(samples, "noise", columnar=True)
    a.to_arrays()
    b.to_arrays()
    assert a.failed == b.failed
    assert np.array_equal(a.ts_ms, b.ts_ms) and np.array_equal(a.quality, b.quality)
    assert a.values.keys() == b.values.keys()
    for k in a.values:
        assert np.array_equal(a.values[k], b.values[k], equal_nan=True)


def test_a_null_flag_means_normal():
    rows, keep, rejects = check([{"ts": NOW, "values": {**GOOD, "flag": None}}])
    assert keep is None and rejects == [] and rows.quality.tolist() == [0]
