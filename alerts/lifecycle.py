"""The alert lifecycle as data: pending -> firing -> resolved, severity changes, flapping, escalation and
reminders, as functions of one alert, its rule's `Timings`, the key's flap history and the time.

Each function changes only the lifecycle fields of the alert it is given and returns a `Step`: the
`Transition`s to notify (named objects, each with the alert's fields as they were at that moment), the
key's new flap history when the condition flipped, and whether the alert left the open set. Nothing here
reads a clock, a store or a sink: the engine (alerts/engine.py) keeps the maps of open alerts, the flap
histories, the store and the lock, and applies each Step to them. Times are UTC ns of event time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from alerts.model import Alert, alert_id_for
from core.severity import SEVERITY_NAMES
from core.timefmt import NS_PER_S as NS

# The transitions that are notified (alerts.model.TRANSITIONS); "discarded" and a resolve of an alert that
# never fired change the alert without a notice.
Kind = Literal["firing", "severity", "escalated", "repeat", "acknowledged", "flapping", "resolved"]


@dataclass(frozen=True, slots=True)
class Timings:
    """What the lifecycle of one rule's alerts waits for (ns), and the alerting section's limits.

    for_ns:               the condition holds this long before a pending alert fires
    clear_for_ns:         the condition is clear this long before a firing alert resolves
    flap_window_ns, flap_max_transitions: more flips than this within the window mark the key flapping
    levels:               escalation level names (level 0 first)
    escalate_ns:          severity code -> time to the next escalation level (no entry: never escalates)
    repeat_s:             the reminder interval of an alert's route, seconds (0: none); None: no reminders
    """

    for_ns: int = 0
    clear_for_ns: int = 0
    flap_window_ns: int = 3600 * NS
    flap_max_transitions: int = 6
    levels: tuple[str, ...] = ()
    escalate_ns: Mapping[int, int] = field(default_factory=dict)
    repeat_s: Callable[[Alert], float] | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The fields of an alert that a notice shows as they were at its transition (a later row of the same
    batch may change them before the notice is built)."""

    severity: int
    peak_severity: int
    value: float
    limit: float
    state: str
    escalation_level: int
    flapping: bool

    @staticmethod
    def of(alert: Alert) -> Snapshot:
        return Snapshot(alert.severity, alert.peak_severity, alert.value, alert.limit, alert.state,
                        alert.escalation_level, alert.flapping)

    def put(self, alert: Alert) -> None:
        """Set these fields on `alert` (the engine builds a notice this way, then puts the current ones back)."""
        alert.severity, alert.peak_severity = self.severity, self.peak_severity
        alert.value, alert.limit, alert.state = self.value, self.limit, self.state
        alert.escalation_level, alert.flapping = self.escalation_level, self.flapping


@dataclass(frozen=True, slots=True)
class Transition:
    """One notified change of an alert: its kind, when it fell due (`ts_ns`, not when it was noticed),
    fields added to the notice's payload (`extra`, e.g. previous_severity) and the alert as it was."""

    alert: Alert
    kind: Kind
    ts_ns: int
    extra: Mapping[str, Any]
    snapshot: Snapshot


def transition(alert: Alert, kind: Kind, ts_ns: int, extra: Mapping[str, Any] | None = None) -> Transition:
    """A transition of `alert` with its fields as they are now."""
    return Transition(alert, kind, ts_ns, dict(extra or {}), Snapshot.of(alert))


@dataclass(frozen=True, slots=True)
class Step:
    """What one lifecycle function did to one alert.

    alert:       the alert after the step (a new one when an active row opened it, see `opened`)
    transitions: the changes to notify, in the order they happened
    flips:       the key's flap history after the step (times of the flips in the window), None: unchanged
    opened:      the alert is new: the engine adds it to its open alerts
    closed:      the alert left the open set (resolved, or discarded while pending)
    """

    alert: Alert
    transitions: tuple[Transition, ...] = ()
    flips: tuple[int, ...] | None = None
    opened: bool = False
    closed: bool = False


@dataclass(frozen=True, slots=True)
class Activity:
    """A run of active detections of one (rule, device) key at one severity, as of its first row."""

    rule_id: str
    device_id: str
    category: str
    site: dict[str, Any]  # the labels the engine gives the alert (AlertEngine._device_labels)
    device: dict[str, Any]
    ts_ns: int
    severity: int
    value: float
    limit: float


def flip(flips: Sequence[int], ts_ns: int, t: Timings) -> tuple[int, ...]:
    """The flap history after the condition changed its activity at `ts_ns` (flips outside the window dropped)."""
    cut = ts_ns - t.flap_window_ns
    kept = [f for f in flips if f > cut]
    kept.append(ts_ns)
    return tuple(kept)


def flips_in_window(flips: Sequence[int], now: int, t: Timings) -> int:
    cut = now - t.flap_window_ns
    return sum(1 for f in flips if f > cut)


def on_active(alert: Alert | None, row: Activity, t: Timings, flips: Sequence[int] = ()) -> Step:
    """The condition of the key is active at `row.ts_ns`: open a pending alert (`alert` None), or go on
    with the open one (a clear it was waiting out ends). Severity follows the row (a `severity` transition
    while firing); more flips than `flap_max_transitions` mark it flapping and fire it at once (a flapping
    condition must not hide in pending). Then its timers run to `row.ts_ns` (see `advance`).

    The caller runs the open alert's timers to `row.ts_ns` (`advance`) first, as for `on_clear`: a pending
    alert whose `for_ns` elapsed before the row fires at its due time, then the row applies."""
    ts, sev = row.ts_ns, row.severity
    out: list[Transition] = []
    new_flips: tuple[int, ...] | None = None
    opened = alert is None
    if alert is None:
        alert = Alert(alert_id_for(row.rule_id, row.device_id, ts), row.rule_id, row.device_id, row.category,
                      row.site, row.device, severity=sev, started_ns=ts, last_active_ns=ts, peak_value=row.value,
                      direction=-1 if row.value < row.limit else 1, severity_ns=ts)
        new_flips = flip(flips, ts, t)
    elif alert.clear_since_ns is not None:
        alert.clear_since_ns = None
        new_flips = flip(flips, ts, t)
    alert.recovered = False
    alert.value, alert.limit = row.value, row.limit
    # Before the severity transition is taken, so that its notice already carries the new peak.
    alert.peak_severity = max(alert.peak_severity, sev)
    if sev != alert.severity:
        alert.severity_ns = ts
    if alert.state == "firing" and sev != alert.severity:
        prev = alert.severity
        alert.severity = sev
        out.append(transition(alert, "severity", ts, {"previous_severity": SEVERITY_NAMES[prev]}))
    else:
        alert.severity = sev
    if new_flips is not None and len(new_flips) > t.flap_max_transitions and not alert.flapping:
        alert.flapping = True
        if alert.state == "pending":
            out.append(fire(alert, ts))
        else:
            out.append(transition(alert, "flapping", ts))
    later = advance(alert, ts, t, new_flips if new_flips is not None else flips)
    return Step(alert, (*out, *later.transitions), new_flips, opened, later.closed)


def on_clear(alert: Alert, ts_ns: int, t: Timings, flips: Sequence[int] = ()) -> Step:
    """The condition of the key is clear at `ts_ns`. A pending alert is discarded (never notified) unless
    flapping; a firing one waits `clear_for_ns` to resolve (see `advance`). Already clear: nothing."""
    if alert.clear_since_ns is not None:
        return Step(alert)
    new_flips = flip(flips, ts_ns, t)
    out: list[Transition] = []
    if len(new_flips) > t.flap_max_transitions and not alert.flapping and alert.state == "firing":
        alert.flapping = True
        out.append(transition(alert, "flapping", ts_ns))
    if alert.state == "pending" and not alert.flapping:
        alert.state = "discarded"
        return Step(alert, tuple(out), new_flips, closed=True)
    alert.clear_since_ns = ts_ns
    later = advance(alert, ts_ns, t, new_flips)
    return Step(alert, (*out, *later.transitions), new_flips, closed=later.closed)


def fire(alert: Alert, ts_ns: int) -> Transition:
    """pending -> firing at `ts_ns` (escalation counts from then)."""
    alert.state = "firing"
    alert.firing_ns = ts_ns
    alert.escalated_ns = ts_ns
    return transition(alert, "firing", ts_ns)


def resolve(alert: Alert, ts_ns: int) -> Step:
    """-> resolved at `ts_ns`; notified only when the alert had fired (a pending one just closes)."""
    alert.state = "resolved"
    alert.resolved_ns = ts_ns
    if alert.firing_ns is None:
        return Step(alert, closed=True)
    return Step(alert, (transition(alert, "resolved", ts_ns),), closed=True)


def advance(alert: Alert, now: int, t: Timings, flips: Sequence[int] = ()) -> Step:
    """Run an alert's timers up to `now`; each transition is stamped with the time it fell due.

    pending -> firing once the condition held `for_ns`; firing -> resolved once it was clear
    `clear_for_ns`, except that a flapping alert is held firing while the flips in the window exceed half
    of `flap_max_transitions` (then it resolves at `now`, unmarked). A firing alert that is neither
    acknowledged nor muted escalates one level per `escalate_ns` of its severity and is reminded every
    `repeat_s` of its route after its last notice."""
    out: list[Transition] = []
    if alert.state == "pending" and alert.clear_since_ns is None and now >= alert.started_ns + t.for_ns:
        out.append(fire(alert, alert.started_ns + t.for_ns))
    if alert.state == "firing" and alert.clear_since_ns is not None:
        due = alert.clear_since_ns + t.clear_for_ns
        if now >= due:
            if alert.flapping:
                if flips_in_window(flips, now, t) > t.flap_max_transitions // 2:
                    return Step(alert, tuple(out))
                alert.flapping = False
                due = max(due, now)
            done = resolve(alert, due)
            return Step(alert, (*out, *done.transitions), closed=True)
    if alert.state != "firing" or alert.acked_by or alert.muted:
        return Step(alert, tuple(out))
    period = t.escalate_ns.get(alert.severity)
    while period and alert.escalation_level < len(t.levels) - 1:
        # Counted from firing (or the last level), but never before the alert had the severity whose period
        # this is: stamped in the past, it would sort before notices already sent (and name a level the
        # alert did not have then).
        due = max(alert.escalated_ns + period, alert.severity_ns)  # type: ignore[operator]  # set when it fired
        if now < due:
            break
        alert.escalation_level += 1
        alert.escalated_ns = due
        out.append(transition(alert, "escalated", due, {"escalation_to": t.levels[alert.escalation_level]}))
    if alert.notified_firing and alert.last_notice_ns is not None and t.repeat_s is not None:
        repeat = t.repeat_s(alert)
        if repeat > 0 and now >= alert.last_notice_ns + int(repeat * NS):
            due = alert.last_notice_ns + int(repeat * NS)
            alert.last_notice_ns = due  # so one reminder per interval, even before it is notified
            out.append(transition(alert, "repeat", due))
    return Step(alert, tuple(out))
