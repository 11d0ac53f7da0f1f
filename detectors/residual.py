"""pca_residual: the PCA / similarity residual (MSET-style) of several fields of one device, fitted on a
training window or learned online with forgetting, naming the field that breaks the relation (issue 16).

Hotelling's T^2 flags a reading far from the usual level in any direction. The residual flags only a
reading that leaves the usual relation between the fields: the fields, standardized by the learned
means and standard deviations, are projected on the `components` leading principal components of
their learned correlation; what the components cannot explain is the residual r, and
SPE = |r|^2 (the squared prediction error, Q statistic). A louder minute raises Leq, Lmax and L90
together (along the leading component: no residual); Lmax alone far above what Leq and L90 say, or one
field stuck while the others move, leaves the component space (a large SPE).

Limit: Box's approximation SPE ~ g chi2(h), g = theta2 / theta1, h = theta1^2 / theta2, with theta_i
the sums of the i-th powers of the discarded eigenvalues (each floored at EIG_FLOOR), so the limit is
g chi2.ppf(1 - alpha, h) per sensor: it adapts to how tightly the fields moved together in training.

group_residual (below): the same residual over a group of related devices, one field each, on
group_t2's groups, buckets and learning (detectors/group.py), naming the device that leaves the group.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from config.base import Severity
from detectors.base import Eval, LevelDetector, RuleParams, levels_above, severity_code
from detectors.generic import Category
from detectors.group import GroupT2, GroupT2Params
from detectors.multivariate import FieldName, ewm_update

# Relative ridge on the variances: a field constant in training stays standardizable, and a change in
# it is then a very large residual, as it should be.
RIDGE = 1e-9
TINY = 1e-12
# Floor of a discarded eigenvalue of the correlation (whose eigenvalues sum to the number of fields):
# fields that moved exactly together in training keep a finite limit.
EIG_FLOOR = 1e-6


class PcaResidualParams(RuleParams):
    fields: list[FieldName] = Field(min_length=2, max_length=8)
    components: int = Field(1, ge=1, le=7)
    fit: Literal["train", "online"] = "train"
    train: int = Field(100, ge=4, le=100000)
    lam: float = Field(0.01, gt=0, lt=1)
    alpha: float = Field(0.001, gt=0, lt=0.5)
    flags: Literal["n_only", "any"] = "n_only"
    category: Category = "data"
    unit: str = ""
    severity: Severity = "yellow"
    hysteresis: float = Field(0.0, ge=0, lt=1)

    @model_validator(mode="after")
    def _sizes(self) -> PcaResidualParams:
        k = len(self.fields)
        if len(set(self.fields)) != k:
            raise ValueError(f"fields: each field once (got {self.fields})")
        if self.components >= k:
            raise ValueError(f"components ({self.components}) must be fewer than the fields ({k}): "
                             "the residual lives in the components left out")
        if self.train < k + 2:
            raise ValueError(f"train ({self.train}) must be at least the number of fields + 2 ({k + 2}): "
                             "a correlation needs more readings than fields")
        return self


def residual_model(cov: np.ndarray, components: int, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The part of the residual that depends on the learned covariance only, for covariances cov (n, k, k):
    (standard deviations sd (n, k), the eigenvectors vr (n, k, k - components) of the correlation that span
    the residual space, SPE limit (n,)). One batched eigendecomposition: pca_residual caches the result
    per sensor while the covariance stays as it is (`fit: train` after training)."""
    from scipy.stats import chi2

    n, k = cov.shape[:2]
    if n == 0:
        return np.zeros((0, k)), np.zeros((0, k, k - components)), np.zeros(0)
    var = np.diagonal(cov, axis1=1, axis2=2)
    sd = np.sqrt(var + (RIDGE * var.mean(axis=1) + TINY)[:, None])
    corr = cov / (sd[:, :, None] * sd[:, None, :])
    w, v = np.linalg.eigh(corr)                       # ascending: the first k - c span the residual
    lam_r = np.maximum(w[:, : k - components], EIG_FLOOR)
    th1, th2 = lam_r.sum(axis=1), (lam_r * lam_r).sum(axis=1)
    limit = th2 / th1 * chi2.ppf(1.0 - alpha, th1 * th1 / th2)
    return sd, v[:, :, : k - components], limit


def model_spe(x: np.ndarray, mean: np.ndarray, sd: np.ndarray, vr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(SPE, per-field residual r_j^2) of rows x (n, k) against mean (n, k) and a residual_model's sd and
    vr: matrix products only. A row at its mean has SPE 0; a row with a NaN field has SPE NaN."""
    d = x - mean
    z = d / sd
    u = np.einsum("nkr,nk->nr", vr, z)
    r = np.einsum("nkr,nr->nk", vr, u)
    res = r * r
    spe = res.sum(axis=1)
    spe = np.where(np.isfinite(d).all(axis=1), np.where((d == 0).all(axis=1), 0.0, spe), np.nan)
    return spe, res


def spe_scores(x: np.ndarray, mean: np.ndarray, cov: np.ndarray, components: int, alpha: float
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(SPE, per-field residual r_j^2, SPE limit) of rows x (n, k) against mean (n, k) and covariance
    (n, k, k), keeping `components` principal components of the correlation. A row at its mean has
    SPE 0; a row with a NaN field has SPE NaN."""
    n, k = x.shape
    if n == 0:
        return np.zeros(0), np.zeros((0, k)), np.zeros(0)
    sd, vr, limit = residual_model(cov, components, alpha)
    spe, res = model_spe(x, mean, sd, vr)
    return spe, res, limit


class PcaResidual(LevelDetector):
    """pca_residual: SPE of the vector of `fields` of each reading against the device's learned
    correlation structure (see the module docstring). fit `train`: the sensor's first `train` complete
    readings learn the mean and covariance (running means), which then stay fixed; fit `online`: after
    those `train` readings, forgetting `lam` per reading, and a reading is learned only while its SPE is
    within the limit. Nothing is judged in the first `train` complete readings (the warm-up). A reading
    missing any field is missing. Value SPE, limit per sensor, score SPE / limit; context `top_field`
    names the field with the largest residual r_j^2.

    State per sensor: count, mean (k fields), covariance (k x k) and level: 8 (k^2 + k + 1) + 1 bytes."""

    type = "pca_residual"
    kinds = ("noise", "gas", "generic")
    metric = "spe"
    window = "train"
    Params = PcaResidualParams
    params: PcaResidualParams

    def setup(self, shared):
        super().setup(shared)
        p = self.params
        k = len(p.fields)
        self.category = p.category
        self.unit = p.unit
        self.window = (f"first {p.train} readings" if p.fit == "train"
                       else f"{p.train} readings, then ewm {1.0 / p.lam:g} readings")
        self.n_ = np.zeros(self.n, np.int64)            # complete readings learned (saturates at train)
        self.mean_ = np.zeros((self.n, k))
        self.cov_ = np.zeros((self.n, k, k))
        # The eigendecomposition of each sensor's model, cached with the covariance it was computed from
        # (not state: rebuilt from cov_, also after a snapshot is restored; NaN: none yet). With `fit:
        # train` the model is fixed after training, so scoring is matrix products, one eigh per sensor.
        c = k - p.components
        self._model_cov = np.full((self.n, k, k), np.nan)
        self._model_sd = np.ones((self.n, k))
        self._model_vr = np.zeros((self.n, k, c))
        self._model_limit = np.full(self.n, np.nan)

    def _model(self, loc: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sd, vr, limit) of the sensors `loc` (distinct) with covariances `cov`, from the cache where
        a sensor's covariance is the one its cached model was computed from, else computed and cached."""
        p = self.params
        stale = np.flatnonzero(~(self._model_cov[loc] == cov).all(axis=(1, 2)))
        if len(stale):
            s = loc[stale]
            sd, vr, limit = residual_model(cov[stale], p.components, p.alpha)
            self._model_cov[s], self._model_sd[s], self._model_vr[s], self._model_limit[s] = cov[stale], sd, vr, limit
        return self._model_sd[loc], self._model_vr[loc], self._model_limit[loc]

    def evaluate(self, view) -> Eval:
        p = self.params
        k = len(p.fields)
        x = np.stack([view.col(f) for f in p.fields], axis=1) if len(view) else np.zeros((0, k))
        ok = np.isfinite(x).all(axis=1)
        if p.flags == "n_only":
            ok &= view.quality == 0
        loc = view.loc
        cnt, mean, cov = self.n_[loc], self.mean_[loc], self.cov_[loc]
        run = ok & (cnt >= p.train)
        # Only readings past the training window are scored: the others are neither judged nor gated.
        spe, res, limit = np.full(len(x), np.nan), np.full((len(x), k), np.nan), np.full(len(x), np.nan)
        j = np.flatnonzero(run)
        if len(j):
            sd, vr, limit[j] = self._model(loc[j], cov[j])
            spe[j], res[j] = model_spe(x[j], mean[j], sd, vr)
        learn = ok & (cnt < p.train)
        if p.fit == "online":
            learn |= ok & (spe <= limit)
        a = np.where(cnt < p.train, 1.0 / (cnt + 1.0), p.lam)
        mean1, cov1 = ewm_update(x, mean, cov, a)
        self.mean_[loc] = np.where(learn[:, None], mean1, mean)
        self.cov_[loc] = np.where(learn[:, None, None], cov1, cov)
        self.n_[loc] = np.where(learn, np.minimum(cnt + 1, p.train), cnt)
        raw, held, limits = levels_above(spe, [(severity_code(p.severity), limit)], p.hysteresis * limit)
        names = np.array(p.fields, object)
        top = names[np.argmax(np.where(np.isfinite(res), res, -np.inf), axis=1)] if len(x) else names[:0]
        return Eval(run, raw, held, spe, limits, spe / limit, {"top_field": top})


# ----- over a group of related devices ----------------------------------------------------------------

# Diagonal of an absent member's row and column in the padded correlation: an eigenvalue below any of the
# present block's, so its eigenvector (its own axis, where the deviation is 0) sorts first and is skipped.
ABSENT = -1e3


class GroupResidualParams(GroupT2Params):
    components: int = Field(1, ge=1, le=31)
    fit: Literal["online", "train"] = "online"

    @model_validator(mode="after")
    def _components(self) -> GroupResidualParams:
        if self.min_present <= self.components:
            raise ValueError(f"min_present ({self.min_present}) must exceed components ({self.components}): "
                             "the residual lives in the components left out")
        return self


def masked_model(present: np.ndarray, cov: np.ndarray, components: int, alpha: float, fixed: float | None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The part of masked_spe that depends on the present members and the covariance only, for rows of
    present (n, k) and cov (n, k, k): (sd (n, k), eigenvectors v (n, k, k), residual-space mask (n, k) over
    v's columns, limit (n,)). One batched eigendecomposition: group_residual caches it per group while the
    members judged and the covariance stay as they are."""
    from scipy.stats import chi2

    n, k = present.shape
    var = np.diagonal(cov, axis1=1, axis2=2)
    sd = np.sqrt(var + RIDGE * var + TINY)
    both = present[:, :, None] & present[:, None, :]
    eye = np.eye(k, dtype=bool)
    corr = np.where(both, cov / (sd[:, :, None] * sd[:, None, :]), np.where(eye, ABSENT, 0.0))
    w, v = np.linalg.eigh(corr)
    npres = present.sum(axis=1)
    m = np.arange(k)
    resid = (m[None, :] >= (k - npres)[:, None]) & (m[None, :] < k - components)
    ok = npres > components
    lam_r = np.where(resid, np.maximum(w, EIG_FLOOR), 0.0)
    th1, th2 = lam_r.sum(axis=1), (lam_r * lam_r).sum(axis=1)
    if fixed is not None:
        limit = np.where(ok, float(fixed), np.nan)
    else:
        with np.errstate(invalid="ignore", divide="ignore"):
            limit = np.where(ok, th2 / th1 * chi2.ppf(1.0 - alpha, np.where(ok, th1 * th1 / th2, 1.0)), np.nan)
    return sd, v, resid, limit


def masked_model_spe(x: np.ndarray, present: np.ndarray, mean: np.ndarray, sd: np.ndarray, v: np.ndarray,
                     resid: np.ndarray, components: int) -> tuple[np.ndarray, np.ndarray]:
    """(SPE, per-member standardized residual r_j) of rows x (n, k) against mean (n, k) and a
    masked_model's sd, v and resid: matrix products only."""
    d = np.where(present, x - mean, 0.0)
    z = d / sd
    u = np.where(resid, np.einsum("nkm,nk->nm", v, z), 0.0)
    r = np.einsum("nkm,nm->nk", v, u)
    spe = np.where(present, r * r, 0.0).sum(axis=1)
    ok = present.sum(axis=1) > components
    spe = np.where(ok, np.where((d == 0).all(axis=1), 0.0, spe), np.nan)
    return spe, np.where(present, r, np.nan)


def masked_spe(x: np.ndarray, present: np.ndarray, mean: np.ndarray, cov: np.ndarray, components: int,
               alpha: float, fixed: float | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(SPE, per-member standardized residual r_j, limit) of rows x (n, k) over their present members:
    the correlation of the present members, padded to k x k with ABSENT on the absent members' diagonal,
    keeps its `components` leading components; the residual space is spanned by the present block's other
    eigenvectors. r_j is NaN for absent members; rows with `components` or fewer present give NaN."""
    n, k = x.shape
    if n == 0:
        return np.zeros(0), np.zeros((0, k)), np.zeros(0)
    sd, v, resid, limit = masked_model(present, cov, components, alpha, fixed)
    spe, r = masked_model_spe(x, present, mean, sd, v, resid, components)
    return spe, r, limit


class GroupResidual(GroupT2):
    """group_residual: the PCA residual of a group's aligned readings of one `field` (group_t2's groups,
    buckets, closing, missing members, warm-up, forgetting and learning gate; detectors/group.py): the
    members' deviations, standardized, projected off the `components` leading components of their learned
    correlation. Flags a device that leaves what the group does together (one monitor loud while its site is
    quiet); a change all members share (the site starts work, the district's demand rises) is along the
    leading component and does not flag (group_t2 flags that too). Value SPE, limit Box's chi-square from
    the left-out eigenvalues (or `limit`, in SPE), score SPE / limit; context `top_device` the member with
    the largest residual, `top_z` that residual in the member's own standard deviations (its common swing
    included, so smaller than group_t2's). fit `online` (default): learning as group_t2's; fit `train`:
    each mean and pair covariance is fixed once past its `warmup` buckets (a member joining later still
    learns its own), so the model of a group whose members all report is fixed after the warm-up and its
    buckets are scored by matrix products (the eigendecomposition is cached per group with the covariance
    and members it was computed from, not state: rebuilt after a snapshot is restored). State as
    group_t2."""

    type = "group_residual"
    metric = "group_spe"
    Params = GroupResidualParams
    params: GroupResidualParams

    def setup(self, shared):
        super().setup(shared)
        p, g, k = self.params, len(self.names), self.k
        if p.fit == "train":
            self.window = f"{p.bucket_s} s buckets, first {p.warmup} buckets"
        self._model_cov = np.full((g, k, k), np.nan)
        self._model_present = np.zeros((g, k), bool)
        self._model_sd = np.ones((g, k))
        self._model_v = np.zeros((g, k, k))
        self._model_resid = np.zeros((g, k), bool)
        self._model_limit = np.full(g, np.nan)
        self._judging: np.ndarray = np.zeros(0, np.int64)

    def _judge_once(self, g, key, sums, cnts):
        self._judging = g  # the groups of this bucket, for the cached models (_statistic)
        if self.params.fit == "online":
            return super()._judge_once(g, key, sums, cnts)
        ready = self.cnt_[g] >= self.warm[g][:, None, None]
        mean0, cov0 = self.mean_[g], self.cov_[g]
        found = super()._judge_once(g, key, sums, cnts)
        # fit: train: an entry past its warm-up keeps what it learned (group_t2 would go on with forgetting).
        self.mean_[g] = np.where(np.diagonal(ready, axis1=1, axis2=2), mean0, self.mean_[g])
        self.cov_[g] = np.where(ready, cov0, self.cov_[g])
        return found

    def _statistic(self, x, elig, mean, cov, npres):
        p, k = self.params, self.k
        spe, r, limit = np.full(len(x), np.nan), np.full((len(x), k), np.nan), np.full(len(x), np.nan)
        # Only buckets with enough judged members can be judged; the others learn whatever their SPE.
        j = np.flatnonzero(npres >= p.min_present)
        if len(j) == 0:
            return spe, r, limit
        g, elig, cov = self._judging[j], elig[j], cov[j]
        stale = np.flatnonzero(~((self._model_cov[g] == cov).all(axis=(1, 2))
                                 & (self._model_present[g] == elig).all(axis=1)))
        if len(stale):
            s = g[stale]
            sd, v, resid, lim = masked_model(elig[stale], cov[stale], p.components, p.alpha, p.limit)
            self._model_cov[s], self._model_present[s] = cov[stale], elig[stale]
            self._model_sd[s], self._model_v[s], self._model_resid[s], self._model_limit[s] = sd, v, resid, lim
        spe[j], r[j] = masked_model_spe(x[j], elig, mean[j], self._model_sd[g], self._model_v[g],
                                        self._model_resid[g], p.components)
        limit[j] = self._model_limit[g]
        return spe, r, limit
