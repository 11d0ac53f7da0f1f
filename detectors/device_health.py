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
    main value: leq for a noise monitor, p for a gas sensor) below the minimum, or flags other than N for at least `bad_flag_for_s` in a row."""

    type = "noise_data_quality"
    category = "data"
    kinds = ("noise", "gas")
    metric = "vdr"
    unit = "ratio"
    window = "1h"
    Params = DataQualityParams
    params: DataQualityParams

    without_field = "every reading counts as invalid data (the valid-data rate is 0)"

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
        # A valid reading is flagged N and has its main value (leq or p); an empty row is not data.
        # A noise monitor's main value is leq, a gas sensor's p (a group of one kind reads one column).
        kinds = self.group.kinds or (0, 1)
        if kinds == (0,):
            main = np.isfinite(view.col("leq"))
        elif kinds == (1,):
            main = np.isfinite(view.col("p"))
        else:
            main = np.where(self.inv.kind[view.sensor] == 0, np.isfinite(view.col("leq")), np.isfinite(view.col("p")))
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
        raw = (cond * self.sev).astype(np.int8)
        reason = Labels(codes, (None, "flag", "vdr"))
        known = np.ones(len(view), bool)
        return Eval(known, raw, raw, vdr, np.full(5, self.min_vdr), 1.0 - vdr, {"bad_flag_s": bad_s, "reason": reason})
