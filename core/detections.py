"""What detectors found, as columns: `Detections`, the one thing the alert engine consumes of them."""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

from core.severity import SEVERITY_NAMES


class LazyContexts(Sequence[dict[str, Any]]):
    """Per-row context dicts built only when a row's is read (issue 17: a long alarm emits a row per reading,
    and the alert engine reads one context per run of rows of one rule, device and severity).

    `make(i)` builds row i's dict (a fresh one each call); a row assigned to (`ctx[i] = {...}`) keeps what was
    assigned. Compares equal to a list of the same dicts; pickles as that list."""

    __slots__ = ("_n", "_make", "_set")

    def __init__(self, n: int, make: Callable[[int], dict[str, Any]]) -> None:
        self._n, self._make = n, make
        self._set: dict[int, dict[str, Any]] | None = None

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> dict[str, Any]: ...
    @overload
    def __getitem__(self, i: slice) -> list[dict[str, Any]]: ...
    def __getitem__(self, i: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"context row {i} of {self._n}")
        if self._set is not None and i in self._set:
            return self._set[i]
        return self._make(i)

    def __setitem__(self, i: int, value: dict[str, Any]) -> None:
        i = int(i) + (self._n if int(i) < 0 else 0)
        if not 0 <= i < self._n:
            raise IndexError(f"context row {i} of {self._n}")
        if self._set is None:
            self._set = {}
        self._set[i] = value

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return (self[i] for i in range(self._n))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Sequence) or isinstance(other, (str, bytes)):
            return NotImplemented
        return len(other) == self._n and all(a == b for a, b in zip(self, other))

    __hash__ = None  # type: ignore[assignment]  # mutable, like the list it stands for

    def __repr__(self) -> str:
        return f"LazyContexts({list(self)!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (list(self),))

    @staticmethod
    def chain(parts: Sequence[Sequence[dict[str, Any]]]) -> Sequence[dict[str, Any]]:
        """The parts' rows one after the other; a plain list when every part is one."""
        if all(type(p) is list for p in parts):
            return [c for p in parts for c in p]
        starts = [0]
        for p in parts:
            starts.append(starts[-1] + len(p))

        def make(i: int) -> dict[str, Any]:
            k = bisect.bisect_right(starts, i) - 1
            return parts[k][i - starts[k]]

        return LazyContexts(starts[-1], make)

    @staticmethod
    def pick(src: Sequence[dict[str, Any]], index: Any) -> Sequence[dict[str, Any]]:
        """Rows `index` (integers) of `src`, in that order; a plain list when `src` is one."""
        if type(src) is list:
            return [src[i] for i in index]
        idx = [int(i) for i in index]
        return LazyContexts(len(idx), lambda j: src[idx[j]])


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
    context:  a dict per row: period, permit_id, exam_mode, metric, window, unit, ... (a list, or
              LazyContexts: built when read)
    """

    sensor: np.ndarray
    ts_ns: np.ndarray
    rule_id: np.ndarray
    category: np.ndarray
    severity: np.ndarray
    value: np.ndarray
    limit: np.ndarray
    score: np.ndarray
    context: Sequence[dict[str, Any]] = field(default_factory=list)

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
            LazyContexts.chain([p.context for p in parts]),
        )

    def take(self, index: np.ndarray) -> Detections:
        """The rows at `index` (an integer or boolean array), in that order."""
        idx = np.flatnonzero(index) if np.asarray(index).dtype == bool else np.asarray(index)
        return Detections(
            self.sensor[idx], self.ts_ns[idx], self.rule_id[idx], self.category[idx], self.severity[idx],
            self.value[idx], self.limit[idx], self.score[idx],
            LazyContexts.pick(self.context, idx) if len(self.context) else [],
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
