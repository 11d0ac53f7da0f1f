"""What detectors know about the inventory, as numpy arrays indexed by dense sensor index, and the
row views a rule set hands to its detectors (one reading per sensor at a time)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from detectors.calendar import Calendar, TimeFacts

if TYPE_CHECKING:
    from config.model import Config

# Device kinds as codes; rounds order their rows by this code (noise, then gas, then generic).
KIND_CODES = {"noise": 0, "gas": 1, "generic": 2}


def device_start_kpa(set_kpa: float) -> float:
    """GB 50028-2006 §6.6.10 protective-device start pressure for a regulator outlet set point.

    Outlet below 80 kPa: upper outlet pressure x 1.5; 80-400 kPa: + 40 kPa; above 400 kPa: x 1.10.
    The set pressure stands in for the upper outlet pressure (the asset register has no other).
    """
    if set_kpa < 80.0:
        return set_kpa * 1.5
    if set_kpa <= 400.0:
        return set_kpa + 40.0
    return set_kpa * 1.10


class Inventory:
    """Per-sensor facts of a Config: kind, interval, noise limits and gas set points after overrides."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        devs = cfg.devices
        self.n = len(devs)
        self.ids = [d.id for d in devs]
        self.kind = np.array([KIND_CODES[d.kind] for d in devs], np.int8)
        self.report_s = np.array([d.report_interval_s for d in devs], np.int64)
        self.sample_s = np.array([d.sample_s for d in devs], np.int64)
        nz = cfg.noise
        day = np.full(self.n, nz.limits.day_db)
        night = np.full(self.n, nz.limits.night_db)
        over = np.full(self.n, nz.limits.night_lmax_over_db)
        # Site overrides first, then device overrides, so a device override wins over its site's.
        for o in sorted(nz.overrides, key=lambda o: o.device is not None):
            hit = np.array([(d.site == o.site) if o.site else (d.id == o.device) for d in devs], bool)
            if o.limits.day_db is not None:
                day[hit] = o.limits.day_db
            if o.limits.night_db is not None:
                night[hit] = o.limits.night_db
            if o.limits.night_lmax_over_db is not None:
                over[hit] = o.limits.night_lmax_over_db
        self.day_db, self.night_db, self.lmax_over_db = day, night, over
        nan = float("nan")
        self.p_set = np.array([d.set_pressure_kpa if d.kind == "gas" else nan for d in devs])
        self.mop = np.array([d.mop_kpa if d.kind == "gas" else nan for d in devs])
        self.full_scale = np.array([d.full_scale_kpa if d.kind == "gas" else nan for d in devs])
        g = cfg.gas
        rel_high = np.array(
            [(g.rel_high.low if d.pressure_class == "low" else g.rel_high.medium) if d.kind == "gas" else nan for d in devs]
        )
        low_levels: list[list] = [list(g.rel_low) for _ in devs]
        for go in sorted(g.overrides, key=lambda o: o.device is not None):
            for i, d in enumerate(devs):
                if (d.site == go.site) if go.site else (d.id == go.device):
                    if go.rel_high is not None:
                        rel_high[i] = go.rel_high
                    if go.rel_low is not None:
                        low_levels[i] = list(go.rel_low)
        self.rel_high = rel_high
        self.low_levels = low_levels
        self.highhigh_kpa = np.array(
            # A valid gas device has both (config/inventory.py); the None tests narrow the types.
            [min(d.mop_kpa, device_start_kpa(d.set_pressure_kpa))
             if d.kind == "gas" and d.mop_kpa is not None and d.set_pressure_kpa is not None else nan for d in devs]
        )
        self.calendar = Calendar(cfg)


class Columns(Protocol):
    """A round's value columns: `take(name, sel)` is column `name` at round rows `sel`, None if absent."""

    def take(self, name: str, sel: slice | np.ndarray) -> np.ndarray | None: ...


class View:
    """The rows of one round that one group of rules runs on: each sensor at most once.

    sel: row positions in the round (a slice when the group's rows are contiguous); loc: the rules'
    local sensor index per row; sensor, ts, quality. Columns and time facts are gathered on first use
    and shared by every rule of the group.
    """

    __slots__ = ("round", "sel", "loc", "sensor", "ts", "quality", "_cols", "_facts", "_local", "cache", "full")

    def __init__(self, rnd: Round, sel: slice | np.ndarray, loc: np.ndarray, full: bool = False) -> None:
        self.round, self.sel, self.loc = rnd, sel, loc
        # Every sensor of the group, in local-index order: state arrays can be used without gathering.
        self.full = full
        self.sensor = rnd.sensor[sel]
        self.ts = rnd.ts[sel]
        self.quality = rnd.quality[sel]
        self._cols: dict[str, np.ndarray] = {}
        self._facts: TimeFacts | None = None
        self._local: np.ndarray | None = None
        self.cache: dict[str, Any] = {}  # results shared components compute once per view (rolling Leq)

    def __len__(self) -> int:
        return len(self.sensor)

    def subset(self, idx: np.ndarray) -> View:
        """The view of rows `idx` of this one. What this view has computed (columns, time facts, the
        per-row results of shared components in `cache`) is carried over for those rows."""
        if isinstance(self.sel, slice):
            sel = idx + self.sel.start if self.sel.start else idx
        else:
            sel = self.sel[idx]
        v = View(self.round, sel, self.loc[idx])
        n = len(self.sensor)
        v._cols = {k: c[idx] for k, c in self._cols.items()}
        if self._facts is not None:
            v._facts = self._facts.take(idx)
        elif self._local is not None:
            v._local = self._local[idx]
        for k, c in self.cache.items():
            if isinstance(c, np.ndarray) and c.ndim >= 1 and len(c) == n:
                v.cache[k] = c[idx]
            elif isinstance(c, tuple) and all(isinstance(x, np.ndarray) and len(x) == n for x in c):
                v.cache[k] = tuple(x[idx] for x in c)
            elif hasattr(c, "take_rows"):  # per-row results held by an object (NoiseEnergy's RingSeries)
                v.cache[k] = c.take_rows(idx)
        return v

    def col(self, name: str) -> np.ndarray:
        c = self._cols.get(name)
        if c is None:
            c = self.round.values.take(name, self.sel)
            if c is None:
                c = np.full(len(self.sensor), np.nan)
            self._cols[name] = c
        return c

    def local_seconds(self) -> np.ndarray:
        """Local wall-clock seconds since the epoch of each row (cheaper than `facts`)."""
        if self._facts is not None:
            return self._facts.local
        if self._local is None:
            self._local = self.round.calendar.local_seconds(self.ts)
        return self._local

    def facts(self) -> TimeFacts:
        if self._facts is None:
            self._facts = self.round.calendar.facts(self.sensor, self.ts)
        return self._facts


class Round:
    """Readings with at most one row per sensor, in the order a rule set evaluates them.

    `kind_split` is the row where gas rows start when the round is ordered by kind code (else None), and
    `kind_end` the row where the generic devices' rows start (None: there are none, gas runs to the end).
    `once=False`: a whole batch for batchwise detectors instead, any number of rows per sensor (each
    sensor's rows contiguous and in time order); its views are then never `full`.
    """

    __slots__ = ("sensor", "ts", "values", "quality", "calendar", "kind_split", "kind_end", "once", "_views")

    def __init__(self, sensor: np.ndarray, ts: np.ndarray, values: Columns, quality: np.ndarray, calendar: Calendar,
                 kind_split: int | None = None, once: bool = True, kind_end: int | None = None) -> None:
        self.sensor, self.ts, self.values, self.quality, self.calendar = sensor, ts, values, quality, calendar
        self.kind_split = kind_split
        self.kind_end = kind_end
        self.once = once
        self._views: dict[int, View] = {}

    def view(self, group: SensorGroup) -> View:
        v = self._views.get(id(group))
        if v is None:
            sel = None
            if self.kind_split is not None and group.kinds is not None:
                # Rows are ordered by kind: a group of whole kinds is a contiguous slice (no gathers).
                n = len(self.sensor)
                end = n if self.kind_end is None else self.kind_end
                if group.kinds == (0,):
                    sel = slice(0, self.kind_split)
                elif group.kinds == (1,):
                    sel = slice(self.kind_split, end)
                elif group.kinds == (0, 1):
                    sel = slice(0, end)
                elif group.kinds == (2,):
                    sel = slice(end, n)
                elif group.kinds == (1, 2):
                    sel = slice(self.kind_split, n)
                elif group.kinds == (0, 1, 2):
                    sel = slice(0, n)
            if sel is not None:
                n = sel.stop - sel.start
                v = View(self, sel, group.local[self.sensor[sel]], self.once and n == len(group))
            else:
                loc = group.local[self.sensor]
                idx = np.flatnonzero(loc >= 0)
                v = View(self, idx, loc[idx])
            self._views[id(group)] = v
        return v


class SensorGroup:
    """The sensors one or more rules run on, with their local index (-1 where a rule does not run).

    kinds: the sorted kind codes the group is made of, when it holds every sensor of those kinds.
    """

    def __init__(self, mask: np.ndarray, kinds: tuple[int, ...] | None = None) -> None:
        self.global_index = np.flatnonzero(mask).astype(np.int32)
        self.local = np.full(len(mask), -1, np.int32)
        self.local[self.global_index] = np.arange(len(self.global_index), dtype=np.int32)
        self.kinds = kinds

    def __len__(self) -> int:
        return len(self.global_index)
