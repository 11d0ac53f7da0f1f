"""Calendar.facts: the one-minute fast path (every row between the same two edges of one day) gives
exactly the general per-row result, at every edge of the shipped time rules."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.calendar import DAY_S, NS, Calendar
from tests.unit.detectors.helpers import local_ns, small_config

CFG = small_config([])
CAL = Calendar(CFG)
N_SENSORS = len(CFG.devices)
# Local days around the permit (2025-06-01..03), the exam period (06-07..21) and its listening test (06-08).
DAYS = ["2025-05-31", "2025-06-01", "2025-06-02", "2025-06-03", "2025-06-04", "2025-06-07", "2025-06-08", "2025-06-21",
        "2025-06-22"]


def _s(hhmm: str) -> int:
    h, m = hhmm.split(":")
    return (int(h) * 60 + int(m)) * 60


# Every time of day at which a fact can change, from the config itself (not from the calendar's own list).
T = CFG.time
EDGES = sorted({0, DAY_S - 1, _s(T.day_start), _s(T.night_start)}
               | {_s(x) for w in T.prohibited_windows for x in (w.start, w.end)}
               | {_s(x) for p in T.permits for w in p.windows for x in (w.start, w.end)}
               | {_s(x) for lt in T.exam.listening_tests for x in (lt.start, lt.end)})


def same(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in ("night", "prohibited", "permit", "exam", "local"))


@st.composite
def rounds(draw):
    """Readings of many sensors within a few seconds, often right at or next to an edge."""
    day0 = local_ns(draw(st.sampled_from(DAYS)) + " 00:00")
    edge = draw(st.sampled_from(EDGES))
    start = day0 + (edge + draw(st.integers(-3, 3))) * NS
    n = draw(st.integers(2, 30))
    spread = draw(st.sampled_from([0, 1, 5, 120]))
    ts = start + np.array(draw(st.lists(st.integers(0, spread), min_size=n, max_size=n)), np.int64) * NS
    sensor = np.array(draw(st.lists(st.integers(0, N_SENSORS - 1), min_size=n, max_size=n)), np.int32)
    return sensor, ts


def test_fast_path_equals_the_per_row_facts_at_every_edge():
    """Every day and edge of the shipped rules, just before, at and after it, with readings spread over
    0-120 s: all sensors, so the permit site and the exam radius are in every case."""
    sensor = np.repeat(np.arange(N_SENSORS, dtype=np.int32), 3)
    for day in DAYS:
        day0 = local_ns(day + " 00:00")
        for edge in EDGES:
            for off in (-2, -1, 0, 1, 2):
                for spread in (0, 1, 5, 120):
                    ts = day0 + (edge + off) * NS + (np.arange(len(sensor)) % 3) * spread * NS
                    fast = CAL.facts(sensor, ts)
                    assert same(fast, CAL._facts(sensor, CAL.local_seconds(ts))), (day, edge, off, spread)


@given(rounds())
@settings(max_examples=300, deadline=None)
def test_fast_path_equals_the_per_row_facts(rnd):
    sensor, ts = rnd
    fast = CAL.facts(sensor, ts)
    slow = CAL._facts(sensor, CAL.local_seconds(ts))
    assert same(fast, slow)


def test_fast_path_is_taken_within_a_minute_and_not_across_22_00():
    sensor = np.arange(N_SENSORS, dtype=np.int32)
    calm = np.full(N_SENSORS, local_ns("2025-06-02 21:58:00"))
    across = calm + np.arange(N_SENSORS) * 60 * NS // max(1, N_SENSORS - 1) + 60 * NS  # 21:59 .. 22:00
    f = CAL.facts(sensor, calm)
    assert not f.night.any()
    g = CAL.facts(sensor, across)
    assert g.night[-1] and not g.night[0]
    assert same(g, CAL._facts(sensor, CAL.local_seconds(across)))
