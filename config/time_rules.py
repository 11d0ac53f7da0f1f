"""Time rules in local time: day/night, prohibited windows, night-work permits, exam periods."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence
from functools import lru_cache

from pydantic import Field, field_validator, model_validator

from config.base import Date, KeyProblem, Strict, TimeOfDay, Window, minutes, overlapping
from config.errors import did_you_mean


class Permit(Strict):
    id: str = Field(min_length=1)
    site: str
    # The window starting on each date from `from` to `to` (inclusive) is permitted; a window
    # 22:00-06:00 starting on `to` runs into the next morning.
    from_: Date = Field(alias="from")
    to: Date
    windows: list[Window] = Field(min_length=1)
    reason: str = ""

    @model_validator(mode="after")
    def _dates(self) -> Permit:
        if self.to < self.from_:
            raise KeyProblem("to", f"must not be before from ({self.from_}) (got {self.to})")
        return self

    @model_validator(mode="after")
    def _windows(self) -> Permit:
        pair = overlapping(self.windows)
        if pair:
            i, j = pair
            raise KeyProblem(
                ("windows", j), f"overlaps windows[{i}] {self.windows[i]} of the same permit (got {self.windows[j]})"
            )
        return self

    def intervals(self, first: dt.date, last: dt.date) -> list[tuple[int, int]]:
        """Permitted local-time intervals, in minutes since 0001-01-01, of windows starting on first..last."""
        out = []
        day = max(first, self.from_)
        while day <= min(last, self.to):
            base = day.toordinal() * 1440
            for w in self.windows:
                s, e = minutes(w.start), minutes(w.end)
                out.append((base + s, base + (e if e > s else e + 1440)))
            day += dt.timedelta(days=1)
        return out


class ExamSite(Strict):
    id: str = Field(min_length=1)
    name: str = ""
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class ExamPeriod(Strict):
    id: str = Field(min_length=1)
    from_: Date = Field(alias="from")
    to: Date

    @model_validator(mode="after")
    def _dates(self) -> ExamPeriod:
        if self.to < self.from_:
            raise KeyProblem("to", f"must not be before from ({self.from_}) (got {self.to})")
        return self


class ListeningTest(Strict):
    date: Date
    start: TimeOfDay
    end: TimeOfDay

    @model_validator(mode="after")
    def _order(self) -> ListeningTest:
        # A listening test is a daytime sitting: it never runs past midnight.
        if minutes(self.end) <= minutes(self.start):
            raise KeyProblem("end", f"must be after start {self.start!r} (got {self.end!r})")
        return self


class Exam(Strict):
    # Metres from an exam site within which class-1 limits apply (Xiamen: 300 m in 2025, 100 m in 2021).
    # The floor of 10 m catches a radius written in kilometres.
    radius_m: float = Field(300.0, ge=10, le=10000)
    sites: list[ExamSite] = []
    periods: list[ExamPeriod] = []
    listening_tests: list[ListeningTest] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> Exam:
        groups: tuple[tuple[str, str, Sequence[ExamSite | ExamPeriod]], ...] = (
            ("sites", "exam site", self.sites), ("periods", "exam period", self.periods))
        for key, what, items in groups:
            seen: dict[str, int] = {}
            for j, item in enumerate(items):
                if item.id in seen:
                    raise KeyProblem(
                        (key, j, "id"), f"duplicate {what} id; already used by {key}[{seen[item.id]}] (got {item.id!r})"
                    )
                seen[item.id] = j
        return self

    @model_validator(mode="after")
    def _tests_in_periods(self) -> Exam:
        for j, test in enumerate(self.listening_tests):
            if not any(p.from_ <= test.date <= p.to for p in self.periods):
                raise KeyProblem(
                    ("listening_tests", j, "date"), f"is not inside any exam period in periods (got {test.date})"
                )
        return self


class TimeRules(Strict):
    timezone: str = "Asia/Shanghai"
    day_start: TimeOfDay = "06:00"
    night_start: TimeOfDay = "22:00"
    prohibited_windows: list[Window] = [Window(start="12:00", end="14:30"), Window(start="22:00", end="06:00")]
    permits: list[Permit] = []
    exam: Exam = Exam()

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            hint = did_you_mean(value, _zone_names()) or "; use an IANA name such as 'Asia/Shanghai'"
            raise ValueError(f"unknown time zone{hint} (got {value!r})") from None
        return value

    @model_validator(mode="after")
    def _windows(self) -> TimeRules:
        pair = overlapping(self.prohibited_windows)
        if pair:
            i, j = pair
            w = self.prohibited_windows
            raise KeyProblem(("prohibited_windows", j), f"overlaps prohibited_windows[{i}] {w[i]} (got {w[j]})")
        return self

    @model_validator(mode="after")
    def _day_night(self) -> TimeRules:
        for key in ("day_start", "night_start"):
            if minutes(getattr(self, key)) == 1440:  # "24:00" compared unequal to "00:00": night never came
                raise KeyProblem(key, 'must be a time from 00:00 to 23:59 (midnight is "00:00") (got "24:00")')
        if self.day_start == self.night_start:
            raise KeyProblem("night_start", f"must differ from day_start (got {self.night_start!r})")
        return self

    @model_validator(mode="after")
    def _permits(self) -> TimeRules:
        ids: dict[str, int] = {}
        for j, permit in enumerate(self.permits):
            if permit.id in ids:
                raise KeyProblem(("permits", j, "id"), f"duplicate permit id; already used by permits[{ids[permit.id]}] (got {permit.id!r})")
            ids[permit.id] = j
        # Two permits of one site whose windows overlap in time are a copy-paste mistake, or two
        # certificates for the same work: either way the operations center cannot tell which applies.
        for j, b in enumerate(self.permits):
            for i in range(j):
                a = self.permits[i]
                if a.site != b.site:
                    continue
                first = max(a.from_, b.from_) - dt.timedelta(days=1)
                last = min(a.to, b.to) + dt.timedelta(days=1)
                if first > last:
                    continue
                ia, ib = a.intervals(first, last), b.intervals(first, last)
                if any(s1 < e2 and s2 < e1 for s1, e1 in ia for s2, e2 in ib):
                    raise KeyProblem(
                        ("permits", j),
                        f"overlaps permits[{i}] {a.id!r} of the same site {a.site!r} in dates and windows (got {b.id!r})",
                    )
        return self

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)


@lru_cache(maxsize=1)
def _zone_names() -> list[str]:
    return sorted(zoneinfo.available_timezones())
