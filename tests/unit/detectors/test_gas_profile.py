"""G-leak and G-rupture against the learned time-of-week profile: nothing before it is learned, no
false alarm from daily demand peaks after it is, a slow leak caught, and no drop at the switch."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.gas import smooth_profile, week_position
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import TEST_SITES, batch, local_ns, make_config, rows_of
from tests.unit.detectors.reference import ReferenceRuleSet

STEP_S = 300
DAY = 86400 // STEP_S
START = "2025-06-02 00:00"   # a Monday, local time


def medium(id_: str) -> dict:
    return {"id": id_, "kind": "gas", "site": "GS-1", "report_interval_s": 900, "sample_interval_s": STEP_S,
            "pressure_class": "medium_a", "set_pressure_kpa": 300.0, "mop_kpa": 400.0, "full_scale_kpa": 600.0}


def config(**gas):
    rules = [{"id": "G-leak", "type": "gas_leak_cusum"}, {"id": "G-rupture", "type": "gas_rupture"}]
    return make_config(rules=rules, devices=[medium("G-OK"), medium("G-LEAK")], sites=TEST_SITES, gas=gas)


def demand(n: int, seed: int) -> np.ndarray:
    """A daily demand profile on a 300 kPa main: pressure sags up to 6 % in the morning (07-09) and
    8 % in the evening (17-20) peaks, with ramps inside the hours, plus 0.3 kPa noise."""
    h = (np.arange(n) * STEP_S / 3600.0) % 24
    sag = 18.0 * np.exp(-0.5 * ((h - 8.0) / 0.7) ** 2) + 24.0 * np.exp(-0.5 * ((h - 18.5) / 1.0) ** 2)
    return 300.0 - sag + np.random.default_rng(seed).normal(0.0, 0.3, n)


def feed(days: int = 15, leak_from_h: float = 14 * 24 + 8, leak_h: float = 14, pct_per_h: float = 1.5):
    """G-OK fault-free; G-LEAK the same demand, losing pct_per_h % of set pressure per hour on the last day."""
    n = days * DAY
    t = local_ns(START) + np.arange(n, dtype=np.int64) * STEP_S * 10**9
    ok = demand(n, 1)
    leak = demand(n, 2)
    hours = np.arange(n) * STEP_S / 3600.0
    on = (hours >= leak_from_h) & (hours < leak_from_h + leak_h)
    leak[on] -= pct_per_h / 100.0 * 300.0 * (hours[on] - leak_from_h)
    rows = [("G-OK", int(a), {"p": float(b)}) for a, b in zip(t, ok)]
    rows += [("G-LEAK", int(a), {"p": float(b)}) for a, b in zip(t, leak)]
    return rows, local_ns(START) + int(leak_from_h * 3600) * 10**9


@pytest.fixture(scope="module")
def fifteen_days():
    cfg = config()
    rows, leak_start = feed()
    rs = RuleSet.from_config(cfg)
    found = []
    for d in range(15):  # a day per batch, as a service would see them
        part = [r for r in rows if local_ns(START) + d * 86400 * 10**9 <= r[1] < local_ns(START) + (d + 1) * 86400 * 10**9]
        found += rows_of(rs.process(batch(part, cfg)))
    return cfg, found, leak_start


@pytest.mark.slow
def test_no_leak_or_rupture_before_the_profile_is_learned(fifteen_days):
    cfg, found, _ = fifteen_days
    learned_at = local_ns(START) + 14 * 86400 * 10**9   # min_weeks 2: every hour has two weeks of readings
    assert [r for r in found if r["ts_ns"] < learned_at and r["rule_id"] == "G-leak"] == []
    assert [r for r in found if r["rule_id"] == "G-rupture"] == []   # not even at the switch to the profile


@pytest.mark.slow
def test_fault_free_sensor_stays_silent_after_the_profile_is_learned(fifteen_days):
    cfg, found, _ = fifteen_days
    ok = cfg.device_index("G-OK")
    assert [r for r in found if r["sensor"] == ok] == []


@pytest.mark.slow
def test_slow_leak_of_1_5_percent_per_hour_is_caught(fifteen_days):
    cfg, found, leak_start = fifteen_days
    hits = [r for r in found if r["sensor"] == cfg.device_index("G-LEAK") and r["rule_id"] == "G-leak"]
    alarms = [r for r in hits if r["severity"] == "yellow"]
    assert alarms and alarms[0]["ts_ns"] >= leak_start
    # Caught within 3 h, while the pressure is down less than 4.5 % (G-low only starts at 15 %).
    assert alarms[0]["ts_ns"] - leak_start <= 3 * 3600 * 10**9
    assert hits[-1]["severity"] == "clear" or hits[-1]["ts_ns"] >= leak_start + 14 * 3600 * 10**9 - STEP_S * 10**9


def test_without_a_learned_profile_a_leak_raises_nothing():
    cfg = config()
    rows, _ = feed(days=3, leak_from_h=24 + 8, leak_h=14, pct_per_h=3.0)
    assert [r for r in rows_of(RuleSet.from_config(cfg).process(batch(rows, cfg))) if r["rule_id"] == "G-leak"] == []


@pytest.mark.slow
def test_leak_clears_when_the_pressure_is_back_on_the_profile():
    cfg = config(profile={"min_weeks": 1})
    rows, leak_start = feed(days=9, leak_from_h=7 * 24 + 10, leak_h=3, pct_per_h=1.5)
    found = [r for r in rows_of(RuleSet.from_config(cfg).process(batch(rows, cfg))) if r["rule_id"] == "G-leak"]
    sev = [r["severity"] for r in found]
    assert "yellow" in sev and sev[-1] == "clear"
    assert found[0]["ts_ns"] >= leak_start


@pytest.mark.slow
def test_vectorized_equals_reference_over_the_switch_to_the_profile():
    from tests.unit.detectors.test_conformance import assert_same

    cfg = config(profile={"min_weeks": 1})
    rows, _ = feed(days=8, leak_from_h=7 * 24 + 10, leak_h=4, pct_per_h=2.0)
    rows.append(("G-OK", local_ns(START) + (7 * DAY + 150) * STEP_S * 10**9 + 10**9, {"p": 250.0}))  # a sudden drop
    rows.sort(key=lambda r: r[1])
    vec = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(vec, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    assert {r["rule_id"] for r in rows_of(vec)} == {"G-leak", "G-rupture"}


def test_week_position_wraps_at_the_week():
    monday = (local_ns(START) // 10**9) + 8 * 3600     # local epoch seconds of Monday 00:00
    h0, w = week_position(np.array([monday + 1800, monday + 3600, monday + 5399, monday + 0, monday - 1]))
    assert h0.tolist() == [0, 0, 0, 167, 167]
    assert w.tolist() == pytest.approx([0.0, 0.5, 3599 / 3600, 0.5, 0.5 - 1 / 3600])


def test_smooth_profile_is_continuous_and_keeps_hour_means():
    """Through each hour middle, continuous across middles, and on a peak it averages back to the hour
    means far better than a straight line between them."""
    hours = np.arange(24 * 7)
    means = 300.0 - 20.0 * np.exp(-0.5 * ((hours % 24 + 0.5 - 8.0) / 0.9) ** 2)
    w = np.linspace(0.0, 1.0, 61)[:-1]
    curve = np.concatenate([smooth_profile([np.full_like(w, means[(h + d) % 168]) for d in range(-2, 4)], w)
                            for h in range(168)])
    ends = [smooth_profile([means[(h + d) % 168] for d in range(-2, 4)], 1.0) for h in range(168)]
    assert np.allclose(curve[60::60], ends[:-1])     # continuous where one hour's piece meets the next
    # The hour mean of the curve (from h:00 to h+1:00, i.e. the second half of one piece and the first
    # half of the next) stays within 0.25 % of set pressure of the learned hour mean on a 20 kPa peak,
    # less than half of what straight lines between the hour means are off by.
    hour_avg = (np.roll(curve, 30).reshape(168, 60)).mean(axis=1)
    lines = np.concatenate([means[h] + w * (means[(h + 1) % 168] - means[h]) for h in range(168)])
    lines_avg = (np.roll(lines, 30).reshape(168, 60)).mean(axis=1)
    assert np.abs(hour_avg - means).max() < 0.75
    assert np.abs(hour_avg - means).max() < 0.5 * np.abs(lines_avg - means).max()
