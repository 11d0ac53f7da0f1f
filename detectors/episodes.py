"""Alert onsets and spans from detections: an alert system reports when an anomaly starts, once.

Every level detector emits a row for each reading while its level is above 0 and one severity-0 row
(clear) when it drops back. An episode of a (sensor, rule) runs from its onset, the first active row
after none or a clear, to its clear row (exclusive), or on to the end of the feed while still active.
`row_flags` turns detections into one flag per input row for `citywatch detect --flags row|onset|span`,
so offline scoring can count alerts the way the alert engine opens them.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

FlagMode = Literal["row", "onset", "span"]
FLAG_MODES: tuple[str, ...] = ("row", "onset", "span")
_OPEN = np.iinfo(np.int64).max  # the end of an episode still active at the end of the feed


class Episodes:
    """One record per episode: sensor, rule_id, onset_ts (ns), end_ts (ns of the clear row, exclusive;
    int64 max while still active), top (highest severity reached, int8)."""

    __slots__ = ("end_ts", "onset_ts", "rule_id", "sensor", "top")

    def __init__(self, sensor, rule_id, onset_ts, end_ts, top) -> None:
        self.sensor, self.rule_id, self.onset_ts, self.end_ts, self.top = sensor, rule_id, onset_ts, end_ts, top

    def __len__(self) -> int:
        return len(self.sensor)


def episodes(dets) -> Episodes:
    """The episodes of detections that include the clear rows (severity 0), any order.

    Without the clear rows two episodes of one rule would run together: pass every detection."""
    n = len(dets)
    if n == 0:
        z = np.zeros(0, np.int64)
        return Episodes(z.astype(np.int32), np.zeros(0, object), z, z, z.astype(np.int8))
    rule_codes, rule = np.unique(dets.rule_id.astype(str), return_inverse=True)
    order = np.lexsort((dets.ts_ns, rule, dets.sensor))
    s, r, t = dets.sensor[order], rule[order], dets.ts_ns[order]
    sev = dets.severity[order]
    active = sev > 0
    same = np.r_[False, (s[1:] == s[:-1]) & (r[1:] == r[:-1])]
    prev_active = np.r_[False, active[:-1]] & same
    is_onset = active & ~prev_active
    onset = np.flatnonzero(is_onset)
    # The episode of each row: the latest onset at or before it (in its own run for active and clear rows).
    ep = np.cumsum(is_onset) - 1
    # Its end: the first clear row after the onset in the same run (a clear row ends the episode it follows).
    clears = np.flatnonzero(~active & prev_active)
    end = np.full(len(onset), _OPEN, np.int64)
    end[ep[clears]] = t[clears]
    top = np.zeros(len(onset), np.int8)
    act = np.flatnonzero(active)
    np.maximum.at(top, ep[act], sev[act])
    return Episodes(s[onset].astype(np.int32), rule_codes[r[onset]].astype(object), t[onset], end, top)


def row_flags(dets, sensor: np.ndarray, ts: np.ndarray, mode: FlagMode = "row") -> np.ndarray:
    """One bool per input row (sensor index, -1: unknown device; event time ns):

    row:   the row raised a detection of severity blue or above (any rule)
    onset: the row is the onset of an episode of some rule (the alert engine opens an alert there)
    span:  the row lies inside an episode of some rule of its sensor, from onset to clear (exclusive)

    dets: every detection of the run, clear rows included (needed to tell episodes apart).
    Raises ValueError for an unknown mode. Rows of one sensor with the same time share one key: make
    the times distinct first (`DistinctTimes`) to tell them apart."""
    sensor = np.asarray(sensor)
    ts = np.asarray(ts, np.int64)
    known = sensor >= 0
    keys = _keys(np.maximum(sensor, 0), ts)
    if mode == "row":
        act = dets.severity > 0
        return np.isin(keys, _keys(dets.sensor[act], dets.ts_ns[act])) & known
    ep = episodes(dets)
    if mode == "onset":
        return np.isin(keys, _keys(ep.sensor, ep.onset_ts)) & known
    if mode != "span":
        raise ValueError(f"unknown flag mode {mode!r}: choose from {', '.join(FLAG_MODES)}")
    out = np.zeros(len(ts), bool)
    if len(ep) == 0:
        return out
    # Per sensor, the union of its episodes' [onset, end) intervals: an input row is inside when more
    # intervals have started than ended at its time (counted over that sensor's sorted starts and ends).
    ks = np.lexsort((ep.onset_ts, ep.sensor))
    starts = _keys(ep.sensor[ks], ep.onset_ts[ks])
    ke = np.lexsort((ep.end_ts, ep.sensor))
    ends = _keys(ep.sensor[ke], ep.end_ts[ke])
    started = np.searchsorted(starts, keys, side="right")
    ended = np.searchsorted(ends, keys, side="right")
    return (started > ended) & known


def _keys(sensor: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """(sensor, time) as sortable pairs: a structured array ordered by sensor, then time."""
    out = np.empty(len(ts), dtype=[("s", np.int64), ("t", np.int64)])
    out["s"] = sensor
    out["t"] = ts
    return out


class DistinctTimes:
    """Makes the times of one sensor's rows distinct, in input order, across the chunks of a feed: the
    k-th repeat of a (sensor, time) gets time + k ns. Rows with the same time are then distinct
    readings to every rule (as they were: a rule set takes them in input order) and each input row
    gets its own flag (before, `...00Z,D,1` and `...00Z,D,9` under "above 5" were both flagged).
    A nanosecond is below every window and every printed time (feeds carry milliseconds at most; a
    repeat shifted onto another row's exact nanosecond would share that row's flag)."""

    def __init__(self, n_sensors: int) -> None:
        self.last_ts_ = np.full(n_sensors, np.iinfo(np.int64).min, np.int64)  # latest time seen per sensor
        self.repeats_ = np.zeros(n_sensors, np.int64)                         # repeats of that time so far

    def apply(self, sensor: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The distinct times of rows (sensor index, -1: unknown, left as is; time ns)."""
        ts = np.asarray(ts, np.int64)
        out = ts.copy()
        idx = np.flatnonzero(np.asarray(sensor) >= 0)
        if len(idx) == 0:
            return out
        s, t = np.asarray(sensor)[idx].astype(np.int64), ts[idx]
        order = np.lexsort((np.arange(len(idx)), t, s))
        so, to = s[order], t[order]
        first = np.r_[True, (so[1:] != so[:-1]) | (to[1:] != to[:-1])]
        start = np.flatnonzero(first)
        rank = np.arange(len(order)) - np.repeat(start, np.diff(np.r_[start, len(order)]))
        # Repeats of a time already seen in an earlier chunk (the sensor's latest) continue its count.
        carry = np.where(to == self.last_ts_[so], self.repeats_[so] + 1, 0)
        off = rank + carry
        shifted = np.empty(len(idx), np.int64)
        shifted[order] = to + off
        out[idx] = shifted
        # The latest time of each sensor in this chunk, and how many repeats of it were given out.
        last = np.r_[so[1:] != so[:-1], True]
        ls = so[last]
        newer = to[last] >= self.last_ts_[ls]
        ls = ls[newer]
        self.repeats_[ls] = off[last][newer]
        self.last_ts_[ls] = to[last][newer]
        return out

    def chunk(self, chunk):
        """A feed Chunk (detectors.feed) with distinct times in its batch and its per-input-row times."""
        import dataclasses

        ts = self.apply(chunk.input_sensor, chunk.input_ts)
        if np.array_equal(ts, chunk.input_ts):
            return chunk
        batch = dataclasses.replace(chunk.batch, ts_ns=ts[chunk.input_sensor >= 0])
        return dataclasses.replace(chunk, batch=batch, input_ts=ts)
