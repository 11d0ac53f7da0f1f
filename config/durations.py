"""The one duration grammar of citywatch: `90`, `90s`, `15m`, `2h`, `1d`, `2w` (a bare number is seconds).

Used by the CLI options (`warmup --since`, `detect --since`, `simulate --duration`, `record --duration`),
by operator commands (`expires`), by scenario files and by every YAML key that ends in `_s` (a number
of seconds, or a duration: `clear_for_s: 2m` is 120). It lives in the config package because config is
the bottom layer that every other layer may import.
"""

from __future__ import annotations

import math
import re
from typing import Any

# Bounded digits (at most 9 before the point, 6 after): a duration can never overflow a float, nor the
# 64-bit nanoseconds the alert store and the detectors keep times in (9 digits of weeks is ~1.9e16 s).
_DURATION = re.compile(r"^\s*(\d{1,9}(?:\.\d{1,6})?)\s*(ms|s|m|h|d|w)?\s*$")
UNIT_S = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
UNITS_TEXT = "s, m, h, d or w"
EXAMPLES = "90s, 15m, 2h, 1d"


def _show(text: Any) -> str:
    s = repr(text)
    return s if len(s) <= 60 else s[:57] + "..."


def parse_duration(text: str | int | float, positive: bool = True) -> float:
    """Seconds in a duration: a number with an optional unit s, m, h, d or w (`ms` too, for
    sub-second fault lengths); a bare number is seconds. A number (int or float) is taken as seconds.

    positive: refuse zero (a silence, a simulated run); with False, zero is allowed (a history of `0s`).
    Negative values, signs, exponents, inf and nan are always refused. Raises ValueError."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            raise ValueError(_refusal(text, positive))
        return value
    m = _DURATION.match(str(text)[:64]) if isinstance(text, str) else None
    if not m:
        raise ValueError(_refusal(text, positive))
    value = float(m.group(1)) * UNIT_S[m.group(2) or "s"]
    if positive and value <= 0:
        raise ValueError(_refusal(text, positive))
    return value


def _refusal(text: Any, positive: bool) -> str:
    kind = "a positive" if positive else "a"
    return f"duration {_show(text)} must be {kind} number with an optional unit {UNITS_TEXT}"


def format_duration(seconds: float) -> str:
    """7200 -> `2h`, 2592000 -> `30d`, 90 -> `90s` (the largest unit that divides it)."""
    for unit in ("w", "d", "h", "m"):
        if seconds >= UNIT_S[unit] and seconds % UNIT_S[unit] == 0:
            return f"{int(seconds // UNIT_S[unit])}{unit}"
    return f"{seconds:g}s"


def is_duration_key(name: str) -> bool:
    """Whether a YAML key holds seconds and so also takes a duration (`*_s`, but not a rate `*_per_s`)."""
    return name.endswith("_s") and not name.endswith("_per_s")


def seconds_value(value: Any, whole: bool) -> Any:
    """The value of a `*_s` YAML key before type validation: a duration text becomes seconds (an int
    when `whole`); anything else, a text that is no duration included, is returned unchanged for the
    key's own type check to refuse (see `duration_problem` for its message)."""
    if not isinstance(value, str):
        return value
    try:
        seconds = parse_duration(value, positive=False)
    except ValueError:
        return value
    if whole:
        return int(seconds) if seconds == int(seconds) else value
    return seconds


def duration_problem(value: Any) -> str | None:
    """Why the text `value` of a `*_s` key was refused (None: it is not a text). Without the `(got ...)`."""
    if not isinstance(value, str):
        return None
    try:
        parse_duration(value, positive=False)
    except ValueError:
        return f"must be a number of seconds or a duration such as {EXAMPLES}"
    return "must be a whole number of seconds"
