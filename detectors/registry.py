"""The registry of detector types and the RuleSet that runs every enabled rule of a Config.

`REGISTRY` maps the YAML rule `type` to its detector class; `check_rules(cfg)` validates every rule's
own keys with file:line problems; `RuleSet.from_config(cfg)` builds the rules for the inventory and
`RuleSet.process(batch)` runs them all over one batch of any mix of sensors and kinds; `take_step(batch, n)`
splits off the rows one bounded step evaluates (at most n per sensor, oldest first), so that a caller can
keep one sensor's long history from holding the others.
"""

from __future__ import annotations

import numpy as np
from pydantic import ValidationError

from config.errors import ConfigError, ConfigProblem, did_you_mean
from config.pydantic_errors import problems_from_validation
from core import Detections, ReadingBatch
from detectors import (
    art,
    combinators,
    deadman,
    device_health,
    gas,
    gas_flatline,
    generic,
    knn_cad,
    multivariate,
    noise,
    residual,
    spectral,
)
from detectors.base import Detector, LevelDetector, stable_argsort
from detectors.context import KIND_CODES, Inventory, Round, SensorGroup
from detectors.group import GroupT2

REGISTRY: dict[str, type[Detector]] = {
    cls.type: cls
    for cls in (
        noise.NoiseDayLimit, noise.NoiseNightLimit, noise.NoiseNightLmax, noise.NoiseProhibited, noise.NoiseExam,
        noise.NoisePreWarning, device_health.DataQuality,
        gas.GasHigh, gas.GasHighHigh, gas.GasLow, gas.GasRupture, gas.GasLeakCusum, gas.GasSensorRange,
        device_health.Battery, gas_flatline.GasFlatline, generic.Threshold, generic.RateOfChange, generic.RobustZ, generic.Ewma, generic.Cusum,
        generic.Flatline,
        deadman.Deadman,
        multivariate.Hotelling, knn_cad.KnnCad, GroupT2, spectral.SpectralResidual, art.FuzzyArt,
        residual.PcaResidual, residual.GroupResidual,
        combinators.AnyOf, combinators.AllOf,
    )
}


def rule_kinds(rule, cls: type[Detector]) -> tuple[str, ...]:
    """The device kinds a rule runs on: its `kind`, or every kind of its detector class for `any`."""
    kinds = cls.kinds if rule.kind == "any" else (rule.kind,)
    return tuple(k for k in kinds if k in cls.kinds)


def validate_rules(cfg) -> tuple[list[ConfigProblem], list]:
    """Problems of every rule (file:line, key path, message), and (rule, class, params) of the enabled rules
    without problems; raises nothing."""
    problems: list[ConfigProblem] = []
    built = []
    seen: dict[str, int] = {}
    lines = getattr(cfg, "_lines", {})
    for i, rule in enumerate(cfg.rules):
        where = cfg.line_of("rules", i, "id")
        if rule.id in seen:
            problems.append(ConfigProblem(where[0], where[1], f"rules[{i}].id",
                                          f"duplicate rule id {rule.id!r} (first at rules[{seen[rule.id]}])"))
        seen.setdefault(rule.id, i)
        cls = REGISTRY.get(rule.type)
        if cls is None:
            f, line = cfg.line_of("rules", i, "type")
            problems.append(ConfigProblem(
                f, line, f"rules[{i}].type",
                f"unknown detector type{did_you_mean(rule.type, REGISTRY)} (got {rule.type!r})",
            ))
            continue
        if rule.kind != "any" and rule.kind not in cls.kinds:
            f, line = cfg.line_of("rules", i, "kind")
            problems.append(ConfigProblem(
                f, line, f"rules[{i}].kind", f"detector type {rule.type} runs on {' or '.join(cls.kinds)} devices (got {rule.kind!r})"
            ))
            continue
        try:
            params = cls.Params.model_validate(rule.params)
        except ValidationError as exc:
            problems += problems_from_validation(exc, cls.Params, ("rules", i), lines)
            continue
        if rule.enabled:
            built.append((rule, cls, params))
    problems += combinators.combinator_problems(cfg, REGISTRY)  # any_of / all_of members
    return problems, built


def check_rules(cfg) -> list[ConfigProblem]:
    """Every problem with the rules' own keys (unknown type, bad or unknown parameters, duplicate ids)."""
    return validate_rules(cfg)[0]


class RuleSet:
    """All enabled rules of a Config over its inventory.

    Per-sensor order: rows of one sensor are evaluated in event-time order (ties in input order), each
    exactly as if it came alone, so any split of the input into batches gives the same detections,
    provided each sensor's readings arrive in time order across batches.

    How a batch runs: the rules that take it whole (`batchwise` and `series` LevelDetectors) run once over
    it, first; before them, the shared components every one of whose readers takes batches whole (the
    noise rules' NoiseEnergy and NoiseBackground, the gas rules' GasProfile: `run_series`) insert the whole
    batch, keeping what each row would have seen; one that learns from the rows after the rules ran
    (GasProfile: G-flatline reads it as it stood before the batch) stores that in `after_series`. The other
    rules and components step round by round (round r = every sensor's r-th reading): `before` each round,
    the rules, `after` it. Both give the same detections and state.
    """

    def __init__(self, inv: Inventory, rules: list, series: bool = True) -> None:
        """series: False steps every stateful rule round by round, `series` rules and the shared components
        too (their per-reading path: tests compare the two)."""
        self.inv = inv
        self.n_sensors = inv.n
        self.shared: dict = {}
        self.rules: list[Detector] = []
        groups: dict[tuple, SensorGroup] = {}
        placed: list[tuple[Detector, SensorGroup]] = []
        self._groups: list[tuple[SensorGroup, list[Detector]]] = []   # run round by round
        self._whole: list[tuple[SensorGroup, list[Detector]]] = []    # batchwise: once per batch
        self._combinators: list = []                                  # any_of / all_of (detectors/combinators.py)
        # Generic devices (config/inventory.py) take a third place in each round; without any, the rule
        # groups (and the snapshot's names of shared state) stay as they were before that kind existed.
        generic = bool((inv.kind == KIND_CODES["generic"]).any())
        self._n_kinds = 3 if generic else 2
        for rule, cls, params in rules:
            kinds = tuple(k for k in rule_kinds(rule, cls) if generic or k != "generic" or rule.kind == "generic")
            key = tuple(sorted(kinds))
            if key not in groups:
                codes = tuple(sorted(KIND_CODES[k] for k in kinds))
                groups[key] = SensorGroup(np.isin(inv.kind, codes), codes)
            group = groups[key]
            shared = self.shared.setdefault(key, {})
            det = cls(rule.id, params, inv, group, shared)
            if getattr(det, "combinator", False):
                self.rules.append(det)
                self._combinators.append(det)  # judges the other rules' detections, after them
                continue
            if not series:
                det.series = False
            self.rules.append(det)
            placed.append((det, group))
        self.components = [c for d in self.shared.values() for c in d.values()]
        # Shared components that take whole batches (`run_series`, before the whole-batch rules), the
        # others run before/after each round.
        self._series_components = self._whole_components([d for d, _ in placed])
        self._learners = [(c, c.after_series) for c in self._series_components
                          if getattr(c, "after_series", None) is not None]
        for det, group in placed:
            # Batchwise and series rules take a whole batch at once; the others step round by round.
            runs = self._whole if _takes_whole(det) else self._groups
            slot = next((g for g in runs if g[0] is group), None)
            if slot is None:
                slot = (group, [])
                runs.append(slot)
            slot[1].append(det)
        # (component, its sensor group or None): a round without rows of a component's group skips it
        # (its before/after on no rows change nothing).
        self._component_groups = [(c, getattr(c, "group", None)) for c in self.components
                                  if not any(c is w for w in self._series_components)]
        # The sensors anything steps in rounds for: the rounds leave every other row out (a batch of
        # sensors whose rules all take it whole costs no round at all).
        self._round_sensors = np.zeros(inv.n, bool)
        for g in [g for g, _ in self._groups] + [g for _, g in self._component_groups]:
            self._round_sensors |= True if g is None else g.local >= 0
        self.watermark_ns: int | None = None

    def _whole_components(self, dets: list[Detector]) -> list:
        """The shared components that run whole batches: those with `run_series` whose every reader (a rule
        holding it as an attribute) takes whole batches. A `series` rule reading a component that cannot
        (no `run_series`, or read by a rule stepped in rounds) is stepped in rounds itself, and the check
        repeats, since that rule may read other components too."""
        users = {id(c): [d for d in dets if any(v is c for v in vars(d).values())] for c in self.components}
        whole = [c for c in self.components if callable(getattr(c, "run_series", None))]
        while True:
            keep = [c for c in whole if all(_takes_whole(d) for d in users[id(c)])]
            for c in self.components:
                if not any(c is k for k in keep):
                    for d in users[id(c)]:
                        if isinstance(d, LevelDetector) and d.series and not d.batchwise:
                            d.series = False
            if len(keep) == len(whole):
                return keep
            whole = keep

    @classmethod
    def from_config(cls, cfg, series: bool = True) -> RuleSet:
        """Build every enabled rule; raises config.ConfigError listing every bad rule key."""
        problems, built = validate_rules(cfg)
        if problems:
            raise ConfigError(problems)
        return cls(Inventory(cfg), built, series)

    @property
    def rule_ids(self) -> list[str]:
        return [r.rule_id for r in self.rules]

    def state_bytes(self) -> int:
        return sum(r.state_bytes() for r in self.rules) + sum(c.state_bytes() for c in self.components)

    def time_driven(self) -> np.ndarray:
        """Bool mask over the inventory's sensors that a time-driven rule (one with its own `advance`,
        such as Offline) runs on. A caller that advances the clock between slices of a batch need not
        slice a batch of other sensors: every other rule gives the same detections for the whole batch
        in one call, and one call per slice costs a long series dearly (`citywatch detect` with the
        deadman on cuts a one-minute series into five-reading slices)."""
        mask = np.zeros(self.n_sensors, bool)
        for r in self.rules:
            if type(r).advance is not Detector.advance:
                mask[r.sensors] = True
        return mask

    def trace_scores(self) -> None:
        """From now on, record the score of every row each level rule evaluates (`detect --scores`).
        Rules with their own batch step (gas_flatline) and time-driven rules (deadman) record none."""
        for r in self.rules:
            if isinstance(r, LevelDetector) and type(r).step_batch is LevelDetector.step_batch:
                r.trace = []

    def traced_scores(self) -> dict[str, tuple | None]:
        """Rule id -> (sensor, ts ns, score) arrays of the rows it evaluated since `trace_scores` (score NaN:
        the row was not judged: missing value, warm-up), or None for a rule that records no scores."""
        out: dict[str, tuple | None] = {}
        for r in self.rules:
            if not isinstance(r, LevelDetector) or r.trace is None:
                out[r.rule_id] = None
                continue
            parts = r.trace
            if not parts:
                out[r.rule_id] = (np.zeros(0, np.int32), np.zeros(0, np.int64), np.zeros(0))
                continue
            out[r.rule_id] = tuple(np.concatenate([p[i] for p in parts]) for i in range(3))
        return out

    def process(self, batch: ReadingBatch) -> Detections:
        """Run every rule over a batch (any mix of sensors, kinds, times); rows of unknown sensors are ignored."""
        n = len(batch)
        if n == 0:
            return Detections.empty()
        sensor, ts = batch.sensor, batch.ts_ns
        known = (sensor >= 0) & (sensor < self.n_sensors)
        if not known.all():
            batch = batch.take(np.flatnonzero(known))
            sensor, ts = batch.sensor, batch.ts_ns
            if len(sensor) == 0:
                return Detections.empty()
        # Rows of each sensor in event-time order (ties keep input order); a time-ordered batch, the
        # usual case, needs only a stable sort by sensor.
        order = _sensor_time_order(sensor, ts)
        s = sensor[order]
        out = self._process_whole(batch, order, s) if self._whole or self._series_components else []
        if not self._groups and not self._component_groups:
            return self._combine(Detections.concat(out))  # every rule took the whole batch: no rounds to step
        stepped = self._round_sensors[s]
        if not stepped.all():
            order, s = order[stepped], s[stepped]
            if len(s) == 0:
                return self._combine(Detections.concat(out))
        # Rank of each row within its sensor: round r holds every sensor's r-th reading, noise rows first.
        starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
        rank = np.arange(len(s)) - np.repeat(starts, np.diff(np.r_[starts, len(s)]))
        kind = self.inv.kind[s]
        key = rank * self._n_kinds + kind
        by_round = stable_argsort(key)
        order, rank, key = order[by_round], rank[by_round], key[by_round]
        bounds = np.flatnonzero(np.r_[True, rank[1:] != rank[:-1], True])
        # Each round's rows are ordered by kind: where its gas (and generic) rows start, for all rounds at once.
        heads = rank[bounds[:-1]] * self._n_kinds
        splits = (np.searchsorted(key, heads + 1) - bounds[:-1]).tolist()
        ends = (np.searchsorted(key, heads + 2) - bounds[:-1]).tolist() if self._n_kinds > 2 else None
        # One gather into round order; rounds are then contiguous slices (views). Columns are gathered
        # when a rule first reads them (a batch often carries fields no rule uses).
        sensor, ts, quality = sensor[order], ts[order], batch.quality[order]
        values = _Gathered(batch.values, order)
        cal = self.inv.calendar
        comps = self._component_groups
        edges = bounds.tolist()
        for r, (a, b) in enumerate(zip(edges[:-1], edges[1:])):
            split = splits[r]
            end = ends[r] if ends is not None else None
            rnd = Round(sensor[a:b], ts[a:b], values.window(a, b), quality[a:b], cal, split, kind_end=end)
            present = _kinds_present(b - a, split, end)
            busy = [c for c, g in comps if g is None or (not _absent(g, present) and len(rnd.view(g)))]
            for c in busy:
                c.before(rnd)
            _run(self._groups, rnd, "step", out, present)
            for c in busy:
                c.after(rnd)
        return self._combine(Detections.concat(out))

    def _combine(self, dets: Detections) -> Detections:
        """The batch's detections with the any_of / all_of rows judged from them appended."""
        if not self._combinators or not len(dets):
            return dets
        more = [c.combine(dets) for c in self._combinators]
        return Detections.concat([dets] + [m for m in more if m is not None])

    def _process_whole(self, batch: ReadingBatch, order: np.ndarray, s: np.ndarray) -> list:
        """The batchwise rules over the whole batch at once: rows by kind, then sensor, then time."""
        kind = self.inv.kind[s]
        if kind.min() == kind.max():
            split = len(s) if kind[0] == 0 else 0
            end = 0 if kind[0] == 2 else None
        else:
            by_kind = np.argsort(kind, kind="stable")
            order, s = order[by_kind], s[by_kind]
            split = int(np.searchsorted(kind[by_kind], 1))
            end = int(np.searchsorted(kind[by_kind], 2)) if kind.max() == 2 else None
        rnd = Round(s, batch.ts_ns[order], _Gathered(batch.values, order).window(0, len(order)), batch.quality[order],
                    self.inv.calendar, split, once=False, kind_end=end)
        present = _kinds_present(len(s), split, end)
        for c in self._series_components:
            if _absent(c.group, present):
                continue
            view = rnd.view(c.group)
            if len(view):
                c.run_series(view)  # what each row sees of it, for the series rules below
        out: list = []
        _run(self._whole, rnd, "step_batch", out, present)
        for c, learn in self._learners:  # what the batch teaches, stored after the rules (GasProfile)
            if _absent(c.group, present):
                continue
            view = rnd.view(c.group)
            if len(view):
                learn(view)
        return out

    def advance(self, now_ns: int, hold: np.ndarray | None = None) -> Detections:
        """Time-driven rules (deadman) at an event-time watermark or the wall clock, UTC ns.

        hold: optional bool mask over the sensors (length n_sensors) whose readings still wait in the
        caller's queue (`take_step` left them for a later step): their time-driven state is left as it
        is, so a device is never called offline because of our own backlog."""
        self.watermark_ns = now_ns if self.watermark_ns is None else max(self.watermark_ns, now_ns)
        if hold is not None and (len(hold) != self.n_sensors or not hold.any()):
            hold = None  # nothing held, or a mask of the inventory before a reload
        out = [d.advance(int(now_ns)) if hold is None else d.advance(int(now_ns), hold=hold) for d in self.rules]
        return Detections.concat([o for o in out if o is not None])


def _takes_whole(det) -> bool:
    """Whether a rule takes each batch whole (batchwise or series) rather than round by round."""
    return bool(getattr(det, "batchwise", False) or getattr(det, "series", False))


def _sensor_time_order(sensor: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Row order by sensor, then event time, ties in input order: the order `RuleSet.process` evaluates.
    A batch whose rows of each sensor come in time order (a time-ordered batch, or devices' messages
    interleaved, the usual case) needs only the stable sort by sensor; any other falls back to lexsort."""
    order = stable_argsort(sensor)
    if len(ts) < 2 or bool(np.all(ts[1:] >= ts[:-1])):
        return order
    s, t = sensor[order], ts[order]
    if bool(np.all((t[1:] >= t[:-1]) | (s[1:] != s[:-1]))):
        return order
    return np.lexsort((ts, sensor))


def take_step(batch: ReadingBatch, rows_per_sensor: int) -> tuple[ReadingBatch, ReadingBatch]:
    """Split `batch` into one bounded detection step and the rows left for later.

    The step holds the `rows_per_sensor` oldest rows of each sensor (event-time order, ties in input
    order: the order `RuleSet.process` evaluates them in), the rest holds every other row; both keep
    the input order. The cost of `process` grows with the most rows any one sensor has (one round per
    reading of a sensor, for the rules that step in rounds: not the `batchwise` and `series` ones), so a
    step costs at most `rows_per_sensor` rounds whatever one device sent.
    Processing the step, then the rest (with any later arrivals appended after it) gives the same
    detections as the whole batch at once: each sensor's rows are still seen in the same order.

    Raises ValueError when rows_per_sensor < 1.
    """
    if rows_per_sensor < 1:
        raise ValueError(f"rows_per_sensor must be at least 1 (got {rows_per_sensor})")
    n = len(batch)
    if n <= rows_per_sensor:
        return batch, batch.take(np.empty(0, np.intp))
    order = _sensor_time_order(batch.sensor, batch.ts_ns)
    s = batch.sensor[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    rank = np.arange(n) - np.repeat(starts, np.diff(np.r_[starts, n]))
    later = rank >= rows_per_sensor
    if not later.any():
        return batch, batch.take(np.empty(0, np.intp))
    return batch.take(np.sort(order[~later])), batch.take(np.sort(order[later]))


def _kinds_present(n: int, split: int, end: int | None) -> set[int]:
    """The kind codes a round ordered by kind code (`Round.kind_split`, `kind_end`; n rows) has rows of."""
    stop = n if end is None else end
    return {k for k, rows in ((0, split > 0), (1, stop > split), (2, stop < n)) if rows}


def _absent(group: SensorGroup, present: set[int] | None) -> bool:
    """Whether a group of whole kinds has no rows in a round with the kinds `present`: known without building
    its view (a step of a few readings holds one kind or two, and most groups' views are then empty)."""
    return present is not None and group.kinds is not None and present.isdisjoint(group.kinds)


def _run(groups: list, rnd: Round, method: str, out: list, present: set[int] | None = None) -> None:
    """Call `method` ("step" or "step_batch") of every detector on its group's view of `rnd` (`present`: the
    kinds with rows in it, `_kinds_present`; None: look at every group's view)."""
    for group, dets in groups:
        if _absent(group, present):
            continue
        view = rnd.view(group)
        if len(view) == 0:
            continue
        for d in dets:
            found = getattr(d, method)(view)
            if found is not None:
                out.append(found)


class _Gathered:
    """Batch columns in round order, gathered from the batch only for the rows a view reads (a column
    of one kind's field is never gathered for the other kind's rows)."""

    def __init__(self, columns: dict, order: np.ndarray) -> None:
        self.columns, self.order = columns, order

    def window(self, a: int, b: int) -> _Window:
        return _Window(self, a, b)


class _Window:
    """The columns of one round: `take(name, sel)` gathers rows `sel` of the round from the batch."""

    __slots__ = ("src", "a", "b")

    def __init__(self, src: _Gathered, a: int, b: int) -> None:
        self.src, self.a, self.b = src, a, b

    def take(self, name: str, sel):
        col = self.src.columns.get(name)
        if col is None:
            return None
        return col[self.src.order[self.a:self.b][sel]]

    def __contains__(self, name: str) -> bool:
        return name in self.src.columns

    def keys(self):
        return self.src.columns.keys()
