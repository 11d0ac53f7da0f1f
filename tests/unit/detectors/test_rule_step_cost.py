"""The shortcuts that cut a small step's fixed cost inside the rules change nothing: `Calendar.local_seconds`
with its per-hour offsets kept gives the same local seconds as the lookups it skips, step after step, also
across zone offset changes (daylight saving, a 45-minute zone's change in the middle of a UTC hour); and a
whole-batch step of one reading per device (N-data's `evaluate`, the noise background's vectorized update,
the noise blocks' current-block update) or of a few gives the detections and state of the rounds."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from detectors.calendar import DAY_S, NS, Calendar
from tests.unit.detectors.helpers import TEST_DEVICES, TEST_SITES, make_config, small_config
from tests.unit.detectors.test_step_fixed_cost import assert_same_state, feed, run

CFG = small_config([])


def _offset(tz: ZoneInfo, s: int) -> dt.timedelta | None:
    return dt.datetime.fromtimestamp(s, tz).utcoffset()


def changes(tz: ZoneInfo, year: int) -> list[int]:
    """Epoch seconds (UTC) of each offset change of `tz` in `year`, to the second."""
    t = int(dt.datetime(year, 1, 1, tzinfo=dt.UTC).timestamp())
    end = t + 366 * DAY_S
    out = []
    while t < end:
        if _offset(tz, t) != _offset(tz, t + 1800):
            lo, hi = t, t + 1800  # offset(lo) != offset(hi): the change is in (lo, hi]
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if _offset(tz, mid) == _offset(tz, lo) else (lo, mid)
            out.append(hi)
        t += 1800
    return out


def calendar(zone: str) -> Calendar:
    cal = Calendar(CFG)
    cal.tz = ZoneInfo(zone)
    return cal


def steps(change: int, rnd: np.random.Generator) -> list[np.ndarray]:
    """Steps of 1-30 readings (UTC ns) from two hours before an offset change to two hours after, in time
    order, spread over 0 s to 2 h, and one spanning more than a day."""
    out = []
    t = change - 7200
    while t < change + 7200:
        spread = int(rnd.choice([0, 1, 59, 600, 3600, 7200]))
        n = int(rnd.integers(1, 31))
        out.append((t + rnd.integers(0, spread + 1, n)) * NS + rnd.integers(0, NS, n))
        t += int(rnd.choice([1, 30, 300, 1200]))
    out.append(np.array([change - DAY_S, change + 60], np.int64) * NS)
    return out


@pytest.mark.parametrize(("zone", "year"), [
    ("Asia/Shanghai", 1988),      # the shipped zone, in its daylight-saving years
    ("America/New_York", 2025),
    ("Europe/Berlin", 2025),
    ("Australia/Lord_Howe", 2025),  # a 30-minute daylight-saving shift
    ("Asia/Kathmandu", 1985),     # +05:30 -> +05:45 at 18:30 UTC: a change inside a UTC hour
])
def test_local_seconds_with_kept_hour_offsets_equal_the_lookups(zone: str, year: int, monkeypatch) -> None:
    tz = ZoneInfo(zone)
    found = changes(tz, year)
    assert found
    kept, looked_up = calendar(zone), calendar(zone)
    monkeypatch.setattr(looked_up, "_hour_offset_s", lambda hour: None)  # every step takes the lookups
    rnd = np.random.default_rng(year)
    for change in found:
        for ts in steps(change, rnd):
            a, b = kept.local_seconds(ts), looked_up.local_seconds(ts)
            assert a.dtype == b.dtype and np.array_equal(a, b), (zone, change, ts)


def test_local_seconds_of_a_quiet_hour_match_each_readings_offset() -> None:
    cal = calendar("Asia/Shanghai")
    ts = (int(dt.datetime(2025, 6, 10, 14, 0, tzinfo=dt.UTC).timestamp()) + np.arange(0, 7200, 7)) * NS
    for i in range(0, len(ts), 5):
        part = ts[i:i + 5]
        assert np.array_equal(cal.local_seconds(part), part // NS + 8 * 3600)
    assert cal.local_seconds(np.array([], np.int64)).dtype == np.int64


def _row_key(r: dict) -> tuple:
    return r["ts_ns"], r["sensor"], r["rule_id"], r["severity"]


@pytest.mark.parametrize("per_step", [1, 2, 3], ids=["one reading per device", "two", "three"])
def test_small_whole_batch_steps_equal_the_rounds(per_step: int) -> None:
    cfg = make_config(devices=TEST_DEVICES, sites=TEST_SITES)  # the shipped rules
    rows = feed()  # five devices, one reading a minute each, across 22:00 (an hour ends), one flagged row
    devices = len({r[0] for r in rows})
    size = devices * per_step
    steps = [rows[a:a + size] for a in range(0, len(rows), size)]
    whole_found, whole_states = run(cfg, steps, series=True)
    round_found, round_states = run(cfg, steps, series=False)
    assert any(r["rule_id"] == "N-night" for f in whole_found for r in f)  # not vacuous: alarms raised
    for i, (a, b) in enumerate(zip(whole_found, round_found)):
        # Rows, values, limits, scores and contexts (the two paths list a step's rows in different orders).
        assert sorted(a, key=_row_key) == sorted(b, key=_row_key), f"step {i}"
    for a, b in zip(whole_states, round_states):
        assert_same_state(a, b)
