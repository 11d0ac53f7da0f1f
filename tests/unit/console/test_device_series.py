"""The device page's chart data (issue 11 item 3): the per-minute Leq is the energy mean of the minute's readings
and equals the rolling Leq the N-day rule computes for the same window; the limit step line equals the limit
the N-day / N-night rules apply, across the 22:00 day/night boundary. Pure logic: no servers."""

from __future__ import annotations

import numpy as np
import pytest

from console.series import limit_steps, minute_series
from detectors.noise import energy_mean_db
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import (
    TEST_SITES,
    batch,
    local_ns,
    make_config,
    rows_of,
    series,
)

NS = 1_000_000_000
DEVICES = [{"id": "N-TEN", "kind": "noise", "site": "HL-2025-102", "report_interval_s": 10}]
RULES = [{"id": "N-day", "type": "noise_day_limit", "kind": "noise", "window_s": 60, "clear_for_s": 0},
         {"id": "N-night", "type": "noise_night_limit", "kind": "noise", "window_s": 60, "clear_for_s": 0}]


def _cfg():
    return make_config(rules=RULES, devices=DEVICES, sites=TEST_SITES)


def _readings(start: str, minutes: int, seed: int):
    """10-second readings (interval end) from `start`, loud and uneven so the rules fire on every row."""
    rng = np.random.default_rng(seed)
    leq = np.round(rng.uniform(72.0, 98.0, minutes * 6), 1)
    t0 = local_ns(start)
    ts = t0 + np.arange(1, len(leq) + 1, dtype=np.int64) * 10 * NS
    return ts, leq


def _detector_rows(cfg, ts, leq):
    rs = RuleSet.from_config(cfg)
    rows = series("N-TEN", int(ts[0]), [{"leq": float(v), "lmax": float(v) + 5, "l90": 60.0} for v in leq], step_s=10)
    return rs, rows_of(rs.process(batch(rows, cfg)))


def test_minute_leq_is_the_energy_mean_and_equals_the_detectors_leq():
    cfg = _cfg()
    ts, leq = _readings("2026-03-10 09:00", 10, seed=3)
    flags = np.array(["N"] * len(ts), object)
    flags[7] = "D"                      # an invalid reading counts neither for the rules nor for the chart
    s = minute_series(ts, leq, leq + 5, np.full(len(ts), 60.0), flags)
    assert len(s["t_ms"]) == 10 and s["n"][1] == 5
    for m in range(10):
        rows = slice(m * 6, m * 6 + 6)
        ok = flags[rows] == "N"
        expect = energy_mean_db(leq[rows][ok])
        assert s["leq"][m] == pytest.approx(expect, abs=0.006)
        # An arithmetic mean of dB is not what the chart shows (the readings differ by up to 26 dB).
        assert abs(s["leq"][m] - float(np.mean(leq[rows][ok]))) > 0.5
        assert s["lmax"][m] == pytest.approx(float(np.max(leq[rows][ok])) + 5)
    # The N-day rule with a one-minute window, at each minute's last reading: the same window, the same value.
    leq_rules = leq.copy()
    leq_rules[7] = np.nan              # what the rules see of the D-flagged row: nothing
    bad = [("N-TEN", int(ts[7]), {"leq": float(leq[7])}, "D")]
    rs = RuleSet.from_config(cfg)
    good = [("N-TEN", int(t), {"leq": float(v), "lmax": float(v) + 5, "l90": 60.0}, None)
            for i, (t, v) in enumerate(zip(ts, leq, strict=True)) if i != 7]
    found = rows_of(rs.process(batch(sorted(good + bad, key=lambda r: r[1]), cfg)), "N-day")
    by_ts = {r["ts_ns"]: r["value"] for r in found}
    ends = np.array(s["t_ms"], np.int64) * 1_000_000
    assert set(ends.tolist()) <= set(by_ts)
    for m, end in enumerate(ends):
        assert by_ts[int(end)] == pytest.approx(s["leq"][m], abs=0.006)


def test_limit_steps_match_the_rules_limit_across_the_night_boundary():
    cfg = _cfg()
    ts, leq = _readings("2026-03-10 21:50", 20, seed=5)
    rs, found = _detector_rows(cfg, ts, leq)
    steps = limit_steps(rs.inv, 0, int(ts[0]), int(ts[-1]))
    limit_at = dict(zip(steps["t_ms"], steps["limit_db"], strict=True))
    minute_rows = [r for r in found if r["ts_ns"] % (60 * NS) == 0 and r["severity"] != "clear"]
    assert {r["rule_id"] for r in minute_rows} == {"N-day", "N-night"}
    for r in minute_rows:
        # `limit` is the fired level's (limit + 5 for orange by day); score = value - the rule's base limit.
        assert limit_at[r["ts_ns"] // 1_000_000] == pytest.approx(r["value"] - r["score"], abs=1e-6), r
    boundary = local_ns("2026-03-10 22:00") // 1_000_000
    assert limit_at[boundary - 60_000] == 70.0 and limit_at[boundary] == 55.0
    assert steps["night"][steps["t_ms"].index(boundary)] and not steps["night"][steps["t_ms"].index(boundary - 60_000)]


def test_minute_series_leaves_out_invalid_and_empty_minutes():
    ts = np.array([60, 120, 125, 130], np.int64) * NS
    s = minute_series(ts, np.array([200.0, 70.0, 80.0, np.nan]), np.array([80.0, 75, 85, 90]),
                      np.array([50.0, 51, 52, 53]), np.array(["N", "N", "N", "N"], object))
    assert s["t_ms"] == [120_000, 180_000]          # 200 dB is outside the plausible range: no point
    assert s["leq"][1] == pytest.approx(energy_mean_db([80.0]), abs=0.006)
