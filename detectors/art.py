"""A contextual detector of the ARTime family (Hampton, "ARTime: adaptive resonance theory for time
series anomaly detection", 2021: the recent window of a series matched against categories learned by a
fuzzy ART network; Carpenter, Grossberg and Rosen, "Fuzzy ART", 1991), with bounded per-sensor state.

Each reading closes a window of the last `dim` values of its field, scaled to [0, 1] by the range the
sensor showed in its warm-up (padded by `margin` of it on each side, clipped beyond) and complement coded
(I = [f, 1 - f], so |I| = dim). Categories are weight vectors w; a window matches one by
m = |I ^ w| / |I| (^: element-wise minimum) and chooses among those that match at least the vigilance
`rho` by T = |I ^ w| / (0.001 + |w|). The chosen category resonates and learns (w <- beta (I ^ w) +
(1 - beta) w); a window no category matches commits a new one (w = I), or replaces the least recently
used when all `categories` are taken. Score = (1 - best m) / (1 - rho): above 1 no learned pattern
resonates: a new shape of the recent values (a spike, a step, a changed cycle, a stuck value among
moving ones). A new pattern that recurs finds its own category and stops alarming.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from config.base import Severity
from detectors.base import Eval, levels_above, severity_code
from detectors.generic import FieldDetector, FieldParams

CHOICE = 0.001  # the choice parameter (alpha in Fuzzy ART): small, so T prefers the closest category


class FuzzyArtParams(FieldParams):
    dim: int = Field(8, ge=1, le=32)
    categories: int = Field(32, ge=2, le=128)
    # 0.75: on a noisy daily-like cycle (48 readings, noise 5 % of the swing) about 0.35 % of readings
    # alarm; 0.9 about 1 % (finer categories: more windows fall outside all of them).
    rho: float = Field(0.75, gt=0, lt=1)
    beta: float = Field(0.1, gt=0, le=1)
    warmup: int = Field(100, ge=2, le=100000)
    margin: float = Field(0.1, ge=0, le=10)
    limit: float = Field(1.0, gt=0)
    severity: Severity = "yellow"
    hysteresis: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _sizes(self) -> FuzzyArtParams:
        if self.warmup < self.dim:
            raise ValueError(f"warmup ({self.warmup}) must be at least dim ({self.dim})")
        return self


def art_features(win: np.ndarray, lo: np.ndarray, hi: np.ndarray, margin: float) -> np.ndarray:
    """Complement-coded windows (n, 2 dim): each window scaled to [0, 1] by its sensor's warm-up range
    [lo, hi] widened by `margin` of its span on each side, clipped; a range of one value scales by 1."""
    span = hi - lo
    scale = np.where(span > 0, span * (1.0 + 2.0 * margin), 1.0)
    f = np.clip((win - (lo - margin * span)[:, None]) / scale[:, None], 0.0, 1.0)
    return np.concatenate([f, 1.0 - f], axis=1)


class FuzzyArt(FieldDetector):
    """fuzzy_art: fuzzy ART match of each reading's recent window (see the module docstring).

    The first `warmup` valid readings learn the range and categories and are not judged; after that a
    reading is judged once its window is full (every valid reading is learned, alarm or not). A missing
    or flagged reading is not judged and leaves the state as it is. State per sensor: the window, the
    range, categories x 2 dim weights, their last use, counters and the level:
    8 dim + 16 + categories (16 dim + 4) + 9 bytes (4.3 kB by default)."""

    type = "fuzzy_art"
    window = "art"
    Params = FuzzyArtParams
    params: FuzzyArtParams

    def setup(self, shared):
        super().setup(shared)
        p = self.params
        self.window = f"{p.dim} readings, {p.categories} categories"
        self.last_ = np.full((self.n, p.dim), np.nan)                 # the last dim values, oldest first
        self.lo_ = np.full(self.n, np.inf)
        self.hi_ = np.full(self.n, -np.inf)
        self.w_ = np.zeros((self.n, p.categories, 2 * p.dim))        # category weights
        self.seen_ = np.zeros((self.n, p.categories), np.int32)       # last use (valid-reading count)
        self.used_ = np.zeros(self.n, np.int32)                       # categories committed
        self.cnt_ = np.zeros(self.n, np.int32)                        # valid readings: the LRU clock

    def evaluate(self, view) -> Eval:
        p = self.params
        x, ok = self.read(view)
        loc = view.loc
        n = len(x)
        cnt = self.cnt_[loc]
        judged_phase = cnt >= p.warmup
        tick = np.minimum(cnt + 1, np.iinfo(np.int32).max - 1)
        lo = np.where(ok & ~judged_phase, np.minimum(self.lo_[loc], x), self.lo_[loc])
        hi = np.where(ok & ~judged_phase, np.maximum(self.hi_[loc], x), self.hi_[loc])
        win = np.concatenate([self.last_[loc][:, 1:], x[:, None]], axis=1)
        full = ok & np.isfinite(win).all(axis=1)
        score = np.full(n, np.nan)
        idx = np.flatnonzero(full)
        if len(idx):
            li = loc[idx]
            feat = art_features(win[idx], lo[idx], hi[idx], p.margin)
            w = self.w_[li]
            used = np.arange(p.categories)[None, :] < self.used_[li][:, None]
            inter = np.minimum(feat[:, None, :], w).sum(axis=2)
            match = np.where(used, inter / p.dim, -np.inf)
            choice = np.where(used & (match >= p.rho), inter / (CHOICE + w.sum(axis=2)), -np.inf)
            best = np.max(match, axis=1) if p.categories else np.zeros(len(idx))
            best = np.where(np.isfinite(best), best, 0.0)
            score[idx] = (1.0 - best) / (1.0 - p.rho)
            res = np.isfinite(choice).any(axis=1)
            j = np.argmax(choice, axis=1)
            r = np.flatnonzero(res)
            self.w_[li[r], j[r]] = p.beta * np.minimum(feat[r], w[r, j[r]]) + (1.0 - p.beta) * w[r, j[r]]
            new = np.flatnonzero(~res)
            room = self.used_[li[new]] < p.categories
            slot = np.where(room, self.used_[li[new]], np.argmin(self.seen_[li[new]], axis=1))
            self.w_[li[new], slot] = feat[new]
            self.used_[li[new]] = np.where(room, self.used_[li[new]] + 1, self.used_[li[new]])
            chosen = np.where(res, j, 0)
            chosen[new] = slot
            self.seen_[li, chosen] = tick[idx]
        okx = np.flatnonzero(ok)
        if len(okx):
            lk = loc[okx]
            self.last_[lk] = win[okx]
            self.lo_[lk], self.hi_[lk] = lo[okx], hi[okx]
            self.cnt_[lk] = tick[okx]
        known = full & judged_phase
        score = np.where(known, score, np.nan)
        raw, held, limits = levels_above(score, [(severity_code(p.severity), p.limit)], p.hysteresis)
        return Eval(known, raw, held, x, limits, score)
