"""Daily windows and permits: overlap detection agrees with a plain minute-by-minute reference (hypothesis)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from config.base import Window, minutes, overlapping, windows_overlap
from config.time_rules import Permit, TimeRules

# Quarter hours, so that random windows touch and overlap often.
times = st.integers(0, 96).map(lambda q: f"{q * 15 // 60:02d}:{q * 15 % 60:02d}")
windows = st.tuples(times, times).filter(lambda t: minutes(t[0]) % 1440 != minutes(t[1]) % 1440).map(
    lambda t: Window(start=t[0], end=t[1])
)


def _minute_set(w: Window) -> set[int]:
    s, e = minutes(w.start) % 1440, minutes(w.end) % 1440
    return {m % 1440 for m in range(s, s + (e - s) % 1440)}


@given(windows)
def test_spans_cover_the_same_minutes(w):
    assert {m for s, e in w.spans() for m in range(s, e)} == _minute_set(w)


@given(windows, windows)
def test_overlap_matches_minute_sets(a, b):
    assert windows_overlap(a, b) == bool(_minute_set(a) & _minute_set(b))


@given(st.lists(windows, max_size=5))
def test_overlapping_finds_a_pair_exactly_when_one_exists(ws):
    pair = overlapping(ws)
    exists = any(_minute_set(a) & _minute_set(b) for i, a in enumerate(ws) for b in ws[i + 1 :])
    assert (pair is not None) == exists
    if pair:
        i, j = pair
        assert i < j and _minute_set(ws[i]) & _minute_set(ws[j])


def _absolute(p: Permit) -> set[int]:
    out = set()
    day = p.from_
    while day <= p.to:
        base = day.toordinal() * 1440
        s, e = minutes(p.windows[0].start), minutes(p.windows[0].end)
        out |= set(range(base + s, base + (e if e > s else e + 1440)))
        day += dt.timedelta(days=1)
    return out


permits = st.builds(
    lambda start, days, w, pid: {
        "id": pid, "site": "S1", "from": dt.date(2025, 6, 1) + dt.timedelta(days=start),
        "to": dt.date(2025, 6, 1) + dt.timedelta(days=start + days),
        "windows": [{"start": w.start, "end": w.end}],
    },
    st.integers(0, 6), st.integers(0, 3), windows, st.sampled_from(["A", "B"]),
)


@settings(max_examples=150)
@given(permits, permits)
def test_two_permits_of_a_site_conflict_exactly_when_their_minutes_meet(a, b):
    a, b = dict(a, id="A"), dict(b, id="B")
    conflict = bool(_absolute(Permit.model_validate(a)) & _absolute(Permit.model_validate(b)))
    try:
        TimeRules.model_validate({"permits": [a, b]})
        raised = False
    except ValidationError:
        raised = True
    assert raised == conflict


def test_a_night_window_on_the_last_day_runs_into_the_next_morning():
    a = {"id": "A", "site": "S1", "from": dt.date(2025, 6, 1), "to": dt.date(2025, 6, 3),
         "windows": [{"start": "22:00", "end": "06:00"}]}
    b = {"id": "B", "site": "S1", "from": dt.date(2025, 6, 4), "to": dt.date(2025, 6, 4),
         "windows": [{"start": "05:00", "end": "07:00"}]}
    with pytest.raises(ValidationError):
        TimeRules.model_validate({"permits": [a, b]})
    b["windows"] = [{"start": "06:00", "end": "07:00"}]
    TimeRules.model_validate({"permits": [a, b]})


def test_permits_of_different_sites_may_overlap():
    a = {"id": "A", "site": "S1", "from": dt.date(2025, 6, 1), "to": dt.date(2025, 6, 3),
         "windows": [{"start": "22:00", "end": "06:00"}]}
    TimeRules.model_validate({"permits": [a, dict(a, id="B", site="S2")]})
