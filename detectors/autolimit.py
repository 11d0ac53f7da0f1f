"""Thresholds that calibrate themselves (issue 16 item 4): `limit: auto` on a score-based generic
detector resolves its alarm limit per sensor from the scores of the sensor's own training window.

Training window: the first `limit_train` readings the detector scores for the sensor (readings after
its own warm-up: robust_z's min_count, ewma's and cusum's warmup, hotelling_t2's warmup, knn_cad's
min_calib), per sensor. They raise nothing (not judged: `detect --scores` shows no score for them);
from the next reading on, the sensor's scores are judged against the limit resolved from them:
  - limit_quantile: q             the q-quantile of the training scores;
  - far: N/day (/h, /week, or a number per day): false alarms per sensor-day: q = 1 - N / (the
    sensor's scored readings per day, measured over the training window's span).
The quantile is the empirical one (numpy, linear interpolation) while at least 10 training scores lie
above it; further out in the tail, where the training window holds too few exceedances to say, the
tail above the 0.9 quantile is fitted with an exponential (peaks over threshold, GPD shape 0) and
the limit extrapolated from it: u + beta ln(p_u / (1 - q)). Infinite and NaN scores take no part;
a score of 0 never alarms (a sensor trained on a constant signal resolves to 0).

The detector's own learning keeps its own settings (hotelling_t2 learns a reading while T^2 is within
its alpha limit; cusum with after_alarm: reset needs a fixed h and refuses auto).
"""

from __future__ import annotations

import math
import re
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from detectors.base import Eval, RuleParams, severity_code

TAIL_MIN = 10       # exceedances the empirical quantile needs; fewer: the exponential tail fit
TAIL_FROM_Q = 0.9   # the tail fit's threshold u: this quantile of the training scores
Q_RANGE = (0.5, 1.0 - 1e-12)  # a far rate beyond half the readings gives q = 0.5 (the median)

_PER_DAY = {"day": 1.0, "d": 1.0, "hour": 24.0, "h": 24.0, "week": 1.0 / 7.0, "w": 1.0 / 7.0}
_FAR = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([a-z]+)\s*$")


def parse_far(value) -> float:
    """A false-alarm rate as alarms per sensor-day: a number (per day) or "N/day", "N/h", "N/week".
    Raises ValueError for anything else or a rate that is not positive."""
    if isinstance(value, bool):
        raise ValueError(f"must be a rate like 1/day, 2/week or 0.5/h (got {value!r})")
    if isinstance(value, (int, float)):
        rate = float(value)
    else:
        m = _FAR.match(str(value))
        if not m or m.group(2) not in _PER_DAY:
            raise ValueError(f"must be a rate like 1/day, 2/week or 0.5/h (got {value!r})")
        rate = float(m.group(1)) * _PER_DAY[m.group(2)]
    if not rate > 0 or not math.isfinite(rate):
        raise ValueError(f"must be a positive rate (got {value!r})")
    return rate


class AutoLimitParams(RuleParams):
    """Keys of `limit: auto` (the detector's own Params declares `limit`)."""

    far: float | str | None = None
    limit_quantile: float | None = Field(None, gt=0.5, lt=1)
    limit_train: int = Field(1000, ge=5, le=100000)
    if TYPE_CHECKING:  # declared by each subclass with its own type (not a field here: see _auto)
        limit: Any

    @field_validator("far")
    @classmethod
    def _far(cls, v):
        return None if v is None else parse_far(v)

    @model_validator(mode="after")
    def _auto(self):
        # Keys compared with their defaults, not model_fields_set: the config's partial checks
        # (config.base) run this on a model built from the keys that validated, defaults included.
        auto = self.limit == "auto"   # an AttributeError (limit itself failed) skips the check
        fields = type(self).model_fields
        given = [k for k in ("far", "limit_quantile") if getattr(self, k) is not None]
        if auto and len(given) != 1:
            raise ValueError("limit: auto needs exactly one of far (false alarms per sensor-day, e.g. 1/day) or "
                             f"limit_quantile (e.g. 0.999) (got {', '.join(given) if given else 'neither'})")
        if not auto:
            keys = given + (["limit_train"] if self.limit_train != fields["limit_train"].default else [])
            if keys:
                raise ValueError(f"{', '.join(keys)} {'applies' if len(keys) == 1 else 'apply'} only with limit: auto")
        fixed = getattr(self, "fixed_limit_key", "")
        if auto and fixed and getattr(self, fixed) != fields[fixed].default:
            raise ValueError(f"{fixed} and limit: auto exclude each other (auto resolves the limit {fixed} sets)")
        return self

    def describe_auto(self) -> str:
        """What `limit: auto` resolves from, in words (check-config)."""
        how = f"far {self.far:g}/day" if self.far is not None else f"quantile {self.limit_quantile:g}"
        return f"limit auto: {how} of each sensor's first {self.limit_train} scored readings"


def resolve_limit(scores, q: float) -> float:
    """The q-quantile of training scores (see the module docstring); +inf with no finite score."""
    s = np.sort(np.asarray(scores, dtype=float))
    s = s[np.isfinite(s)]
    n = len(s)
    if n == 0:
        return math.inf
    q = min(max(q, Q_RANGE[0]), Q_RANGE[1])
    if n * (1.0 - q) >= TAIL_MIN:
        return float(np.quantile(s, q))
    u = float(np.quantile(s, TAIL_FROM_Q))
    exc = s[s > u] - u
    if len(exc) == 0:
        return u   # no tail above u: nothing larger was ever seen
    beta = float(exc.mean())
    return u + beta * math.log((len(exc) / n) / (1.0 - q))


def training_quantile(params, n: int, span_ns: int) -> float:
    """The quantile to resolve at: limit_quantile, or 1 - far / (readings per day over the span)."""
    if params.limit_quantile is not None:
        return float(params.limit_quantile)
    if span_ns <= 0:
        return Q_RANGE[1]
    per_day = (n - 1) / (span_ns / 86400e9)
    return 1.0 - params.far / per_day


class AutoLimit:
    """The per-sensor training buffer and resolved limits of one detector with `limit: auto`.

    `apply(view, ev)` takes the detector's Eval over a view (any number of rows per sensor, each
    sensor's in time order) and returns it with training rows unjudged and the others judged against
    the resolved limit. State: 4 limit_train + 28 bytes per sensor (float32 scores, count, first and
    last training time, limit)."""

    def __init__(self, det, scale: float = 1.0, held_own: bool = False, inclusive: bool = False) -> None:
        """scale: limit units per score unit (hotelling_t2 scores T^2 / limit); held_own: the detector's
        held level does not depend on the limit (cusum hold: held while S > 0); inclusive: a score
        equal to the limit alarms (cusum: S >= h)."""
        p = det.params
        self.det, self.params, self.scale, self.held_own, self.inclusive = det, p, scale, held_own, inclusive
        self.sev = severity_code(p.severity)
        self.hyst = float(getattr(p, "hysteresis", 0.0) or 0.0)
        n = det.n
        # The state lives on the detector (names ending in `_`), so its state_bytes and snapshots see it.
        det.auto_buf_ = np.full((n, p.limit_train), np.nan, np.float32)   # training scores
        det.auto_seen_ = np.zeros(n, np.int32)     # training scores so far (saturates at limit_train)
        det.auto_t0_ = np.zeros(n, np.int64)       # time of the first and the last training score
        det.auto_t1_ = np.zeros(n, np.int64)
        det.auto_lim_ = np.full(n, np.nan)         # the resolved limit (score units); NaN: training

    @classmethod
    def of(cls, det, **kw) -> AutoLimit | None:
        return cls(det, **kw) if getattr(det.params, "limit", None) == "auto" else None

    def apply(self, view, ev: Eval) -> Eval:
        n = len(view)
        train = self.params.limit_train
        known = ev.known & ~np.isnan(ev.score)
        rows = np.flatnonzero(known)
        judged = np.zeros(n, bool)
        lim = np.full(n, np.nan)
        d = self.det
        if len(rows):
            loc = view.loc[rows]
            order = np.argsort(loc, kind="stable")   # rows of a sensor keep their (time) order
            sl = loc[order]
            start = np.r_[True, sl[1:] != sl[:-1]]
            first = np.flatnonzero(start)
            rank = np.arange(len(sl)) - np.repeat(first, np.diff(np.r_[first, len(sl)]))
            k = np.empty(len(rows), np.int64)
            k[order] = d.auto_seen_[sl].astype(np.int64) + rank
            learn = k < train
            li, ki, ri = loc[learn], k[learn], rows[learn]
            d.auto_buf_[li, ki] = ev.score[ri]
            d.auto_t0_[li[ki == 0]] = view.ts[ri[ki == 0]]
            done = ki == train - 1
            d.auto_t1_[li[done]] = view.ts[ri[done]]
            for s in np.unique(li[done]):
                q = training_quantile(self.params, train, int(d.auto_t1_[s] - d.auto_t0_[s]))
                d.auto_lim_[s] = resolve_limit(d.auto_buf_[s], q)
            np.add.at(d.auto_seen_, loc, 1)
            np.minimum(d.auto_seen_, train, out=d.auto_seen_)
            jr = rows[~learn]
            judged[jr] = True
            lim[jr] = d.auto_lim_[view.loc[jr]]
        score = ev.score
        with np.errstate(invalid="ignore"):
            # A score of 0 (a constant signal) never alarms, even against a limit resolved to 0.
            over = ((score >= lim) & (score > 0)) if self.inclusive else (score > lim)
            raw = np.where(judged & over, self.sev, 0).astype(np.int8)
            held = ev.held if self.held_own else np.where(judged & (score > lim - self.hyst), self.sev, 0).astype(np.int8)
        held = np.maximum(np.where(judged, held, 0), raw).astype(np.int8)
        limits = np.broadcast_to(lim * self.scale, (5, n)).copy()
        extra = dict(ev.extra)
        extra["limit_auto"] = lim * self.scale
        return Eval(judged, raw, held, ev.value, limits, score, extra)

    def summary(self) -> dict:
        """Resolved limits over the sensors: counts and min / median / max (limit units)."""
        lim, seen = self.det.auto_lim_, self.det.auto_seen_
        got = lim[~np.isnan(lim)] * self.scale
        # Sensors that scored at least one reading (a rule's group also holds devices absent from a feed).
        out: dict[str, int | float] = {"sensors": int((seen > 0).sum()), "resolved": int(len(got)),
               "training": int(((seen > 0) & np.isnan(lim)).sum())}
        if len(got):
            fin = got[np.isfinite(got)]
            out.update(min=float(got.min()), median=float(np.median(got)), max=float(got.max()),
                       never=int(len(got) - len(fin)))
        return out


def planned_lines(cfg) -> list[str]:
    """One line per enabled rule with `limit: auto`: what its limit will resolve from (check-config)."""
    from detectors.registry import REGISTRY

    out = []
    for rule in cfg.rules:
        cls = REGISTRY.get(rule.type)
        if not rule.enabled or cls is None or rule.params.get("limit") != "auto":
            continue
        p = cls.Params.model_validate(rule.params)
        assert isinstance(p, AutoLimitParams)  # only these accept limit: auto
        out.append(f"  rule {rule.id}: {p.describe_auto()}; resolved per sensor when its training window is full")
    return out


def resolved_lines(ruleset) -> list[str]:
    """One line per rule with `limit: auto`: the limits it resolved to (citywatch detect, on stderr)."""
    out = []
    for det in ruleset.rules:
        auto = getattr(det, "auto", None)
        if auto is None:
            continue
        s = auto.summary()
        head = f"rule {det.rule_id}: {auto.params.describe_auto()}:"
        if not s["resolved"]:
            out.append(f"{head} no sensor resolved yet ({s['training']} sensor(s) still training)")
            continue
        text = (f"{head} resolved for {s['resolved']} of {s['sensors']} sensor(s) with scores ({s['training']} still training)"
                f", limit min {s['min']:.4g} median {s['median']:.4g} max {s['max']:.4g}")
        if s["never"]:
            text += f"; {s['never']} with no finite training score (never alarm)"
        out.append(text)
        if s["resolved"] <= 10:
            lim = det.auto_lim_
            ids = det.inv.cfg.devices
            each = [f"{ids[int(det.sensors[i])].id}={lim[i] * auto.scale:.4g}" for i in np.flatnonzero(~np.isnan(lim))]
            out.append(f"rule {det.rule_id}: limit per sensor: " + ", ".join(each))
    return out
