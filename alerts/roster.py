"""Who is on duty: the on-call roster (config `oncall:`) evaluated at an instant, and its coverage gaps.

Pure functions of the config and a UTC time, so the table tests need no clock. Shifts are local time in
`oncall.timezone` (Asia/Shanghai by default); a shift past midnight belongs to the day it starts on; an
override by date replaces the level's shifts for that whole local date (holidays, swaps).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

from config.base import minutes
from config.oncall import WEEKDAYS, OnCall, Person, Shift, Team


def _covers(shift: Shift, local: dt.datetime) -> bool:
    minute = local.hour * 60 + local.minute
    today = WEEKDAYS[local.weekday()]
    yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
    s, e = minutes(shift.window.start), minutes(shift.window.end)
    if s < e:
        return today in shift.days and s <= minute < e
    # Past midnight: the evening part belongs to today, the morning part to the shift that began yesterday.
    return (today in shift.days and minute >= s) or (yesterday in shift.days and minute < e)


def on_duty_level(oncall: OnCall, team: Team, level: int, at: dt.datetime) -> list[Person]:
    """The people of `team`'s `level` (0 = first) on duty at `at` (an aware datetime), in roster order."""
    if level >= len(team.levels):
        return []
    local = at.astimezone(ZoneInfo(oncall.timezone))
    lv = team.levels[level]
    ids: list[str] = []
    today = local.date()
    overrides = [o for o in lv.overrides if o.date == today]
    if overrides:
        for o in overrides:
            ids += o.people
    else:
        for shift in lv.shifts:
            if _covers(shift, local):
                ids += shift.people
    seen: dict[str, None] = dict.fromkeys(ids)
    return [p for p in (oncall.person(i) for i in seen) if p is not None]


def recipients(oncall: OnCall, team_id: str, escalation_level: int, at: dt.datetime,
               reachable: Callable[[Person], bool] | None = None) -> tuple[str, list[Person]]:
    """Whom a notice of a team at this escalation level goes to: (where, people).

    `where` is "level <n>" or "duty chief". A level with nobody on duty at `at` passes the notice to the
    next level, and past the team's last level it goes to the duty chief: a notice always reaches someone
    when anyone at all is on the roster. `reachable` (default: everyone) leaves out the people it refuses
    (the team receiver: those with none of the team's channels), so a level whose people on duty are all
    unreachable passes the notice on too; the list is empty only when nobody left is reachable.
    Raises KeyError for an unknown team.
    """
    team = oncall.team(team_id)
    if team is None:
        raise KeyError(f"unknown on-call team {team_id!r}")
    keep = reachable or (lambda _: True)
    for level in range(max(0, escalation_level), len(team.levels)):
        people = [p for p in on_duty_level(oncall, team, level, at) if keep(p)]
        if people:
            return f"level {level}", people
    chief = [p for p in (oncall.person(i) for i in oncall.duty_chief) if p is not None and keep(p)]
    return "duty chief", chief


def coverage_gaps(oncall: OnCall, team: Team) -> list[str]:
    """The weekly hours in which nobody of the team's first level is on duty by its shifts, as
    'mon 02:00-04:00' ranges (overrides are single dates and do not count as coverage)."""
    covered = [[False] * 1440 for _ in range(7)]
    for shift in team.levels[0].shifts:
        s, e = minutes(shift.window.start), minutes(shift.window.end)
        for day in shift.days:
            d = WEEKDAYS.index(day)
            if s < e:
                covered[d][s:e] = [True] * (e - s)
            else:
                covered[d][s:] = [True] * (1440 - s)
                covered[(d + 1) % 7][:e] = [True] * e
    out = []
    for d in range(7):
        m = 0
        while m < 1440:
            if covered[d][m]:
                m += 1
                continue
            start = m
            while m < 1440 and not covered[d][m]:
                m += 1
            out.append(f"{WEEKDAYS[d]} {start // 60:02d}:{start % 60:02d}-{m // 60:02d}:{m % 60:02d}")
    return out
