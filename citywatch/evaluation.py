"""Event-wise scoring of detector onsets against labelled anomaly windows: precision, recall, F1, false
alarms per sensor-day and detection delay. Pure functions, no I/O (bench/bench_evaluation.py runs
`citywatch detect --flags onset` and feeds the onsets here).

The rules, as an alert system is judged (one alert per anomaly, raised early, few alerts for nothing):

- Only the scored part of each series counts (`Span`: the rows after its training rows). A window
  overlapping no span of its series is not scored; onsets outside every span are dropped.
- A window is *detected* when an onset of its series falls in [start, end + late_s] (both ends
  inclusive). An onset before a window's start does not detect it (the alert came before the fault,
  so it was about something else) and, outside every window, is a false alarm.
- An onset inside several overlapping windows detects each of them.
- Every onset in no anomaly window and no `ignore` window is a *false alarm*; onsets in `ignore`
  windows (events that are real but need no alert, such as a permitted night pour) count neither way.
  Further onsets inside an already detected window are neither hits nor false alarms.
- precision = detected / (detected + false alarms), recall = detected / windows scored, F1 their
  harmonic mean; each is None where it is undefined (nothing to count), never a made-up 0 or 1.
- delay = first onset in the window - window start, in seconds (0 or more).
- false alarms per sensor-day = false alarms / (sum of the spans' lengths in days).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

NS_PER_DAY = 86_400 * 1_000_000_000
KINDS = ("anomaly", "ignore")


@dataclass(frozen=True)
class LabelWindow:
    """A labelled stretch of one series, UTC ns, both ends inclusive.

    kind: anomaly (must be detected) | ignore (onsets in it count neither way)."""

    series: str
    start_ns: int
    end_ns: int
    kind: str = "anomaly"
    id: str = ""

    def __post_init__(self) -> None:
        if self.end_ns < self.start_ns:
            raise ValueError(f"label window {self.id or self.series}: end before start "
                             f"({self.end_ns} < {self.start_ns})")
        if self.kind not in KINDS:
            raise ValueError(f"label window {self.id or self.series}: kind must be one of {', '.join(KINDS)} "
                             f"(got {self.kind!r})")


@dataclass(frozen=True)
class Span:
    """The scored part of one series, UTC ns, both ends inclusive."""

    series: str
    start_ns: int
    end_ns: int

    def __post_init__(self) -> None:
        if self.end_ns < self.start_ns:
            raise ValueError(f"span of {self.series}: end before start ({self.end_ns} < {self.start_ns})")

    @property
    def days(self) -> float:
        return (self.end_ns - self.start_ns) / NS_PER_DAY


@dataclass
class EventScore:
    """The result of `score_onsets`. Counts are of windows (detected, missed) and onsets (false alarms)."""

    windows: list[LabelWindow]              # anomaly windows scored
    detected: dict[str, int]                # window key -> first onset in it (ns)
    false_alarms: list[tuple[str, int]]     # (series, onset ns)
    onsets: int                             # onsets in the spans
    sensor_days: float
    ignored: int = 0                        # onsets in ignore windows
    repeats: int = 0                        # further onsets inside already detected windows
    delays_s: list[float] = field(default_factory=list)

    @property
    def n_detected(self) -> int:
        return len(self.detected)

    @property
    def missed(self) -> list[LabelWindow]:
        return [w for w in self.windows if window_key(w) not in self.detected]

    @property
    def precision(self) -> float | None:
        n = self.n_detected + len(self.false_alarms)
        return self.n_detected / n if n else None

    @property
    def recall(self) -> float | None:
        return self.n_detected / len(self.windows) if self.windows else None

    @property
    def f1(self) -> float | None:
        p, r = self.precision, self.recall
        if p is None or r is None:
            return None
        return 0.0 if p + r == 0 else 2 * p * r / (p + r)

    @property
    def false_per_sensor_day(self) -> float | None:
        return len(self.false_alarms) / self.sensor_days if self.sensor_days > 0 else None

    @property
    def delay_median_s(self) -> float | None:
        return float(np.median(self.delays_s)) if self.delays_s else None

    def summary(self) -> dict[str, object]:
        return {
            "windows": len(self.windows), "detected": self.n_detected, "false_alarms": len(self.false_alarms),
            "onsets": self.onsets, "ignored": self.ignored, "repeats": self.repeats,
            "sensor_days": self.sensor_days, "precision": self.precision, "recall": self.recall, "f1": self.f1,
            "false_per_sensor_day": self.false_per_sensor_day, "delay_median_s": self.delay_median_s,
            "missed": [window_key(w) for w in self.missed],
        }


def window_key(w: LabelWindow) -> str:
    """A window's id, or series@start when it has none (keys of EventScore.detected)."""
    return w.id or f"{w.series}@{w.start_ns}"


def score_onsets(onsets: Mapping[str, Iterable[int]], windows: Sequence[LabelWindow], spans: Sequence[Span],
                 late_s: float = 0.0) -> EventScore:
    """Score the onsets of one detector (series -> onset times, UTC ns, any order) against labelled
    windows over the scored spans (see the module docstring for the rules).

    late_s: seconds after a window's end in which an onset still detects it (default 0: strict). An
            onset there is not a false alarm either.
    Raises ValueError for two spans of one series, a negative late_s, or windows with a duplicate id."""
    if late_s < 0:
        raise ValueError(f"late_s must be 0 or more (got {late_s:g})")
    by_series: dict[str, Span] = {}
    for s in spans:
        if s.series in by_series:
            raise ValueError(f"two spans for series {s.series!r}")
        by_series[s.series] = s
    ids = [w.id for w in windows if w.id]
    if len(ids) != len(set(ids)):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"duplicate label window id(s): {', '.join(dup)}")
    late = int(round(late_s * 1e9))
    scored = [w for w in windows if w.series in by_series
              and w.start_ns <= by_series[w.series].end_ns and w.end_ns >= by_series[w.series].start_ns]
    anomalies = [w for w in scored if w.kind == "anomaly"]
    ignores = [w for w in scored if w.kind == "ignore"]
    detected: dict[str, int] = {}
    false_alarms: list[tuple[str, int]] = []
    total = ignored = repeats = 0
    for series in sorted(set(onsets) | set(by_series)):
        span = by_series.get(series)
        if span is None:
            continue
        ts = np.sort(np.asarray(list(onsets.get(series, ())), np.int64))
        ts = ts[(ts >= span.start_ns) & (ts <= span.end_ns)]
        total += len(ts)
        mine = [w for w in anomalies if w.series == series]
        skip = [w for w in ignores if w.series == series]
        for t in ts.tolist():
            hit = [w for w in mine if w.start_ns <= t <= w.end_ns + late]
            if hit:
                new = [w for w in hit if window_key(w) not in detected]
                for w in new:
                    detected[window_key(w)] = t
                repeats += not new
            elif any(w.start_ns <= t <= w.end_ns for w in skip):
                ignored += 1
            else:
                false_alarms.append((series, t))
    delays = [(detected[window_key(w)] - w.start_ns) / 1e9 for w in anomalies if window_key(w) in detected]
    return EventScore(anomalies, detected, false_alarms, total, sum(s.days for s in spans), ignored, repeats, delays)


def onsets_by_series(series: Sequence[str], ts_ns: np.ndarray, flags: np.ndarray) -> dict[str, np.ndarray]:
    """The onset times per series from one flag per row (what `citywatch detect --flags onset` prints).

    Raises ValueError when the three lengths differ."""
    ids = np.asarray(series, dtype=object)
    ts = np.asarray(ts_ns, np.int64)
    on = np.asarray(flags).astype(bool)
    if not (len(ids) == len(ts) == len(on)):
        raise ValueError(f"{len(ids)} series ids, {len(ts)} times and {len(on)} flags: one of each per row")
    rows = np.flatnonzero(on)
    return {s: ts[rows][ids[rows] == s] for s in sorted(set(ids[rows].tolist()))}


def windows_from_rows(series: str, ts_ns: np.ndarray, is_anomaly: np.ndarray, prefix: str = "") -> list[LabelWindow]:
    """Per-row 0/1 labels (a benchmark's `is_anomaly` column, rows in time order) as windows: one per
    run of consecutive 1 rows, from its first row's time to its last's. Raises ValueError on unequal
    lengths or times out of order."""
    ts_ns = np.asarray(ts_ns, np.int64)
    lab = np.asarray(is_anomaly).astype(bool)
    if len(ts_ns) != len(lab):
        raise ValueError(f"{len(ts_ns)} times and {len(lab)} labels: one label per row")
    if len(ts_ns) > 1 and np.any(np.diff(ts_ns) < 0):
        raise ValueError("rows must be in time order")
    edges = np.diff(np.r_[0, lab.astype(np.int8), 0])
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1
    return [LabelWindow(series, int(ts_ns[a]), int(ts_ns[b]), "anomaly", f"{prefix}{series}#{k + 1}")
            for k, (a, b) in enumerate(zip(starts, ends))]


def format_table(rows: Sequence[tuple[str, str, EventScore]]) -> str:
    """A Markdown table, one row per (feed, detector, score)."""
    head = ("| feed | detector | windows | detected | false alarms | precision | recall | F1 | "
            "false alarms / sensor-day | delay (median) |")
    lines = [head, "|" + "---|" * 10]
    for feed, name, s in rows:
        lines.append(f"| {feed} | {name} | {len(s.windows)} | {s.n_detected} | {len(s.false_alarms)} | "
                     f"{_ratio(s.precision)} | {_ratio(s.recall)} | {_ratio(s.f1)} | "
                     f"{_num(s.false_per_sensor_day)} | {_delay(s.delay_median_s)} |")
    return "\n".join(lines)


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _num(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _delay(v: float | None) -> str:
    if v is None:
        return "-"
    if v >= 3600:
        return f"{v / 3600:.1f} h"
    return f"{v / 60:.1f} min" if v >= 60 else f"{v:.0f} s"
