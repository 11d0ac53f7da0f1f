"""The detector contract: validated parameters, per-sensor numpy state, one vectorized step per round.

A `RuleSet` (registry.py) splits each batch into rounds with at most one reading per sensor, in time
order per sensor, and hands every detector a `View` of the round's rows it runs on. So a detector only
ever sees each sensor once per call and its per-reading semantics hold by construction: a batch split
anywhere gives the same detections as one batch. `batchwise` and `series` detectors (LevelDetector)
take the whole batch in one call instead, every reading of a sensor at once, with the same result.

Lifecycle: `__init__` validates nothing itself (the registry validated `Params`) and allocates state;
`step(view)` may be called any number of times; `advance(now_ns)` is called for time-driven rules.
State lives in numpy attributes whose names end in `_`, sized by the rule's own sensors.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from config.base import SEVERITY_RANK, Strict
from core import Detections, LazyContexts
from detectors.calendar import EXAM_MODES
from detectors.rolling import run_ends

if TYPE_CHECKING:  # annotations only: autolimit imports this module
    from detectors.autolimit import AutoLimit
    from detectors.context import Inventory, SensorGroup, View


class RuleParams(Strict):
    """Base of every detector's own YAML keys (strict: unknown keys are errors)."""


class Labels:
    """Per-row text labels stored as small codes; looked up only for the rows that are emitted."""

    __slots__ = ("codes", "names")

    def __init__(self, codes: np.ndarray, names: tuple) -> None:
        self.codes, self.names = codes, names

    def __getitem__(self, i):
        return self.names[self.codes[i]]


class Eval:
    """What a level detector found for each row of a view.

    known: rows whose input was present and valid (others leave the state untouched and emit nothing)
    raw:   int8 severity the row reaches now (0 = inside limits)
    held:  int8 severity the row still holds with hysteresis (>= raw); an active level drops only to this
    value, score: float64 per row; limits: (5, rows) limit per severity (row 0: the lowest level's limit)
    extra: per-row context values (name -> array or list), added to each emitted row's context
    """

    __slots__ = ("known", "raw", "held", "value", "limits", "score", "extra")

    def __init__(self, known, raw, held, value, limits, score, extra=None) -> None:
        self.known, self.raw, self.held, self.value = known, raw, held, value
        self.limits, self.score, self.extra = limits, score, extra or {}


def severity_code(name: str) -> int:
    return SEVERITY_RANK[name]


def levels_above(
    value: np.ndarray, levels: Sequence[tuple[int, np.ndarray | float]], hysteresis
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Severity of `value` against ascending thresholds: (raw, held, limits table).

    levels: (severity, threshold) pairs; a value strictly above a threshold reaches its severity.
    held uses thresholds lowered by `hysteresis` (scalar or per-row array). NaN reaches nothing.
    """
    n = len(value)
    limits = np.empty((5, n))
    levels = sorted(levels, key=lambda x: x[0])
    raw: np.ndarray | None = None
    held: np.ndarray | None = None
    for sev, thr in levels:
        limits[sev] = thr
        r = (value > thr).view(np.int8)
        h = (value > thr - hysteresis).view(np.int8)
        if raw is None or held is None:  # both are None together: the first level
            limits[0] = thr
            raw, held = r * np.int8(sev), h * np.int8(sev)
        else:
            # Severities only grow along the list, so a higher level simply overrides a lower one.
            raw = np.where(r, np.int8(sev), raw)
            held = np.where(h, np.int8(sev), held)
    if raw is None or held is None:  # no levels
        return np.zeros(n, np.int8), np.zeros(n, np.int8), np.full((5, n), np.nan)
    return raw, held, limits


def levels_below(
    value: np.ndarray, levels: Sequence[tuple[int, np.ndarray | float]], hysteresis
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """As `levels_above` for lower limits: a value strictly below a threshold reaches its severity, and
    an active level holds until the value is `hysteresis` above it (levels_above of the negated values)."""
    ordered = sorted(levels, key=lambda x: x[0])
    raw, held, limits = levels_above(-np.asarray(value), [(sev, -np.asarray(thr)) for sev, thr in ordered], hysteresis)
    return raw, held, -limits


def take(arr: np.ndarray, view: View) -> np.ndarray:
    """Per-sensor state of the view's rows (the array itself, copied, when the view is every sensor in order)."""
    return arr.copy() if view.full else arr[view.loc]


def stable_argsort(keys: np.ndarray) -> np.ndarray:
    """Stable argsort of non-negative integer keys by 16-bit radix passes (numpy radix-sorts 16-bit
    keys, and falls back to timsort, several times slower, for wider ones)."""
    keys = np.asarray(keys)
    if len(keys) == 0:
        return np.zeros(0, np.intp)
    top = int(keys.max())
    if top < 1 << 16:
        return np.argsort(keys.astype(np.uint16), kind="stable")
    keys = keys.astype(np.int64)
    order = np.argsort((keys & 0xFFFF).astype(np.uint16), kind="stable")
    shift = 16
    while top >> shift:
        part = ((keys[order] >> shift) & 0xFFFF).astype(np.uint16)
        order = order[np.argsort(part, kind="stable")]
        shift += 16
    return order


def at(arr: np.ndarray, view: View) -> np.ndarray:
    """Per-sensor values (state or settings) of the view's rows, read-only: the array itself when the
    view is every sensor in order."""
    return arr if view.full else arr[view.loc]


def put(arr: np.ndarray, view: View, values) -> None:
    """Store per-row values into per-sensor state."""
    if view.full:
        arr[:] = values
    else:
        arr[view.loc] = values


class Detector:
    """Base of all detectors. Subclasses set the class attributes and implement `step`."""

    type: ClassVar[str] = ""
    # Class defaults that a rule's params may override per instance in `setup` (a field's unit, ...).
    category: str = "data"
    kinds: ClassVar[tuple[str, ...]] = ("noise", "gas")  # device kinds this detector can run on
    metric: str = ""
    unit: str = ""
    window: str = ""
    uses_calendar: ClassVar[bool] = False
    # The reading fields the detector reads when its rule names none in `field` / `fields` (see
    # `fields_read`): `citywatch detect` warns when a feed has no column for one.
    reads: ClassVar[tuple[str, ...]] = ()
    without_field: ClassVar[str] = "it judged nothing"  # what the warning says a missing field does
    # `builtins.type`: the class attribute `type` above shadows the builtin in this class body.
    Params: ClassVar[builtins.type[RuleParams]] = RuleParams
    # Subclasses narrow this to their own Params class (`params: ThresholdParams`).
    params: RuleParams

    @classmethod
    def fields_read(cls, params: RuleParams, kind: str) -> tuple[str, ...]:
        """The reading fields a rule of this type with (validated) `params` reads on devices of `kind`:
        its `field` / `fields` keys where it has them, else `reads`."""
        field, fields = getattr(params, "field", None), getattr(params, "fields", None)
        own = ([field] if isinstance(field, str) else []) + (list(fields) if isinstance(fields, list) else [])
        return tuple(dict.fromkeys(own)) if own else cls.reads

    def __init__(self, rule_id: str, params: RuleParams, inv: Inventory, group: SensorGroup, shared: dict) -> None:
        self.rule_id = rule_id
        self.params = params
        self.inv = inv
        self.group = group
        self.sensors = group.global_index
        self.n = len(group)
        self.setup(shared)

    def setup(self, shared: dict) -> None:
        """Allocate state (numpy attributes ending in `_`) and take shared components."""

    def step(self, view: View) -> Detections | None:
        raise NotImplementedError

    def advance(self, now_ns: int, hold: np.ndarray | None = None) -> Detections | None:
        """Time-driven detections at `now_ns` (event-time watermark or wall clock); none by default.
        hold: bool mask over the inventory's sensors whose readings wait in the caller's queue; a
        time-driven rule leaves their state as it is (RuleSet.advance)."""
        return None

    def state_bytes(self) -> int:
        return sum(v.nbytes for k, v in vars(self).items() if k.endswith("_") and isinstance(v, np.ndarray))

    # ----- output --------------------------------------------------------------------------------
    def context_base(self) -> dict:
        return {"metric": self.metric, "unit": self.unit, "window": self.window}

    def rows(self, sensor, ts, severity, value, limit, score, contexts: Sequence[dict], category=None) -> Detections:
        n = len(sensor)
        return Detections(
            np.asarray(sensor, np.int32), np.asarray(ts, np.int64), np.full(n, self.rule_id, object),
            np.full(n, category or self.category, object), np.asarray(severity, np.int8),
            np.asarray(value, np.float64), np.asarray(limit, np.float64), np.asarray(score, np.float64), contexts,
        )

    def contexts(self, view: View, idx: np.ndarray, extra: dict | None = None) -> LazyContexts:
        """The context dict of each emitted row (`idx` into the view), built when the row's is read: the
        columns are gathered now (vectorized), the dicts only for the rows the alert engine reads."""
        base = self.context_base()
        n = len(idx)
        cal = None
        if self.uses_calendar and n:
            f = view.facts()
            calendar = view.round.calendar
            cal = (f.prohibited[idx], f.night[idx], f.permit[idx], f.exam[idx], calendar)
        cols = []
        for name, col in (extra or {}).items():
            if isinstance(col, np.ndarray) and col.dtype != object:
                cols.append((name, col[idx], True))
            elif isinstance(col, Labels):
                cols.append((name, Labels(col.codes[idx], col.names), False))
            else:
                cols.append((name, [col[i] for i in idx], False))

        def make(j: int) -> dict:
            c = dict(base)
            if cal is not None:
                prohibited, night, permit, exam, calendar = cal
                c["period"] = "prohibited" if prohibited[j] else ("night" if night[j] else "day")
                c["permit_id"] = calendar.permit_id(int(permit[j]))
                c["exam_mode"] = EXAM_MODES[int(exam[j])]
            for name, col, plain in cols:
                v = col[j]
                c[name] = v.item() if plain or hasattr(v, "item") else v
            return c

        return LazyContexts(n, make)


def latch_levels(raw: np.ndarray, held: np.ndarray, start: np.ndarray, init: np.ndarray) -> np.ndarray:
    """The level after each row of runs of readings, each run one sensor's in time order, without a loop
    over the rows: the same as applying `new = max(raw, min(prev, held))` row by row from `init`.

    start: bool, True at the first row of each run; init: the level before each run (one per run).
    "new >= s" is a latch for each severity s: set by raw >= s, kept while held >= s, reset by held < s
    (held >= raw, so a row never both sets and resets). The latch is on where the latest set is later
    than the latest reset; each run's start carries its initial state as an event just before its
    first row, so nothing leaks from one run into the next.
    """
    n = len(raw)
    new = np.zeros(n, np.int8)
    if n == 0:
        return new
    first = np.flatnonzero(start)
    if len(first) == n:
        # Runs of one row each (a small step: one reading per sensor). Its latch for severity s is on where
        # held >= s and (raw >= s or init >= s): a row that both sets and resets leaves it off, as below.
        np.maximum(np.minimum(held, np.maximum(raw, init)), 0, out=new, casting="unsafe")
        return new
    pos = 2 * np.arange(n, dtype=np.int64) + 1
    top = int(max(raw.max(), init.max()))
    for s in range(1, top + 1):
        on0 = init >= s
        sets = np.where(raw >= s, pos, -1)
        resets = np.where(held < s, pos, -1)
        sets[first] = np.maximum(sets[first], np.where(on0, 2 * first, -1))
        resets[first] = np.maximum(resets[first], np.where(on0, -1, 2 * first))
        on = np.maximum.accumulate(sets) > np.maximum.accumulate(resets)
        new[on] = s
    return new


# The two tests below count with np.count_nonzero: on a step's few rows it costs a fifth of ndarray.any().

def _no_candidates(cand: np.ndarray, level: np.ndarray) -> bool:
    """Whether a batch has no candidate row (`cand`, a bool mask over its rows) and the rule no active level (`level`):
    every sensor then stays at 0 and nothing is emitted, without looking at the rows' sensors."""
    return not np.count_nonzero(level) and not np.count_nonzero(cand)


def _stays_quiet(prev: np.ndarray, ev: Eval, idx: np.ndarray | None = None) -> bool:
    """Whether rows whose sensors are all at level 0 before them (`prev`: their levels) leave every level at
    0 and emit nothing: no known row (`idx`: the known rows, else `ev.known`) reaches a level. The usual
    step (most readings are normal) then skips the hysteresis and the state update, which change nothing."""
    if np.count_nonzero(prev):
        return False
    raw = ev.raw[idx] if idx is not None else ev.raw[ev.known]
    return not np.count_nonzero(raw)


class LevelDetector(Detector):
    """A detector whose condition is a severity level per sensor with hysteresis.

    Emits a row for every known reading while the level is above 0, and one severity-0 row when it
    drops back to 0. `evaluate(view)` returns an `Eval`.

    `batchwise` detectors judge each reading on its own (their `evaluate` reads no state of theirs and
    has no side effects): the rule set evaluates them once over a whole batch (`step_batch`), every
    reading of a sensor in one call, and only the hysteresis runs in time order per sensor.

    `series` detectors have state, but a recursion that can be computed along time without a loop over
    the readings (a linear filter, clamped cumulative sums, a sliding window, run lengths): their
    `evaluate_series` takes a whole batch too (each sensor's rows contiguous and in time order) and
    leaves the state as `evaluate` would after those rows one at a time, with the same Eval per row.
    So one sensor's long history costs a few numpy passes instead of one round per reading. A rule
    may turn it off for settings its recursion does not allow (`self.series = False` in setup). A series
    rule may read shared components (the noise rules' rolling Leq store): the RuleSet runs those whole
    first (`run_series`, giving each row what it would have seen), or, where some reader of them steps in
    rounds, steps the series rule in rounds too.
    """

    batchwise: ClassVar[bool] = False
    series: bool = False  # per instance where the settings decide (Flatline)
    # A series rule whose only state of its own is its level (its recursion lives in shared components that
    # ran whole first: the noise rules): its `candidates` pre-test holds over a whole batch, as a batchwise one's.
    series_candidates: ClassVar[bool] = False
    # What `RuleSet.trace_scores` records per evaluated row: the Eval's score (the statistic the rule
    # thresholds: z, CUSUM S, T^2 / limit, ...) or, where the score is only a 0/1 marker, its value.
    traced: ClassVar[str] = "score"
    # None, or a list collecting (sensor, ts, score) arrays of every row evaluated (RuleSet.trace_scores).
    # While tracing, the cheap `candidates` pre-test is skipped, so every row gets its score.
    trace: list | None = None
    # None, or an AutoLimit (detectors/autolimit.py, `limit: auto`): it judges each Eval's scores against
    # a limit resolved per sensor from its training scores, instead of the detector's fixed limit.
    auto: AutoLimit | None = None

    def setup(self, shared: dict) -> None:
        self.level_ = np.zeros(self.n, np.int8)

    def _record(self, view: View, ev: Eval) -> None:
        assert self.trace is not None  # called only while tracing
        score = np.broadcast_to(np.asarray(ev.value if self.traced == "value" else ev.score, np.float64), len(view))
        self.trace.append((view.sensor.copy(), view.ts.copy(), np.where(ev.known, score, np.nan)))

    def evaluate(self, view: View) -> Eval:
        raise NotImplementedError

    def evaluate_series(self, view: View) -> Eval:
        """`evaluate` over a view with any number of rows per sensor (see `series`)."""
        raise NotImplementedError

    def candidates(self, view: View) -> np.ndarray | None:
        """Rows that could reach a level now (raw or held above 0), by a cheap test that may include
        more rows than needed but never fewer; None: every row (the default).

        Only for detectors whose `evaluate` has no side effects: a row outside the candidates whose
        sensor is at level 0 leaves it at 0 and emits nothing, so `evaluate` runs on the other rows
        only. Most readings are normal: for them a rule costs this test and nothing else."""
        return None

    def step(self, view: View) -> Detections | None:
        cand = self.candidates(view) if self.trace is None else None
        if cand is not None:
            rows = cand | (self.level_[view.loc] > 0) if self.level_.any() else cand
            idx = np.flatnonzero(rows)
            if len(idx) == 0:
                return None
            if len(idx) < len(view):
                view = view.subset(idx)
        ev = self.evaluate(view)
        if self.auto is not None:
            ev = self.auto.apply(view, ev)
        if self.trace is not None:
            self._record(view, ev)
        if _stays_quiet(self.level_[view.loc], ev):
            return None
        prev = take(self.level_, view)
        new = np.maximum(ev.raw, np.minimum(prev, ev.held))
        new = np.where(ev.known, new, prev)
        put(self.level_, view, new)
        idx = np.flatnonzero(ev.known & ((new | prev) != 0))
        if len(idx) == 0:
            return None
        return self._emit(view, ev, idx, new[idx])

    def _emit(self, view: View, ev: Eval, idx: np.ndarray, sev: np.ndarray) -> Detections:
        limit = ev.limits[sev] if ev.limits.ndim == 1 else ev.limits[sev, idx]
        return self.rows(
            view.sensor[idx], view.ts[idx], sev, ev.value[idx], limit, ev.score[idx],
            self.contexts(view, idx, ev.extra),
        )

    def step_batch(self, view: View) -> Detections | None:
        """A batchwise detector over a view holding any number of readings per sensor, each sensor's
        rows contiguous and in time order: the same detections as `step` over one reading at a time.
        A `series` detector's state runs along time in `evaluate_series` (it has no `candidates`, unless
        `series_candidates`)."""
        cand = self.candidates(view) if self.trace is None and (not self.series or self.series_candidates) else None
        if cand is not None:
            if _no_candidates(cand, self.level_):
                return None
            # Every row of the sensors with a candidate row or an active level (a later row may hold or
            # clear the level); the other sensors stay at 0.
            busy = self.level_ > 0
            busy[view.loc[cand]] = True
            idx = np.flatnonzero(busy[view.loc])
            if len(idx) == 0:
                return None
            if len(idx) < len(view):
                view = view.subset(idx)
        ev = self.evaluate_series(view) if self.series else self.evaluate(view)
        if self.auto is not None:
            ev = self.auto.apply(view, ev)
        if self.trace is not None:
            self._record(view, ev)
        idx = np.flatnonzero(ev.known)
        if len(idx) == 0:
            return None
        loc = view.loc[idx]
        if _stays_quiet(self.level_[loc], ev, idx):
            return None
        start = np.empty(len(idx), bool)
        start[0] = True
        np.not_equal(loc[1:], loc[:-1], out=start[1:])
        first = np.flatnonzero(start)
        init = self.level_[loc[first]]
        new = latch_levels(ev.raw[idx], ev.held[idx], start, init)
        prev = np.empty_like(new)
        prev[1:] = new[:-1]
        prev[first] = init
        last = run_ends(first, len(idx))  # each sensor's last row
        self.level_[loc[last]] = new[last]
        emit = np.flatnonzero((new | prev) != 0)
        if len(emit) == 0:
            return None
        return self._emit(view, ev, idx[emit], new[emit])
