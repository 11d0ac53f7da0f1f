"""Generic detectors any numeric field can use from YAML: static thresholds with hysteresis, rate of
change, rolling robust z-score (median/MAD), EWMA control chart, CUSUM and flatline.

Each reads one `field` of the readings. By default only readings flagged N are used (`flags: n_only`);
`flags: any` uses every finite value. NaN input is missing and never "normal".
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from config.base import Severity
from detectors.autolimit import AutoLimit, AutoLimitParams
from detectors.base import Eval, LevelDetector, RuleParams, levels_above, levels_below, severity_code
from detectors.calendar import NS
from detectors.series import Runs, clamped_cusum, ewma_filter

Category = Literal["noise", "gas", "device", "data"]


class FieldParams(RuleParams):
    field: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    flags: Literal["n_only", "any"] = "n_only"
    category: Category = "data"
    unit: str = ""


class FieldDetector(LevelDetector):
    """Base of the generic detectors: the rule's field, its validity, category and unit from the params.
    They run on every device kind, generic devices included (GasFlatline narrows this to gas)."""

    kinds: ClassVar[tuple[str, ...]] = ("noise", "gas", "generic")
    auto_options: ClassVar[dict] = {}   # AutoLimit's options for this detector's score (`limit: auto`)
    params: FieldParams

    def setup(self, shared):
        super().setup(shared)
        self.category = self.params.category
        self.metric = self.params.field
        self.unit = self.params.unit
        self.auto = AutoLimit.of(self, **self.auto_options)

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
    def _one(self) -> Level:
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
    traced = "value"  # its score is a 0/1 marker; the statistic it thresholds is the value itself

    type = "threshold"
    window = "sample"
    Params = ThresholdParams
    params: ThresholdParams

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
    params: RateParams
    series = True

    def setup(self, shared):
        super().setup(shared)
        self.window = f"per {self.params.per_s:g}s"
        self.last_x_ = np.full(self.n, np.nan)
        self.last_t_ = np.full(self.n, -1, np.int64)

    def evaluate(self, view) -> Eval:
        x, ok = self.read(view)
        loc, ts = view.loc, view.ts
        lx, lt = self.last_x_[loc], self.last_t_[loc]
        newer = ok & (ts > lt)
        self.last_x_[loc] = np.where(newer, x, lx)
        self.last_t_[loc] = np.where(newer, ts, lt)
        return self._judge(x, ok, ts, lx, lt)

    def evaluate_series(self, view) -> Eval:
        x, ok = self.read(view)
        ts = view.ts
        runs = Runs(view.loc)
        lx0, lt0 = self.last_x_[runs.sensor][runs.run], self.last_t_[runs.sensor][runs.run]
        # The stored reading is replaced by a valid one newer than it: rows are in time order, so that is
        # the first valid row of each later timestamp (a second row with the same time is not newer).
        cand = np.flatnonzero(ok & (ts > lt0))
        upd = np.zeros(len(ts), bool)
        if len(cand):
            r, t = runs.run[cand], ts[cand]
            upd[cand[np.r_[True, (r[1:] != r[:-1]) | (t[1:] != t[:-1])]]] = True
        prev = runs.latest(upd, strict=True)
        lx = np.where(prev >= 0, x[prev], lx0)
        lt = np.where(prev >= 0, ts[prev], lt0)
        last = runs.last_where(upd)
        got = last >= 0
        self.last_x_[runs.sensor[got]] = x[last[got]]
        self.last_t_[runs.sensor[got]] = ts[last[got]]
        return self._judge(x, ok, ts, lx, lt)

    def _judge(self, x, ok, ts, lx, lt) -> Eval:
        """The rate of each row against the stored reading before it (lx at lt, -1: none)."""
        dt = (ts - lt) / NS
        have = ok & (lt >= 0) & (dt > 0) & (dt <= self.params.max_gap_s)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(have, (x - lx) / dt * self.params.per_s, np.nan)
        d = self.params.direction
        mag = rate if d == "rise" else (-rate if d == "fall" else np.abs(rate))
        raw, held, limits = levels_above(mag, [(severity_code(self.params.severity), self.params.limit)], self.params.hysteresis)
        return Eval(have, raw, held, rate, limits, mag)


class RobustZParams(FieldParams, AutoLimitParams):
    fixed_limit_key: ClassVar[str] = "z"
    limit: Literal["auto"] | None = None   # auto: resolve the z limit per sensor (detectors/autolimit.py)
    window: int = Field(30, ge=3, le=1024)
    min_count: int = Field(10, ge=3, le=1024)
    min_mad: float | None = Field(None, ge=0)
    z: float = Field(3.5, gt=0)
    severity: Severity = "yellow"
    direction: Literal["rise", "fall", "both"] = "both"
    hysteresis: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _counts(self) -> RobustZParams:
        if self.min_count > self.window:
            raise ValueError(f"min_count ({self.min_count}) must not exceed window ({self.window})")
        return self


# Consistency constant of the MAD for normal data (Iglewicz and Hoaglin's modified z-score).
MAD_Z = 0.6745


class RobustZ(FieldDetector):
    """Rolling robust z-score: 0.6745 (x - median) / MAD over the previous `window` valid readings
    (Iglewicz-Hoaglin modified z; 3.5 is their outlier cut). A zero MAD with x at the median is z = 0.

    The MAD is floored at `min_mad` (field units), by default at the window's resolution: the smallest
    gap between two distinct values in it. A quantised signal (a sensor reporting whole dB, or a few
    levels) has MAD 0 while most of its window sits on one level, and every step to the next level
    would be z = infinity; with the floor a one-step change is z = 0.67. A window holding one value
    only has no resolution: any change from it is still z = infinity, unless min_mad is set."""

    type = "robust_z"
    Params = RobustZParams
    params: RobustZParams
    series = True

    def setup(self, shared):
        super().setup(shared)
        w = self.params.window
        self.window = f"{w} readings"
        self.buf_ = np.full((self.n, w), np.nan)
        self.pos_ = np.zeros(self.n, np.int16)

    def evaluate(self, view) -> Eval:
        x, ok = self.read(view)
        loc = view.loc
        ev = self._judge(x, ok, *self._stats(self.buf_[loc]))
        idx = np.flatnonzero(ok)
        li, pos = loc[idx], self.pos_[loc[idx]]
        self.buf_[li, pos] = x[idx]
        self.pos_[li] = (pos + 1) % self.params.window
        return ev

    def evaluate_series(self, view) -> Eval:
        """Every row's window as a slice of one sequence per sensor: its ring, oldest first (empty slots,
        NaN, first), then its valid readings of the batch; the window before a row is the `window` values
        before that row's place. The median, MAD and resolution of a window do not depend on the order
        of its values, so they are the very numbers `evaluate` computes from the ring."""
        x, ok = self.read(view)
        n, w = len(x), self.params.window
        if n == 0:
            return self._judge(x, ok, *self._stats(np.zeros((0, w))))
        runs = Runs(view.loc)
        sens = runs.sensor
        pos0 = self.pos_[sens].astype(np.int64)
        chron = np.take_along_axis(self.buf_[sens], (pos0[:, None] + np.arange(w)) % w, axis=1)
        before = np.cumsum(ok) - ok
        vb = before - before[runs.first][runs.run]          # valid rows before each row, in its run
        nv = np.bincount(runs.run, weights=ok, minlength=len(sens)).astype(np.int64)
        size = w + nv
        off = np.r_[0, np.cumsum(size)[:-1]]
        seq = np.empty(int(size.sum()))
        seq[(off[:, None] + np.arange(w)).ravel()] = chron.ravel()
        vi = np.flatnonzero(ok)
        seq[off[runs.run[vi]] + w + vb[vi]] = x[vi]
        start = off[runs.run] + vb
        wins = np.lib.stride_tricks.sliding_window_view(seq, w)
        count, med, mad = np.empty(n, np.int64), np.empty(n), np.empty(n)
        step = max(1, WINDOW_BLOCK // w)   # rows per block: a block gathers rows x window values
        for a in range(0, n, step):
            b = min(n, a + step)
            count[a:b], med[a:b], mad[a:b] = self._stats(wins[start[a:b]])
        ev = self._judge(x, ok, count, med, mad)
        # The ring after the batch: each sensor's last `window` valid values in their slots.
        keep = vi[vb[vi] >= nv[runs.run[vi]] - w]
        r = runs.run[keep]
        self.buf_[sens[r], (pos0[r] + vb[keep]) % w] = x[keep]
        self.pos_[sens] = (pos0 + nv) % w
        return ev

    def _stats(self, hist: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, median, floored MAD) of each row's window of past values (NaN: empty slots)."""
        count = np.sum(~np.isnan(hist), axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            srt = np.sort(hist, axis=1)   # NaN (empty slots) sorts last
            med = _sorted_median(srt, count)
            mad = _nanmedian(np.abs(hist - med[:, None]), count)
            if self.params.min_mad is not None:
                mad = np.maximum(mad, self.params.min_mad)
            else:
                gaps = np.diff(srt, axis=1)   # NaN gaps after the last value
                res = np.where(gaps > 0, gaps, np.inf).min(axis=1, initial=np.inf)
                mad = np.where(np.isfinite(res), np.maximum(mad, res), mad)
        return count, med, mad

    def _judge(self, x, ok, count, med, mad) -> Eval:
        with np.errstate(invalid="ignore", divide="ignore"):
            dev = x - med
            z = np.where(dev == 0, 0.0, MAD_Z * dev / mad)
        d = self.params.direction
        mag = z if d == "rise" else (-z if d == "fall" else np.abs(z))
        known = ok & (count >= self.params.min_count)
        raw, held, limits = levels_above(mag, [(severity_code(self.params.severity), self.params.z)], self.params.hysteresis)
        return Eval(known, raw, held, x, limits, mag, {"median": med})


# Values one block of robust_z's series windows gathers (rows x window): bounds its memory (16 MB).
WINDOW_BLOCK = 1 << 21


def _nanmedian(a: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Row medians ignoring NaN (sorted last), given the count of non-NaN per row; NaN for empty rows."""
    if a.shape[0] == 0:
        return np.zeros(0)
    return _sorted_median(np.sort(a, axis=1), count)


def _sorted_median(s: np.ndarray, count: np.ndarray) -> np.ndarray:
    """`_nanmedian` of rows already sorted (NaN last)."""
    if s.shape[0] == 0:
        return np.zeros(0)
    c = np.maximum(count, 1)
    rows = np.arange(len(s))
    lo = s[rows, (c - 1) // 2]
    hi = s[rows, c // 2]
    return np.where(count > 0, (lo + hi) / 2.0, np.nan)


class LearnParams(FieldParams, AutoLimitParams):
    limit: Literal["auto"] | None = None   # auto: resolve width / h per sensor (detectors/autolimit.py)
    warmup: int = Field(30, ge=2, le=100000)
    target: float | None = None
    sigma: float | None = Field(None, gt=0)
    severity: Severity = "yellow"


class Learned(FieldDetector):
    """Phase I / phase II: the first `warmup` valid readings estimate mean and sigma (Welford), unless
    `target` and `sigma` are given; the chart runs on the readings after that."""

    params: LearnParams

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

    def learn_series(self, runs: Runs, x, ok):
        """`learn` over a whole batch (runs: each sensor's rows, in time order): (in phase II, mean,
        sigma) per row as it stood before the row, and the phase-I estimates after the batch. Only the
        first `warmup` valid readings of a sensor learn: a loop over their rank (Welford's recursion,
        the same arithmetic as `learn`), vectorized over sensors; phase II reads the frozen estimates."""
        p = self.params
        sens = runs.sensor
        cnt0, mean0, m20 = self.n_[sens], self.mean_[sens], self.m2_[sens]
        before = np.cumsum(ok) - ok
        vb = before - before[runs.first][runs.run]           # valid rows before each row, in its run
        c0 = cnt0[runs.run].astype(np.int64)
        cnt = np.where(c0 >= p.warmup, c0, np.minimum(c0 + vb, p.warmup))
        phase2 = cnt >= p.warmup
        learning = ok & ~phase2
        n = len(x)
        mean_after, m2_after = np.zeros(n), np.zeros(n)
        rows = np.flatnonzero(learning)
        if len(rows):
            sub = Runs(runs.run[rows])
            r = runs.run[rows][sub.first]
            m, q = mean0[r].astype(np.float64), m20[r].astype(np.float64)
            for k in range(int(sub.length.max())):
                live = np.flatnonzero(sub.length > k)
                i = rows[sub.first[live] + k]
                c1 = cnt[i] + 1
                d = x[i] - m[live]
                m1 = m[live] + d / c1
                q[live] = m2_after[i] = q[live] + d * (x[i] - m1)
                m[live] = mean_after[i] = m1
            last = runs.last_where(learning)
            got = last >= 0
            self.n_[sens[got]] = cnt[last[got]] + 1
            self.mean_[sens[got]] = mean_after[last[got]]
            self.m2_[sens[got]] = m2_after[last[got]]
        prev = runs.latest(learning, strict=True)
        mean = np.where(prev >= 0, mean_after[prev], mean0[runs.run])
        m2 = np.where(prev >= 0, m2_after[prev], m20[runs.run])
        mu = np.full(n, p.target) if p.target is not None else mean
        sd = np.full(n, p.sigma) if p.sigma is not None else np.sqrt(m2 / np.maximum(cnt - 1, 1))
        return phase2 & ok, mu, sd


class EwmaParams(LearnParams):
    fixed_limit_key: ClassVar[str] = "width"
    lam: float = Field(0.2, gt=0, le=1)
    width: float = Field(3.0, gt=0)
    hysteresis: float = Field(0.0, ge=0)


class Ewma(Learned):
    """EWMA control chart: z = lam x + (1 - lam) z', alarm when |z - mu| > width sigma sqrt(lam / (2 - lam))
    (asymptotic limits, Montgomery). Score is |z - mu| in units of that sigma."""

    type = "ewma"
    window = "ewma"
    Params = EwmaParams
    params: EwmaParams
    series = True

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
        return self._judge(run, z, mu, sd)

    def evaluate_series(self, view) -> Eval:
        """The EWMA along each sensor's phase-II readings is a first-order linear filter (lfilter with
        the sensor's stored z as initial condition; `ewma_filter`)."""
        x, ok = self.read(view)
        runs = Runs(view.loc)
        run, mu, sd = self.learn_series(runs, x, ok)
        z0 = self.z_[runs.sensor][runs.run]
        z = z0.copy()
        rows = np.flatnonzero(run)
        if len(rows):
            sub = Runs(runs.run[rows])
            first = rows[sub.first]
            init = np.where(np.isnan(z0[first]), mu[first], z0[first])
            z[rows] = ewma_filter(x[rows], sub, self.params.lam, init)
            at = runs.latest(run)
            z = np.where(at >= 0, z[at], z0)
            last = runs.last_where(run)
            got = last >= 0
            self.z_[runs.sensor[got]] = z[last[got]]
        return self._judge(run, z, mu, sd)

    def _judge(self, run, z, mu, sd) -> Eval:
        p = self.params
        # Rounding in the EWMA recursion is not a deviation: a sub-ppb gap from mu counts as none.
        gap = np.abs(z - mu)
        gap = np.where(gap <= 1e-9 * np.maximum(1.0, np.abs(mu)), 0.0, gap)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = gap / (sd * np.sqrt(p.lam / (2 - p.lam)))
        score = np.where(np.isnan(score) & run, np.where(gap == 0, 0.0, np.inf), score)
        raw, held, limits = levels_above(score, [(severity_code(p.severity), p.width)], p.hysteresis)
        return Eval(run, raw, held, z, limits, score)


class CusumParams(LearnParams):
    fixed_limit_key: ClassVar[str] = "h"
    k: float = Field(0.5, ge=0)
    h: float = Field(5.0, gt=0)
    direction: Literal["up", "down", "both"] = "both"
    after_alarm: Literal["hold", "reset"] = "hold"

    @model_validator(mode="after")
    def _reset_needs_h(self) -> CusumParams:
        if self.limit == "auto" and self.after_alarm == "reset":
            raise ValueError("limit: auto goes with after_alarm: hold only (reset restarts S at the limit h, so "
                             "its scores depend on h)")
        return self


class Cusum(Learned):
    """Tabular CUSUM in sigma units (Montgomery): S+ = max(0, S+ + z - k), S- = max(0, S- - z - k) with
    z = (x - mu) / sigma; alarm at S >= h. `after_alarm: hold` keeps the alarm until S is back at 0;
    `reset` restarts S at 0 after each alarm row (the textbook restart)."""

    type = "cusum"
    window = "cusum"
    Params = CusumParams
    params: CusumParams
    series = True
    auto_options = {"held_own": True, "inclusive": True}   # held while S > 0; S >= limit alarms

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
        ev = self._judge(run, hi, lo)
        if p.after_alarm == "reset":
            alarm = ev.raw > 0
            hi, lo = np.where(alarm, 0.0, hi), np.where(alarm, 0.0, lo)
        self.hi_[loc], self.lo_[loc] = hi, lo
        return ev

    def evaluate_series(self, view) -> Eval:
        """S+ and S- along each sensor's phase-II readings are clamped cumulative sums (`clamped_cusum`:
        Lindley's running-minimum form, then exact sums between restarts; with after_alarm: reset, also
        restarted after each alarm row)."""
        x, ok = self.read(view)
        p = self.params
        runs = Runs(view.loc)
        run, mu, sd = self.learn_series(runs, x, ok)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(run, (x - mu) / np.where(sd > 0, sd, np.inf), 0.0)
        hi0, lo0 = self.hi_[runs.sensor][runs.run], self.lo_[runs.sensor][runs.run]
        hi, lo = hi0.copy(), lo0.copy()
        rows = np.flatnonzero(run)
        if len(rows):
            sub = Runs(runs.run[rows])
            first = rows[sub.first]
            hi[rows], lo[rows] = clamped_cusum(z[rows], p.k, sub, hi0[first], lo0[first], p.direction,
                                               p.h if p.after_alarm == "reset" else None)
            at = runs.latest(run)
            hi, lo = np.where(at >= 0, hi[at], hi0), np.where(at >= 0, lo[at], lo0)
        if p.direction == "up":
            lo = np.zeros_like(lo)
        elif p.direction == "down":
            hi = np.zeros_like(hi)
        ev = self._judge(run, hi, lo)
        last = runs.last_where(np.ones(len(x), bool))
        h_end, l_end = hi[last], lo[last]
        if p.after_alarm == "reset":
            alarm = ev.raw[last] > 0
            h_end, l_end = np.where(alarm, 0.0, h_end), np.where(alarm, 0.0, l_end)
        self.hi_[runs.sensor], self.lo_[runs.sensor] = h_end, l_end
        return ev

    def _judge(self, run, hi, lo) -> Eval:
        """Levels of S = max(S+, S-) (before an after_alarm reset: the alarm row shows the S it reached)."""
        p = self.params
        s = np.maximum(hi, lo)
        alarm = s >= p.h
        sev = severity_code(p.severity)
        raw = np.where(alarm, sev, 0).astype(np.int8)
        held = raw if p.after_alarm == "reset" else np.where(s > 0, sev, 0).astype(np.int8)
        limits = np.full((5, len(s)), p.h)
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
    params: FlatlineParams

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
        # With min_change 0 a valid reading always leaves ref at its own value, so the flat run of every
        # row is a run length (`evaluate_series`). With a dead band the next ref depends on the whole path
        # since the last change (a play operator): that recursion steps one reading at a time.
        self.series = self.min_change == 0

    def evaluate(self, view) -> Eval:
        x, ok = self.read(view)
        loc, ts = view.loc, view.ts
        ref, since = self.ref_[loc], self.since_[loc]
        moved = np.isnan(ref) | (np.abs(x - ref) > self.min_change)
        ref = np.where(ok & moved, x, ref)
        since = np.where(ok & moved, ts, since)
        self.ref_[loc] = ref
        self.since_[loc] = since
        return self._judge(ok, ts, ref, since)

    def evaluate_series(self, view) -> Eval:
        """min_change 0: ref before a row is the previous valid value (or the stored ref), a row that
        differs from it starts a flat run, and each row's run started at the latest such row."""
        x, ok = self.read(view)
        ts = view.ts
        runs = Runs(view.loc)
        ref0, since0 = self.ref_[runs.sensor][runs.run], self.since_[runs.sensor][runs.run]
        pv = runs.latest(ok, strict=True)
        before = np.where(pv >= 0, x[pv], ref0)
        moved = ok & (np.isnan(before) | (np.abs(x - before) > self.min_change))
        at = runs.latest(moved)
        ref, since = np.where(at >= 0, x[at], ref0), np.where(at >= 0, ts[at], since0)
        last = runs.last
        self.ref_[runs.sensor], self.since_[runs.sensor] = ref[last], since[last]
        return self._judge(ok, ts, ref, since)

    def _judge(self, ok, ts, ref, since) -> Eval:
        flat_s = np.where(since >= 0, (ts - since) / NS, 0.0)
        raw, held, limits = levels_above(flat_s, [(severity_code(self.params.severity), np.nextafter(self.win_s, -np.inf))], 0.0)
        limits[:] = self.win_s
        return Eval(ok, raw, held, flat_s, limits, flat_s / self.win_s, {"stuck_value": ref})
