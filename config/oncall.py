"""The on-call roster (`oncall:`): teams of people with their channels, weekly shifts in local time,
holiday overrides by date, escalation levels, and the duty chief above every team's last level.

Who is on duty at an instant is computed by alerts/roster.py; routes name a team as `team:<id>`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.base import Date, KeyProblem, Strict, Window

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ID = r"^[a-z][a-z0-9_-]{0,63}$"


class PersonChannels(Strict):
    wecom: str | None = Field(None, pattern=r"^\+?[0-9]{6,15}$")  # mobile @-mentioned by the WeCom robot
    dingtalk: str | None = Field(None, pattern=r"^\+?[0-9]{6,15}$")  # mobile @-mentioned by the DingTalk robot
    email: str | None = Field(None, pattern=r"^[^@\s]+@[^@\s]+$")
    sms: str | None = Field(None, pattern=r"^\+?[0-9]{6,15}$")


class Person(Strict):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1, max_length=80)
    language: Literal["zh-CN", "en"] = "zh-CN"
    channels: PersonChannels = PersonChannels()


class Shift(Strict):
    """Who is on duty on these weekdays in this local window; a window past midnight belongs to the day
    it starts on (a Friday 22:00-08:00 shift covers Saturday 00:00-08:00)."""

    days: list[Weekday] = Field(list(WEEKDAYS), min_length=1)
    window: Window
    people: list[str] = Field(min_length=1)  # person ids, all notified


class Override(Strict):
    """A date (a holiday, a swap) on which these people replace the team's shifts of that level all day."""

    date: Date
    people: list[str] = Field(min_length=1)


class Level(Strict):
    shifts: list[Shift] = []
    overrides: list[Override] = []


class Team(Strict):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    # Which sink sends on each of a person's channels: {wecom: <sink name>, email: <sink name>, ...}.
    sinks: dict[Literal["wecom", "dingtalk", "email", "sms"], str] = Field(min_length=1)
    # Level 0 is notified on firing; escalation goes to level 1, 2 ..., then to oncall.duty_chief.
    levels: list[Level] = Field(min_length=1)


class OnCall(Strict):
    timezone: str = "Asia/Shanghai"
    people: list[Person] = []
    teams: list[Team] = []
    duty_chief: list[str] = []  # person ids notified when an escalation goes past a team's last level

    @model_validator(mode="after")
    def _references(self) -> OnCall:
        ids = [p.id for p in self.people]
        known = set(ids)
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise KeyProblem("people", f"person id listed twice (got {dup[0]!r})")
        for i, pid in enumerate(self.duty_chief):
            if pid not in known:
                raise KeyProblem(("duty_chief", i), f"unknown person (got {pid!r})")
        for t, team in enumerate(self.teams):
            for lv, level in enumerate(team.levels):
                for s, shift in enumerate(level.shifts):
                    for j, pid in enumerate(shift.people):
                        if pid not in known:
                            raise KeyProblem(("teams", t, "levels", lv, "shifts", s, "people", j),
                                             f"unknown person (got {pid!r})")
                for o, ov in enumerate(level.overrides):
                    for j, pid in enumerate(ov.people):
                        if pid not in known:
                            raise KeyProblem(("teams", t, "levels", lv, "overrides", o, "people", j),
                                             f"unknown person (got {pid!r})")
        return self

    def person(self, pid: str) -> Person | None:
        return next((p for p in self.people if p.id == pid), None)

    def team(self, tid: str) -> Team | None:
        return next((t for t in self.teams if t.id == tid), None)
