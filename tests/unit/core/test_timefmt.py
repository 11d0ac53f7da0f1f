"""The one UTC ISO 8601 formatter: every precision its callers use, integer arithmetic, calendar bounds."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.timefmt import NS_PER_S, iso_utc, iso_utc_ms

T = 1748788205 * NS_PER_S  # 2025-06-01T14:30:05Z


@pytest.mark.parametrize(("ts_ns", "digits", "trim", "text"), [
    (T, 3, False, "2025-06-01T14:30:05.000Z"),          # alert records, detect output
    (T + 7_000_000, 3, False, "2025-06-01T14:30:05.007Z"),
    (T, 3, True, "2025-06-01T14:30:05Z"),               # payloads, scenarios
    (T + 123_456_789, 6, False, "2025-06-01T14:30:05.123456Z"),  # dead letters
    (T + 999_999_999, 3, False, "2025-06-01T14:30:05.999Z"),     # truncated, never rounded up a second
    (T + 999_999_999, 0, False, "2025-06-01T14:30:05Z"),         # evaluation CSVs
    (0, 6, False, "1970-01-01T00:00:00.000000Z"),
    (-1, 3, False, "1969-12-31T23:59:59.999Z"),
])
def test_precisions(ts_ns, digits, trim, text):
    assert iso_utc(ts_ns, digits, trim) == text


def test_milliseconds_form_trims_by_default():
    assert iso_utc_ms(1748788205000) == "2025-06-01T14:30:05Z"
    assert iso_utc_ms(1748788205250) == "2025-06-01T14:30:05.250Z"
    assert iso_utc_ms(1748788205000, trim=False) == "2025-06-01T14:30:05.000Z"


def test_bad_precision_and_out_of_calendar_are_errors():
    with pytest.raises(ValueError, match="digits must be 0 to 9"):
        iso_utc(T, 10)
    with pytest.raises((ValueError, OverflowError, OSError)):
        iso_utc(10**30)


@given(st.integers(min_value=0, max_value=4_102_444_800 * NS_PER_S))
def test_round_trips_through_fromisoformat(ts_ns):
    import datetime as dt

    text = iso_utc(ts_ns, 6)
    back = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert int(back.timestamp()) * NS_PER_S + back.microsecond * 1000 == ts_ns - ts_ns % 1000
