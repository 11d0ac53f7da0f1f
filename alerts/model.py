"""The alert record and the notice sent for each of its transitions."""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, cast, overload

from core.severity import SEVERITY_NAMES
from core.timefmt import iso_utc

# Transition kinds, each one notice. "firing" may come late for an alert that was muted when it fired.
TRANSITIONS = ("firing", "severity", "escalated", "repeat", "acknowledged", "flapping", "resolved")


@overload
def iso(ts_ns: int) -> str: ...
@overload
def iso(ts_ns: None) -> None: ...
def iso(ts_ns: int | None) -> str | None:
    """UTC ISO 8601 with milliseconds, or None."""
    return None if ts_ns is None else iso_utc(ts_ns)


def alert_id_for(rule_id: str, device_id: str, started_ns: int) -> str:
    """A readable id, unique per lifecycle and deterministic in replay; safe as an MQTT topic level."""
    stamp = dt.datetime.fromtimestamp(started_ns / 1e9, dt.UTC).strftime("%Y%m%dT%H%M%S")
    ms = (started_ns // 1_000_000) % 1000
    return f"{rule_id}.{device_id}.{stamp}{ms:03d}Z"


@dataclass
class Alert:
    """One alert lifecycle of a (rule, device) key: pending -> firing -> resolved. Times are UTC ns."""

    alert_id: str
    rule_id: str
    device_id: str
    category: str
    site: dict[str, Any]
    device: dict[str, Any]
    state: str = "pending"  # pending | firing | resolved
    severity: int = 1  # the current severity: follows the latest detection, may fall
    value: float = float("nan")
    limit: float = float("nan")
    peak_value: float = float("nan")  # the most severe value: the highest above, the lowest below the limit
    # +1 when the condition is a value above its limit (N-day, G-highhigh, Offline's silence), -1 below it
    # (G-low, N-data's valid rate): set by the opening row; 0 in stores written before it (inferred).
    direction: int = 0
    # The highest severity the condition reached in this lifecycle (pending included): what an alert
    # "was", for scoring and review, after its current severity has fallen. Never below `severity`.
    peak_severity: int = 0
    context: dict[str, Any] = field(default_factory=dict)
    started_ns: int = 0  # first active detection
    firing_ns: int | None = None
    last_active_ns: int = 0
    clear_since_ns: int | None = None  # the condition has been clear since then (None: active)
    resolved_ns: int | None = None
    seq: int = 0  # transitions notified or suppressed so far; the idempotency key is alert_id:seq
    flapping: bool = False
    acked_by: str | None = None  # the account that acknowledged: an operator's username, or local:<login>
    acked_by_name: str | None = None  # that account's display name when it acknowledged
    acked_ns: int | None = None
    ack_note: str | None = None
    escalation_level: int = 0
    escalated_ns: int | None = None  # when the current escalation level was reached
    # When the alert took its current severity (0 in stores written before it): an escalation by that severity's
    # period never falls due before it (a blue alert turning orange escalates at the change, not in the past).
    severity_ns: int = 0
    last_notice_ns: int | None = None  # for repeat reminders
    notified_firing: bool = False  # a firing notice went out (so a resolved one must follow)
    muted: str | None = None  # why notices are held: silence:<id> | quiet:<id> | inhibited:<alert_id>
    recovered: bool = False  # loaded from the store and not yet seen by the detectors since

    def __post_init__(self) -> None:
        # 0 (the default, or a record written before the field existed) means "not tracked yet".
        self.peak_severity = max(int(self.peak_severity or 0), int(self.severity))

    @property
    def key(self) -> tuple[str, str]:
        return (self.rule_id, self.device_id)

    @property
    def severity_name(self) -> str:
        return SEVERITY_NAMES.get(self.severity, "clear")

    @property
    def peak_severity_name(self) -> str:
        return SEVERITY_NAMES.get(self.peak_severity, "clear")

    @property
    def open(self) -> bool:
        return self.state != "resolved"

    def labels(self, level_names: list[str] | None = None) -> dict[str, str]:
        """The labels that routes, silences, inhibition and grouping match on."""
        level = ""
        if level_names:
            level = level_names[min(self.escalation_level, len(level_names) - 1)]
        return {
            "alert_id": self.alert_id,
            "rule_id": self.rule_id,
            "rule": self.rule_id,
            "device_id": self.device_id,
            "site_id": self.site.get("id", ""),
            "site": self.site.get("id", ""),
            "district": self.site.get("district", ""),
            "category": self.category,
            "severity": self.severity_name,
            "level": level,
        }

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> Alert:
        """Unknown keys are ignored; a missing `peak_severity` (older stores) becomes the severity."""
        names = {f.name for f in dataclasses.fields(Alert)}
        return Alert(**{k: v for k, v in d.items() if k in names})


@dataclass(frozen=True)
class Notice:
    """One notification of one alert transition. `key` (alert_id:seq) lets a receiver drop redeliveries."""

    key: str
    alert_id: str
    seq: int
    transition: str
    ts_ns: int
    payload: dict[str, Any]

    @property
    def category(self) -> str:
        return cast(str, self.payload["category"])

    @property
    def site_id(self) -> str:
        return cast(str, self.payload["site"].get("id", ""))

    @property
    def device_id(self) -> str | None:
        """The id of the device the notice is about (None in a payload without one)."""
        return cast("str | None", (self.payload.get("device") or {}).get("id"))
