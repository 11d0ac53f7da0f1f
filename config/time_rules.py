"""Time rules in local time: day/night, prohibited windows, night-work permits, exam periods."""

from __future__ import annotations

import datetime as dt
import zoneinfo

from pydantic import Field, field_validator, model_validator

from config.base import Strict, TimeOfDay, Window, overlapping


class Permit(Strict):
    id: str = Field(min_length=1)
    site: str
    # The window starting on each date from `from` to `to` (inclusive) is permitted; a window
    # 22:00-06:00 starting on `to` runs into the next morning.
    from_: dt.date = Field(alias="from")
    to: dt.date
    windows: list[Window] = Field(min_length=1)
    reason: str = ""

    @model_validator(mode="after")
    def _dates(self) -> "Permit":
        if self.to < self.from_:
            raise ValueError(f"to ({self.to}) is before from ({self.from_})")
        pair = overlapping(self.windows)
        if pair:
            raise ValueError(f"windows[{pair[0]}] and windows[{pair[1]}] overlap")
        return self


class ExamSite(Strict):
    id: str = Field(min_length=1)
    name: str = ""
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class ExamPeriod(Strict):
    id: str = Field(min_length=1)
    from_: dt.date = Field(alias="from")
    to: dt.date

    @model_validator(mode="after")
    def _dates(self) -> "ExamPeriod":
        if self.to < self.from_:
            raise ValueError(f"to ({self.to}) is before from ({self.from_})")
        return self


class ListeningTest(Strict):
    date: dt.date
    start: TimeOfDay
    end: TimeOfDay


class Exam(Strict):
    radius_m: float = Field(300.0, gt=0, le=10000)
    sites: list[ExamSite] = []
    periods: list[ExamPeriod] = []
    listening_tests: list[ListeningTest] = []


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
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Asia/Shanghai)") from None
        return value

    @model_validator(mode="after")
    def _windows(self) -> "TimeRules":
        pair = overlapping(self.prohibited_windows)
        if pair:
            raise ValueError(f"prohibited_windows[{pair[0]}] and prohibited_windows[{pair[1]}] overlap")
        if self.day_start == self.night_start:
            raise ValueError("day_start and night_start must differ")
        return self

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)
