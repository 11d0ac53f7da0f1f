"""Generic detectors any numeric field can use from YAML: static thresholds with hysteresis, rate of
change, rolling robust z-score (median/MAD), EWMA control chart, CUSUM and flatline.

Each reads one `field` of the readings. By default only readings flagged N are used (`flags: n_only`);
`flags: any` uses every finite value. NaN input is missing and never "normal".
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from config.base import Severity
from detectors.base import Eval, LevelDetector, RuleParams, levels_above, levels_below, severity_code
from detectors.calendar import NS

Category = Literal["noise", "gas", "device", "data"]


class FieldParams(RuleParams):
    field: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    flags: Literal["n_only", "any"] = "n_only"
    category: Category = "data"
    unit: str = ""


class FieldDetector(LevelDetector):
    """Base of the generic detectors: the rule's field, its validity, category and unit from the params."""

    def setup(self, shared):
        super().setup(shared)
        self.category = self.params.category
        self.metric = self.params.field
        self.unit = self.params.unit

    def read(self, view) -> tuple[np.ndarray, np.ndarray]:
        x = view.col(self.params.field)
        ok = np.isfinite(x)
        if self.params.flags == "n_only":
            ok &= view.quality == 0
        return x, ok


class Level(RuleParams):
    above: float | None = None
    below: float | None = None
    severity: Severity

    @model_validator(mode="after")
    def _one(self) -> "Level":
        if (self.above is None) == (self.below is None):
            raise ValueError("a level names exactly one of above or below")
        return self


class ThresholdParams(FieldParams):
    levels: list[Level] = Field(min_length=1)
    hysteresis: float = Field(0.0, ge=0)


class Threshold(FieldDetector):
    """Static levels: `above: x` reaches its severity when value > x, `below: x` when value < x; an active
    level holds until the value is `hysteresis` back inside (ADTK ThresholdAD with hysteresis)."""

    batchwise = True

    type = "threshold"
    window = "sample"
    Params = ThresholdParams

    def evaluate(self, view) -> Eval:
        x, ok = self.read(view)
        ups = [(severity_code(lv.severity), lv.above) for lv in self.params.levels if lv.above is not None]
        downs = [(severity_code(lv.severity), lv.below) for lv in self.params.levels if lv.below is not None]
        n = len(view)
        raw = np.zeros(n, np.int8)
        held = np.zeros(n, np.int8)
        limits = np.full((5, n), np.nan)
        for fn, lv in ((levels_above, ups), (levels_below, downs)):
            if lv:
                r, h, lim = fn(x, lv, self.params.hysteresis)
                raw, held = np.maximum(raw, r), np.maximum(held, h)
                for sev, _ in lv:
                    limits[sev] = lim[sev]
        first = sorted(ups + downs)[0][1]
        limits[0] = first
        return Eval(ok, raw, held, x, limits, np.where(raw > 0, 1.0, 0.0))


class RateParams(FieldParams):
    per_s: float = Field(60.0, gt=0)
    direction: Literal["rise", "fall", "both"] = "both"
    limit: float = Field(gt=0)
    severity: Severity = "yellow"
    max_gap_s: float = Field(3600.0, gt=0)
    hysteresis: float = Field(0.0, ge=0)


class RateOfChange(FieldDetector):
    """Rate of change between consecutive valid readings, in field units per `per_s` seconds; readings
    more than `max_gap_s` apart give no rate (the gap is not a change)."""

    type = "rate_of_change"
    window = "delta"
    Params = RateParams

    def setup(self, shared):
        super().setup(shared)
        self.window = f"per {self.params.per_s:g}s"
        self.last_x_ = np.full(self.n, np.nan)
        self.last_t_ = np.full(self.n, -1, np.int64)

    def evaluate(self, view) -> Eval:
        x, ok = self.read(view)
        loc, ts = view.loc, view.ts
        lx, lt = self.last_x_[loc], self.last_t_[loc]
        dt = (ts - lt) / NS
        have = ok & (lt >= 0) & (dt > 0) & (dt <= self.params.max_gap_s)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(have, (x - lx) / dt * self.params.per_s, np.nan)
        newer = ok & (ts > lt)
        self.last_x_[loc] = np.where(newer, x, lx)
        self.last_t_[loc] = np.where(newer, ts, lt)
        d = self.params.direction
        mag = rate if d == "rise" else (-rate if d == "fall" else np.abs(rate))
        raw, held, limits = levels_above(mag, [(severity_code(self.params.severity), self.params.limit)], self.params.hysteresis)
        return Eval(have, raw, held, rate, limits, mag)


class RobustZParams(FieldParams):
    window: int = Field(30, ge=3, le=64)
    min_count: int = Field(10, ge=3, le=64)
    z: float = Field(3.5, gt=0)
    severity: Severity = "yellow"
    direction: Literal["rise", "fall", "both"] = "both"
    hysteresis: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _counts(self) -> "RobustZParams":
        if self.min_count > self.window:
            raise ValueError(f"min_count ({self.min_count}) must not exceed window ({self.window})")
        return self


# Consistency constant of the MAD for normal data (Iglewicz and Hoaglin's modified z-score).
MAD_Z = 0.6745


class RobustZ(FieldDetector):
    """Rolling robust z-score: 0.6745 (x - median) / MAD over the previous `window` valid readings
    (Iglewicz-Hoaglin modified z; 3.5 is their outlier cut). A zero MAD with x at the median is z = 0."""

    type = "robust_z"
    Params = RobustZParams

    def setup(self, shared):
        super().setup(shared)
        w = self.params.window
        self.window = f"{w} readings"
        self.buf_ = np.full((self.n, w), np.nan)
        self.pos_ = np.zeros(self.n, np.int16)

    def evaluate(self, view) -> Eval:
        x, ok = self.read(view)
        loc = view.loc
        hist = self.buf_[loc]
        count = np.sum(~np.isnan(hist), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            med = _nanmedian(hist, count)
            mad = _nanmedian(np.abs(hist - med[:, None]), count)
            dev = x - med
            z = np.where(dev == 0, 0.0, MAD_Z * dev / mad)
        d = self.params.direction
        mag = z if d == "rise" else (-z if d == "fall" else np.abs(z))
        known = ok & (count >= self.params.min_count)
        raw, held, limits = levels_above(mag, [(severity_code(self.params.severity), self.params.z)], self.params.hysteresis)
        idx = np.flatnonzero(ok)
        li, pos = loc[idx], self.pos_[loc[idx]]
        self.buf_[li, pos] = x[idx]
        self.pos_[li] = (pos + 1) % self.params.window
        return Eval(known, raw, held, x, limits, mag, {"median": med})


def _nanmedian(a: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Row medians ignoring NaN (sorted last), given the count of non-NaN per row; NaN for empty rows."""
    if a.shape[0] == 0:
        return np.zeros(0)
    s = np.sort(a, axis=1)
    c = np.maximum(count, 1)
    rows = np.arange(len(s))
    lo = s[rows, (c - 1) // 2]
    hi = s[rows, c // 2]
    return np.where(count > 0, (lo + hi) / 2.0, np.nan)


class LearnParams(FieldParams):
    warmup: int = Field(30, ge=2, le=100000)
    target: float | None = None
    sigma: float | None = Field(None, gt=0)
    severity: Severity = "yellow"


class Learned(FieldDetector):
    """Phase I / phase II: the first `warmup` valid readings estimate mean and sigma (Welford), unless
    `target` and `sigma` are given; the chart runs on the readings after that."""

    def setup(self, shared):
        super().setup(shared)
        self.n_ = np.zeros(self.n, np.int32)
        self.mean_ = np.zeros(self.n)
        self.m2_ = np.zeros(self.n)

    def learn(self, view, x, ok):
        """(in phase II, mean, sigma) per row; updates phase-I estimates with the rows still learning."""
        loc = view.loc
        p = self.params
        cnt, mean, m2 = self.n_[loc], self.mean_[loc], self.m2_[loc]
        phase2 = cnt >= p.warmup
        learning = ok & ~phase2
        c1 = cnt + learning
        d = np.where(learning, x - mean, 0.0)
        mean1 = mean + np.where(learning, d / np.maximum(c1, 1), 0.0)
        m21 = m2 + np.where(learning, d * (x - mean1), 0.0)
        self.n_[loc], self.mean_[loc], self.m2_[loc] = c1, mean1, m21
        mu = np.full(len(x), p.target) if p.target is not None else mean
        sd = np.full(len(x), p.sigma) if p.sigma is not None else np.sqrt(m2 / np.maximum(cnt - 1, 1))
        return phase2 & ok, mu, sd


class EwmaParams(LearnParams):
    lam: float = Field(0.2, gt=0, le=1)
    width: float = Field(3.0, gt=0)
    hysteresis: float = Field(0.0, ge=0)


class Ewma(Learned):
    """EWMA control chart: z = lam x + (1 - lam) z', alarm when |z - mu| > width sigma sqrt(lam / (2 - lam))
    (asymptotic limits, Montgomery). Score is |z - mu| in units of that sigma."""

    type = "ewma"
    window = "ewma"
    Params = EwmaParams

    def setup(self, shared):
        super().setup(shared)
        self.z_ = np.full(self.n, np.nan)

    def evaluate(self, view) -> Eval:
        x, ok = self.read(view)
        loc = view.loc
        p = self.params
        run, mu, sd = self.learn(view, x, ok)
        z0 = self.z_[loc]
        z = np.where(run, p.lam * x + (1 - p.lam) * np.where(np.isnan(z0), mu, z0), z0)
        self.z_[loc] = z
        # Rounding in the EWMA recursion is not a deviation: a sub-ppb gap from mu counts as none.
        gap = np.abs(z - mu)
        gap = np.where(gap <= 1e-9 * np.maximum(1.0, np.abs(mu)), 0.0, gap)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = gap / (sd * np.sqrt(p.lam / (2 - p.lam)))
        score = np.where(np.isnan(score) & run, np.where(gap == 0, 0.0, np.inf), score)
        raw, held, limits = levels_above(score, [(severity_code(p.severity), p.width)], p.hysteresis)
        return Eval(run, raw, held, z, limits, score)


class CusumParams(LearnParams):
    k: float = Field(0.5, ge=0)
    h: float = Field(5.0, gt=0)
    direction: Literal["up", "down", "both"] = "both"
    after_alarm: Literal["hold", "reset"] = "hold"


class Cusum(Learned):
    """Tabular CUSUM in sigma units (Montgomery): S+ = max(0, S+ + z - k), S- = max(0, S- - z - k) with
    z = (x - mu) / sigma; alarm at S >= h. `after_alarm: hold` keeps the alarm until S is back at 0;
    `reset` restarts S at 0 after each alarm row (the textbook restart)."""

    type = "cusum"
    window = "cusum"
    Params = CusumParams

    def setup(self, shared):
        super().setup(shared)
        self.hi_ = np.zeros(self.n)
        self.lo_ = np.zeros(self.n)

    def evaluate(self, view) -> Eval:
        x, ok = self.read(view)
        loc = view.loc
        p = self.params
        run, mu, sd = self.learn(view, x, ok)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(run, (x - mu) / np.where(sd > 0, sd, np.inf), 0.0)
        hi = np.where(run, np.maximum(0.0, self.hi_[loc] + z - p.k), self.hi_[loc])
        lo = np.where(run, np.maximum(0.0, self.lo_[loc] - z - p.k), self.lo_[loc])
        if p.direction == "up":
            lo = np.zeros_like(lo)
        elif p.direction == "down":
            hi = np.zeros_like(hi)
        s = np.maximum(hi, lo)
        alarm = s >= p.h
        sev = severity_code(p.severity)
        raw = np.where(alarm, sev, 0).astype(np.int8)
        if p.after_alarm == "reset":
            held = raw
            hi, lo = np.where(alarm, 0.0, hi), np.where(alarm, 0.0, lo)
        else:
            held = np.where(s > 0, sev, 0).astype(np.int8)
        self.hi_[loc], self.lo_[loc] = hi, lo
        limits = np.full((5, len(x)), p.h)
        return Eval(run, raw, held, s, limits, s, {"direction": np.where(hi >= lo, "up", "down")})


class FlatlineParams(FieldParams):
    window_s: int | None = Field(None, gt=0)
    min_change: float | None = Field(None, ge=0)
    severity: Severity = "yellow"
    category: Category = "device"


class Flatline(FieldDetector):
    """No change larger than `min_change` over `window_s` of valid readings: a stuck or dead sensor."""

    type = "flatline"
    Params = FlatlineParams

    def defaults(self) -> tuple[int, float]:
        return 7200, 0.0

    def setup(self, shared):
        super().setup(shared)
        w, c = self.defaults()
        self.win_s = self.params.window_s or w
        self.min_change = self.params.min_change if self.params.min_change is not None else c
        self.window = f"{self.win_s}s"
        self.ref_ = np.full(self.n, np.nan)             # value when the current flat run started
        self.since_ = np.full(self.n, -1, np.int64)     # event time the flat run started

    def evaluate(self, view) -> Eval:
        x, ok = self.read(view)
        loc, ts = view.loc, view.ts
        ref, since = self.ref_[loc], self.since_[loc]
        moved = np.isnan(ref) | (np.abs(x - ref) > self.min_change)
        ref = np.where(ok & moved, x, ref)
        since = np.where(ok & moved, ts, since)
        self.ref_[loc] = ref
        self.since_[loc] = since
        flat_s = np.where(since >= 0, (ts - since) / NS, 0.0)
        raw, held, limits = levels_above(flat_s, [(severity_code(self.params.severity), np.nextafter(self.win_s, -np.inf))], 0.0)
        limits[:] = self.win_s
        return Eval(ok, raw, held, flat_s, limits, flat_s / self.win_s, {"stuck_value": ref})


class GasFlatlineParams(RuleParams):
    field: str = Field("p", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    flags: Literal["n_only", "any"] = "n_only"
    window_s: int | None = Field(None, gt=0)
    min_change: float | None = Field(None, ge=0)
    severity: Severity = "yellow"
    category: Category = "device"
    unit: str = "kPa"


class GasFlatline(Flatline):
    """G-flatline: a gas pressure that does not change over gas.flatline.window_s (2 h)."""

    type = "gas_flatline"
    kinds = ("gas",)
    Params = GasFlatlineParams

    def defaults(self) -> tuple[int, float]:
        f = self.inv.cfg.gas.flatline
        return f.window_s, f.min_change_kpa
