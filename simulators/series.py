"""The readings one simulated device produces over a scenario, as columns, and the helpers its models share."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from simulators.scenario import Fault


@dataclass
class DeviceSeries:
    """Readings of one device in time order.

    ts_ms:  int64 event time, UTC ms (interval end for noise aggregates, sample time for gas)
    values: field -> float64 column; NaN = the device does not send that field in that row
    flags:  HJ 212 data flag letter per row (noise), or None
    """

    device: str
    ts_ms: npt.NDArray[np.int64]
    values: dict[str, npt.NDArray[np.float64]] = field(default_factory=dict)
    flags: npt.NDArray[np.str_] | None = None

    def __len__(self) -> int:
        return len(self.ts_ms)


def device_rng(seed: int, device_id: str, salt: str = "") -> np.random.Generator:
    """The Generator of one device (or one fault of it): depends only on the seed and the names.

    zlib.crc32 rather than hash(): Python salts str hashes per process, which would break "same seed,
    same bytes".
    """
    return np.random.default_rng([seed, zlib.crc32(device_id.encode()), zlib.crc32(salt.encode())])


def local_minutes(ts_ms: npt.NDArray[np.int64], offset_s: int) -> npt.NDArray[np.float64]:
    """Minutes after local midnight (float) of UTC ms timestamps, for a zone at a fixed UTC offset."""
    return ((ts_ms // 1000 + offset_s) % 86400) / 60.0


def in_fault(ts_ms: npt.NDArray[np.int64], fault: Fault) -> npt.NDArray[np.bool_]:
    """Rows whose time lies in the fault's [start, end)."""
    return (ts_ms >= fault.start_ms) & (ts_ms < fault.end_ms)


def energy_sum(*levels_db: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Sum of sound levels by energy: 10 log10(sum 10^(L/10)); dB never add arithmetically."""
    total: npt.NDArray[np.float64] = np.log10(sum(np.power(10.0, np.asarray(x) / 10.0) for x in levels_db))
    return 10.0 * total


def uniform(rng: np.random.Generator, bounds: float | list[float] | tuple[float, float],
            n: int) -> npt.NDArray[np.float64]:
    """n draws in [lo, hi] from a `[lo, hi]` pair or a single number (constant)."""
    if isinstance(bounds, (list, tuple)):
        lo, hi = float(bounds[0]), float(bounds[1])
        return rng.uniform(lo, hi, n)
    return np.full(n, float(bounds))
