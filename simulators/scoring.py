"""Score alerts against a scenario's ground truth, event by event. Pure functions: no I/O, no clock.

An alert matches a fault when it is on the fault's device (or, for an alert with no device, its site),
its rule is one the fault expects, and it started within [fault start - tolerance, fault end + tolerance].
An alert whose rule the fault only `allows` is neither a hit nor a false alert. Every other alert is false.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.shown import shown
from core.timefmt import iso_utc_ms
from ingest.validation import TS_MS_LIMIT


@dataclass(frozen=True)
class TruthFault:
    id: str
    type: str
    device: str
    site: str
    start_ms: int
    end_ms: int
    rules: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    severity: str | None = None
    note: str = ""

    def __post_init__(self) -> None:
        # As evaluation.LabelWindow: a window that ends before it starts can match nothing and is a typo.
        if self.end_ms < self.start_ms:
            raise ValueError(f"fault {self.id}: end before start ({iso_utc_ms(self.end_ms)} < "
                             f"{iso_utc_ms(self.start_ms)})")

    @staticmethod
    def from_record(r: dict[str, Any]) -> TruthFault:
        """From a ground-truth JSONL record. Raises KeyError/ValueError on a malformed record: `rules` and
        `allowed` must be lists of rule ids (a string would be read as its letters), the times ISO 8601
        or epoch ms, the end not before the start."""
        if not isinstance(r, dict):
            raise ValueError(f"a fault must be a JSON object, got {shown(r)}")
        return TruthFault(
            str(r["id"]), str(r["type"]), str(r["device"]), str(r.get("site", "")),
            _time_of(r, "start"), _time_of(r, "end"), _rule_ids(r, "rules"),
            _rule_ids(r, "allowed"), r.get("severity"), str(r.get("note", "")),
        )


def _time_of(r: dict[str, Any], key: str) -> int:
    try:
        return parse_time_ms(r[key])
    except ValueError as exc:
        raise ValueError(f"{key}: {exc}") from None


def _rule_ids(r: dict[str, Any], key: str) -> tuple[str, ...]:
    v = r.get(key)
    if v is None:
        return ()
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise ValueError(f"{key} must be a list of rule ids, e.g. [\"N-day\"], got {shown(v)}")
    return tuple(v)


@dataclass(frozen=True)
class ScoredAlert:
    """One alert lifecycle, from whichever source: the fields scoring needs."""

    alert_id: str
    rule_id: str
    device_id: str
    site_id: str
    start_ms: int
    severity: str = ""
    run_id: str = ""      # the service run's CITYWATCH_RUN_ID, where the source records it


@dataclass
class Scorecard:
    faults: list[TruthFault]
    alerts: list[ScoredAlert]
    hits: dict[str, dict[str, list[ScoredAlert]]]      # fault id -> rule -> matching alerts
    allowed: list[tuple[ScoredAlert, str]]             # (alert, fault id) tolerated side effects
    false_alerts: list[tuple[ScoredAlert, str | None]] # (alert, id of a fault it was near, or None)
    device_days: float
    per_rule: dict[str, dict[str, Any]] = field(default_factory=dict)
    per_type: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def caught(self) -> list[TruthFault]:
        """Faults with an expected rule, at least one of which fired."""
        return [f for f in self.faults if f.rules and any(self.hits[f.id].get(r) for r in f.rules)]

    @property
    def missed(self) -> list[TruthFault]:
        return [f for f in self.faults if f.rules and not any(self.hits[f.id].get(r) for r in f.rules)]

    @property
    def recall(self) -> float:
        """Share of faults with expected rules that were caught (1.0 when there are none)."""
        n = sum(1 for f in self.faults if f.rules)
        return len(self.caught) / n if n else 1.0

    @property
    def precision(self) -> float:
        tp = sum(len(v) for h in self.hits.values() for v in h.values())
        total = tp + len(self.false_alerts)
        return tp / total if total else 1.0

    @property
    def false_per_device_day(self) -> float:
        return len(self.false_alerts) / self.device_days if self.device_days > 0 else float(len(self.false_alerts))

    def delays_s(self) -> list[float]:
        """Detection delay of each caught fault: first matching alert's start minus the fault's start."""
        out = []
        for f in self.caught:
            first = min(a.start_ms for r in f.rules for a in self.hits[f.id].get(r, []))
            out.append((first - f.start_ms) / 1000.0)
        return out

    def under_severity(self) -> list[tuple[TruthFault, str]]:
        """Caught faults whose matching alerts never reached the expected severity: (fault, highest seen)."""
        out = []
        for f in self.caught:
            if not f.severity:
                continue
            seen = max((a.severity for r in f.rules for a in self.hits[f.id].get(r, [])), key=_rank, default="")
            if _rank(seen) < _rank(f.severity):
                out.append((f, seen))
        return out

    def delay_stats(self) -> dict[str, float | None]:
        d = self.delays_s()
        if not d:
            return {"median_s": None, "p95_s": None}
        return {"median_s": float(np.median(d)), "p95_s": float(np.percentile(d, 95))}

    def summary(self) -> dict[str, Any]:
        return {
            "faults": len(self.faults), "expected_to_fire": sum(1 for f in self.faults if f.rules),
            "caught": len(self.caught), "recall": self.recall, "alerts": len(self.alerts),
            "precision": self.precision, "false_alerts": len(self.false_alerts),
            "false_per_device_day": self.false_per_device_day, "device_days": self.device_days,
            **{f"delay_{k}": v for k, v in self.delay_stats().items()},
            "missed": [f.id for f in self.missed],
            "under_severity": {f.id: {"expected": f.severity, "seen": seen} for f, seen in self.under_severity()},
            "per_rule": self.per_rule, "per_type": self.per_type,
        }


_SEVERITY_RANK = {"blue": 1, "yellow": 2, "orange": 3, "red": 4}


def _rank(severity: str | None) -> int:
    return _SEVERITY_RANK.get(severity or "", 0)


def parse_time_ms(value: object, zone_required: bool = False) -> int:
    """UTC ms from an ISO 8601 string (Z or offset; naive = UTC, or refused with `zone_required`) or a number of
    ms. Raises ValueError for anything else, and for a time at or beyond +-TS_MS_LIMIT (ingest's bound, year 2255:
    later times overflow int64 nanoseconds); the error shows at most 80 characters of the value."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if not math.isfinite(value):
            raise ValueError(f"not a time: {shown(value)}")
        if abs(value) >= TS_MS_LIMIT:
            raise ValueError(f"time out of range (years 1685 to 2255): {shown(value)}")
        return int(value)
    try:
        t = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time or epoch ms: {shown(value)}") from None
    if t.tzinfo is None:
        if zone_required:
            raise ValueError(f"a time without a zone: {shown(value)}; write it with Z or an offset (+08:00)")
        t = t.replace(tzinfo=dt.UTC)
    ms = int(round(t.timestamp() * 1000))
    if abs(ms) >= TS_MS_LIMIT:
        raise ValueError(f"time out of range (years 1685 to 2255): {shown(value)}")
    return ms


def score(faults: list[TruthFault], alerts: list[ScoredAlert], tolerance_s: float = 3600.0,
          device_days: float | None = None, window: tuple[int, int] | None = None) -> Scorecard:
    """Match alerts to faults and compute the scorecard.

    tolerance_s: slack before a fault's start and after its end in which a matching alert may start
    device_days: devices x simulated days, for false alerts per device-day (default: from `window` and
                 the devices seen in faults and alerts)
    window:      (start_ms, end_ms) of the scenario; alerts starting outside it +- tolerance are ignored
                 (they belong to another run)
    """
    tol = int(tolerance_s * 1000)
    if window is not None:
        alerts = [a for a in alerts if window[0] - tol <= a.start_ms <= window[1] + tol]
    alerts = sorted(alerts, key=lambda a: (a.start_ms, a.alert_id))
    hits: dict[str, dict[str, list[ScoredAlert]]] = {f.id: {} for f in faults}
    allowed: list[tuple[ScoredAlert, str]] = []
    false_alerts: list[tuple[ScoredAlert, str | None]] = []
    for a in alerts:
        near = [f for f in faults if _same_place(a, f) and f.start_ms - tol <= a.start_ms <= f.end_ms + tol]
        expected = [f for f in near if a.rule_id in f.rules]
        if expected:
            for f in expected:
                hits[f.id].setdefault(a.rule_id, []).append(a)
            continue
        tolerated = [f for f in near if a.rule_id in f.allowed]
        if tolerated:
            allowed.append((a, tolerated[0].id))
            continue
        false_alerts.append((a, near[0].id if near else None))

    if device_days is None:
        devices = {f.device for f in faults} | {a.device_id for a in alerts if a.device_id}
        span_ms = (window[1] - window[0]) if window else (
            max([f.end_ms for f in faults] or [0]) - min([f.start_ms for f in faults] or [0]))
        device_days = max(1, len(devices)) * max(span_ms, 1) / 86_400_000
    card = Scorecard(faults, alerts, hits, allowed, false_alerts, device_days)
    card.per_rule = _per_rule(card)
    card.per_type = _per_type(card)
    return card


def _same_place(a: ScoredAlert, f: TruthFault) -> bool:
    if a.device_id:
        return a.device_id == f.device
    return bool(a.site_id) and a.site_id == f.site


def _per_rule(card: Scorecard) -> dict[str, dict[str, Any]]:
    rules = sorted({r for f in card.faults for r in f.rules} | {a.rule_id for a, _ in card.false_alerts}
                   | {r for h in card.hits.values() for r in h})
    out: dict[str, dict[str, Any]] = {}
    for r in rules:
        expecting = [f for f in card.faults if r in f.rules]
        caught = [f for f in expecting if card.hits[f.id].get(r)]
        tp = sum(len(card.hits[f.id].get(r, [])) for f in card.faults)
        fp = sum(1 for a, _ in card.false_alerts if a.rule_id == r)
        out[r] = {
            "faults": len(expecting), "caught": len(caught),
            "recall": len(caught) / len(expecting) if expecting else None,
            "alerts": tp + fp, "true": tp, "false": fp,
            "precision": tp / (tp + fp) if tp + fp else None,
        }
    return out


def _per_type(card: Scorecard) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    by_id = {f.id: f for f in card.faults}
    for t in sorted({f.type for f in card.faults}, key=_type_order):
        fs = [f for f in card.faults if f.type == t]
        expecting = [f for f in fs if f.rules]
        caught = [f for f in expecting if any(card.hits[f.id].get(r) for r in f.rules)]
        tp = sum(len(v) for f in fs for v in card.hits[f.id].values())
        near_false = sum(1 for a, fid in card.false_alerts if fid and by_id[fid].type == t)
        delays = [(min(a.start_ms for r in f.rules for a in card.hits[f.id].get(r, [])) - f.start_ms) / 1000.0
                  for f in caught]
        out[t] = {
            "faults": len(fs), "expected_to_fire": len(expecting), "caught": len(caught),
            "recall": len(caught) / len(expecting) if expecting else None,
            "true": tp, "false_near": near_false,
            "precision": tp / (tp + near_false) if tp + near_false else None,
            "delay_median_s": float(np.median(delays)) if delays else None,
        }
    return out


def _type_order(code: str) -> tuple[str, int, str]:
    return (code[:1], int(code[1:]) if code[1:].isdigit() else 0, code)
