"""Shared building blocks of the config schema: the strict base model, times of day, windows, severities."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator

Severity = Literal["red", "orange", "yellow", "blue"]
SEVERITY_RANK = {"blue": 1, "yellow": 2, "orange": 3, "red": 4}

_HHMM = re.compile(r"^([0-9]{2}):([0-9]{2})$")


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, no silent type coercion, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _time_of_day(value: str) -> str:
    m = _HHMM.match(value)
    if not m:
        raise ValueError("must be a time of day written HH:MM (quote it in YAML)")
    hh, mm = int(m.group(1)), int(m.group(2))
    if not (hh < 24 and mm < 60) and (hh, mm) != (24, 0):
        raise ValueError("must be a time of day between 00:00 and 24:00")
    return value


TimeOfDay = Annotated[str, AfterValidator(_time_of_day)]


def minutes(hhmm: str) -> int:
    """Minutes after midnight of an `HH:MM` string (`24:00` -> 1440)."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class Window(Strict):
    """A daily window in local time; `end` before `start` means it runs past midnight (22:00-06:00)."""

    start: TimeOfDay
    end: TimeOfDay

    @model_validator(mode="after")
    def _not_empty(self) -> "Window":
        if minutes(self.start) % 1440 == minutes(self.end) % 1440:
            raise ValueError(f"window {self.start}-{self.end} is empty: start and end must differ")
        return self

    def spans(self) -> list[tuple[int, int]]:
        """The window as half-open minute ranges within one day, split at midnight."""
        s, e = minutes(self.start), minutes(self.end)
        if s < e:
            return [(s, e)]
        return [(s, 1440), (0, e)] if e > 0 else [(s, 1440)]


def overlapping(windows: list[Window]) -> tuple[int, int] | None:
    """Indexes (i, j) of the first two windows that overlap, or None."""
    for i, a in enumerate(windows):
        for j in range(i + 1, len(windows)):
            b = windows[j]
            if any(s1 < e2 and s2 < e1 for s1, e1 in a.spans() for s2, e2 in b.spans()):
                return i, j
    return None
