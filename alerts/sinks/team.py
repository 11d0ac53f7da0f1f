"""A route receiver `team:<id>`: each notice goes to the people of the on-call team on duty at the
notice's time and escalation level (alerts/roster.py), on each of their channels, through the channel
sinks the team names.

Per (notice, channel sink, person) a delivery is made once: when one channel fails and the dispatcher
retries the notice, the channels that already delivered are not sent again. The returned text names
every person reached, and the dispatcher records it in the delivery log.
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

    def plan(self, notice: Notice) -> tuple[str, list[Person]]:
        at = dt.datetime.fromtimestamp(notice.ts_ns / 1e9, dt.UTC)
        return recipients(self.oncall, self.team_id, int(notice.payload.get("escalation_level") or 0), at)

    def send(self, notice: Notice) -> str:
        if not self.sinks:
            raise SinkError(f"team {self.team_id}: none of its channel sinks exists (check-config)", False)
        where, people = self.plan(notice)
        if not people:
            raise SinkError(f"team {self.team_id}: nobody on duty and no duty chief", False)
        reached: list[str] = []
        errors: list[str] = []
        retryable = False
        for person in people:
            for kind, sink in self.sinks.items():
                if getattr(person.channels, kind) is None:
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
        if errors and (retryable or not reached):
            # Retry while some channel may still succeed; the ones that delivered are not repeated.
            raise SinkError(f"team {self.team_id} {where}: " + "; ".join(errors), retryable)
        # Bound the memory of deliveries: a finished notice is never sent again by the dispatcher.
        self._done = {m for m in self._done if m[0] != notice.key}
        note = f"team {self.team_id} {where}: " + ", ".join(reached)
        if errors:  # refused for good on some channel, delivered on another: the log says both
            log.error("team %s: notice %s not delivered to %s", self.team_id, notice.key, "; ".join(errors))
            note += "; not reached: " + "; ".join(errors)
        return note

    def close(self) -> None:
        pass
