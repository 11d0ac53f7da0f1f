"""Deadman: every device in the inventory must report; silence longer than interval_factor x its
report interval + grace is offline (yellow), longer than orange_after_s is orange. A device that never
reported is as offline as one that stopped (kapacitor#1784): its silence counts from the first time
the rule set saw any time at all (first reading or first `advance`).

Driven by `advance(now_ns)`: event-time watermarks in replay, the wall clock live. A reading clears it,
and the clear is stamped no earlier than the last time `advance` found the device offline: a clear
means "the device is alive now", so it must not look older than the active row it ends (a reading's
own time is often older than the last tick: a batch's oldest sample, HJ 212's whole seconds, a late
message), or the alert engine would take it for a late row and the alert would never clear.

In event time (replays and simulations: the pipeline sets `_stamp_at_crossing`) a device is judged by its own
reports against the feed's progress as it arrived: `scan` sees each report with the newest reading time the feed had delivered
before it (arrival order, whatever the detector batching), minus the transport's reorder slack, so a
device whose messages are merely in flight behind faster devices is never called offline, and an Offline is
stamped at the moment its silence crossed the limit (last reading + limit), the same at any replay speed.
`advance` counts a device's silence from the newer of its last reading and the feed (less the slack) when
its latest rows arrived: a back-fill handed over in several batches (HJ 212 sends one frame per message)
has ended the gap with its first part, and the ticks between the parts must not raise it again.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from core import Detections
from detectors.base import Detector, RuleParams
from detectors.calendar import NS
from detectors.rolling import run_ends, run_heads


class DeadmanParams(RuleParams):
    interval_factor: float | None = Field(None, ge=1, le=100)
    grace_s: int | None = Field(None, ge=0)
    orange_after_s: int | None = Field(None, gt=0)


class Deadman(Detector):
    type = "deadman"
    category = "device"
    kinds = ("noise", "gas", "generic")
    metric = "silence"
    unit = "s"
    window = "deadman"
    Params = DeadmanParams
    params: DeadmanParams
    # A reading only moves last_ and clears a raised level: a whole batch is one step (`step_batch`).
    batchwise = True

    def setup(self, shared):
        o = self.inv.cfg.offline
        p = self.params
        factor = p.interval_factor if p.interval_factor is not None else o.interval_factor
        grace = p.grace_s if p.grace_s is not None else o.grace_s
        self.orange_s = p.orange_after_s if p.orange_after_s is not None else o.orange_after_s
        self.after_s = factor * self.inv.report_s[self.sensors] + grace
        self.last_ = np.full(self.n, -1, np.int64)   # event time of the newest reading (-1: never)
        self.level_ = np.zeros(self.n, np.int8)
        # Time of the newest active row `advance` emitted (-1: none): the clear is stamped no earlier.
        self.raised_ = np.full(self.n, -1, np.int64)
        self.start_ns: int | None = None
        # Event time: rows are stamped when the silence crossed the limit, not at the (batch-dependent) tick.
        self._stamp_at_crossing = False
        # Event time: the newest reading time the feed had delivered when the device's latest row arrived
        # (-1: none yet); a silence is only new if the feed passed the limit after that (see scan).
        self.heard_ = np.full(self.n, -1, np.int64)
        # Event time: the transport's reorder slack the pipeline judges with (set by scan and the pipeline).
        self._slack_ns = 0
        self._local = np.full(self.inv.n, -1, np.int64)
        self._local[self.sensors] = np.arange(self.n)

    def step(self, view) -> Detections | None:
        loc = view.loc
        if self.start_ns is None and len(view):
            self.start_ns = int(view.ts.min())
        sel = slice(None) if view.full else loc
        self.last_[sel] = np.maximum(self.last_[sel], view.ts)
        if not self.level_.any():  # nothing offline: nothing to clear
            return None
        prev = self.level_[loc]
        self.level_[loc] = 0
        idx = np.flatnonzero(prev > 0)
        if len(idx) == 0:
            return None
        ts = np.maximum(view.ts[idx], self.raised_[loc[idx]])
        return self.rows(
            view.sensor[idx], ts, np.zeros(len(idx)), np.zeros(len(idx)), self.after_s[loc[idx]],
            np.zeros(len(idx)), self.contexts(view, idx),
        )

    def step_batch(self, view) -> Detections | None:
        """`step` over a whole batch (each sensor's rows contiguous and in time order): the same as one
        round per reading, since only each sensor's first row can clear and its last sets last_."""
        n = len(view)
        if n == 0:
            return None
        loc = view.loc
        # Each sensor's first and last row, built in place (np.r_ costs a few µs a call on tiny arrays).
        first = np.flatnonzero(run_heads(loc))
        last = run_ends(first, n)
        # The first round holds every sensor's first row, and those are each sensor's earliest.
        if self.start_ns is None:
            self.start_ns = int(view.ts[first].min())
        sl = loc[last]
        self.last_[sl] = np.maximum(self.last_[sl], np.maximum.reduceat(view.ts, first))
        if not self.level_.any():
            return None
        fl = loc[first]
        prev = self.level_[fl]
        self.level_[fl] = 0
        idx = first[prev > 0]
        if len(idx) == 0:
            return None
        ts = np.maximum(view.ts[idx], self.raised_[loc[idx]])
        return self.rows(
            view.sensor[idx], ts, np.zeros(len(idx)), np.zeros(len(idx)), self.after_s[loc[idx]],
            np.zeros(len(idx)), self.contexts(view, idx),
        )

    def note_time(self, ts_ns: int) -> None:
        if self.start_ns is None:
            self.start_ns = int(ts_ns)

    def advance(self, now_ns: int, hold: np.ndarray | None = None) -> Detections | None:
        self.note_time(now_ns)
        assert self.start_ns is not None  # note_time set it
        since = np.where(self.last_ >= 0, self.last_, self.start_ns)
        if self._stamp_at_crossing:
            # Event time: a device was last heard when its latest rows arrived (heard_, less the slack), even
            # if they are older than the feed: an HJ 212 back-fill comes one frame per message, and ingest may
            # hand it over in several batches, so between them the device's newest reading lies inside the
            # gap it is filling. Judged by that reading alone, every tick in between raised a new Offline
            # whose "silence" the device had just ended (one Offline per part of the back-fill, depending on
            # the replay speed); `scan` already counts such a late report as the end of the gap, not a new one.
            heard = np.where(self.heard_ >= 0, self.heard_ - np.int64(self._slack_ns), since)
            since = np.maximum(since, heard)
        silent_s = (now_ns - since) / NS
        level = np.where(silent_s > self.orange_s, 3, np.where(silent_s > self.after_s, 2, 0)).astype(np.int8)
        # A watermark older than the newest reading says nothing new: never lower a level here.
        level = np.maximum(level, np.where(silent_s < 0, self.level_, 0)).astype(np.int8)
        if hold is not None:
            # Devices whose readings wait in our own queue (a bounded detection step deferred them):
            # their silence is ours, not theirs; they are neither raised nor cleared until those rows run.
            held = hold[self.sensors]
            level[held] = self.level_[held]
        self.level_ = level
        idx = np.flatnonzero(level > 0)
        if len(idx) == 0:
            return None
        self.raised_[idx] = np.maximum(self.raised_[idx], now_ns)
        ts = np.full(len(idx), now_ns, np.int64)
        if self._stamp_at_crossing:
            # When the silence crossed the level's limit: a fact of the device's own reports, not of when
            # this tick happened to run (which depends on batching and replay speed).
            since_i = since[idx].astype(np.int64)
            cross = since_i + np.where(level[idx] >= 3, np.int64(self.orange_s * NS),
                                       (self.after_s[idx] * NS).astype(np.int64))
            ts = np.minimum(cross, now_ns)
        base = self.context_base()
        # last_reading_ns: the newest reading this verdict knew of (None: never reported). The alert
        # engine uses it to tell an Offline whose device has reported since from one still true.
        ctx = [dict(base, never_reported=bool(self.last_[i] < 0),
                    last_reading_ns=int(self.last_[i]) if self.last_[i] >= 0 else None) for i in idx]
        limit = np.where(level[idx] >= 3, float(self.orange_s), self.after_s[idx])
        return self.rows(
            self.sensors[idx], ts, level[idx], silent_s[idx], limit, silent_s[idx] / self.after_s[idx], ctx
        )

    def scan(self, sensor: np.ndarray, ts: np.ndarray, feed_ns: np.ndarray, slack_ns: int) -> Detections | None:
        """Event time: silences that ended inside these rows, judged by the feed as it arrived.

        sensor, ts: rows in arrival order (global sensor index, event time, UTC ns), before `step` sees them
        feed_ns:    per row, the newest reading time the feed had delivered before that row arrived
        slack_ns:   the transport's reorder slack: how far other devices' readings may run ahead of a
                    device's own in-flight messages (the replay tools bound it, simulators.publisher)
        A device whose report arrives when the feed (less the slack) is more than its limit past its
        previous reading was silent: Offline from previous reading + limit (orange from + orange_after_s),
        cleared by this report. Returns those rows, or None. State is left to `step`."""
        self._slack_ns = int(slack_ns)
        sensor = np.asarray(sensor, np.int64)
        known = (sensor >= 0) & (sensor < len(self._local))
        loc = np.where(known, self._local[np.where(known, sensor, 0)], -1)
        keep = loc >= 0
        if not keep.any():
            return None
        loc, ts, feed = loc[keep], np.asarray(ts, np.int64)[keep], np.asarray(feed_ns, np.int64)[keep]
        if self.start_ns is None:
            self.start_ns = int(ts[0])
        order = np.argsort(loc, kind="stable")          # each device's rows, in arrival order
        loc, ts, feed = loc[order], ts[order], feed[order]
        first = run_heads(loc)
        # Each row's previous reading time: the device's newest before this batch, then the running
        # maximum of its own rows (a per-device cumulative max, offset so that devices never mix).
        base = np.where(self.last_[loc] >= 0, self.last_[loc], self.start_ns)
        lo = int(ts.min())
        span = int(ts.max()) - lo + 1
        group = np.cumsum(first) - 1
        if span * (int(group[-1]) + 1) < 2**62:
            off = group.astype(np.int64) * span
            run = np.maximum.accumulate(ts - lo + off) - off + lo
        else:  # absurd spans: per device (never the case for a real feed)
            run = ts.copy()
            starts = np.flatnonzero(first)
            for a, b in zip(starts, np.r_[starts[1:], len(ts)]):
                run[a:b] = np.maximum.accumulate(ts[a:b])
        prev = np.where(first, base, np.r_[base[:1], run[:-1]])
        prev = np.maximum(prev, base)
        silent_ns = feed - slack_ns - prev
        after_ns = (self.after_s[loc] * NS).astype(np.int64)
        # The feed as it stood once the device's previous row had arrived: a silence counts only if the
        # feed passed the limit after that (rows that arrive together, like a back-fill's, are one report).
        heard = np.maximum(feed, ts)
        heard_prev = np.where(first, self.heard_[loc], np.r_[heard[:1], heard[:-1]])
        last_row = np.r_[first[1:], True]               # each device's last row here
        self.heard_[loc[last_row]] = np.maximum(self.heard_[loc[last_row]], heard[last_row])
        fresh = (heard_prev < 0) | (heard_prev - slack_ns - prev <= after_ns)
        hit = np.flatnonzero((silent_ns > after_ns) & fresh)
        if len(hit) == 0:
            return None
        p, lh = prev[hit], loc[hit]
        yellow_at = p + after_ns[hit]
        orange = silent_ns[hit] > self.orange_s * NS
        orange_at = p + np.int64(self.orange_s * NS)
        judged = feed[hit] - slack_ns
        clear_at = np.maximum(np.maximum(ts[hit], judged), np.where(orange, orange_at, yellow_at))
        parts: tuple[list[np.ndarray], ...] = ([], [], [], [], [], [])  # sens, stamps, sev, lim, last, seen
        for mask, at, level, limit in ((np.ones(len(hit), bool), yellow_at, 2, self.after_s[lh]),
                                       (orange, orange_at, 3, np.full(len(hit), float(self.orange_s))),
                                       (np.ones(len(hit), bool), clear_at, 0, self.after_s[lh])):
            for part, col in zip(parts, (self.sensors[lh[mask]], at[mask], np.full(int(mask.sum()), level, np.int8),
                                         limit[mask], p[mask], judged[mask])):
                part.append(col)
        sens, stamps, sev, lim, last, seen = (np.concatenate(x) for x in parts)
        silent_s = np.where(sev > 0, (seen - last) / NS, 0.0)   # the silence as this report ended it
        base_ctx = self.context_base()
        ctx = [dict(base_ctx, never_reported=bool(self.last_[self._local[s]] < 0 and lp == self.start_ns),
                    last_reading_ns=int(lp)) for s, lp in zip(sens, last)]
        return self.rows(sens, stamps, sev, silent_s, lim, silent_s / lim, ctx)

    def state_bytes(self) -> int:
        return super().state_bytes() + self.after_s.nbytes
