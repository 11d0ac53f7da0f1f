"""Long single series (issue 16, item 8): rules that take a whole batch along time (`series`) give the
very detections of one round per reading and of the per-reading reference, however the series is split;
and the along-time tools in detectors/series.py equal the plain per-reading recursions bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import Detections
from detectors import series as series_mod
from detectors.registry import RuleSet
from detectors.series import Runs, clamped_cusum, clamped_sums, ewma_filter
from tests.unit.detectors.helpers import local_ns
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same, config_for, to_batch

# The conformance cases whose rules take whole batches along time (or judge each reading alone).
SERIES_CASES = ["rate_of_change", "robust_z", "ewma", "cusum", "cusum_reset", "flatline", "threshold", "deadman"]
V = [-12.5, -3.3, 0.7, 1.1, 5.7, 12.3, 25.1, float("nan")]


def assert_identical(a: Detections, b: Detections) -> None:
    """The same rows with the same numbers bit for bit (not merely close) and the same contexts."""
    a, b = a.sorted(), b.sorted()
    assert len(a) == len(b)
    for col in ("sensor", "ts_ns", "rule_id", "severity"):
        assert getattr(a, col).tolist() == getattr(b, col).tolist(), col
    for col in ("value", "limit", "score"):
        assert np.array_equal(getattr(a, col), getattr(b, col), equal_nan=True), col
    assert a.context == b.context


@st.composite
def long_feeds(draw, max_len=400):
    """One sensor's long series (sometimes a second sensor's beside it), values drawn from a few levels
    with long constant stretches and sometimes a level shift; 1-5 minutes apart, some repeated times."""
    start = local_ns("2025-06-01 09:00")
    rows = []
    for s in draw(st.sampled_from([(0,), (3,), (0, 3), (1, 4)])):
        n = draw(st.integers(1, max_len))
        seed = draw(st.integers(0, 2**31 - 1))
        rng = np.random.default_rng(seed)
        kind = draw(st.sampled_from(["levels", "normal", "shift"]))
        if kind == "levels":
            v = rng.choice(V, n)
            hold = rng.random(n) < draw(st.sampled_from([0.0, 0.5, 0.9]))
            for i in range(1, n):
                if hold[i]:
                    v[i] = v[i - 1]
        else:
            v = rng.normal(0.0, 1.0, n).round(draw(st.sampled_from([1, 3, 12])))
            if kind == "shift":
                v[n // 2:] += draw(st.sampled_from([2.0, -4.0, 15.0]))
        steps = rng.choice([60, 60, 60, 120, 300, 0], n) * 1_000_000_000
        ts = start + np.cumsum(steps)
        q = np.where(rng.random(n) < 0.05, 4, 0)
        for i in range(n):
            vals = {"v": float(v[i])}
            if s < 3:
                vals.update({"leq": 55.3, "lmax": 70.3, "l90": 45.3})
            else:
                vals.update({"p": 2.5123 if s == 3 else 300.0123, "batt_v": 3.55})
            rows.append((s, int(ts[i]), vals, int(q[i])))
    return rows


LONG = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.mark.parametrize("case", SERIES_CASES)
@LONG
@given(rows=long_feeds(), cuts=st.lists(st.floats(0, 1), min_size=0, max_size=4))
def test_long_series_split_anywhere_equals_rounds_and_reference(case, rows, cuts):
    cfg = config_for(case)
    whole = RuleSet.from_config(cfg).process(to_batch(rows))
    # The per-reading paths: one round per reading, and the reference implementation.
    assert_identical(whole, RuleSet.from_config(cfg, series=False).process(to_batch(rows)))
    assert_same(whole, ReferenceRuleSet(cfg).process(to_batch(rows)))
    # Split anywhere in event-time order, into up to five batches.
    ordered = sorted(rows, key=lambda r: r[1])
    ks = sorted({int(c * len(ordered)) for c in cuts})
    rs = RuleSet.from_config(cfg)
    parts = [rs.process(to_batch(ordered[a:b])) for a, b in zip([0] + ks, ks + [len(ordered)]) if b > a]
    assert_identical(whole, Detections.concat(parts))


# 3,000 readings a sensor is the long batch this is about (`slow`: `make test` runs it); the fast loop checks the
# same state on 600, with the shift and the flat stretch at the same places relative to the length.
@pytest.mark.parametrize("n", [pytest.param(3000, marks=pytest.mark.slow), 600])
@pytest.mark.parametrize("case", ["ewma", "cusum", "cusum_reset", "robust_z", "rate_of_change", "flatline"])
def test_series_state_equals_round_state(case, n):
    """After a long batch the rule's state arrays are the ones the per-reading path leaves."""
    cfg = config_for(case)
    rng = np.random.default_rng(5)
    v = rng.normal(0.0, 1.0, n)
    v[n // 3:n // 3 + n // 30] += 4.0
    v[2 * n // 3:2 * n // 3 + n // 10] = 0.5
    t0 = local_ns("2025-06-01 09:00")
    rows = [(s, t0 + i * 60_000_000_000, {"v": float(v[i]) + s}, 4 if i % 97 == 0 else 0) for s in (0, 3)
            for i in range(n)]
    a, b = RuleSet.from_config(cfg), RuleSet.from_config(cfg, series=False)
    assert_identical(a.process(to_batch(rows)), b.process(to_batch(rows)))
    ra, rb = a.rules[0], b.rules[0]
    for name, arr in vars(ra).items():
        if name.endswith("_") and isinstance(arr, np.ndarray):
            assert np.array_equal(arr, getattr(rb, name), equal_nan=True), name


@pytest.mark.slow
def test_a_long_series_takes_no_rounds():
    """A rule set of series rules only does not step one round per reading (the rounds' view machinery
    is never built): 20,000 readings of one sensor give the per-reading detections."""
    cfg = config_for("cusum")
    rng = np.random.default_rng(2)
    n = 20_000
    v = rng.normal(0.0, 1.0, n)
    v[15_000:15_050] += 3.0
    t0 = local_ns("2025-06-01 09:00")
    rows = [(0, t0 + i * 60_000_000_000, {"v": float(v[i])}, 0) for i in range(n)]
    rs = RuleSet.from_config(cfg)
    assert rs.rules[0].series and not rs._groups
    found = rs.process(to_batch(rows))
    assert 0 < len(found) < n
    assert_identical(found, RuleSet.from_config(cfg, series=False).process(to_batch(rows[:n])))


# ----- the along-time tools ----------------------------------------------------------------------

def _runs(rng, max_sensors=4, max_len=300):
    lens = rng.integers(0, max_len, int(rng.integers(1, max_sensors + 1)))
    return np.repeat(np.arange(len(lens)), lens)


def _ref_clamped(z, k, loc, s0):
    out, s = np.empty(len(z)), 0.0
    for i in range(len(z)):
        if i == 0 or loc[i] != loc[i - 1]:
            s = s0[loc[i]]
        s = max(0.0, s + float(z[i]) - k)
        out[i] = s
    return out


ZS = [-1.5, -0.5, 0.0, 0.1, 0.2, 0.25, 0.3, 0.5, 0.75, 1.0, 2.0]


@pytest.mark.parametrize("seed", range(40))
def test_clamped_sums_equal_the_recursion_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    loc = _runs(rng)
    # Values on a grid make exact ties (S back at exactly 0) common: the repair path runs.
    z = rng.choice(ZS, len(loc)) if seed % 2 else rng.normal(0.3, 1.0, len(loc))
    k = float(rng.choice([0.0, 0.1, 0.5]))
    s0 = rng.choice([0.0, 0.3, 2.0], loc.max() + 1 if len(loc) else 1)
    runs = Runs(loc)
    assert np.array_equal(clamped_sums(z, k, runs, s0[runs.sensor]), _ref_clamped(z, k, loc, s0))


@pytest.mark.parametrize("seed", range(40))
def test_clamped_cusum_with_resets_equals_the_recursion(seed, monkeypatch):
    if seed % 4 == 0:
        # Dense alarms step a few readings at a time, then go back to passes: both within one run.
        monkeypatch.setattr(series_mod, "LOOP_ROWS", 7)
    elif seed % 4 == 1:
        # Passes only: every alarm ends a pass and the next one starts after it.
        monkeypatch.setattr(series_mod, "DENSE_ALARMS", 0)
    rng = np.random.default_rng(100 + seed)
    loc = _runs(rng, max_len=600)
    n = len(loc)
    z = rng.choice(ZS, n) if seed % 2 else rng.normal(float(rng.choice([0.0, 0.7, 2.5])), 1.0, n)
    k, h = float(rng.choice([0.0, 0.5])), float(rng.choice([1.0, 4.0, 40.0]))
    direction = ["up", "down", "both"][seed % 3]
    ns = loc.max() + 1 if n else 1
    hi0, lo0 = rng.choice([0.0, 0.4], ns), rng.choice([0.0, 0.9], ns)
    runs = Runs(loc)
    hi, lo = clamped_cusum(z, k, runs, hi0[runs.sensor], lo0[runs.sensor], direction, h)
    ehi, elo = np.empty(n), np.empty(n)
    for i in range(n):
        if i == 0 or loc[i] != loc[i - 1]:
            a, b = hi0[loc[i]], lo0[loc[i]]
        a = max(0.0, a + z[i] - k) if direction != "down" else 0.0
        b = max(0.0, b - z[i] - k) if direction != "up" else 0.0
        ehi[i], elo[i] = a, b
        if max(a, b) >= h:
            a = b = 0.0
    assert np.array_equal(hi, ehi) and np.array_equal(lo, elo)


@pytest.mark.parametrize("lfilter_rows", [0, 10**9])
def test_ewma_filter_equals_the_recursion_with_and_without_scipy(monkeypatch, lfilter_rows):
    """Both long-run paths (scipy.signal.lfilter, and the float loop used before scipy is imported)
    and the short-run path give the recursion's numbers bit for bit."""
    monkeypatch.setattr(series_mod, "LFILTER_ROWS", lfilter_rows)
    if lfilter_rows:
        monkeypatch.delitem(__import__("sys").modules, "scipy.signal", raising=False)
    rng = np.random.default_rng(9)
    loc = np.repeat(np.arange(5), [3, 40, 1, 700, 31])
    x = rng.normal(10.0, 3.0, len(loc))
    z0 = rng.normal(10.0, 1.0, 5)
    lam = 0.3
    runs = Runs(loc)
    got = ewma_filter(x, runs, lam, z0)
    want, z = np.empty(len(x)), 0.0
    for i in range(len(x)):
        if i == 0 or loc[i] != loc[i - 1]:
            z = z0[loc[i]]
        z = lam * x[i] + (1 - lam) * z
        want[i] = z
    assert np.array_equal(got, want)


def test_runs_latest_never_crosses_a_sensor():
    runs = Runs(np.array([0, 0, 0, 1, 1, 2]))
    mask = np.array([True, False, False, False, True, False])
    assert runs.latest(mask).tolist() == [0, 0, 0, -1, 4, -1]
    assert runs.latest(mask, strict=True).tolist() == [-1, 0, 0, -1, -1, -1]
    assert runs.last_where(mask).tolist() == [0, 4, -1]


def test_time_driven_names_the_sensors_a_clock_rule_runs_on():
    """Offline (deadman) runs on every device of the shipped kinds; a rule set without a time-driven rule
    names none, so a caller slicing batches at watermarks may take them whole."""
    with_deadman = RuleSet.from_config(config_for("deadman")).time_driven()
    assert with_deadman.tolist() == [True] * 5
    assert not RuleSet.from_config(config_for("cusum")).time_driven().any()
