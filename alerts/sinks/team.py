"""A route receiver `team:<id>`: each notice goes to the people of the on-call team on duty at the
notice's time and escalation level (alerts/roster.py), on each of their channels, through the channel
sinks the team names.

A notice that reached at least one person on duty on at least one channel is delivered: a channel that
failed (an SMS gateway down) must not hold the team's queue while the person already has the mail, nor
the red notices behind it. The returned text names who was reached on which channel and which channels
failed, and the dispatcher records it in the delivery log. Only a notice that reached nobody is retried
(when a failure may pass). The people on duty with none of the team's channels count as nobody on duty
at their level: the notice goes up to the next level, then to the duty chief (roster.recipients), and
when nobody at all can be reached it fails, never "sent" to nobody.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Mapping

from alerts.model import Notice
from alerts.roster import recipients
from alerts.sinks.base import PersonSink, SinkError
from config.oncall import OnCall, Person

log = logging.getLogger(__name__)


class TeamSink:
    def __init__(self, oncall: OnCall, team_id: str, sinks: Mapping[str, PersonSink]) -> None:
        self.oncall = oncall
        self.team_id = team_id
        self.team = oncall.team(team_id)
        self.sinks = sinks  # channel kind -> the channel sink object
        self._done: set[tuple[str, str, str]] = set()

    def reachable(self, person: Person) -> bool:
        """Whether `person` has an address on one of the team's channel sinks."""
        return any(getattr(person.channels, kind) for kind in self.sinks)

    def plan(self, notice: Notice) -> tuple[str, list[Person]]:
        """Where and whom the notice goes to: the people on duty that a channel of the team reaches."""
        at = dt.datetime.fromtimestamp(notice.ts_ns / 1e9, dt.UTC)
        return recipients(self.oncall, self.team_id, self._level(notice), at, self.reachable)

    @staticmethod
    def _level(notice: Notice) -> int:
        return int(notice.payload.get("escalation_level") or 0)

    def send(self, notice: Notice) -> str:
        if not self.sinks:
            raise SinkError(f"team {self.team_id}: none of its channel sinks exists (check-config)", False)
        where, people = self.plan(notice)
        if not people:
            at = dt.datetime.fromtimestamp(notice.ts_ns / 1e9, dt.UTC)
            if not recipients(self.oncall, self.team_id, self._level(notice), at)[1]:
                raise SinkError(f"team {self.team_id}: nobody on duty and no duty chief", False)
            raise SinkError(f"team {self.team_id}: nobody on duty from level {self._level(notice)} up, nor the "
                            f"duty chief, has a channel of the team ({', '.join(self.sinks)}): not sent", False)
        reached: list[str] = []
        errors: list[str] = []
        retryable = False
        for person in people:
            for kind, sink in self.sinks.items():
                if not getattr(person.channels, kind):
                    continue
                mark = (notice.key, kind, person.id)
                if mark in self._done:
                    reached.append(f"{person.name} ({kind})")
                    continue
                try:
                    sink.send(notice, person)
                except SinkError as exc:
                    errors.append(f"{person.name} ({kind}): {exc}")
                    retryable = retryable or exc.retryable
                    continue
                self._done.add(mark)
                reached.append(f"{person.name} ({kind})")
        if not reached:
            # Nobody has it yet: retry while a failure may pass.
            raise SinkError(f"team {self.team_id} {where}: " + "; ".join(errors), retryable)
        # A notice delivered is never sent again by the dispatcher. (Marks of a notice outlive its send only
        # when a channel raised something other than SinkError, which the dispatcher retries: no repeats.)
        self._done = {m for m in self._done if m[0] != notice.key}
        note = f"team {self.team_id} {where}: " + ", ".join(reached)
        if errors:  # delivered on one channel, failed on another: the log says both
            log.error("team %s: notice %s not delivered to %s", self.team_id, notice.key, "; ".join(errors))
            note += "; not reached: " + "; ".join(errors)
        return note

    def close(self) -> None:
        pass
