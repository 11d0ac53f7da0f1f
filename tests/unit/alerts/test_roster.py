"""The on-call roster as a table: who is on duty at an instant (Asia/Shanghai shifts across midnight,
weekdays, holiday overrides), where escalation goes, and the coverage gaps check-config warns about."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from alerts.roster import coverage_gaps, on_duty_level, recipients
from config.oncall import OnCall

SH = ZoneInfo("Asia/Shanghai")

ROSTER = OnCall.model_validate({
    "people": [{"id": p, "name": p.title()} for p in ("wang", "li", "zhao", "sun", "zhou", "chief")],
    "teams": [{
        "id": "gas-siming", "name": "思明燃气班", "sinks": {"email": "mail"},
        "levels": [
            {"shifts": [
                {"days": ["mon", "tue", "wed", "thu", "fri"], "window": {"start": "08:00", "end": "20:00"},
                 "people": ["wang"]},
                # A night shift starting Friday evening runs into Saturday morning.
                {"days": ["mon", "tue", "wed", "thu", "fri"], "window": {"start": "20:00", "end": "08:00"},
                 "people": ["li"]},
                {"days": ["sat", "sun"], "window": {"start": "08:00", "end": "20:00"}, "people": ["zhao"]},
            ],
             "overrides": [{"date": "2026-10-01", "people": ["sun"]}]},
            {"shifts": [{"window": {"start": "08:00", "end": "18:00"}, "people": ["zhou"]}]},
        ],
    }],
    "duty_chief": ["chief"],
})
TEAM = ROSTER.teams[0]


def _at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=SH)


@pytest.mark.parametrize("when, level0", [
    ("2026-12-07T09:00", ["wang"]),    # Monday day shift
    ("2026-12-07T07:59", []),          # Monday before 08:00: Sunday had no night shift
    ("2026-12-07T20:00", ["li"]),      # Monday night starts at 20:00 sharp
    ("2026-12-08T03:00", ["li"]),      # Tuesday 03:00: Monday's night shift, across midnight
    ("2026-12-12T07:30", ["li"]),      # Saturday morning: Friday's night shift
    ("2026-12-12T08:00", ["zhao"]),    # Saturday day shift
    ("2026-12-12T21:00", []),          # Saturday night: nobody
    ("2026-12-14T02:00", []),          # Monday 02:00: Sunday night, no shift
    ("2026-10-01T03:00", ["sun"]),     # National Day: the override replaces every shift of that date
    ("2026-10-01T23:59", ["sun"]),
    ("2026-10-02T03:00", ["li"]),      # the day after: Thursday 01 Oct's night shift is replaced only on 01 Oct
])
def test_on_duty_level0(when, level0):
    assert [p.id for p in on_duty_level(ROSTER, TEAM, 0, _at(when))] == level0


def test_utc_instants_are_read_in_shanghai_time():
    # 2026-12-07 00:30 UTC is Monday 08:30 in Shanghai: the day shift, not Sunday night.
    at = dt.datetime(2026, 12, 7, 0, 30, tzinfo=dt.UTC)
    assert [p.id for p in on_duty_level(ROSTER, TEAM, 0, at)] == ["wang"]


@pytest.mark.parametrize("when, level, where, people", [
    ("2026-12-07T09:00", 0, "level 0", ["wang"]),
    ("2026-12-07T09:00", 1, "level 1", ["zhou"]),       # escalation: the team's next level
    ("2026-12-07T09:00", 2, "duty chief", ["chief"]),   # past the team's last level
    ("2026-12-07T19:00", 1, "duty chief", ["chief"]),   # level 1 off duty at 19:00: on to the chief
    ("2026-12-12T21:00", 0, "duty chief", ["chief"]),   # nobody at level 0 or 1: the chief, never nobody
    ("2026-12-12T10:00", 0, "level 0", ["zhao"]),
])
def test_recipients_escalate_to_next_level_then_duty_chief(when, level, where, people):
    got_where, got = recipients(ROSTER, "gas-siming", level, _at(when))
    assert (got_where, [p.id for p in got]) == (where, people)


def test_unknown_team_is_a_key_error():
    with pytest.raises(KeyError, match="unknown on-call team 'noise'"):
        recipients(ROSTER, "noise", 0, _at("2026-12-07T09:00"))


def test_coverage_gaps_are_the_uncovered_hours_per_weekday():
    gaps = coverage_gaps(ROSTER, TEAM)
    assert gaps == ["mon 00:00-08:00", "sat 20:00-24:00", "sun 00:00-08:00", "sun 20:00-24:00"]


def test_roster_refuses_unknown_people():
    with pytest.raises(ValueError, match="unknown person"):
        OnCall.model_validate({"people": [{"id": "a", "name": "A"}], "duty_chief": ["b"]})
    with pytest.raises(ValueError, match="unknown person"):
        OnCall.model_validate({"people": [{"id": "a", "name": "A"}], "teams": [{
            "id": "t", "name": "T", "sinks": {"email": "m"},
            "levels": [{"shifts": [{"window": {"start": "08:00", "end": "09:00"}, "people": ["x"]}]}]}]})
