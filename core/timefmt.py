"""UTC timestamps as citywatch writes them: the one ISO 8601 formatter and the nanoseconds-per-second constant."""

from __future__ import annotations

import datetime as dt

NS_PER_S = 1_000_000_000
NS_PER_MS = 1_000_000


def iso_utc(ts_ns: int, digits: int = 3, trim: bool = False) -> str:
    """UTC ISO 8601 with a Z: 2025-06-01T14:30:05.123Z.

    ts_ns:  UTC nanoseconds since the epoch (integer arithmetic: no float rounding of the fraction)
    digits: fraction digits, 0 to 9 (3 = milliseconds, 6 = microseconds); truncated, never rounded
    trim:   drop the fraction when it is zero at that precision (2025-06-01T14:30:05Z)
    Raises ValueError or OverflowError for a time outside the calendar (years 1 to 9999)."""
    if not 0 <= digits <= 9:
        raise ValueError(f"digits must be 0 to 9, got {digits}")
    sec, rem = divmod(int(ts_ns), NS_PER_S)
    base = dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = rem // 10 ** (9 - digits)
    if digits == 0 or (trim and frac == 0):
        return base + "Z"
    return f"{base}.{frac:0{digits}d}Z"


def iso_utc_ms(ms: int, trim: bool = True) -> str:
    """`iso_utc` of UTC epoch milliseconds (payloads and scenarios count in ms); by default without a
    fraction when the milliseconds are zero: 2025-06-01T14:30:05Z, 2025-06-01T14:30:05.250Z."""
    return iso_utc(int(ms) * NS_PER_MS, 3, trim)
