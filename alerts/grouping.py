"""Group timing: when a group's notices may leave (group_wait after it forms, then group_interval)."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class _Group:
    members: set[str] = field(default_factory=set)
    last_due_ns: int | None = None


class GroupTimer:
    """Pure scheduler of notice times per group key (Alertmanager's aggrGroup timing, event time).

    A group forms with its first open alert: its first notices wait `group_wait_s`. Later notices
    join a batch not yet sent, or else wait until `group_interval_s` after the previous batch.
    """

    def __init__(self) -> None:
        self._groups: dict[tuple[Hashable, ...], _Group] = {}

    def due(self, key: tuple[Hashable, ...], alert_id: str, now_ns: int, wait_s: float, interval_s: float) -> int:
        """When a notice of `alert_id` in group `key`, produced at `now_ns`, may be sent (UTC ns)."""
        g = self._groups.setdefault(key, _Group())
        forming = not g.members or g.last_due_ns is None
        g.members.add(alert_id)
        if g.last_due_ns is not None and now_ns <= g.last_due_ns:
            return g.last_due_ns  # the batch has not left yet: join it
        if forming or g.last_due_ns is None:  # the same test as `forming`, spelled out for mypy
            due = now_ns + int(wait_s * 1e9)
        else:
            due = max(now_ns, g.last_due_ns + int(interval_s * 1e9))
        g.last_due_ns = due
        return due

    def leave(self, key: tuple[Hashable, ...], alert_id: str) -> None:
        """An alert resolved: the group dissolves once it has no members (its next alert waits again)."""
        g = self._groups.get(key)
        if g is not None:
            g.members.discard(alert_id)
            if not g.members:
                del self._groups[key]
