"""AnyOf / AllOf (issue 16 item 9, STYLE "compose with small named combinators"): a rule that fires
when any / all of its member rules fire on the same device.

A combinator reads its members' detections, not readings: after every rule ran over a batch
(`RuleSet.process`), it takes the member rows of each device in event-time order and, at every
instant one of them has a row, updates each member's level (the severity of its latest row; a clear
row is 0) and judges:
  any_of: severity = the highest member level; active while any member is;
  all_of: severity = the lowest member level, each member counting as firing while active or, for
          tolerance_s after its latest active row, at that row's severity (two rules rarely fire on
          the very same reading: a noise peak and a rate alarm a minute apart still coincide); it
          clears once a member is past its tolerance, or every member is clear.
Rows are emitted like a level rule's: one per member instant while active, one severity-0 row when it
clears. value = members firing, limit = members needed (1 or all), score = their ratio; context
`members` names the members firing. Member rows of one device arrive in event-time order across
batches (each reading is in one batch), so a batch split anywhere gives the same rows as one batch.
"""

from __future__ import annotations

from typing import Annotated, ClassVar

import numpy as np
from pydantic import Field, model_validator

from config.errors import ConfigProblem
from core import Detections
from core.timefmt import NS_PER_S as NS
from detectors.base import Detector, RuleParams
from detectors.generic import Category

RuleRef = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]


class AnyOfParams(RuleParams):
    rules: list[RuleRef] = Field(min_length=2, max_length=8)
    category: Category = "data"

    @model_validator(mode="after")
    def _once(self):
        if len(set(self.rules)) != len(self.rules):
            raise ValueError(f"rules: each member once (got {self.rules})")
        return self


class AllOfParams(AnyOfParams):
    tolerance_s: float = Field(0.0, ge=0, le=86400)


class Combinator(Detector):
    """Base of any_of / all_of: state per inventory sensor (combined level, each member's level, and its
    latest active row's time and severity); `combine(detections)` returns the combinator's own rows."""

    kinds = ("noise", "gas", "generic")
    metric = "members"
    combinator: ClassVar[bool] = True
    need_all: ClassVar[bool] = False
    params: AnyOfParams  # AllOf's adds tolerance_s

    def setup(self, shared: dict) -> None:
        p = self.params
        self.members = list(p.rules)
        self.category = p.category
        self.tol_ns = int(round(getattr(p, "tolerance_s", 0.0) * NS))
        self.window = f"{getattr(p, 'tolerance_s', 0.0):g}s" if self.need_all else ""
        n, m = self.inv.n, len(self.members)
        self.level_ = np.zeros(n, np.int8)
        self.mlevel_ = np.zeros((n, m), np.int8)
        self.mlast_ = np.full((n, m), np.iinfo(np.int64).min, np.int64)   # time of the latest active row
        self.msev_ = np.zeros((n, m), np.int8)                            # its severity

    def step(self, view):  # never called: RuleSet runs combinators on detections (`combine`)
        return None

    def combine(self, dets: Detections) -> Detections | None:
        """The combinator's rows from one batch's detections of every rule (members' rows in them).

        Vectorized over the member instants ("events": one per sensor and instant): each member's level
        and latest active row at every event are forward fills of its rows within the sensor, seeded by
        the state the previous batch left; a loop runs over the (at most 8) members only."""
        if not len(dets):
            return None
        code = {r: i for i, r in enumerate(self.members)}
        mi = np.array([code.get(r, -1) for r in dets.rule_id.tolist()], np.int64)
        rows = np.flatnonzero(mi >= 0)
        if not len(rows):
            return None
        s, t, m, sev = dets.sensor[rows].astype(np.int64), dets.ts_ns[rows], mi[rows], dets.severity[rows]
        order = np.lexsort((m, t, s))   # ties (one member twice at an instant) keep the input order
        s, t, m, sev = s[order], t[order], m[order], sev[order]
        new_event = np.r_[True, (s[1:] != s[:-1]) | (t[1:] != t[:-1])]
        ev = np.cumsum(new_event) - 1
        first_row = np.flatnonzero(new_event)
        es, et = s[first_row], t[first_row]            # each event's sensor and instant
        n_ev, n_m = len(first_row), len(self.members)
        new_sensor = np.r_[True, es[1:] != es[:-1]]
        sensor_start = np.maximum.accumulate(np.where(new_sensor, np.arange(n_ev), 0))
        pos = np.arange(n_ev)
        level = np.empty((n_ev, n_m), np.int8)
        last = np.empty((n_ev, n_m), np.int64)
        lsev = np.empty((n_ev, n_m), np.int8)
        for j in range(n_m):
            rj = np.flatnonzero(m == j)
            level[:, j] = self._fill(ev[rj], sev[rj], pos, sensor_start, self.mlevel_[es, j])
            act = rj[sev[rj] > 0]
            last[:, j] = self._fill(ev[act], t[act], pos, sensor_start, self.mlast_[es, j])
            lsev[:, j] = self._fill(ev[act], sev[act], pos, sensor_start, self.msev_[es, j])
        if self.need_all:
            recent = (last != np.iinfo(np.int64).min) & (et[:, None] - last <= self.tol_ns)
            eff = np.where(level > 0, level, np.where(recent, lsev, 0))
            lvl = np.where(level.any(axis=1), eff.min(axis=1), 0).astype(np.int8)
            # numpy stubs: any(axis=1) may be a scalar; over a 2-D array it is a 1-D array.
            firing = np.where(level.any(axis=1)[:, None], eff > 0, False)  # type: ignore[index]
        else:
            lvl = level.max(axis=1).astype(np.int8)
            firing = level > 0
        prev = np.empty_like(lvl)
        prev[1:] = lvl[:-1]
        prev[new_sensor] = self.level_[es[new_sensor]]
        # The state after the batch: each sensor's last event.
        end = np.r_[np.flatnonzero(new_sensor)[1:] - 1, n_ev - 1]
        self.level_[es[end]] = lvl[end]
        self.mlevel_[es[end]] = level[end]
        self.mlast_[es[end]] = last[end]
        self.msev_[es[end]] = lsev[end]
        emit = np.flatnonzero((lvl > 0) | (prev > 0))
        if not len(emit):
            return None
        mask = firing[emit].astype(np.int64) @ (1 << np.arange(n_m))
        names = {int(b): ",".join(self.members[j] for j in range(n_m) if b >> j & 1) for b in np.unique(mask)}
        base = self.context_base()
        ctx = [{**base, "members": names[b]} for b in mask.tolist()]
        k = n_m if self.need_all else 1
        val = firing[emit].sum(axis=1).astype(np.float64)
        return self.rows(es[emit], et[emit], lvl[emit], val, np.full(len(emit), k), val / k, ctx)

    @staticmethod
    def _fill(at_ev, values, pos, sensor_start, init):
        """Per event `pos`, the value of the member's latest row at or before it within its sensor (rows
        given by their event index `at_ev`, ascending), else the sensor's `init` value (the state the
        previous batch left)."""
        if not len(at_ev):
            return init
        idx = np.searchsorted(at_ev, pos, side="right") - 1
        safe = np.maximum(idx, 0)
        ok = (idx >= 0) & (at_ev[safe] >= sensor_start)
        return np.where(ok, values[safe], init)


class AnyOf(Combinator):
    """any_of: fires while any member rule fires on the device; severity the highest member's."""

    type = "any_of"
    Params = AnyOfParams
    params: AnyOfParams


class AllOf(Combinator):
    """all_of: fires while every member rule fires on the device (each within tolerance_s of its
    latest active row); severity the lowest member's."""

    type = "all_of"
    Params = AllOfParams
    params: AllOfParams
    need_all = True


def combinator_problems(cfg, registry: dict) -> list[ConfigProblem]:
    """Cross-references of any_of / all_of rules: each member names an enabled rule of the config that
    is not itself a combinator nor raised by the clock (`advance`: deadman, group_t2's watermark), whose
    rows would not arrive with the readings of a batch."""
    problems = []
    by_id = {r.id: r for r in cfg.rules}
    for i, rule in enumerate(cfg.rules):
        cls = registry.get(rule.type)
        if cls is None or not getattr(cls, "combinator", False) or not isinstance(rule.params.get("rules"), list):
            continue
        f, line = cfg.line_of("rules", i, "rules")
        for name in rule.params["rules"]:
            member = by_id.get(name) if isinstance(name, str) else None
            why = None
            if member is None:
                from config.errors import did_you_mean

                why = f"unknown rule{did_you_mean(str(name), by_id)} (got {name!r})"
            elif getattr(registry.get(member.type), "combinator", False):
                why = f"{name!r} is itself an {member.type} rule: list its members instead"
            elif member.time_driven or registry[member.type].advance is not Detector.advance:
                why = (f"{name!r} is a {member.type} rule, whose findings also come from the clock, not only from "
                       "readings: it cannot be a member")
            elif not member.enabled:
                why = f"{name!r} is disabled: the combination would never fire"
            if why:
                problems.append(ConfigProblem(f, line, f"rules[{i}].rules", why))
    return problems
