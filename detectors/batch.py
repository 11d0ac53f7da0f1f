"""The columnar data that flows through the pipeline: readings in, detections out.

Ingest produces `ReadingBatch`; detectors consume it and produce `Detections`; the alert engine
consumes `Detections` (never detector classes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# HJ 212 data flags; quality code = index in this string. Only 'N' (0) counts for compliance.
FLAG_CODES = "NFMSDCTB"
# Severity codes of Detections.severity. 0 means "condition cleared" for that (rule, sensor).
SEVERITY_NAMES = {0: "clear", 1: "blue", 2: "yellow", 3: "orange", 4: "red"}
SEVERITY_CODES = {name: code for code, name in SEVERITY_NAMES.items()}

NOISE_FIELDS = ("leq", "lmax", "lmin", "l5", "l10", "l50", "l90", "l95", "sd", "la", "wind_ms", "rain", "cal_dev")
GAS_FIELDS = ("p", "t_dev", "batt_v", "rsrp", "status_bits")


@dataclass
class ReadingBatch:
    """Readings of many sensors, one row each.

    sensor:  int32 dense sensor index (the device's position in the inventory)
    ts_ns:   int64 event time, UTC nanoseconds (the interval end for aggregated noise readings)
    values:  field name -> float64 column; NaN where the row has no such value
    quality: uint8 HJ 212 flag code per row (index into FLAG_CODES; 0 = 'N' normal)
    """

    sensor: np.ndarray
    ts_ns: np.ndarray
    values: dict[str, np.ndarray] = field(default_factory=dict)
    # Omitted (None): every row 'N'; __post_init__ always makes it an array, so readers see one.
    quality: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        self.sensor = np.asarray(self.sensor, dtype=np.int32)
        self.ts_ns = np.asarray(self.ts_ns, dtype=np.int64)
        n = len(self.sensor)
        if len(self.ts_ns) != n:
            raise ValueError(f"ts_ns has {len(self.ts_ns)} rows, sensor has {n}")
        self.values = {k: np.asarray(v, dtype=np.float64) for k, v in self.values.items()}
        for k, v in self.values.items():
            if len(v) != n:
                raise ValueError(f"values[{k!r}] has {len(v)} rows, sensor has {n}")
        self.quality = np.zeros(n, np.uint8) if self.quality is None else np.asarray(self.quality, np.uint8)

    def __len__(self) -> int:
        return len(self.sensor)

    def column(self, name: str) -> np.ndarray:
        """A value column, or all-NaN when the batch has none."""
        col = self.values.get(name)
        return col if col is not None else np.full(len(self), np.nan)

    def take(self, index: np.ndarray) -> ReadingBatch:
        """The rows at `index` (an integer or boolean array), in that order."""
        return ReadingBatch(
            self.sensor[index], self.ts_ns[index], {k: v[index] for k, v in self.values.items()}, self.quality[index]
        )

    @staticmethod
    def concat(batches: list[ReadingBatch]) -> ReadingBatch:
        if not batches:
            return ReadingBatch(np.empty(0, np.int32), np.empty(0, np.int64))
        names = sorted({k for b in batches for k in b.values})
        return ReadingBatch(
            np.concatenate([b.sensor for b in batches]),
            np.concatenate([b.ts_ns for b in batches]),
            {k: np.concatenate([b.column(k) for b in batches]) for k in names},
            np.concatenate([b.quality for b in batches]),
        )


@dataclass
class Detections:
    """What detectors found, one row per (rule, sensor, reading) where a condition is active, plus
    one row with severity 0 when an active condition clears (hysteresis already applied).

    sensor:   int32 dense sensor index
    ts_ns:    int64 event time of the reading that produced the row
    rule_id:  object array of rule ids (the YAML `id`)
    category: object array: noise | gas | device | data
    severity: int8, see SEVERITY_NAMES (0 = cleared)
    value, limit, score: float64 (score: higher = more anomalous; NaN where not meaningful)
    context:  list of dicts per row: period, permit_id, exam_mode, metric, window, unit, ...
    """

    sensor: np.ndarray
    ts_ns: np.ndarray
    rule_id: np.ndarray
    category: np.ndarray
    severity: np.ndarray
    value: np.ndarray
    limit: np.ndarray
    score: np.ndarray
    context: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.sensor)

    @staticmethod
    def empty() -> Detections:
        return Detections(
            np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, object), np.empty(0, object),
            np.empty(0, np.int8), np.empty(0), np.empty(0), np.empty(0), [],
        )

    @staticmethod
    def concat(parts: list[Detections]) -> Detections:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Detections.empty()
        return Detections(
            np.concatenate([p.sensor for p in parts]).astype(np.int32),
            np.concatenate([p.ts_ns for p in parts]).astype(np.int64),
            np.concatenate([p.rule_id for p in parts]),
            np.concatenate([p.category for p in parts]),
            np.concatenate([p.severity for p in parts]).astype(np.int8),
            np.concatenate([p.value for p in parts]),
            np.concatenate([p.limit for p in parts]),
            np.concatenate([p.score for p in parts]),
            [c for p in parts for c in p.context],
        )

    def sorted(self) -> Detections:
        """Rows ordered by (ts_ns, sensor, rule_id): the canonical order for comparisons."""
        order = np.lexsort((self.rule_id.astype(str), self.sensor, self.ts_ns)) if len(self) else np.empty(0, int)
        return Detections(
            self.sensor[order], self.ts_ns[order], self.rule_id[order], self.category[order],
            self.severity[order], self.value[order], self.limit[order], self.score[order],
            [self.context[i] for i in order],
        )

    def records(self) -> list[dict]:
        """Rows as plain dicts (for JSONL output and tests)."""
        return [
            {
                "sensor": int(self.sensor[i]), "ts_ns": int(self.ts_ns[i]), "rule_id": str(self.rule_id[i]),
                "category": str(self.category[i]), "severity": SEVERITY_NAMES[int(self.severity[i])],
                "value": float(self.value[i]), "limit": float(self.limit[i]), "score": float(self.score[i]),
                "context": self.context[i] if i < len(self.context) else {},
            }
            for i in range(len(self))
        ]
