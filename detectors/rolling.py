"""Time-slotted ring buffers per sensor: the state behind rolling windows (Leq20, rupture drops).

Slot k holds the reading whose event time falls in [k*slot_s, (k+1)*slot_s); a window of W seconds
ending at t covers the slots in (slot(t) - ceil(W/slot_s), slot(t)]. Missing readings leave their
slot stale, so they drop out of windows instead of counting as anything.
"""

from __future__ import annotations

import math

import numpy as np

from detectors.calendar import NS

# Slot keys are int32 counted from 2020-01-01 UTC; an empty slot's key is so old that its age never
# falls inside a window (ages stay below 2**31, so they fit int32 too).
_BASE_S = 1_577_836_800
_NEVER = -(2**30)


def energy_mean_db(levels_db) -> float:
    """Energy average of sound levels: 10*log10(mean(10^(L/10))). 60 and 70 dB give 67.4, not 65."""
    arr = np.asarray(levels_db, np.float64)
    return float(10.0 * np.log10(np.mean(10.0 ** (arr / 10.0))))


class SlotRing:
    """Per-sensor ring of `slots` float values keyed by time slot; `n` sensors (local index)."""

    def __init__(self, n: int, window_s: int, slot_s: int, dtype=np.float64) -> None:
        self.slot_s = max(1, int(slot_s))
        self.slots = max(1, math.ceil(window_s / self.slot_s))
        self.slot_ns = self.slot_s * NS
        self.base = _BASE_S // self.slot_s
        self.val_ = np.zeros((n, self.slots), dtype)
        self.key_ = np.full((n, self.slots), _NEVER, np.int32)

    def nbytes(self) -> int:
        return self.val_.nbytes + self.key_.nbytes

    def insert(self, loc: np.ndarray, ts_ns: np.ndarray, value: np.ndarray,
               mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray] | None:
        """Store `value` in each sensor's slot of `ts_ns` (only rows where `mask`, when given); an older
        reading never overwrites a newer one. Returns (flat slot index of every row, whether it was
        stored), for tables kept beside the ring."""
        if len(loc) == 0:
            return None
        key = (ts_ns // self.slot_ns - self.base).astype(np.int32)
        # Flat indexes into the (sensor, slot) tables: cheaper than 2-D fancy indexing.
        flat = loc.astype(np.intp) * self.slots + key % self.slots
        keys, vals = self.key_.reshape(-1), self.val_.reshape(-1)
        newer = key >= keys[flat]
        if mask is not None:
            newer &= mask
        if newer.all():
            vals[flat] = value
            keys[flat] = key
        else:
            vals[flat[newer]] = value[newer]
            keys[flat[newer]] = key[newer]
        return flat, newer

    def ages(self, loc: np.ndarray, ts_ns: np.ndarray, full: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(values, ages) of each row's sensor: ages in slots before the row's own slot, as uint32 so
        that slots newer than the row (negative ages) compare as huge and fall outside every window.
        `full`: the rows are every sensor in local order, so the state is read without a gather."""
        key = (ts_ns // self.slot_ns - self.base).astype(np.int32)[:, None]
        if full:
            return self.val_, (key - self.key_).view(np.uint32)
        return self.val_[loc], (key - self.key_[loc]).view(np.uint32)

    def span(self, window_s: int) -> int:
        """Slots a window of `window_s` seconds covers (ages 0 .. span-1)."""
        return min(self.slots, math.ceil(window_s / self.slot_s))

    def window(self, loc: np.ndarray, ts_ns: np.ndarray, window_s: int):
        """(values, mask) over the window (t - window_s, t] ending at each row's event time."""
        vals, age = self.ages(loc, ts_ns)
        return vals, age < self.span(window_s)
