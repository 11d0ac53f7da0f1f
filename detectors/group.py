"""group_t2: Hotelling's T^2 over a group of related devices (a site's monitors, the gas sensors of one
pressure class in a district), aligned by event-time bucket, vectorized over groups (issue 16, item 1).

The devices of a group share what drives them (a site's construction schedule, a district's gas demand):
each moves with the others. A device that leaves that relation (one monitor loud while its neighbours
are quiet, one regulator's pressure sagging while its district's follow the demand) gives a large T^2
even while it stays inside its own usual range, which no single-device rule sees. The row names the
device that contributes most.

Alignment. A reading at event time t belongs to bucket k = ceil(t / bucket_s) - 1, the interval
(k bucket_s, (k + 1) bucket_s] (the convention of aggregated readings: stamped with the interval end); a
member's value in a bucket is the mean of its valid readings there. A bucket is judged once it is
closed, which happens when
  - every member has a reading (valid or not) in a later bucket: the bucket is complete, nothing more
    can come for it (each device's readings arrive in time order); or
  - some member is `max_open` buckets further on: a member that lags that far is treated as absent (and
    a reading of it for a closed bucket is dropped: it is late); or
  - the event-time watermark (`RuleSet.advance`) is `grace_s` past the bucket's end, unless a member's
    readings still wait in the caller's queue.
So the rule's findings come in event-time order per group, at most `max_open` buckets behind the
group's freshest device, and a batch split anywhere in event-time order gives the same findings as one
batch (the first two conditions depend only on what the readings say).

Missing members, honestly: a member without a valid reading in a bucket is absent from it; nothing is
imputed. The mean of each member and the covariance of each pair are learned from the buckets where
they are present (a pairwise-available estimate), each with its own count: a member that never
reports (a device not yet installed, one that died) simply takes no part, and one that joins later
has its own warm-up (its cross-covariances start biased low while the group's level drifts, learned
against means of different spans, and settle within about 1 / lam buckets: a joiner is judged
leniently at first, never harshly). A bucket is judged on its present members that are past their warm-up (every
pair of them too), when there are at least `min_present` of them: T^2 of that sub-vector against the
sub-block of the mean and covariance (the marginal of the learned distribution), with the chi-square
limit for that many degrees of freedom. The context says how many members were judged (`present`).

Learning. Each entry's first `warmup` buckets (at least members + 2) learn running means; after that,
mean and covariance are exponentially weighted (forgetting `lam` per bucket), and a judged bucket is
learned only while its T^2 is within the limit (an anomaly does not teach itself in). Groups with more
than `max_members` devices are split into balanced chunks of devices in inventory order; a group (or
chunk) of one device is not judged.

Output. A group has one level (with hysteresis). Its rows go to one member: the top contributor of the
bucket where the episode started, until it clears; the row's time is the bucket's end, its value T^2,
its score T^2 / limit, and its context names the group, the device contributing most now
(`top_device`, with `top_z`: its deviation from what the other members predict for it, in standard
deviations; z^2 is how much T^2 drops without it) and how many members were present.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from config.base import Severity
from core import Detections
from detectors.base import Detector, RuleParams, severity_code
from detectors.calendar import NS
from detectors.generic import Category
from detectors.multivariate import FieldName

# Ridge relative to each member's own variance on the diagonal: a member constant so far stays
# invertible, and a change in it is then a very large T^2, as it should be.
RIDGE = 1e-9
TINY = 1e-12
NEVER = np.iinfo(np.int64).min // 2

GroupBy = Literal["site", "site_class", "district", "district_class", "all"]


class GroupT2Params(RuleParams):
    field: FieldName
    group_by: GroupBy = "site"
    flags: Literal["n_only", "any"] = "n_only"
    category: Category = "data"
    unit: str = ""
    bucket_s: int = Field(60, ge=1, le=86400)
    max_open: int = Field(16, ge=1, le=1024)
    grace_s: int = Field(600, ge=0, le=7 * 86400)
    max_members: int = Field(12, ge=2, le=32)
    min_present: int = Field(2, ge=1, le=32)
    lam: float = Field(0.01, gt=0, lt=1)
    warmup: int = Field(60, ge=4, le=100000)
    alpha: float = Field(0.001, gt=0, lt=0.5)
    limit: float | None = Field(None, gt=0)
    severity: Severity = "yellow"
    hysteresis: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _sizes(self) -> GroupT2Params:
        if self.min_present > self.max_members:
            raise ValueError(f"min_present ({self.min_present}) must not exceed max_members ({self.max_members})")
        return self


def group_keys(cfg, devices: list[int], group_by: str) -> list[tuple | None]:
    """The group key of each device (None: in no group; a device without a site for the site and
    district keys). Pressure classes split `*_class` groups; a noise monitor's class is None."""
    district = {s.id: s.district for s in cfg.sites}
    out: list[tuple | None] = []
    for i in devices:
        d = cfg.devices[i]
        if group_by == "all":
            out.append(("all",))
        elif d.site is None:
            out.append(None)
        elif group_by == "site":
            out.append((d.site,))
        elif group_by == "site_class":
            out.append((d.site, d.pressure_class))
        elif group_by == "district":
            out.append((district[d.site],))
        else:
            out.append((district[d.site], d.pressure_class))
    return out


def build_groups(keys: list[tuple | None], max_members: int) -> list[tuple[str, list[int]]]:
    """(name, member positions) of each group of two or more, in order of first member; a group above
    `max_members` is split into balanced chunks of consecutive members (`name#1`, `name#2`, ...)."""
    by: dict[tuple, list[int]] = {}
    for pos, k in enumerate(keys):
        if k is not None:
            by.setdefault(k, []).append(pos)
    out = []
    for k, members in by.items():
        name = "/".join(str(x) for x in k if x is not None)
        parts = -(-len(members) // max_members)
        chunks = np.array_split(np.array(members), parts)
        for j, c in enumerate(chunks):
            if len(c) >= 2:
                out.append((name if parts == 1 else f"{name}#{j + 1}", [int(x) for x in c]))
    return out


def group_limits(params: GroupT2Params, k: int) -> np.ndarray:
    """The T^2 limit for 0..k present members: `limit`, else the chi-square 1 - alpha quantile with one
    degree of freedom per present member (NaN for 0)."""
    if params.limit is not None:
        out = np.full(k + 1, float(params.limit))
    else:
        from scipy.stats import chi2

        out = np.r_[np.nan, chi2.ppf(1.0 - params.alpha, np.arange(1, k + 1))]
    out[0] = np.nan
    return out


def masked_t2(x: np.ndarray, present: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T^2, per-member z) of rows x (n, k) over their present members only: the absent members' rows
    and columns of the covariance become the identity and their deviation 0, so the inverse is that of
    the present sub-block. z_j = (S^-1 d)_j / sqrt((S^-1)_jj) is member j's deviation from what the
    other present members predict for it, in standard deviations; z_j^2 is how much T^2 drops without
    j (NaN for absent members). Rows with no member present give T^2 = NaN."""
    n, k = x.shape
    if n == 0:
        return np.zeros(0), np.zeros((0, k))
    d = np.where(present, x - mean, 0.0)
    both = present[:, :, None] & present[:, None, :]
    eye = np.eye(k, dtype=bool)
    diag = np.diagonal(cov, axis1=1, axis2=2)
    reg = np.where(both, cov + eye * (RIDGE * diag + TINY)[:, None, :], np.where(eye, 1.0, 0.0))
    inv = np.linalg.inv(reg)
    sol = (inv @ d[:, :, None])[:, :, 0]
    t2 = (d * sol).sum(axis=1)
    t2 = np.where(present.any(axis=1), np.where((d == 0).all(axis=1), 0.0, np.maximum(t2, 0.0)), np.nan)
    # A pairwise-learned covariance need not be positive definite: the floor keeps z finite.
    z = np.where(present, sol / np.sqrt(np.maximum(np.diagonal(inv, axis1=1, axis2=2), TINY)), np.nan)
    return t2, z


class GroupT2(Detector):
    """group_t2: T^2 of a group's aligned readings of one `field` (see the module docstring).

    State: per member sensor the newest bucket it reached (8 bytes); per group the mean (k), covariance
    (k x k), learned-bucket counts per pair (k x k, int32), last closed bucket, level, reporting member,
    and `max_open` open buckets of a key and k sums and counts: 12 k^2 + 8 k + 13 + max_open (8 + 12 k)
    bytes per group, k the largest group's size (sites of 3 monitors with the defaults: 849 B per group,
    291 B per device with its 8). Sensors in no group cost their 8 bytes."""

    type = "group_t2"
    kinds = ("noise", "gas", "generic")
    metric = "group_t2"
    window = "group"
    batchwise = True  # it takes each batch whole (step_batch): a bucket needs every member's readings
    Params = GroupT2Params
    params: GroupT2Params

    def setup(self, shared):
        p = self.params
        self.category = p.category
        self.unit = p.unit
        self.bucket_ns = p.bucket_s * NS
        cfg = self.inv.cfg
        groups = build_groups(group_keys(cfg, [int(i) for i in self.sensors], p.group_by), p.max_members)
        self.names = [g[0] for g in groups]
        g = len(groups)
        k = max((len(m) for _, m in groups), default=2)
        self.k = k
        self.window = f"{p.bucket_s} s buckets, ewm {1.0 / p.lam:g} buckets"
        # Local sensor -> (group, member slot); -1 where the sensor is in no group.
        self.gid = np.full(self.n, -1, np.int64)
        self.slot = np.full(self.n, -1, np.int64)
        self.members = np.full((g, k), -1, np.int64)      # local sensor index of each slot, -1 = padding
        for j, (_, m) in enumerate(groups):
            self.gid[m] = j
            self.slot[m] = np.arange(len(m))
            self.members[j, :len(m)] = m
        self.size = (self.members >= 0).sum(axis=1)
        self.pad = self.members < 0
        self.warm = np.maximum(p.warmup, self.size + 2)
        self.limits = group_limits(p, k)
        self.ids = np.array(self.inv.ids, object)
        self.last_ = np.full(self.n, NEVER, np.int64)      # newest bucket each member reached
        self.mean_ = np.zeros((g, k))
        self.cov_ = np.zeros((g, k, k))
        self.cnt_ = np.zeros((g, k, k), np.int32)          # buckets learned per member pair (saturates at warm)
        self.done_ = np.full(g, NEVER, np.int64)           # buckets up to this one are closed
        self.level_ = np.zeros(g, np.int8)
        self.anchor_ = np.full(g, -1, np.int32)            # member slot the open episode is reported on
        self.okey_ = np.full((g, p.max_open), NEVER, np.int64)   # open buckets (NEVER: free)
        self.osum_ = np.zeros((g, p.max_open, k))
        self.ocnt_ = np.zeros((g, p.max_open, k), np.int32)

    # ----- input ---------------------------------------------------------------------------------
    def step(self, view):
        return self.step_batch(view)

    def step_batch(self, view) -> Detections | None:
        loc = view.loc
        grp = self.gid[loc]
        mine = np.flatnonzero(grp >= 0)
        if len(mine) == 0:
            return None
        loc, grp = loc[mine], grp[mine]
        ts = view.ts[mine]
        key = (ts - 1) // self.bucket_ns
        x = view.col(self.params.field)[mine]
        ok = np.isfinite(x)
        if self.params.flags == "n_only":
            ok &= view.quality[mine] == 0
        # Progress counts every reading, valid or not: a device that reports NaN is alive and past.
        np.maximum.at(self.last_, loc, key)
        live = key > self.done_[grp]       # a reading for a closed bucket is late: dropped
        use = np.flatnonzero(live & ok)
        return self._merge(grp[use], self.slot[loc[use]], key[use], x[use])

    def _merge(self, grp, slot, key, x) -> Detections | None:
        """Add readings to the open buckets, then judge every bucket that closes."""
        b, k = self.okey_.shape[1], self.k
        # Open buckets and the new readings' buckets as (group, key) pairs.
        og, ob = np.nonzero(self.okey_ != NEVER)
        allg = np.r_[og, grp]
        allk = np.r_[self.okey_[og, ob], key]
        if len(allg) == 0:
            return None
        order = np.lexsort((allk, allg))
        sg, sk = allg[order], allk[order]
        first = np.r_[True, (sg[1:] != sg[:-1]) | (sk[1:] != sk[:-1])]
        pid = np.cumsum(first) - 1
        inv = np.empty(len(order), np.int64)
        inv[order] = pid
        npair = int(pid[-1]) + 1
        pg, pk = sg[first], sk[first]
        sums: np.ndarray = np.zeros(npair * k)  # (npair, k) once summed
        cnts: np.ndarray = np.zeros(npair * k, np.int64)
        no = len(og)
        if no:
            old = inv[:no]
            flat = (old[:, None] * k + np.arange(k)).ravel()
            sums += np.bincount(flat, self.osum_[og, ob].ravel(), npair * k)
            cnts += np.bincount(flat, self.ocnt_[og, ob].ravel(), npair * k).astype(np.int64)
        if len(grp):
            flat = inv[no:] * k + slot
            sums += np.bincount(flat, x, npair * k)
            cnts += np.bincount(flat, None, npair * k).astype(np.int64)
        sums, cnts = sums.reshape(npair, k), cnts.reshape(npair, k)
        # Closing bounds per group: every member past, or the freshest member max_open buckets on.
        last = self.last_[np.maximum(self.members, 0)]
        passed = np.where(self.pad, np.iinfo(np.int64).max, last).min(axis=1) - 1
        newest = np.where(self.pad, NEVER, last).max(axis=1)
        forced = np.where(newest == NEVER, NEVER, newest - b)
        bound = np.maximum(passed, forced)
        close = pk <= bound[pg]
        return self._keep_and_judge(pg, pk, sums, cnts, close)

    def _keep_and_judge(self, pg, pk, sums, cnts, close) -> Detections | None:
        keep = np.flatnonzero(~close)
        self.okey_[:] = NEVER
        self.osum_[:] = 0.0
        self.ocnt_[:] = 0
        if len(keep):
            kg = pg[keep]
            start = np.r_[True, kg[1:] != kg[:-1]]
            firsts = np.flatnonzero(start)
            rank = np.arange(len(keep)) - np.repeat(firsts, np.diff(np.r_[firsts, len(keep)]))
            self.okey_[kg, rank] = pk[keep]
            self.osum_[kg, rank] = sums[keep]
            self.ocnt_[kg, rank] = cnts[keep]
        idx = np.flatnonzero(close)
        if len(idx) == 0:
            return None
        return self._judge(pg[idx], pk[idx], sums[idx], cnts[idx])

    def advance(self, now_ns: int, hold: np.ndarray | None = None) -> Detections | None:
        """Close the open buckets that ended `grace_s` or more before `now_ns` (event-time watermark),
        in groups none of whose members has readings waiting in the caller's queue (`hold`)."""
        if not (self.okey_ != NEVER).any():
            return None
        limit = (int(now_ns) - self.params.grace_s * NS) // self.bucket_ns - 1
        og, ob = np.nonzero(self.okey_ != NEVER)
        pk = self.okey_[og, ob]
        close = pk <= limit
        if hold is not None:
            held = np.zeros(self.members.shape, bool)
            real = self.members >= 0
            held[real] = hold[self.sensors[self.members[real]]]
            # numpy stubs: any(axis=1) may be a scalar; over a 2-D array it is a 1-D array.
            close &= ~held.any(axis=1)[og]  # type: ignore[index]
        if not close.any():
            return None
        order = np.lexsort((pk, og))
        og, ob, pk, close = og[order], ob[order], pk[order], close[order]
        return self._keep_and_judge(og, pk, self.osum_[og, ob].copy(), self.ocnt_[og, ob].astype(np.int64), close)

    # ----- judging -------------------------------------------------------------------------------
    def _judge(self, pg, pk, sums, cnts) -> Detections | None:
        """Judge closed buckets (pairs sorted by group, then key) in key order within each group."""
        self.done_[pg] = np.maximum(self.done_[pg], pk)   # pairs are sorted: the last one wins
        start = np.r_[True, pg[1:] != pg[:-1]]
        firsts = np.flatnonzero(start)
        rank = np.arange(len(pg)) - np.repeat(firsts, np.diff(np.r_[firsts, len(pg)]))
        out = []
        for r in range(int(rank.max()) + 1):
            i = np.flatnonzero(rank == r)
            found = self._judge_once(pg[i], pk[i], sums[i], cnts[i])
            if found is not None:
                out.append(found)
        return Detections.concat(out) if out else None

    def _statistic(self, x, elig, mean, cov, npres) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(statistic, per-member z, limit) of each bucket over its judged members: T^2 here; the
        residual in detectors/residual.py (group_residual)."""
        t2, z = masked_t2(x, elig, mean, cov)
        return t2, z, self.limits[npres]

    def _judge_once(self, g, key, sums, cnts) -> Detections | None:
        """One bucket of each of the groups g (distinct)."""
        p = self.params
        with np.errstate(invalid="ignore", divide="ignore"):
            x = sums / cnts
        present = (cnts > 0) & ~self.pad[g]
        mean, cov, cnt = self.mean_[g], self.cov_[g], self.cnt_[g]
        warm = self.warm[g]
        # Judged: the present members past their own warm-up, when every pair of them is past it too.
        ready = cnt >= warm[:, None, None]
        elig = present & np.diagonal(ready, axis1=1, axis2=2)
        npres = elig.sum(axis=1)
        pairs = (elig[:, :, None] & elig[:, None, :] & ~ready).any(axis=(1, 2))
        judged = ~pairs & (npres >= p.min_present)
        t2, z, limit = self._statistic(x, elig, mean, cov, npres)
        # Learn the entries of the present members (each mean, each pair's covariance): always while
        # the bucket is not judged, else only within the limit.
        learn = ~judged | (t2 <= limit)
        both = present[:, :, None] & present[:, None, :] & learn[:, None, None]
        a = np.where(ready, p.lam, 1.0 / (cnt + 1.0))
        d = np.where(present, x - mean, 0.0)
        ad = np.diagonal(a, axis1=1, axis2=2)
        self.mean_[g] = np.where(both.any(axis=2), mean + ad * d, mean)
        self.cov_[g] = np.where(both, (1.0 - a) * (cov + a * d[:, :, None] * d[:, None, :]), cov)
        self.cnt_[g] = np.where(both, np.minimum(cnt + 1, warm[:, None, None]), cnt)
        j = np.flatnonzero(judged)
        if len(j) == 0:
            return None
        g, key, t2, z, limit, elig, npres = g[j], key[j], t2[j], z[j], limit[j], elig[j], npres[j]
        sev = severity_code(p.severity)
        raw = np.where(t2 > limit, sev, 0).astype(np.int8)
        held = np.where(t2 > limit - p.hysteresis, sev, 0).astype(np.int8)
        prev = self.level_[g]
        new = np.maximum(raw, np.minimum(prev, held))
        self.level_[g] = new
        top = np.argmax(np.where(elig, np.abs(z), -np.inf), axis=1)
        onset = (prev == 0) & (new > 0)
        self.anchor_[g] = np.where(onset, top, self.anchor_[g])
        e = np.flatnonzero((new | prev) != 0)
        if len(e) == 0:
            return None
        g, key, t2, z, limit, npres, new, top = g[e], key[e], t2[e], z[e], limit[e], npres[e], new[e], top[e]
        anchor = self.anchor_[g].astype(np.int64)
        sensor = self.sensors[self.members[g, anchor]]
        topdev = self.ids[self.sensors[self.members[g, top]]]
        topz = z[np.arange(len(e)), top]
        ctx = []
        base: dict[str, object] = {"metric": self.metric, "unit": self.unit, "window": self.window}
        for i in range(len(e)):
            c = dict(base)
            c.update(group=self.names[int(g[i])], top_device=topdev[i], top_z=float(topz[i]),
                     present=int(npres[i]), members=int(self.size[g[i]]))
            ctx.append(c)
        self.anchor_[g[new == 0]] = -1
        ts = (key + 1) * self.bucket_ns
        return self.rows(sensor, ts, new, t2, limit, t2 / limit, ctx)
