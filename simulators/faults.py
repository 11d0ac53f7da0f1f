"""The fault catalogue: every scenario type of domain.md section 6, what it applies to, its parameters
(with magnitudes from the spec as defaults) and the rules expected to catch it.

`rules` are the rules meant to catch the fault (they count for recall); `allowed` are rules that may
fire as a side effect without counting as false alerts (a blue pre-warning before a limit alert).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simulators.scenario import Fault


@dataclass(frozen=True)
class FaultType:
    code: str
    name: str
    kind: str                           # noise | gas | any
    rules: tuple[str, ...]
    allowed: tuple[str, ...] = ()
    severity: str | None = None
    params: dict[str, Any] = field(default_factory=dict)   # parameter -> default
    protocol: str | None = None         # a protocol the fault needs (C4 crc/length: hj212)


_TYPES = [
    # Noise (levels in dB(A); source levels are energy-added to the background).
    FaultType("S1", "extra day work", "noise", (), ("N-pre",), None, {"leq_db": [62.0, 66.0]}),
    FaultType("S3", "impact piling or breaker", "noise", ("N-day",), ("N-pre",), "orange",
              {"leq_db": [78.0, 84.0], "lmax_db": [95.0, 105.0]}),
    FaultType("S4", "illegal night pour", "noise", ("N-night", "N-night-max", "N-prohibited"), ("N-pre",), "orange",
              {"leq_db": [62.0, 70.0], "lmax_db": [80.0, 84.0]}),
    FaultType("S5", "permitted night pour within limits", "noise", (), ("N-pre",), None,
              {"leq_db": [48.0, 50.0], "lmax_db": [60.0, 66.0]}),
    FaultType("S6", "exam-day noise", "noise", ("N-exam",), ("N-pre",), "orange", {"leq_db": [57.0, 59.0]}),
    FaultType("S7", "mic knock or bird", "noise", (), (), None, {"peak_db": 120.0}),
    FaultType("S8", "rain or wind on the mic", "noise", (), ("N-pre", "N-data"), None,
              {"add_db": [3.0, 10.0], "wind_ms": [5.5, 9.0], "rain_mm": 2.0}),
    # A dead mic flagged D sends only rows that ingest refuses (ingest.refuse_flags): never stored, but the
    # detectors still get their device, time and flag, so N-data fires within bad_flag_for_s (Offline is
    # still tolerated: a "stuck" mic may stop reporting).
    FaultType("S9", "dead or stuck mic", "noise", ("N-data",), ("Offline",), "yellow",
              {"mode": "floor", "level_db": 26.0, "flag": "D"}),
    FaultType("S10", "calibration drift", "noise", (), ("N-pre",), None, {"from_db": 0.5, "to_db": 2.0}),
    # Gas (fractions of the set pressure unless named otherwise).
    FaultType("G3", "regulator failing open, then OPSO slam-shut", "gas", ("G-high", "G-highhigh", "G-low"),
              ("G-rupture", "G-leak", "G-range"), "red",
              {"peak_ratio": 1.52, "rise_min": 30, "plateau_min": 20, "after_kpa": 0.02}),
    FaultType("G4", "third-party damage / rupture", "gas", ("G-rupture", "G-low"), ("G-leak",), "red",
              {"drop_pct": 40.0, "ramp_min": 3}),
    FaultType("G5", "slow leak", "gas", ("G-leak",), ("G-low",), "yellow", {"rate_pct_per_h": 1.5}),
    FaultType("G6", "peak-demand sag", "gas", ("G-low",), ("G-leak",), "yellow", {"drop_pct": 20.0, "ramp_min": 40}),
    FaultType("G7", "sensor drift", "gas", (), ("G-leak", "G-high"), None, {"pct_fs_per_day": 1.0}),
    FaultType("G8", "flatline or open loop", "gas", ("G-flatline",), ("G-low", "G-rupture", "G-leak"), "yellow",
              {"mode": "hold"}),
    FaultType("G9", "battery fade", "gas", ("Batt",), (), "orange", {"from_v": 3.6, "to_v": 3.0, "dip_v": 0.2}),
    # Communication faults (any device).
    FaultType("C1", "comms gap, then back-fill", "any", ("Offline",), ("N-data",), "yellow", {}),
    FaultType("C2", "duplicates and out-of-order", "any", (), (), None, {"dup_pct": 3.0, "ooo_pct": 2.0}),
    FaultType("C3", "clock fault", "any", (), ("Offline", "N-data"), None, {"mode": "skew", "skew_s": 120}),
    FaultType("C4", "bad frames", "any", (), ("N-data", "Offline"), None, {"mode": "crc", "flag": "C", "pct": 100.0}),
]
FAULT_TYPES: dict[str, FaultType] = {t.code: t for t in _TYPES}


def param(fault: Fault, key: str) -> Any:
    """A fault parameter: the scenario's value, else the type's default (any YAML value: the caller
    converts it)."""
    return fault.params.get(key, fault.type.params.get(key))
