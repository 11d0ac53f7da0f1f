"""What detectors found, as columns: `Detections`, the one thing the alert engine consumes of them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.severity import SEVERITY_NAMES


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
    context: list[dict[str, Any]] = field(default_factory=list)

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

    def take(self, index: np.ndarray) -> Detections:
        """The rows at `index` (an integer or boolean array), in that order."""
        idx = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        return Detections(
            self.sensor[idx], self.ts_ns[idx], self.rule_id[idx], self.category[idx], self.severity[idx],
            self.value[idx], self.limit[idx], self.score[idx],
            [self.context[i] for i in idx] if self.context else [],
        )

    def sorted(self) -> Detections:
        """Rows ordered by (ts_ns, sensor, rule_id): the canonical order for comparisons."""
        order = np.lexsort((self.rule_id.astype(str), self.sensor, self.ts_ns)) if len(self) else np.empty(0, int)
        return self.take(order)

    def records(self) -> list[dict[str, Any]]:
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
