"""A contextual k-NN anomaly detector of the KNN-CAD family (Burnaev and Ishimtsev, "Conformalized
density- and distance-based anomaly detection in time-series data", 2016), with bounded per-sensor state.

Each reading closes a window of the last `dim` values of its field (its recent pattern). The window's
non-conformity is its mean distance to its `k` nearest windows among the sensor's last `train` windows;
it is judged against the non-conformities of the sensor's last `calib` readings (the calibration set
of the conformal method): score = non-conformity / their `quantile`, alarm above `limit`. A pattern
the sensor has not shown recently (a spike, a step, a changed daily shape, a stuck value among moving
ones) stands far from every recent window; a pattern that recurs becomes its own neighbour and stops
alarming after `k` repeats.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from config.base import Severity
from detectors.autolimit import AutoLimitParams
from detectors.base import Eval, levels_above, severity_code
from detectors.generic import FieldDetector, FieldParams


class KnnCadParams(FieldParams, AutoLimitParams):
    fixed_limit_key: ClassVar[str] = ""
    dim: int = Field(8, ge=1, le=32)
    train: int = Field(64, ge=2, le=256)
    k: int = Field(3, ge=1, le=16)
    calib: int = Field(128, ge=8, le=512)
    min_calib: int = Field(32, ge=4, le=512)
    quantile: float = Field(0.99, gt=0, le=1)
    limit: Annotated[float, Field(gt=0)] | Literal["auto"] = 2.0   # auto: resolved per sensor (detectors/autolimit.py)
    severity: Severity = "yellow"
    hysteresis: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _sizes(self) -> KnnCadParams:
        if self.k >= self.train:
            raise ValueError(f"k ({self.k}) must be below train ({self.train})")
        if self.min_calib > self.calib:
            raise ValueError(f"min_calib ({self.min_calib}) must not exceed calib ({self.calib})")
        return self


def order_stat(values: np.ndarray, count: np.ndarray, q: float) -> np.ndarray:
    """Per row, the ceil(q count)-th smallest of the non-NaN values (NaN sorts last): an order
    statistic, no interpolation, so the per-reading reference computes the very same number."""
    s = np.sort(values, axis=1)
    i = np.clip(np.ceil(q * count).astype(np.int64) - 1, 0, values.shape[1] - 1)
    return s[np.arange(len(s)), i]


class KnnCad(FieldDetector):
    """knn_cad: conformal k-NN distance of each reading's recent pattern (see the module docstring).

    Known (judged) once the sensor has `dim` values, more than `k` windows and `min_calib`
    non-conformities; every complete window and its non-conformity are learned, alarm or not, so a new
    regime is learned within about `k` readings of it. State per sensor: dim + train x dim + calib
    floats, two ring positions and the level (8 (dim (train + 1) + calib) + 5 bytes, 5.2 kB by default)."""

    type = "knn_cad"
    window = "knn"
    Params = KnnCadParams
    params: KnnCadParams

    def setup(self, shared):
        super().setup(shared)
        p = self.params
        self.window = f"{p.dim} x {p.train} readings"
        self.last_ = np.full((self.n, p.dim), np.nan)           # the last dim values, oldest first
        self.train_ = np.full((self.n, p.train, p.dim), np.nan)  # past windows (ring)
        self.cal_ = np.full((self.n, p.calib), np.nan)           # past non-conformities (ring)
        self.tpos_ = np.zeros(self.n, np.int16)
        self.cpos_ = np.zeros(self.n, np.int16)

    def evaluate(self, view) -> Eval:
        p = self.params
        x, ok = self.read(view)
        loc = view.loc
        win = np.concatenate([self.last_[loc][:, 1:], x[:, None]], axis=1)
        full = ok & np.isfinite(win).all(axis=1)
        train = self.train_[loc]
        have = np.isfinite(train[:, :, 0])
        dist = np.sqrt(((train - win[:, None, :]) ** 2).sum(axis=2))
        dist = np.where(have, dist, np.inf)
        near = np.sort(dist, axis=1)[:, :p.k] if p.train > p.k else dist
        alpha = near.sum(axis=1) / p.k
        cal = self.cal_[loc]
        ccount = np.isfinite(cal).sum(axis=1)
        ref = order_stat(cal, ccount, p.quantile)
        known = full & (have.sum(axis=1) > p.k) & (ccount >= p.min_calib)
        with np.errstate(divide="ignore", invalid="ignore"):
            score = np.where(alpha == 0, 0.0, alpha / ref)
        score = np.where(known, score, np.nan)
        # Learn: the value always; a complete window and its non-conformity (when there is one).
        idx = np.flatnonzero(ok)
        if len(idx):
            li = loc[idx]
            self.last_[li] = win[idx]
            w = idx[full[idx]]
            lw = loc[w]
            self.train_[lw, self.tpos_[lw]] = win[w]
            self.tpos_[lw] = (self.tpos_[lw] + 1) % p.train
            c = w[np.isfinite(alpha[w])]
            lc = loc[c]
            self.cal_[lc, self.cpos_[lc]] = alpha[c]
            self.cpos_[lc] = (self.cpos_[lc] + 1) % p.calib
        fixed = p.limit if p.limit != "auto" else np.inf   # auto: AutoLimit judges the scores
        raw, held, limits = levels_above(score, [(severity_code(p.severity), fixed)], p.hysteresis)
        return Eval(known, raw, held, x, limits, score, {"nonconformity": alpha})
