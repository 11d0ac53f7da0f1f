"""Deadman: every device in the inventory must report; silence longer than interval_factor x its
report interval + grace is offline (yellow), longer than orange_after_s is orange. A device that never
reported is as offline as one that stopped (kapacitor#1784): its silence counts from the first time
the rule set saw any time at all (first reading or first `advance`).

Driven by `advance(now_ns)`: event-time watermarks in replay, the wall clock live. A reading clears it,
and the clear is stamped no earlier than the last time `advance` found the device offline: a clear
means "the device is alive now", so it must not look older than the active row it ends (a reading's
own time is often older than the last tick: a batch's oldest sample, HJ 212's whole seconds, a late
message), or the alert engine would take it for a late row and the alert would never clear.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from detectors.base import Detector, RuleParams
from detectors.batch import Detections
from detectors.calendar import NS


class DeadmanParams(RuleParams):
    interval_factor: float | None = Field(None, ge=1, le=100)
    grace_s: int | None = Field(None, ge=0)
    orange_after_s: int | None = Field(None, gt=0)


class Deadman(Detector):
    type = "deadman"
    category = "device"
    kinds = ("noise", "gas")
    metric = "silence"
    unit = "s"
    window = "deadman"
    Params = DeadmanParams

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

    def note_time(self, ts_ns: int) -> None:
        if self.start_ns is None:
            self.start_ns = int(ts_ns)

    def advance(self, now_ns: int, hold: np.ndarray | None = None) -> Detections | None:
        self.note_time(now_ns)
        since = np.where(self.last_ >= 0, self.last_, self.start_ns)
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
        base = self.context_base()
        # last_reading_ns: the newest reading this verdict knew of (None: never reported). The alert
        # engine uses it to tell an Offline whose device has reported since from one still true.
        ctx = [dict(base, never_reported=bool(self.last_[i] < 0),
                    last_reading_ns=int(self.last_[i]) if self.last_[i] >= 0 else None) for i in idx]
        limit = np.where(level[idx] >= 3, float(self.orange_s), self.after_s[idx])
        return self.rows(
            self.sensors[idx], np.full(len(idx), now_ns), level[idx], silent_s[idx], limit, silent_s[idx] / self.after_s[idx], ctx
        )

    def state_bytes(self) -> int:
        return super().state_bytes() + self.after_s.nbytes
