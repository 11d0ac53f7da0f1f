"""Why an alert's notices are held: silences, recurring quiet windows and inhibition (pure functions).

As in Alertmanager's notify/mute.go, a muted alert keeps its lifecycle; only its notices wait. A firing
notice held by a mute goes out when the mute ends and the alert still fires; a resolved notice goes
out only if a firing notice did.

Inhibition is the one mute no operator chose, so it is held to two limits (DESIGN: safety first): an
alert inhibits only while it is really active (firing, its condition not cleared; the engine also
leaves out an Offline whose device has reported since), and a device-health alert (category `device`:
Offline, Batt, G-range, ...) never inhibits a red process alarm (category `gas`, severity red:
G-highhigh, G-rupture red, G-low red), which is delivered with the device-health alert in its context
instead. A silence is an operator's decision and still mutes whatever it names.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from alerts.model import Alert
from alerts.routing import matches
from config.alerting import Inhibit, QuietWindow

MATCHER_KEYS = ("alert_id", "rule_id", "device_id", "site_id", "district", "category", "severity")
# Alerts about the state of the process (the gas network), and about the health of the measuring device.
PROCESS_CATEGORIES = frozenset({"gas"})
DEVICE_HEALTH_CATEGORY = "device"
RED = 4  # severity code (alerts.model.SEVERITY_NAMES)


@dataclass(frozen=True)
class Silence:
    """Mutes alerts whose labels equal every matcher, from `starts_ns` until `expires_ns` (UTC ns)."""

    id: str
    matchers: dict[str, str]
    by: str
    comment: str
    starts_ns: int
    expires_ns: int
    created_ns: int = 0
    ended_by: str | None = None

    def active(self, now_ns: int) -> bool:
        return self.ended_by is None and self.starts_ns <= now_ns < self.expires_ns

    def mutes(self, labels: dict[str, str], now_ns: int) -> bool:
        return self.active(now_ns) and all(labels.get(k) == v for k, v in self.matchers.items())

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def parse_matchers(items: list[str]) -> dict[str, str]:
    """`["site_id=SM-1", "rule_id=N-day"]` -> dict. Raises ValueError naming the bad item or key."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise ValueError(f"matcher {item!r} must be written key=value")
        if key not in MATCHER_KEYS:
            raise ValueError(f"matcher key {key!r} is not one of {', '.join(MATCHER_KEYS)}")
        out[key] = value
    if not out:
        raise ValueError("a silence needs at least one matcher")
    return out


def in_quiet_window(q: QuietWindow, labels: dict[str, str], now_ns: int, tz: zoneinfo.ZoneInfo) -> bool:
    """True when `now_ns` falls in one of the window's daily local-time spans and the labels match."""
    if not matches(q.match, labels):
        return False
    local = dt.datetime.fromtimestamp(now_ns / 1e9, tz)
    minute = local.hour * 60 + local.minute
    return any(s <= minute < e for w in q.windows for s, e in w.spans())


def really_active(alert: Alert) -> bool:
    """Firing with its condition still present: an alert whose condition has cleared (waiting out
    clear_for_s, or held by flap damping) says nothing about now and inhibits nothing."""
    return alert.state == "firing" and alert.clear_since_ns is None


def is_red_process_alarm(alert: Alert) -> bool:
    return alert.category in PROCESS_CATEGORIES and alert.severity >= RED


def never_inhibits(source: Alert, target: Alert) -> bool:
    """A device-health alert never mutes a red process alarm: a sensor said to be offline (or with a
    low battery, or out of range) that reports over-pressure must still be heard. Nor does any other source
    mute a process alarm more severe than itself: an orange rupture at one sensor of a site does not hide a red
    low pressure at another (the red says more than its cause's notice does); once the rupture is red too, it
    mutes as configured."""
    if source.category == DEVICE_HEALTH_CATEGORY:
        return is_red_process_alarm(target)
    return target.category in PROCESS_CATEGORIES and target.severity > source.severity


def _sources(alert: Alert, rules: list[Inhibit], firing: list[Alert]) -> Iterator[Alert]:
    """Every really active alert that an inhibit rule names as a source for `alert`, in rule order."""
    mine = alert.labels()
    for rule in rules:
        if alert.rule_id not in rule.target_rule:
            continue
        for other in firing:
            if other is alert or other.rule_id not in rule.source_rule or not really_active(other):
                continue
            theirs = other.labels()
            if all(mine[k] == theirs[k] for k in rule.equal):
                yield other


def inhibitor(alert: Alert, rules: list[Inhibit], firing: list[Alert]) -> Alert | None:
    """The really active alert that inhibits `alert` (same `equal` labels, source rule), or None.

    firing: the candidate sources (the engine passes its firing alerts that are not stale)."""
    for other in _sources(alert, rules, firing):
        if not never_inhibits(other, alert):
            return other
    return None


def overridden_health(alert: Alert, rules: list[Inhibit], firing: list[Alert]) -> Alert | None:
    """The device-health alert that would inhibit `alert` but may not, because `alert` is a red process
    alarm (its notices carry it as `context.device_health`), or None."""
    if not is_red_process_alarm(alert):
        return None
    for other in _sources(alert, rules, firing):
        if never_inhibits(other, alert):
            return other
    return None


@dataclass
class Muter:
    """Decides, for an alert at a time, the reason its notices are held (or None)."""

    silences: dict[str, Silence] = field(default_factory=dict)
    quiet: list[QuietWindow] = field(default_factory=list)
    inhibit: list[Inhibit] = field(default_factory=list)
    tz: zoneinfo.ZoneInfo = zoneinfo.ZoneInfo("UTC")

    def reason(self, alert: Alert, now_ns: int, firing: list[Alert]) -> str | None:
        labels = alert.labels()
        for s in self.silences.values():
            if s.mutes(labels, now_ns):
                return f"silence:{s.id}"
        for q in self.quiet:
            if in_quiet_window(q, labels, now_ns, self.tz):
                return f"quiet:{q.id}"
        src = inhibitor(alert, self.inhibit, firing)
        if src is not None:
            return f"inhibited:{src.alert_id}"
        return None
