"""Self-metrics helpers of issue 17: the alert-latency histogram (Prometheus buckets, vectorized) and
LagWatch (one line when a lag crosses its threshold, one when it recovers, rate-limited)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from ingest.metrics import LagWatch, LatencyHistogram


def test_histogram_buckets_are_cumulative_with_le_inclusive_and_nan_ignored():
    h = LatencyHistogram((0.05, 0.25, 1.0))
    h.observe_many(np.array([0.01, 0.05, 0.2, 0.9, 3.0, np.nan, -0.5]))
    buckets, total, n = h.snapshot()
    # -0.5 (a device clock ahead of ours) counts as 0; 0.05 belongs to le=0.05 (Prometheus: value <= le).
    assert buckets == [("0.05", 3), ("0.25", 4), ("1.0", 5), ("+Inf", 6)]
    assert n == 6 and math.isclose(total, 0.01 + 0.05 + 0.2 + 0.9 + 3.0)
    assert h.quantile(0.5) == 0.05 and h.quantile(0.8) == 1.0 and h.quantile(0.99) == math.inf
    h.observe_many([])
    assert h.snapshot()[2] == 6
    assert LatencyHistogram().quantile(0.99) is None


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_lagwatch_says_once_behind_and_once_caught_up():
    clock = Clock()
    w = LagWatch("detection", 10.0, every_s=60.0, clock=clock)
    assert w.observe(3.0) is None
    level, msg = w.observe(12.5, "500 readings queued")
    assert level == logging.WARNING
    assert msg == "detection is falling behind: 12.5 s (over 10 s); 500 readings queued"
    for lag in (30.0, 8.0, 5.5):  # still behind: over half the threshold
        clock.t += 1
        assert w.observe(lag) is None
    clock.t += 1
    level, msg = w.observe(4.0)
    assert level == logging.INFO and msg == "detection caught up after 4.0 s (worst 30.0 s)"
    assert w.crossings == 1 and not w.behind


def test_lagwatch_rate_limits_a_flapping_lag_and_says_a_long_one_later():
    clock = Clock()
    w = LagWatch("detection", 10.0, every_s=60.0, clock=clock)
    assert w.observe(11.0)[0] == logging.WARNING
    clock.t += 1
    assert w.observe(1.0)[0] == logging.INFO
    said = []
    for _ in range(10):  # flapping within the minute: counted, not said (nor their recoveries)
        clock.t += 1
        said += [w.observe(11.0), w.observe(1.0)]
    assert said == [None] * 20 and w.crossings == 11
    clock.t += 1
    assert w.observe(20.0) is None
    clock.t += 60  # still behind a minute after the last line: said now, with for how long
    level, msg = w.observe(20.0)
    assert level == logging.WARNING and msg == "detection is falling behind: 20.0 s (over 10 s for 60.0 s)"
    clock.t += 1
    assert w.observe(0.0)[0] == logging.INFO


def test_lagwatch_refuses_a_threshold_of_zero():
    with pytest.raises(ValueError, match="warn_s must be > 0, got 0"):
        LagWatch("detection", 0)
