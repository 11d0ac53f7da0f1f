"""Multivariate detectors: Hotelling's T^2 over several fields of one device, learned online with
forgetting, naming the field that contributes most (issue 16, item 1).

A noise monitor's Leq, Lmax and L90 move together (a louder minute raises all three); a reading where
they disagree (Lmax far above what Leq and L90 say, L90 up while Leq is not) is an anomaly no
single-field rule sees. T^2 = d' S^-1 d with d = x - mean, mean and covariance S exponentially weighted.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import Field, model_validator

from config.base import Severity
from detectors.autolimit import AutoLimit, AutoLimitParams
from detectors.base import Eval, LevelDetector, levels_above, severity_code
from detectors.generic import Category

# Relative ridge on the covariance diagonal: a field constant so far (variance 0) stays invertible;
# a change in it is then a very large T^2, as it should be.
RIDGE = 1e-9
TINY = 1e-12


FieldName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")]


class HotellingParams(AutoLimitParams):
    fixed_limit_key: ClassVar[str] = ""
    fields: list[FieldName] = Field(min_length=2, max_length=8)
    flags: Literal["n_only", "any"] = "n_only"
    category: Category = "data"
    unit: str = ""
    lam: float = Field(0.01, gt=0, lt=1)
    warmup: int = Field(50, ge=4, le=100000)
    alpha: float = Field(0.001, gt=0, lt=0.5)
    # auto: the alarm limit is resolved per sensor from training T^2 (detectors/autolimit.py); learning
    # keeps the alpha limit as its gate (a reading beyond it is not learned)
    limit: Annotated[float, Field(gt=0)] | Literal["auto"] | None = None
    severity: Severity = "yellow"
    hysteresis: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _fields(self) -> HotellingParams:
        if len(set(self.fields)) != len(self.fields):
            raise ValueError(f"fields: each field once (got {self.fields})")
        if self.warmup < len(self.fields) + 2:
            raise ValueError(f"warmup ({self.warmup}) must be at least the number of fields + 2 "
                             f"({len(self.fields) + 2}): a covariance needs more readings than fields")
        return self


def t2_limit(params: HotellingParams) -> float:
    """The T^2 limit: `limit`, else the chi-square (1 - alpha) quantile with one degree of freedom per
    field (T^2 of a normal vector with known mean and covariance; with a learned covariance T^2 runs a
    little wider, so alpha is a lower bound of the false-alarm rate per reading)."""
    if params.limit is not None and params.limit != "auto":
        return float(params.limit)
    from scipy.stats import chi2

    return float(chi2.ppf(1.0 - params.alpha, len(params.fields)))


class Hotelling(LevelDetector):
    """hotelling_t2: T^2 of the vector of `fields` of each reading against the device's exponentially
    weighted mean and covariance (forgetting factor `lam` per reading: a memory of about 1/lam
    readings). The first `warmup` complete readings learn (running means) and are not judged; after
    that a reading is judged, and learned only while its T^2 is within the limit (an anomaly does not
    teach itself in). A reading missing any field is missing. Score T^2 / limit; context `top_field`
    names the field with the largest share d_j (S^-1 d)_j of T^2.

    State per sensor: count, mean (k fields), covariance (k x k) and level: 8 (k^2 + k + 1) + 1 bytes."""

    type = "hotelling_t2"
    kinds = ("noise", "gas", "generic")
    metric = "t2"
    window = "ewm"
    Params = HotellingParams
    params: HotellingParams

    def setup(self, shared):
        super().setup(shared)
        p = self.params
        k = len(p.fields)
        self.category = p.category
        self.unit = p.unit
        self.limit = t2_limit(p)
        self.auto = AutoLimit.of(self, scale=self.limit)   # scores are T^2 / limit: limits in T^2 units
        self.window = f"ewm {1.0 / p.lam:g} readings"
        self.n_ = np.zeros(self.n, np.int64)            # complete readings learned (saturates at warmup)
        self.mean_ = np.zeros((self.n, k))
        self.cov_ = np.zeros((self.n, k, k))

    def read(self, view) -> tuple[np.ndarray, np.ndarray]:
        x = np.stack([view.col(f) for f in self.params.fields], axis=1) if len(view) else np.zeros((0, len(self.params.fields)))
        ok = np.isfinite(x).all(axis=1)
        if self.params.flags == "n_only":
            ok &= view.quality == 0
        # numpy stubs: all(axis=1) may be a scalar; over a 2-D array it is a 1-D array.
        return x, ok  # type: ignore[return-value]

    def evaluate(self, view) -> Eval:
        p = self.params
        x, ok = self.read(view)
        loc = view.loc
        cnt, mean, cov = self.n_[loc], self.mean_[loc], self.cov_[loc]
        t2, share = t2_scores(x, mean, cov)
        run = ok & (cnt >= p.warmup)
        t2 = np.where(run, t2, np.nan)
        learn = ok & ((cnt < p.warmup) | (t2 <= self.limit))
        a = np.where(cnt < p.warmup, 1.0 / (cnt + 1.0), p.lam)
        mean1, cov1 = ewm_update(x, mean, cov, a)
        self.mean_[loc] = np.where(learn[:, None], mean1, mean)
        self.cov_[loc] = np.where(learn[:, None, None], cov1, cov)
        self.n_[loc] = np.where(learn, np.minimum(cnt + 1, p.warmup), cnt)
        raw, held, limits = levels_above(t2, [(severity_code(p.severity), self.limit)], p.hysteresis)
        names = np.array(p.fields, object)
        top = names[np.argmax(np.where(np.isfinite(share), share, -np.inf), axis=1)] if len(x) else names[:0]
        return Eval(run, raw, held, t2, limits, t2 / self.limit, {"top_field": top})


def t2_scores(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T^2, per-field shares of it) of rows x (n, k) against mean (n, k) and covariance (n, k, k).
    A row at its mean is T^2 = 0 whatever the covariance; NaN rows give NaN."""
    n, k = x.shape
    if n == 0:
        return np.zeros(0), np.zeros((0, k))
    d = x - mean
    scale = np.trace(cov, axis1=1, axis2=2) / k
    reg = cov + (RIDGE * scale + TINY)[:, None, None] * np.eye(k)
    ok = np.isfinite(d).all(axis=1)
    sol = np.zeros_like(d)
    if ok.any():
        sol[ok] = np.linalg.solve(reg[ok], d[ok][:, :, None])[:, :, 0]
    share = d * sol
    t2 = share.sum(axis=1)
    t2 = np.where(ok, np.where((d == 0).all(axis=1), 0.0, np.maximum(t2, 0.0)), np.nan)
    return t2, share


def ewm_update(x, mean, cov, a):
    """Exponentially weighted mean and covariance after rows x with weights a (per row): the running
    mean and covariance while a = 1 / count."""
    d = x - mean
    mean1 = mean + a[:, None] * d
    cov1 = (1.0 - a)[:, None, None] * (cov + a[:, None, None] * d[:, :, None] * d[:, None, :])
    return mean1, cov1
