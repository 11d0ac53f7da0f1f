"""Readings as columns: `ReadingBatch`, the HJ 212 flag codes and the field names of each device kind."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# HJ 212 data flags; quality code = index in this string. Only 'N' (0) counts for compliance.
FLAG_CODES = "NFMSDCTB"

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
