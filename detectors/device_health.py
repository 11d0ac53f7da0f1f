"""Device-health rules that every device kind runs: low battery (Batt) and data quality (N-data: the
hourly valid-data rate and runs of bad flags). They judge the device, not the noise or the gas it
measures.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from config.base import Severity
from detectors.base import Eval, Labels, LevelDetector, RuleParams, at, levels_below, put, severity_code, take
from detectors.calendar import NS
from detectors.rolling import run_ends, run_heads


class BatteryParams(RuleParams):
    yellow_v: float | None = Field(None, ge=2.0, le=4.0)
    orange_v: float | None = Field(None, ge=2.0, le=4.0)
    # A fading cell crosses its limit slowly, and every transmission dips it by ~0.1-0.2 V (the radio's
    # current through the cell's internal resistance), with noise and temperature swings on top: a
    # 0.05 V band turned one fade into an alert per report and a severity change per dip. 0.3 V (more
    # than a dip plus noise) holds the level until the battery is replaced (a fresh Li-SOCl2 cell
    # reads 3.65-3.7 V open-circuit, above yellow_v 3.3 + 0.3).
    hysteresis_v: float = Field(0.3, ge=0, le=1)


class Battery(LevelDetector):
    """Batt: battery voltage below yellow_v (3.3 V) yellow, below orange_v (3.1 V) orange (Li-SOCl2 3.6 V).

    The level holds until the voltage is hysteresis_v (0.3 V) above its limit; the rule's clear_for_s
    (rules.yaml: 6 h) keeps one alert for one fading battery."""

    batchwise = True

    type = "battery"
    category = "device"
    kinds = ("gas", "noise")
    metric = "batt_v"
    reads = ("batt_v",)
    unit = "V"
    window = "sample"
    Params = BatteryParams
    params: BatteryParams

    def setup(self, shared):
        super().setup(shared)
        b = self.inv.cfg.gas.battery
        self.yellow = self.params.yellow_v if self.params.yellow_v is not None else b.yellow_v
        self.orange = self.params.orange_v if self.params.orange_v is not None else b.orange_v

    def candidates(self, view):
        return view.col("batt_v") < max(self.yellow, self.orange) + self.params.hysteresis_v

    def evaluate(self, view) -> Eval:
        v = view.col("batt_v")
        ok = (v > 0) & (v < 6)  # beyond this the reading itself is broken, not the battery
        raw, held, limits = levels_below(v, [(2, self.yellow), (3, self.orange)], self.params.hysteresis_v)
        return Eval(ok, raw, held, v, limits, self.yellow - v)


class DataQualityParams(RuleParams):
    min_vdr: float | None = Field(None, ge=0, le=1)
    bad_flag_for_s: int | None = Field(None, gt=0)
    severity: Severity = "yellow"


class DataQuality(LevelDetector):
    """N-data: the last complete hour's valid-data rate (HJ 906: n/N; valid = flag N with the device's
    main value: leq for a noise monitor, p for a gas sensor) below the minimum, or flags other than N for at least `bad_flag_for_s` in a row.

    A series rule: `evaluate_series` takes a whole batch, its hour counts as cumulative sums per (sensor,
    hour) run and its bad-flag runs as run starts carried forward, exactly as `evaluate` row by row."""

    type = "noise_data_quality"
    category = "data"
    kinds = ("noise", "gas")
    metric = "vdr"
    unit = "ratio"
    window = "1h"
    Params = DataQualityParams
    params: DataQualityParams

    without_field = "every reading counts as invalid data (the valid-data rate is 0)"
    series = True  # whole batches through evaluate_series (see the class docstring)

    @classmethod
    def fields_read(cls, params, kind: str) -> tuple[str, ...]:
        return ("p",) if kind == "gas" else ("leq",)  # the device's main value (below)

    def setup(self, shared):
        super().setup(shared)
        dq = self.inv.cfg.noise.data_quality
        self.min_vdr = self.params.min_vdr if self.params.min_vdr is not None else dq.min_vdr
        self.bad_s = self.params.bad_flag_for_s or dq.bad_flag_for_s
        self.sev = severity_code(self.params.severity)
        self.interval_s = self.inv.report_s[self.sensors]
        self.expected = np.maximum(1, 3600 // self.interval_s)  # readings a complete hour holds
        self.hour_ = np.full(self.n, -1, np.int64)      # hour bucket being counted (-1: none yet)
        self.count_ = np.zeros(self.n, np.int16)        # valid readings in that hour
        self.first_ = np.ones(self.n, bool)             # the bucket being counted is the first (partial) one
        self.vdr_ = np.full(self.n, np.nan, np.float32)  # VDR of the last complete hour
        self.bad_since_ = np.full(self.n, -1, np.int64)  # event time of the first reading of a bad-flag run

    def evaluate(self, view) -> Eval:
        loc, ts = view.loc, view.ts
        # A reading stamped at its interval end belongs to the hour that interval lies in.
        hour = (ts - 1) // (3600 * NS)
        # Read-only views of the state where the view is every sensor (`at`): each is read before its
        # array is written, and every write below stores a new array.
        cur = at(self.hour_, view)
        rolled = hour > cur
        vdr = at(self.vdr_, view).astype(np.float64)
        count0 = at(self.count_, view)
        any_rolled = bool(rolled.any())
        if any_rolled:
            started = cur >= 0
            first = at(self.first_, view)
            done = np.where(hour == cur + 1, count0 / self.expected[loc], 0.0)
            vdr = np.where(rolled & started & ~first, done, vdr)
            put(self.vdr_, view, vdr)
            put(self.first_, view, np.where(rolled, ~started, first))
        main = self._has_main(view)
        bad = view.quality != 0
        any_bad = bool(bad.any())
        valid = ~bad & main if any_bad else main
        count = (np.where(rolled, 0, count0) if any_rolled else count0) + valid
        put(self.count_, view, np.where(hour >= cur, count, count0))
        if any_rolled:  # else no row's hour is past its sensor's: the hours stay
            put(self.hour_, view, np.maximum(hour, cur))
        since: np.ndarray | int
        low = vdr < self.min_vdr
        if any_bad:
            since0 = take(self.bad_since_, view)
            since = np.where(bad, np.where(since0 < 0, ts, since0), -1)
            bad_s = np.where(bad, (ts - since) / NS + self.interval_s[loc], 0.0)
            flag_bad = bad_s >= self.bad_s
            cond = flag_bad | low
            codes = np.where(flag_bad, 1, np.where(low, 2, 0))
        else:
            since, bad_s, cond = -1, np.zeros(len(view)), low
            codes = low * 2
        put(self.bad_since_, view, since)
        return self._eval(vdr, bad_s, cond, codes)

    def _has_main(self, view) -> np.ndarray:
        """Rows with their main value. A valid reading is flagged N and has its main value (leq or p); an
        empty row is not data. A noise monitor's main value is leq, a gas sensor's p (a group of one kind
        reads one column)."""
        kinds = self.group.kinds or (0, 1)
        if kinds == (0,):
            return np.isfinite(view.col("leq"))
        if kinds == (1,):
            return np.isfinite(view.col("p"))
        return np.where(self.inv.kind[view.sensor] == 0, np.isfinite(view.col("leq")), np.isfinite(view.col("p")))

    def _eval(self, vdr: np.ndarray, bad_s: np.ndarray, cond: np.ndarray, codes: np.ndarray) -> Eval:
        raw = (cond * self.sev).astype(np.int8)
        reason = Labels(codes, (None, "flag", "vdr"))
        known = np.ones(len(vdr), bool)
        return Eval(known, raw, raw, vdr, np.full(5, self.min_vdr), 1.0 - vdr, {"bad_flag_s": bad_s, "reason": reason})

    def evaluate_series(self, view) -> Eval:
        """`evaluate` over a whole batch, each sensor's rows contiguous and in time order (so their hours
        never decrease): the same Eval per row, and the state `evaluate` leaves after the rows one by one.

        Row by row, the hour counted before row i is max(hour0, hour[i-1]) (hour0: the state's), a row
        rolls the hour when its own is later, and the count after it is the sum of valid rows of its
        bucket max(hour, hour0) so far (plus the state's count where that bucket is hour0's): a
        cumulative sum per (sensor, bucket) run. The last complete hour's rate changes only at rolled
        rows that close a counted, non-first hour, and is carried forward from there as the float32 the
        state stores (the rolling row itself sees the float64, as in `evaluate`). A bad-flag run starts
        at its first row, or before the batch where it continues the state's run."""
        loc, ts = view.loc, view.ts
        n = len(view)
        if n == 0:
            return self._eval(np.zeros(0), np.zeros(0), np.zeros(0, bool), np.zeros(0, np.int64))
        head = run_heads(loc)  # each sensor's first row of the batch
        if head.all():
            return self.evaluate(view)  # one row per sensor: a round (`evaluate`'s fewer steps, the same result)
        rows = np.arange(n)
        begin = np.maximum.accumulate(np.where(head, rows, 0))  # ... for every row
        hour = (ts - 1) // (3600 * NS)
        hour0, count0 = self.hour_[loc], self.count_[loc]
        cur = hour0.copy()  # the hour counted before each row
        np.maximum(hour0[1:], hour[:-1], out=cur[1:])
        cur[head] = hour0[head]
        rolled = hour > cur
        any_rolled = bool(rolled.any())
        bad = view.quality != 0
        valid = self._has_main(view) & ~bad
        # Counts as int64 sums cast to the state's int16: the same wrap-around as adding one by one.
        if any_rolled:
            bucket = np.maximum(hour, hour0)  # ... after it
            add = (valid & (hour >= hour0)).astype(np.int64)
            seg = run_heads(bucket) | head
            csum = np.cumsum(add)
            s0 = np.maximum.accumulate(np.where(seg, rows, 0))
            count = (csum - csum[s0] + add[s0] + np.where(bucket == hour0, count0, 0)).astype(np.int16)
            started, first0 = cur >= 0, self.first_[loc]
            before = np.empty(n, np.int16)  # the count before each row
            before[1:] = count[:-1]
            before[head] = count0[head]
            # first_: set at each rolled row (its hour is the first, partial one when none was counted yet).
            last_roll = np.maximum.accumulate(np.where(rolled, rows, -1))
            first_after = np.where(last_roll >= begin, ~started[np.maximum(last_roll, 0)], first0)
            first = np.empty(n, bool)
            first[1:] = first_after[:-1]
            first[head] = first0[head]
            done = np.where(hour == cur + 1, before / self.expected[loc], 0.0)
            upd = rolled & started & ~first
            last_upd = np.maximum.accumulate(np.where(upd, rows, -1))
            carried = np.where(last_upd >= begin, done[np.maximum(last_upd, 0)].astype(np.float32),
                               self.vdr_[loc]).astype(np.float64)
            vdr = np.where(upd, done, carried)
        else:  # no hour ends in the batch: the rates and first-hour marks stay
            # ... and no row's hour passes its sensor's (each sees the state's hour): every bucket is the
            # state's hour and its run is the sensor's rows (the sums above, without finding the runs).
            add = (valid & (hour == hour0)).astype(np.int64)
            csum = np.cumsum(add)
            count = (csum - csum[begin] + add[begin] + count0).astype(np.int16)
            first_after, vdr = None, self.vdr_[loc].astype(np.float64)  # (the state's hours, marks and rates stay)
        if bad.any():
            since0 = self.bad_since_[loc]
            after_good = np.empty(n, bool)
            after_good[0] = True
            np.logical_not(bad[:-1], out=after_good[1:])
            run_start = bad & (head | after_good)
            start_ts = np.where(head & (since0 >= 0), since0, ts)
            since = np.where(bad, start_ts[np.maximum.accumulate(np.where(run_start, rows, 0))], -1)
            bad_s = np.where(bad, (ts - since) / NS + self.interval_s[loc], 0.0)
        else:
            since, bad_s = np.full(n, -1, np.int64), np.zeros(n)
        # The state after each sensor's last row.
        last = run_ends(np.flatnonzero(head), n)
        at_last = loc[last]
        self.count_[at_last] = count[last]
        if first_after is not None:
            self.hour_[at_last] = bucket[last]
            self.first_[at_last] = first_after[last]
            self.vdr_[at_last] = vdr[last]
        self.bad_since_[at_last] = since[last]
        low = vdr < self.min_vdr
        flag_bad = bad_s >= self.bad_s
        return self._eval(vdr, bad_s, flag_bad | low, np.where(flag_bad, 1, np.where(low, 2, 0)))
