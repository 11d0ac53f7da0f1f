"""Table tests of the alert lifecycle as data (alerts.lifecycle): no engine, no store, no sink, no clock.

Each case feeds one (rule, device) key a list of events in event time (seconds after T0) and compares
the transitions (kind, seconds) the lifecycle functions return. The same cases through the whole
engine: test_engine_lifecycle.py.
"""

from __future__ import annotations

import pytest

from alerts import lifecycle
from alerts.lifecycle import Activity, Step, Timings
from alerts.model import Alert
from core.severity import SEVERITY_CODES

S = 1_000_000_000
T0 = 1_748_788_200 * S  # 2025-06-01T14:30:00Z
SITE = {"id": "SM-1", "name": "Site 1", "address": "Road 1", "district": "Siming"}
DEVICE = {"id": "XM0001NOISE", "mn": "XM0001NOISE", "kind": "noise"}


def sec(ts_ns: int) -> float:
    return (ts_ns - T0) / S


class Key:
    """What the engine keeps for one key, and no more: the open alert and its flap history. Before each
    row the open alert's timers run to the row's time, as the engine does."""

    def __init__(self, t: Timings):
        self.t = t
        self.alert: Alert | None = None
        self.flips: tuple[int, ...] = ()
        self.alerts: list[Alert] = []  # every alert opened, in order
        self.log: list[tuple[str, float]] = []
        self.transitions: list[lifecycle.Transition] = []

    def take(self, step: Step) -> None:
        if step.flips is not None:
            self.flips = step.flips
        if step.opened:
            self.alerts.append(step.alert)
        self.alert = None if step.closed else step.alert
        self.transitions += step.transitions
        self.log += [(tr.kind, sec(tr.ts_ns)) for tr in step.transitions]

    def at(self, t: float) -> None:
        if self.alert is not None:
            self.take(lifecycle.advance(self.alert, T0 + int(t * S), self.t, self.flips))

    def active(self, t: float, severity: str = "yellow", value: float = 72.0, limit: float = 70.0) -> None:
        self.at(t)
        row = Activity("N-day", DEVICE["id"], "noise", SITE, DEVICE, T0 + int(t * S), SEVERITY_CODES[severity],
                       value, limit)
        self.take(lifecycle.on_active(self.alert, row, self.t, self.flips))

    def clear(self, t: float) -> None:
        self.at(t)
        if self.alert is not None:
            self.take(lifecycle.on_clear(self.alert, T0 + int(t * S), self.t, self.flips))

    def run(self, events: list[tuple]) -> list[tuple[str, float]]:
        """events: ("active", t[, severity[, value]]), ("clear", t), ("at", t)."""
        for name, *args in events:
            getattr(self, name)(*args)
        return self.log


def timings(for_s: float = 0, clear_for_s: float = 0, **kw) -> Timings:
    return Timings(int(for_s * S), int(clear_for_s * S), **kw)


def flap_rows(n: int, period_s: float = 120) -> list[tuple]:
    """n cycles of active at i*period, clear half a period later."""
    out: list[tuple] = []
    for i in range(n):
        out += [("active", i * period_s), ("clear", i * period_s + period_s / 2)]
    return out


@pytest.mark.parametrize("t, events, expected", [
    # fires at once without for_s
    (timings(), [("active", 0)], [("firing", 0)]),
    # held 60 s: a row at 30 s does not fire it yet, the watermark reaching 60 s does
    (timings(60), [("active", 0), ("active", 30)], []),
    (timings(60), [("active", 0), ("at", 60)], [("firing", 60)]),
    # noticed late: stamped with the time it fell due (started + for_s), not the time it was noticed
    (timings(60), [("active", 0), ("at", 500)], [("firing", 60)]),
    # cleared before for_s: discarded, never notified
    (timings(60), [("active", 0), ("clear", 30), ("at", 600)], []),
    # cleared after for_s: firing (at 60), then resolved at the clear
    (timings(60), [("active", 0), ("clear", 90)], [("firing", 60), ("resolved", 90)]),
], ids=["for_s 0", "held", "fires at for_s", "stamped when due", "cleared before for_s", "fires then resolves"])
def test_pending_to_firing_after_for_s(t, events, expected):
    assert Key(t).run(events) == expected


@pytest.mark.parametrize("events, expected", [
    # clear for 120 s: resolves at clear + 120
    ([("active", 0), ("clear", 60), ("at", 180)], [("firing", 0), ("resolved", 180)]),
    # clear for only 119 s: still open
    ([("active", 0), ("clear", 60), ("at", 179)], [("firing", 0)]),
    # noticed late: stamped clear + clear_for_s
    ([("active", 0), ("clear", 60), ("at", 5000)], [("firing", 0), ("resolved", 180)]),
    # active again within clear_for_s: the same alert goes on, no second firing
    ([("active", 0), ("clear", 60), ("active", 120), ("at", 1000)], [("firing", 0)]),
    # a second clear while clear changes nothing: the wait counts from the first
    ([("active", 0), ("clear", 60), ("clear", 150), ("at", 180)], [("firing", 0), ("resolved", 180)]),
], ids=["resolves", "still waiting", "stamped when due", "active again", "clear twice"])
def test_firing_to_resolved_after_clear_for_s(events, expected):
    assert Key(timings(clear_for_s=120)).run(events) == expected


def test_resolve_closes_the_alert_and_records_the_time():
    k = Key(timings(clear_for_s=120))
    k.run([("active", 0), ("clear", 60), ("at", 180)])
    (a,) = k.alerts
    assert (a.state, sec(a.resolved_ns), k.alert) == ("resolved", 180, None)


def test_a_pending_alert_cleared_is_discarded_and_closed():
    k = Key(timings(60))
    k.run([("active", 0), ("clear", 30)])
    assert (k.alerts[0].state, k.alert, k.log) == ("discarded", None, [])


def test_severity_rises_and_falls_within_one_alert():
    k = Key(timings())
    log = k.run([("active", 0, "yellow", 72), ("active", 60, "orange", 76), ("active", 120, "orange", 77),
                 ("active", 180, "yellow", 73), ("clear", 240)])
    assert log == [("firing", 0), ("severity", 60), ("severity", 180), ("resolved", 240)]
    assert [dict(tr.extra) for tr in k.transitions] == [
        {}, {"previous_severity": "yellow"}, {"previous_severity": "orange"}, {}]
    # each transition shows the alert as it was then, though the alert has moved on since
    assert [(tr.snapshot.severity, tr.snapshot.peak_severity) for tr in k.transitions] == [(2, 2), (3, 3), (2, 3), (2, 3)]
    assert len(k.alerts) == 1 and k.alerts[0].peak_severity == 3


def test_severity_changes_while_pending_are_not_notified():
    k = Key(timings(60))
    assert k.run([("active", 0, "yellow"), ("active", 30, "red"), ("active", 45, "orange"), ("at", 60)]) == [
        ("firing", 60)]
    assert (k.alert.severity, k.alert.peak_severity) == (3, 4)


@pytest.mark.parametrize("value, limit, direction", [(72.0, 70.0, 1), (12.0, 20.0, -1)])
def test_the_opening_row_sets_the_direction_and_the_peak(value, limit, direction):
    k = Key(timings())
    k.active(0, "yellow", value, limit)
    assert (k.alert.direction, k.alert.peak_value, k.alert.value, k.alert.limit) == (direction, value, value, limit)
    assert k.alert.alert_id == "N-day.XM0001NOISE.20250601T143000000Z"  # from event time: replay gives the same


def test_re_fire_after_resolve_is_a_new_alert():
    k = Key(timings(clear_for_s=60))
    log = k.run([("active", 0), ("clear", 10), ("at", 70), ("active", 100), ("clear", 110), ("at", 170)])
    assert log == [("firing", 0), ("resolved", 70), ("firing", 100), ("resolved", 170)]
    assert [a.alert_id for a in k.alerts] == ["N-day.XM0001NOISE.20250601T143000000Z",
                                             "N-day.XM0001NOISE.20250601T143140000Z"]
    assert [tr.alert.alert_id for tr in k.transitions] == [k.alerts[0].alert_id] * 2 + [k.alerts[1].alert_id] * 2


FLAP = {"flap_window_ns": 3600 * S, "flap_max_transitions": 6}


def test_a_flapping_key_opens_its_next_alert_firing_and_holds_it():
    # three short alerts make 6 flips; the 7th flip opens a 4th alert that fires at once, flapping
    k = Key(timings(**FLAP))
    log = k.run(flap_rows(10))
    assert log == [("firing", 0), ("resolved", 60), ("firing", 120), ("resolved", 180), ("firing", 240),
                   ("resolved", 300), ("firing", 360)]
    assert (k.alert.flapping, k.alert.state, k.transitions[-1].snapshot.flapping) == (True, "firing", True)


def test_a_pending_alert_of_a_flapping_key_fires_at_once():
    k = Key(timings(600, **FLAP))
    k.flips = tuple(T0 + i * S for i in range(6))  # six flips in the window already
    assert k.run([("active", 10)]) == [("firing", 10)]
    assert k.alert.flapping


@pytest.mark.parametrize("until, expected_tail, still_open", [
    # all 10 flips still in the window at 2000 s: held firing
    (2000, [], True),
    # 4 flips (360..540 s) still in the window at 3900 s: more than half of flap_max_transitions, held
    (3900, [], True),
    # 2 flips (480, 540 s) in the window at 4020 s: it resolves then
    (4020, [("resolved", 4020)], False),
    # at 4000 s the window holds none: it resolves at that time (not when its clear was due), unmarked
    (4000, [("resolved", 4000)], False),
])
def test_a_flapping_alert_resolves_once_the_flips_die_down(until, expected_tail, still_open):
    k = Key(timings(**FLAP))
    log = k.run([*flap_rows(5), ("at", until)])
    assert log == [("firing", 0), ("resolved", 60), ("firing", 120), ("resolved", 180), ("firing", 240),
                   ("resolved", 300), ("firing", 360), *expected_tail]
    assert (k.alert is not None) == still_open
    if not still_open:
        assert k.alerts[-1].flapping is False


def test_a_firing_alert_that_starts_flapping_is_marked_once():
    # clear_for_s keeps one alert open across short clears; the 7th flip marks it
    k = Key(timings(clear_for_s=90, **FLAP))
    assert k.run(flap_rows(5)) == [("firing", 0), ("flapping", 360)]
    assert len(k.alerts) == 1 and k.alert.flapping


def test_flips_outside_the_window_are_forgotten():
    t = timings(**{**FLAP, "flap_window_ns": 100 * S})
    assert lifecycle.flip((T0, T0 + 50 * S), T0 + 120 * S, t) == (T0 + 50 * S, T0 + 120 * S)
    assert lifecycle.flips_in_window((T0, T0 + 50 * S, T0 + 120 * S), T0 + 200 * S, t) == 1


ESC = {"levels": ("duty_officer", "section_chief", "director"), "escalate_ns": {4: 300 * S, 2: 3600 * S}}


@pytest.mark.parametrize("severity, until, expected", [
    ("red", 299, [("firing", 0)]),
    ("red", 300, [("firing", 0), ("escalated", 300)]),
    # noticed late: one transition per level, each stamped when it fell due; never past the last level
    ("red", 5000, [("firing", 0), ("escalated", 300), ("escalated", 600)]),
    ("yellow", 3600, [("firing", 0), ("escalated", 3600)]),
    # no escalation time for orange here
    ("orange", 99999, [("firing", 0)]),
])
def test_escalation_of_unacknowledged_firing_alerts(severity, until, expected):
    k = Key(timings(**ESC))
    assert k.run([("active", 0, severity), ("at", until)]) == expected
    assert [tr.extra.get("escalation_to") for tr in k.transitions[1:]] == list(ESC["levels"][1:len(expected)])


def test_an_alert_that_turns_red_escalates_at_the_change_never_in_the_past():
    # Orange never escalates here; red after 300 s counted from firing. Red from 1000 s: the 300 s have long
    # passed, so it escalates at once, at 1000 s, not "at 300 s" behind the severity notice of 1000 s (which
    # an operator has then already had). Found by the batch-split property of test_store_and_dispatch.
    k = Key(timings(**ESC))
    assert k.run([("active", 0, "orange"), ("active", 1000, "red"), ("at", 1001)]) == [
        ("firing", 0), ("severity", 1000), ("escalated", 1000)]
    # The next level follows its period after that one.
    assert k.run([("at", 1300)])[-1] == ("escalated", 1300)


@pytest.mark.parametrize("field, value", [("acked_by", "li"), ("muted", "silence:s1")])
def test_acknowledged_or_muted_alerts_do_not_escalate(field, value):
    k = Key(timings(**ESC))
    k.active(0, "red")
    setattr(k.alert, field, value)
    k.at(5000)
    assert k.log == [("firing", 0)]


def test_reminders_follow_the_last_notice():
    k = Key(timings(repeat_s=lambda alert: 600.0))
    k.active(0)
    k.at(5000)
    assert k.log == [("firing", 0)]  # no reminder before the firing notice went out
    k.alert.notified_firing, k.alert.last_notice_ns = True, T0  # the engine notified the firing at 0
    k.at(1300)
    # one reminder per interval, stamped when due; the next one counts from it
    assert k.log == [("firing", 0), ("repeat", 600)]
    assert sec(k.alert.last_notice_ns) == 600
    k.at(1300)
    assert k.log == [("firing", 0), ("repeat", 600), ("repeat", 1200)]
    k.at(1300)
    assert k.log[-1] == ("repeat", 1200) and len(k.log) == 3


def test_the_lifecycle_is_a_function_of_event_time_only():
    # the same events give the same transitions, ids and times, whenever (and however often) they are run
    runs = []
    for _ in range(2):
        k = Key(timings(60, 120))
        k.run([("active", 0, "yellow"), ("active", 90, "red"), ("clear", 200), ("at", 300), ("at", 300),
               ("at", 400)])
        runs.append((k.log, [a.alert_id for a in k.alerts], [a.to_dict() for a in k.alerts]))
    assert runs[0] == runs[1]
    assert runs[0][0] == [("firing", 60), ("severity", 90), ("resolved", 320)]


def test_advance_is_idempotent_at_one_time():
    k = Key(timings(60, 60, **ESC))
    k.run([("active", 0, "red"), ("at", 1000)])
    before = list(k.log)
    k.at(1000)
    assert k.log == before
