"""Construction-noise rules (domain.md §1, §5): GB 12523 day/night limits on the rolling Leq, night Lmax,
Xiamen's prohibited windows and permits, exam periods and the pre-warning (data quality, which every
device kind runs: detectors/device_health.py).

Readings are 1-minute aggregates (leq, lmax, l90, ...) stamped with their interval end. Levels are
averaged as energy, never as an arithmetic mean of dB. Only readings flagged N count (HJ 212).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from config.base import Severity
from detectors.background import gb12523_correct, site_background_db
from detectors.base import Eval, Labels, LevelDetector, RuleParams, at, levels_above, severity_code
from detectors.calendar import EXAM_CLASS1, EXAM_LISTENING
from detectors.rolling import SlotRing, run_heads

VALID_DB = (25.0, 140.0)  # domain.md §4: plausible range of every level field


def valid_db(view, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(column, valid mask): flagged N and inside the plausible dB range. Invalid stays missing."""
    key = ("valid_db", name)
    hit = view.cache.get(key)
    if hit is None:
        x = view.col(name)
        hit = view.cache[key] = (x, (view.quality == 0) & (x >= VALID_DB[0]) & (x <= VALID_DB[1]))
    return hit


def db_to_energy(db) -> np.ndarray:
    """Sound levels in dB as relative energies (10^(L/10)): the only quantity that may be averaged."""
    return 10.0 ** (np.asarray(db, dtype=float) / 10.0)


def energy_to_db(energy) -> np.ndarray:
    """Relative energies back to dB (10 log10 E); 0 -> -inf, callers mask empty windows."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return 10.0 * np.log10(energy)


def energy_mean_db(levels) -> float:
    """The energy mean of levels in dB, 10 log10(mean(10^(L/10))), NaN ignored; NaN when none is left.
    Never the arithmetic mean of dB. The rules' rolling Leq (`NoiseEnergy`) uses the same two conversions."""
    x = np.asarray(levels, dtype=float)
    x = x[~np.isnan(x)]
    return float(energy_to_db(db_to_energy(x).mean())) if len(x) else float("nan")


def day_night_limit_db(day_db, night_db, night) -> np.ndarray:
    """The GB 12523 limit in force per row: the night limit at night, else the day limit (N-day / N-night)."""
    return np.where(night, night_db, day_db)


def exam_class1_db(exam_cfg, night) -> np.ndarray:
    """The GB 3096 class-1 limit of N-exam per row (night or day value of `noise.exam`)."""
    return np.where(night, exam_cfg.class1_night_db, exam_cfg.class1_day_db)


def limit_in_force(inv, device_index: int, ts_ns) -> dict:
    """For one noise device and UTC ns times, the limits the rules apply at each time (same Inventory and
    Calendar as the detectors): `limit_db` (day or night limit, lowered to the class-1 exam limit while an
    exam applies), `night`, `prohibited` (inside a prohibited window without a permit), `permit` (a
    permit covers the time) and `exam` (exam mode code, 0 none). Used by the console's charts."""
    ts = np.asarray(ts_ns, dtype=np.int64)
    f = inv.calendar.facts(np.full(len(ts), device_index, np.int64), ts)
    lim = day_night_limit_db(inv.day_db[device_index], inv.night_db[device_index], f.night)
    exam = f.exam >= EXAM_CLASS1
    lim = np.where(exam, np.minimum(lim, exam_class1_db(inv.cfg.noise.exam, f.night)), lim)
    return {"limit_db": lim.astype(float), "night": f.night.astype(bool),
            "prohibited": (f.prohibited & (f.permit < 0)).astype(bool), "permit": (f.permit >= 0),
            "exam": f.exam.astype(int)}


def window_name(window_s: int) -> str:
    return f"Leq{window_s // 60}" if window_s % 60 == 0 else f"Leq{window_s}s"


class NoiseEnergy:
    """Shared rolling store of 1-minute Leq energies per noise sensor (a `SlotRing`: an older reading never
    overwrites a newer one), filled before the rules run.

    Beside the ring it keeps the highest energy of the current and the previous block of ring-length
    slots: an upper bound of every window's energy mean, so rules compute exact rolling Leqs only for
    rows that could reach a threshold (`leq(view, window, rows)`). A window stops at the last time-rule
    boundary (`Calendar.since_boundary_s`) and is `enough` with min_coverage of its expected readings.

    Two ways to run, with the same results: round by round (`before` inserts one reading per sensor, the
    rules then read the state), or a whole batch at once (`run_series`, when every rule reading this store
    takes whole batches: RuleSet): it inserts every row, leaves the ring and blocks as the rounds would,
    and keeps, for the rules' `upper_db` and `leq` on that batch's view, what each row saw in the rounds.
    """

    def __init__(self, inv, group, min_coverage: float) -> None:
        self.inv, self.group = inv, group
        self.windows: set[int] = set()
        self.min_coverage = min_coverage
        self.ring: SlotRing | None = None
        self.report_s = inv.report_s[group.global_index]
        n = len(group)
        self.blk_id_ = np.full(n, -(2**30), np.int32)
        self.blk_cur_ = np.zeros(n)
        self.blk_prev_ = np.zeros(n)

    def need(self, window_s: int) -> None:
        self.windows.add(int(window_s))

    def _ring(self) -> SlotRing:
        if self.ring is None:
            slot_s = int(self.report_s.min()) if len(self.report_s) else 60
            self.ring = SlotRing(len(self.group), max(self.windows | {60}), slot_s)
        return self.ring

    def state_bytes(self) -> int:
        return self._ring().nbytes() + self.blk_id_.nbytes + self.blk_cur_.nbytes + self.blk_prev_.nbytes

    def before(self, rnd) -> None:
        self._insert(rnd.view(self.group))

    def _insert(self, v) -> None:
        """Insert a view's rows, at most one per sensor (a round's)."""
        x, ok = valid_db(v, "leq")
        ring = self._ring()
        if v.full:
            # Every sensor in order: the state is used without gathers; invalid rows change nothing.
            all_ok = bool(ok.all())
            loc, ts, e, sel = v.loc, v.ts, db_to_energy(x), slice(None)
            ring.insert(loc, ts, e, None if all_ok else ok)
        else:
            all_ok = True
            idx = np.flatnonzero(ok)
            loc, ts, e, sel = v.loc[idx], v.ts[idx], db_to_energy(x[idx]), v.loc[idx]
            ring.insert(loc, ts, e)
        b = (ts // ring.slot_ns - ring.base) // ring.slots
        bid, cur = self.blk_id_[sel].astype(np.int64), self.blk_cur_[sel]
        same = b == bid
        if all_ok and same.all():
            # Every row in its sensor's current block (the usual round): only the block's maximum moves,
            # the block before it and the block ids stay (what the general case below stores for them).
            self.blk_cur_[sel] = np.maximum(cur, e)
            return
        prev = self.blk_prev_[sel]
        nxt, late = b == bid + 1, b < bid
        new_cur = np.where(same, np.maximum(cur, e), np.where(late, cur, e))
        new_prev = np.where(same | late, prev, np.where(nxt, cur, 0.0))
        new_bid = np.maximum(b, bid)
        if not all_ok:
            new_cur, new_prev, new_bid = np.where(ok, new_cur, cur), np.where(ok, new_prev, prev), np.where(ok, new_bid, bid)
        # (With a slice, cur and prev are views of the state: compute both before storing either.)
        self.blk_cur_[sel] = new_cur
        self.blk_prev_[sel] = new_prev
        self.blk_id_[sel] = new_bid

    def after(self, rnd) -> None:
        pass

    def run_series(self, view) -> None:
        """Insert a whole batch's rows (each sensor's rows contiguous, in time order; a `Round` with
        once=False) as `before` would round by round, and keep what each row saw for this view (a batch
        of one row per sensor is one round: inserted as such, the rules then read the state)."""
        loc = view.loc
        first = np.flatnonzero(run_heads(loc))
        if len(first) == len(loc):
            # One row per sensor: a round. The rules read the state after it, as in the rounds.
            self._insert(view)
            return
        x, ok = valid_db(view, "leq")
        ring = self._ring()
        ts = view.ts
        with np.errstate(invalid="ignore", over="ignore"):
            e = db_to_energy(x)
        view.cache["series_ring"] = ring.insert_series(loc, ts, e, ok)
        # The blocks: per row the highest energy of its block and the one before (the batch's rows of
        # those blocks, all of them: a looser bound than the rounds' running maximum, still a bound; the
        # rules test it only to skip rows, see NoiseRule.leq_over), and the state the rounds leave.
        b = (ts // ring.slot_ns - ring.base) // ring.slots
        bid0 = self.blk_id_[loc].astype(np.int64)
        eff = ok & (b >= bid0)  # a row of an older block than the state's changes nothing (`before`)
        # Rows of a sensor never go back a block: the batch's (sensor, block) pairs are runs of rows.
        # Each run's maximum: its effective rows' energies (energies are positive: 0.0 stands for none),
        # with the state's current block (and the one before it) where the run is that block.
        seg = run_heads(loc) | run_heads(b)
        heads = np.flatnonzero(seg)
        hl, hb = loc[heads], b[heads]
        sb, scur, sprev = bid0[heads], self.blk_cur_[hl], self.blk_prev_[hl]
        top = np.maximum.reduceat(np.where(eff, e, 0.0), heads)
        top = np.where(hb == sb, np.maximum(top, scur), np.where(hb == sb - 1, np.maximum(top, sprev), top))
        # The block before each run's: the sensor's previous run when that is the block just before, else
        # the state's blocks, else none (0.0).
        below = np.where(hb - 1 == sb, scur, np.where(hb == sb, sprev, 0.0))
        has_prev = np.zeros(len(heads), bool)
        has_prev[1:] = (hl[1:] == hl[:-1]) & (hb[:-1] == hb[1:] - 1)
        below[1:] = np.where(has_prev[1:], top[:-1], below[1:])
        run = np.cumsum(seg) - 1
        with np.errstate(divide="ignore"):
            view.cache["upper"] = np.where(b < bid0, np.inf, 10.0 * np.log10(np.maximum(top, below)[run]))
        last = np.append(first[1:], len(loc)) - 1
        # The block each sensor ends in: its last effective row's (b never decreases along a sensor).
        ends = np.maximum.accumulate(np.where(eff, np.arange(len(loc)), -1))[last]
        moved = ends >= first  # (an earlier sensor's row is not this one's)
        at = ends[moved]
        lc = loc[at]
        self.blk_cur_[lc] = top[run[at]]
        self.blk_prev_[lc] = below[run[at]]
        self.blk_id_[lc] = b[at]

    def upper_db(self, view) -> np.ndarray:
        """An upper bound of every rolling Leq of each row (+inf for late rows of an older block)."""
        hit = view.cache.get("upper")
        if hit is None:
            ring = self._ring()
            b = (view.ts // ring.slot_ns - ring.base) // ring.slots
            top = np.maximum(at(self.blk_cur_, view), at(self.blk_prev_, view))
            with np.errstate(divide="ignore"):
                hit = view.cache["upper"] = np.where(b < at(self.blk_id_, view), np.inf, 10.0 * np.log10(top))
        return hit

    def leq(self, view, window_s: int, rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(Leq over the window ending at each row, enough) for the rows in the boolean mask `rows` (all
        when None); NaN and False elsewhere. `enough` when at least min_coverage of the expected
        readings are present (HJ 906 valid-data rate). Cached per view and window."""
        key = ("leq", window_s)
        hit = view.cache.get(key)
        n = len(view)
        if hit is None:
            hit = view.cache[key] = (np.full(n, np.nan), np.zeros(n, bool), np.zeros(n, bool))
        leq, enough, done = hit
        todo = ~done if rows is None else rows & ~done
        idx = np.flatnonzero(todo)
        if len(idx):
            leq[idx], enough[idx] = self._leq(view, window_s, idx)
            done[idx] = True
        return leq, enough

    def _leq(self, view, window_s: int, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ring = self._ring()
        since = view.cache.get("since")
        if since is None:
            since = view.cache["since"] = view.round.calendar.since_boundary_s(view.local_seconds())
        loc = view.loc[idx]
        # The window stops at the last time-rule boundary; the reading stamped at it still counts.
        span = np.minimum(ring.span(window_s), np.maximum(1, -(-since[idx] // ring.slot_s)))
        seen = view.cache.get("series_ring")  # a whole batch's (run_series), else the state is the row's
        if seen is not None:
            # Blocks of rows keep the (rows x slots) tables small; the sums are the rounds' own (below).
            step = max(1, (1 << 20) // ring.slots)
            parts = []
            for a in range(0, len(idx), step):
                vals, mask = seen.window(idx[a:a + step], span[a:a + step])
                parts.append(self._mean(vals, mask, window_s, loc[a:a + step]))
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        vals, age = ring.ages(loc, view.ts[idx], view.full and len(idx) == len(view))
        if span.min() == span.max():
            mask = age < np.uint32(span[0])
        else:
            mask = age < span.astype(np.uint32)[:, None]
        return self._mean(vals, mask, window_s, loc)

    def _mean(self, vals: np.ndarray, mask: np.ndarray, window_s: int, loc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Leq, enough) of each row's window: its `vals` (rows x slots) where `mask`."""
        count = np.einsum("ij->i", mask.view(np.int8), dtype=np.int64)
        total = np.einsum("ij,ij->i", vals, mask)
        with np.errstate(divide="ignore", invalid="ignore"):
            leq = energy_to_db(total / count)
        expected = np.maximum(1, window_s // self.report_s[loc])
        enough = count >= np.ceil(self.min_coverage * expected - 1e-9)
        return np.where(count > 0, leq, np.nan), enough


class NoiseBackground:
    """Shared L90 background per noise sensor: follows quiet minutes quickly and busy ones slowly
    (a minimum-statistics tracker), so hours of illegal work do not become the background.

    The rules read it before their row updates it (`after`). Whole batches (`run_series`, see NoiseEnergy)
    run the recursion row by row in plain Python floats (it has no closed form: its weight depends on the
    side of the background each L90 falls), with the arithmetic of the rounds, and keep what each row saw.
    """

    DOWN = 0.5         # weight of an L90 below the background
    UP = 1.0 / 240.0   # weight of an L90 above it (about 4 h of 1-minute readings to follow a rise)

    def __init__(self, inv, group) -> None:
        self.group = group
        self.bg_ = np.full(len(group), np.nan)

    def state_bytes(self) -> int:
        return self.bg_.nbytes

    def before(self, rnd) -> None:
        pass

    def after(self, rnd) -> None:
        v = rnd.view(self.group)
        x, ok = valid_db(v, "l90")
        sel = slice(None) if v.full and ok.all() else v.loc[ok]
        if not isinstance(sel, slice):
            x = x[ok]
        b = self.bg_[sel]
        w = np.where(np.isnan(b), 1.0, np.where(x < b, self.DOWN, self.UP))
        self.bg_[sel] = np.where(np.isnan(b), x, b + w * (x - b))

    def run_series(self, view) -> None:
        """`after` over a whole batch (each sensor's rows contiguous, in time order), keeping for this
        view the background each row saw (before its own L90)."""
        x, ok = valid_db(view, "l90")
        loc = view.loc
        n = len(loc)
        first = np.flatnonzero(run_heads(loc))
        if len(first) == n:
            # One row per sensor (a round): each row sees the state, then `after`'s update, vectorized (the
            # same float64 operations as the loop below).
            seen_bg = self.bg_[loc]
            view.cache["background"] = seen_bg
            b, xo = seen_bg[ok], x[ok]
            w = np.where(np.isnan(b), 1.0, np.where(xo < b, self.DOWN, self.UP))
            self.bg_[loc[ok]] = np.where(np.isnan(b), xo, b + w * (xo - b))
            return
        bounds = first.tolist() + [n]
        xs = np.where(ok, x, np.nan).tolist()
        start = self.bg_[loc[first]].tolist()
        seen = [0.0] * n
        final = []
        down, up = self.DOWN, self.UP
        for k, b in enumerate(start):
            for i in range(bounds[k], bounds[k + 1]):
                seen[i] = b
                xi = xs[i]
                if xi != xi:  # not valid: no update
                    continue
                if b != b:
                    b = xi
                else:
                    b = b + (down if xi < b else up) * (xi - b)
            final.append(b)
        self.bg_[loc[first]] = final
        view.cache["background"] = np.array(seen)

    def background(self, view) -> np.ndarray:
        """The background each row of `view` sees (NaN: none yet)."""
        if not view.round.once:
            seen = view.cache.get("background")
            if seen is None:
                raise RuntimeError("a whole-batch view of the noise rules without NoiseBackground.run_series")
            return seen
        return at(self.bg_, view)


def _shared(shared: dict, inv, group, name: str):
    if name not in shared:
        if name == "noise_energy":
            shared[name] = NoiseEnergy(inv, group, inv.cfg.noise.min_coverage)
        else:
            shared[name] = NoiseBackground(inv, group)
    return shared[name]


class NoiseRule(LevelDetector):
    # Whole batches (`evaluate_series`) while the shared NoiseEnergy and NoiseBackground run whole too
    # (RuleSet decides: every rule reading them must take whole batches); else round by round.
    series = True
    series_candidates = True  # and `candidates` read the components' per-row bound
    category = "noise"
    kinds = ("noise",)
    metric = "leq"
    reads = ("leq",)
    unit = "dB(A)"
    uses_calendar = True

    def setup(self, shared: dict) -> None:
        super().setup(shared)
        self.nz = self.inv.cfg.noise
        self.energy = _shared(shared, self.inv, self.group, "noise_energy")
        self.background = _shared(shared, self.inv, self.group, "noise_background")
        hyst = getattr(self.params, "hysteresis_db", None)  # not every noise rule's Params has it
        self.hyst = hyst if hyst is not None else self.nz.hysteresis_db

    def use_window(self, default_s: int) -> None:
        """The rule's Leq window (its `window_s`, else `default_s`), kept by the shared energy store."""
        self.win = getattr(self.params, "window_s", None) or default_s  # the Params of the rules that call this have it
        self.window = window_name(self.win)
        self.energy.need(self.win)

    def lim(self, name: str) -> np.ndarray:
        return getattr(self.inv, name)[self.sensors]

    def leq_over(self, view, window_s: int, ok: np.ndarray, threshold: np.ndarray):
        """(Leq, enough, candidates): the rolling Leq is computed only for valid rows whose upper bound
        exceeds `threshold` (the lowest level minus hysteresis) or whose sensor is active; elsewhere no
        level can be reached, and those rows are left out (not known: state unchanged, nothing emitted).

        Over a whole batch (`evaluate_series`) a row's level before it is not known until the rows are
        latched: every valid row of a sensor active before the batch or with any row over the bound is
        a candidate. The extra rows are below the bound at level 0, so they keep 0 and emit nothing: the
        same detections (but `detect --scores` shows their scores, where the rounds leave them NaN)."""
        over = self.energy.upper_db(view) > threshold
        if view.round.once:
            active = self.level_[view.loc] > 0
        else:
            busy = self.level_ > 0
            busy[view.loc[ok & over]] = True
            active = busy[view.loc]
        cand = ok & (over | active)
        leq, enough = self.energy.leq(view, window_s, cand)
        return leq, enough, cand

    def evaluate_series(self, view) -> Eval:
        """`evaluate` over a whole batch: the shared NoiseEnergy and NoiseBackground ran it first
        (`run_series`) and give each row what it saw in the rounds; the rest judges each row alone."""
        return self.evaluate(view)


class LimitParams(RuleParams):
    window_s: int | None = Field(None, gt=0, le=86400)
    hysteresis_db: float | None = Field(None, ge=0, le=20)


class RollingLimitParams(LimitParams):
    # off: the measured Leq is judged as it is; gb12523: measured minus background by GB 12523-2011
    # Table 2 (detectors/background.py), a reading within 3 dB of the background is not judged.
    background_correction: Literal["off", "gb12523"] = "off"


class RollingLeqLimit(NoiseRule):
    """Shared body of N-day and N-night: the rolling energy Leq against the site's limit of one period.

    With `background_correction: gb12523` the level judged is the Leq corrected for the background
    (GB 12523-2011 Table 2; the site's surveyed background_db, else the measured L90 background): a
    difference of 3-10 dB lowers it by 3, 2 or 1 dB, over 10 dB leaves it, and under 3 dB the reading
    is not valid for assessment: not judged (the level neither rises nor clears; `detect --scores`
    shows no score). Rows carry measured_db, background_db, background_source, correction_db and
    corrected_db in their context."""

    Params = RollingLimitParams
    params: RollingLimitParams
    limit_key = ""  # the NoiseLimits key of the period's limit
    at_night = False

    def setup(self, shared):
        super().setup(shared)
        self.use_window(self.nz.rolling_window_s)
        self.limit_db = self.lim(self.limit_key)
        self.cand_db = self.limit_db - self.hyst  # the lowest level held: the limit minus the hysteresis
        # A correction only lowers the level, so the candidates above stay a superset.
        self.correct = self.params.background_correction == "gb12523"
        self.site_bg = site_background_db(self.inv.cfg, self.sensors) if self.correct else None

    def levels(self, lim) -> list:
        """(severity code, limit array) pairs, lowest first."""
        raise NotImplementedError

    def in_period(self, view):
        night = view.facts().night
        return night if self.at_night else ~night

    def candidates(self, view):
        # The lowest level is the limit itself; an active level holds down to limit - hysteresis.
        return self.in_period(view) & (self.energy.upper_db(view) > at(self.cand_db, view))

    def evaluate(self, view) -> Eval:
        _, ok = valid_db(view, "leq")
        lim = self.limit_db[view.loc]
        leq, enough, cand = self.leq_over(view, self.win, ok, lim - self.hyst)
        known, extra = cand & enough, None
        if self.correct:
            leq, known, extra = self.corrected(view, leq, known)
        raw, held, limits = levels_above(leq, self.levels(lim), self.hyst)
        period = self.in_period(view)
        return Eval(known, (raw * period).astype(np.int8), (held * period).astype(np.int8), leq, limits,
                    leq - lim, extra)

    def corrected(self, view, leq, known):
        """(assessed level, known, context) under GB 12523 background correction (see the class)."""
        assert self.site_bg is not None  # set in setup when correcting
        site = at(self.site_bg, view)
        measured = self.background.background(view)
        bg = np.where(np.isnan(site), measured, site)
        value, valid, corr = gb12523_correct(leq, bg)
        source = Labels(np.where(~np.isnan(site), 1, np.where(np.isnan(bg), 0, 2)).astype(np.int8),
                        (None, "site", "l90"))
        extra = {"measured_db": np.round(leq, 1), "background_db": np.round(bg, 1), "background_source": source,
                 "correction_db": corr, "corrected_db": np.round(value, 1)}
        return value, known & valid, extra


class NoiseDayLimit(RollingLeqLimit):
    """N-day: rolling Leq20 by day above the site's day limit (yellow), above limit + 5 (orange)."""

    type = "noise_day_limit"
    limit_key = "day_db"

    def levels(self, lim) -> list:
        return [(2, lim), (3, lim + self.nz.day_orange_over_db)]


class NoiseNightLimit(RollingLeqLimit):
    """N-night: rolling Leq20 at night above the site's night limit (orange), permit or not."""

    type = "noise_night_limit"
    limit_key = "night_db"
    at_night = True

    def levels(self, lim) -> list:
        return [(3, lim)]


class LmaxParams(RuleParams):
    hysteresis_db: float | None = Field(None, ge=0, le=20)


class NoiseNightLmax(NoiseRule):
    """N-night-max: the minute's Lmax at night above night limit + 15 (orange); at or above 85 (red)."""

    batchwise = True
    series = False  # judges each reading alone (batchwise, with its candidates pre-test)

    type = "noise_night_lmax"
    metric = "lmax"
    reads = ("lmax",)
    window = "Lmax1"
    Params = LmaxParams
    params: LmaxParams

    def setup(self, shared):
        super().setup(shared)
        self.max_db = self.lim("night_db") + self.lim("lmax_over_db")

    def candidates(self, view):
        lowest = np.minimum(self.max_db[view.loc], self.nz.night_lmax_red_db)
        return view.facts().night & (view.col("lmax") > lowest - self.hyst)

    def evaluate(self, view) -> Eval:
        x, ok = valid_db(view, "lmax")
        lim = self.max_db[view.loc]
        red = self.nz.night_lmax_red_db
        # "at or above 85" is red: compare against the next float below 85 with a strict >.
        raw, held, limits = levels_above(x, [(3, lim), (4, np.nextafter(red, -np.inf))], self.hyst)
        limits[4] = red
        night = view.facts().night
        return Eval(ok, (raw * night).astype(np.int8), (held * night).astype(np.int8), x, limits, x - lim)


class ProhibitedParams(RuleParams):
    window_s: int | None = Field(None, gt=0, le=7200)
    hysteresis_db: float | None = Field(None, ge=0, le=20)
    severity: Severity | None = None


class NoiseProhibited(NoiseRule):
    """N-prohibited: inside a prohibited window with no valid permit for the site, Leq5 above
    max(L90 background + margin, floor) is suspected illegal work. Under a permit this rule is replaced
    by the ordinary day/night limits (N-day, N-night), which keep running with the permit in context."""

    type = "noise_prohibited"
    Params = ProhibitedParams
    params: ProhibitedParams

    def setup(self, shared):
        super().setup(shared)
        pr = self.nz.prohibited
        self.use_window(pr.window_s)
        self.sev = severity_code(self.params.severity or pr.severity)

    def candidates(self, view):
        # The limit is never below the floor.
        f = view.facts()
        on = f.prohibited & (f.permit < 0)
        if not on.any():
            return on
        return on & (self.energy.upper_db(view) > self.nz.prohibited.floor_db - self.hyst)

    def evaluate(self, view) -> Eval:
        pr = self.nz.prohibited
        _, ok = valid_db(view, "leq")
        bg = self.background.background(view)
        lim = np.fmax(bg + pr.background_margin_db, pr.floor_db)
        leq, enough, cand = self.leq_over(view, self.win, ok, lim - self.hyst)
        raw, held, limits = levels_above(leq, [(self.sev, lim)], self.hyst)
        f = view.facts()
        on = f.prohibited & (f.permit < 0)
        return Eval(cand & enough, (raw * on).astype(np.int8), (held * on).astype(np.int8), leq, limits, leq - lim,
                    {"background_db": np.round(bg, 1)})


class NoiseExam(NoiseRule):
    """N-exam: within the exam radius on exam dates, GB 3096 class-1 limits on Leq20 (orange); during a
    listening test, the minute's Leq above the L90 background + margin (red)."""

    type = "noise_exam"
    Params = LimitParams
    params: LimitParams

    def setup(self, shared):
        super().setup(shared)
        self.use_window(self.nz.rolling_window_s)

    def candidates(self, view):
        return view.facts().exam >= EXAM_CLASS1

    def evaluate(self, view) -> Eval:
        ex = self.nz.exam
        x, ok = valid_db(view, "leq")
        f = view.facts()
        class1 = exam_class1_db(ex, f.night)
        leq, enough, cand = self.leq_over(view, self.win, ok, class1 - self.hyst)
        enough = enough & cand
        raw, held, limits = levels_above(leq, [(3, class1)], self.hyst)
        on = f.exam >= EXAM_CLASS1
        raw, held = raw * (on & enough), held * (on & enough)
        bg = self.background.background(view)
        quiet = np.where(np.isnan(bg), class1, bg + ex.listening_margin_db)
        r2, h2, l2 = levels_above(x, [(4, quiet)], self.hyst)
        listening = f.exam == EXAM_LISTENING
        raw = np.maximum(raw, r2 * listening).astype(np.int8)
        held = np.maximum(held, h2 * listening).astype(np.int8)
        limits[4] = l2[4]
        value = np.where(listening, x, leq)
        lim = np.where(listening, quiet, class1)
        return Eval(ok & (enough | listening), raw, held, value, limits, value - lim)


class PreParams(RuleParams):
    window_s: int | None = Field(None, gt=0, le=7200)
    margin_db: float | None = Field(None, ge=0, le=30)
    hysteresis_db: float | None = Field(None, ge=0, le=20)


class NoisePreWarning(NoiseRule):
    """N-pre: Leq5 above the limit that applies now minus a margin (blue site notice). The limit is
    the class-1 limit in exam mode, else the site's day or night limit."""

    type = "noise_pre_warning"
    Params = PreParams
    params: PreParams

    def setup(self, shared):
        super().setup(shared)
        self.use_window(self.nz.prohibited.window_s)
        self.margin = self.params.margin_db if self.params.margin_db is not None else self.nz.pre_warning_margin_db
        self.day_db, self.night_db = self.lim("day_db"), self.lim("night_db")

    def _limit(self, view) -> np.ndarray:
        ex = self.nz.exam
        f = view.facts()
        limit = np.where(f.night, at(self.night_db, view), at(self.day_db, view))
        return np.where(f.exam >= EXAM_CLASS1, np.where(f.night, ex.class1_night_db, ex.class1_day_db), limit)

    def candidates(self, view):
        return self.energy.upper_db(view) > self._limit(view) - self.margin - self.hyst

    def evaluate(self, view) -> Eval:
        _, ok = valid_db(view, "leq")
        limit = self._limit(view)
        leq, enough, cand = self.leq_over(view, self.win, ok, limit - self.margin - self.hyst)
        raw, held, limits = levels_above(leq, [(1, limit - self.margin)], self.hyst)
        return Eval(cand & enough, raw, held, leq, limits, leq - limit)
