"""Time-slotted ring buffers per sensor: the state behind rolling windows (Leq20, rupture drops).

Slot k holds the reading whose event time falls in [k*slot_s, (k+1)*slot_s); a window of W seconds
ending at t covers the slots in (slot(t) - ceil(W/slot_s), slot(t)]. Missing readings leave their
slot stale, so they drop out of windows instead of counting as anything.
"""

from __future__ import annotations

import copy
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

    def insert_series(self, loc: np.ndarray, ts_ns: np.ndarray, value: np.ndarray, mask: np.ndarray) -> RingSeries:
        """`insert` of a whole batch at once, any number of rows per sensor (each sensor's rows contiguous
        and in time order), rows where `mask` only: leaves the ring as inserting the rows one at a time
        would, and returns what each row saw (`RingSeries`). A row older than the ring's newest reading in
        its slot stores nothing, as in `insert`: later rows of a sensor never have older keys, so a row is
        stored exactly when its key is at least the slot's key from before the batch."""
        key = (ts_ns // self.slot_ns - self.base).astype(np.int32)
        flat = loc.astype(np.intp) * self.slots + key % self.slots
        keys, vals = self.key_.reshape(-1), self.val_.reshape(-1)
        stored = mask & (key >= keys[flat])
        first = np.flatnonzero(run_heads(loc))  # each sensor's rows are one run
        prior_at = np.repeat(np.arange(len(first)), np.diff(np.append(first, len(loc))))
        seen = RingSeries(self, loc, key, value, stored, prior_at, self.val_[loc[first]], self.key_[loc[first]])
        last = seen.last = _last_in_slot(loc, key, stored, self.slots)
        if len(last):
            vals[flat[last]] = value[last]
            keys[flat[last]] = key[last]
        return seen

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


def _last_in_slot(loc: np.ndarray, key: np.ndarray, stored: np.ndarray, slots: int) -> np.ndarray:
    """The rows each (sensor, ring slot) keeps of a batch: of the `stored` rows (each sensor's rows
    contiguous, keys never decreasing), those after which no stored row of the same sensor has the same
    key modulo `slots`. Sorted row positions.

    Where each sensor's stored keys span less than the ring (the usual batch), a later key is the same
    modulo `slots` only when it is the same key: the last row of each run of equal keys is kept. Else the
    rows are sorted by slot."""
    rows = np.flatnonzero(stored)
    m = len(rows)
    if m == 0:
        return rows
    sl, sk = loc[rows], key[rows].astype(np.int64)
    kept = np.empty(m, bool)
    kept[-1] = True
    np.not_equal(sl[1:], sl[:-1], out=kept[:-1])
    ends = np.flatnonzero(kept)  # each sensor's last stored row (sensor changes, or the batch ends)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    if int((sk[ends] - sk[starts]).max()) < slots:
        kept[:-1] |= sk[1:] != sk[:-1]
        return rows[kept]
    flat = sl.astype(np.intp) * slots + sk % slots
    o = np.argsort(flat, kind="stable")
    return np.sort(rows[o[np.flatnonzero(run_heads(flat[o][::-1])[::-1])]])


def run_heads(x: np.ndarray) -> np.ndarray:
    """bool per element: True where a run of equal values starts (the first element included)."""
    out = np.empty(len(x), bool)
    if len(x):
        out[0] = True
        np.not_equal(x[1:], x[:-1], out=out[1:])
    return out


def run_ends(first: np.ndarray, n: int) -> np.ndarray:
    """The last index of each run of n elements, from the runs' first indexes: `np.append(first[1:], n) - 1`
    built in place (np.append and np.r_ cost a few µs a call on tiny arrays, a small step's many of them)."""
    end = np.empty(max(len(first), 1), np.intp)
    np.subtract(first[1:], 1, out=end[:-1])
    end[-1] = n - 1
    return end


def run_ranks(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Runs of equal values of `x`: (head: run_heads, start of each run, its length, each element's run,
    each element's place in its run)."""
    head = run_heads(x)
    start = np.flatnonzero(head)
    length = np.diff(np.append(start, len(x)))
    run = np.repeat(np.arange(len(start)), length)
    return head, start, length, run, np.arange(len(x)) - start[run]


# Row codes of (sensor, slot key or block) pairs: the sensor in the high 32 bits, the key (int32) offset
# to be non-negative in the low ones, so codes sort as (sensor, key) and are looked up with searchsorted.
_CODE_OFF = 2**31


def pair_code(loc: np.ndarray, key: np.ndarray) -> np.ndarray:
    """int64 codes of (local sensor index, int32-range key) pairs, ordered as the pairs."""
    return (np.asarray(loc, np.int64) << 32) | (np.asarray(key, np.int64) + _CODE_OFF)


class RingSeries:
    """What each row of a whole batch saw of a `SlotRing` (`SlotRing.insert_series`): the ring as it is
    after inserting that row and every earlier row of its sensor one at a time, row by row.

    Rows of a sensor are time-ordered, so their slot keys never decrease: an earlier slot of a row's window
    holds the last stored row of that slot's run (or the ring's value from before the batch, where the batch
    stored nothing in it and the old key is that slot's), and the row's own slot the last stored row of its
    run up to the row itself."""

    def __init__(self, ring: SlotRing, loc, key, value, stored, prior_at, prior_val, prior_key) -> None:
        self.ring, self.loc, self.key, self.value, self.stored = ring, loc, key, value, stored
        self.prior_at, self.prior_val, self.prior_key = prior_at, prior_val, prior_key
        # The lookup tables, built on the first `window` (most batches need none) and shared with the
        # subsets' copies (`take_rows`).
        self._tables: dict[str, np.ndarray] = {}
        self.rows: np.ndarray | None = None  # of a subset view: its rows' positions in the batch's view
        self.last = np.zeros(0, np.intp)  # the rows the ring kept: each (sensor, slot)'s last stored row

    def beside(self, table: np.ndarray, value: np.ndarray) -> RingSeries:
        """The same for a table kept beside the ring (one value per slot, such as a tag of each stored
        reading): stores each row's `value` in `table` wherever `insert_series` stored the row in the ring,
        and returns what each row saw of the table (its `window` lays the table's values out as this one
        does the ring's)."""
        first = np.flatnonzero(run_heads(self.loc))
        seen = RingSeries(self.ring, self.loc, self.key, value, self.stored, self.prior_at, table[self.loc[first]],
                          self.prior_key)
        last = seen.last = self.last  # each slot's last stored row, as insert_series stored it
        if len(last):
            flat = self.loc[last].astype(np.intp) * self.ring.slots + self.key[last] % self.ring.slots
            table.reshape(-1)[flat] = value[last]
        return seen

    def take_rows(self, idx: np.ndarray) -> RingSeries:
        """The same for the rows `idx` of the view (`View.subset`): `window` then takes their positions."""
        out = copy.copy(self)
        out.rows = idx if self.rows is None else self.rows[idx]
        return out

    def _build(self) -> None:
        loc, key, value, stored = self.loc, self.key, self.value, self.stored
        n = len(loc)
        code = pair_code(loc, key)
        sidx = np.flatnonzero(stored)
        scode = code[sidx]
        if len(scode) > 1 and not bool(np.all(scode[1:] >= scode[:-1])):
            o = np.argsort(scode, kind="stable")
            sidx, scode = sidx[o], scode[o]
        # The last stored row of each (sensor, slot) run: what the slot holds for every later row.
        ends = np.flatnonzero(run_heads(scode[::-1])[::-1])
        self._tables["run_code"], self._tables["run_val"] = scode[ends], value[sidx[ends]]
        # A row's own slot: the last stored row of its run at or before the row (-1: none yet).
        arange = np.arange(n)
        start = run_heads(code)
        run_start = np.maximum.accumulate(np.where(start, arange, 0)) if n else arange
        last = np.maximum.accumulate(np.where(stored, arange, -1)) if n else arange
        self._tables["own"] = np.where(last >= run_start, last, -1)

    def window(self, idx: np.ndarray, span: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(values, mask) of rows `idx` laid out as the ring's slots (rows x slots), the mask covering the
        last `span` slots (per row, at most the ring's slots) up to each row's own, as `SlotRing.ages`
        with `age < span` gives them for one row per sensor (the same values in the same places)."""
        if not self._tables:
            self._build()
        run_code, run_val = self._tables["run_code"], self._tables["run_val"]
        if self.rows is not None:
            idx = self.rows[idx]
        ring = self.ring
        m = len(idx)
        vals = np.zeros((m, ring.slots))
        mask = np.zeros((m, ring.slots), bool)
        if m == 0:
            return vals, mask
        amax = int(span.max())
        age = np.arange(amax, dtype=np.int64)
        key = self.key[idx].astype(np.int64)[:, None] - age[None, :]
        code = pair_code(self.loc[idx][:, None], key)
        if len(run_code):
            p = np.minimum(np.searchsorted(run_code, code), len(run_code) - 1)
            hit = run_code[p] == code
            got = np.where(hit, run_val[p], 0.0)
        else:
            hit, got = np.zeros(code.shape, bool), np.zeros(code.shape)
        own = self._tables["own"][idx]
        hit[:, 0] = own >= 0
        got[:, 0] = np.where(own >= 0, self.value[np.maximum(own, 0)], 0.0)
        pos = key % ring.slots
        u = self.prior_at[idx][:, None]
        old = ~hit & (self.prior_key[u, pos] == key)
        got = np.where(old, self.prior_val[u, pos], got)
        inside = (hit | old) & (age[None, :] < span[:, None])
        rows = np.arange(m)[:, None]
        vals[rows, pos] = np.where(inside, got, 0.0)
        mask[rows, pos] = inside
        return vals, mask
