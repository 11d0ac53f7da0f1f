"""Gas-pipeline pressure rules (domain.md §2, §5): levels against each device's set pressure and MOP,
rupture (fast drop), slow leak (CUSUM on the residual against a time-of-week profile) and sensor range
faults (G-flatline: detectors/gas_flatline.py; low battery: detectors/device_health.py). Pressures are kPa gauge.

Readings outside the sensor's physical range are device faults (G-range); every process rule treats
them, and readings not flagged N, as missing.
"""

from __future__ import annotations

import math
from array import array
from typing import NamedTuple, TypeVar, overload

import numpy as np
from pydantic import Field

from config.base import Severity
from detectors.base import Eval, LevelDetector, RuleParams, latch_levels, levels_above, levels_below, severity_code
from detectors.calendar import NS
from detectors.rolling import SlotRing, run_ends, run_heads, run_ranks

WEEK_HOURS = 168
# A recursion over a whole batch (G-leak's CUSUM and sigma, G-flatline's dead band) steps one row at a
# time in plain floats while the batch has at most this many rows per step of the vectorized path (about the
# sensors it holds): below it that is cheaper (measured: ~0.7 µs a row against ~30 µs a numpy step).
PER_ROW_SENSORS = 40
# The profile's float32 running means (`GasProfile._chain_means`) step one row at a time while the chains hold
# at most this many rows per step of the longest chain (about the chains there are): a numpy step over all the
# chains costs ~1.8 µs, a row ~0.09 µs (measured: equal at about 20 chains).
PER_ROW_CHAINS = 20
_AROUND = np.arange(-2, 4)  # the hours `smooth_profile` reads, relative to the one before the instant
_Local = TypeVar("_Local", np.ndarray, int)  # local seconds: an array of them, or one plain int


def valid_p(view, inv, loc_sensors) -> tuple[np.ndarray, np.ndarray]:
    """(p, valid): flagged N and inside [range.min_kpa, range.fs_factor x full scale]."""
    hit = view.cache.get("valid_p")
    if hit is None:
        rg = inv.cfg.gas.range
        p = view.col("p")
        fs = inv.full_scale[view.sensor]
        hit = view.cache["valid_p"] = (p, (view.quality == 0) & (p >= rg.min_kpa) & (p <= rg.fs_factor * fs))
    return hit


def _local_span(view) -> tuple[np.ndarray, int, int]:
    """(local seconds, earliest, latest) of a view's rows, computed once per view."""
    hit = view.cache.get("local_span")
    if hit is None:
        local = view.local_seconds()
        lo, hi = (int(local.min()), int(local.max())) if len(local) else (0, 0)
        hit = view.cache["local_span"] = (local, lo, hi)
    return hit


def hour_of_week(local_s: _Local) -> _Local:
    """Hour of the local week, Monday 00:00 = 0 (1970-01-01 was a Thursday); also of a plain int."""
    return (local_s // 3600 + 72) % WEEK_HOURS  # hour 0 of 1970-01-01 is the week's hour 72


def week_number(local_s) -> np.ndarray:
    """The local week (Monday to Sunday) a local instant falls in, counted from 1 (the week of
    1970-01-01), as uint16: fits until the year 3200."""
    return ((np.asarray(local_s, np.int64) // 86400 + 3) // 7 + 1).astype(np.uint16)


@overload
def week_position(local_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...
@overload
def week_position(local_s: int) -> tuple[int, float]: ...
def week_position(local_s: np.ndarray | int) -> tuple[np.ndarray | int, np.ndarray | float]:
    """(h0, w): the hour-of-week bin whose middle (h:30) is at or before each local instant, and the
    fraction of the hour from that middle to the next one (the middle of h0 + 1, modulo the week).
    Plain integer arithmetic: an array or a single int."""
    sow = ((local_s // 86400 + 3) % 7) * 86400 + local_s % 86400
    x = sow - 1800  # seconds since the middle of hour 0 (negative in Monday's first half hour: wraps)
    return (x // 3600) % WEEK_HOURS, (x % 3600) / 3600.0


def smooth_profile(m, w):
    """The profile between two hour middles from the six hourly means m[0..5] around them (hours
    h0-2 .. h0+3), w the fraction of the way from the middle of h0 (m[2]) to that of h0+1 (m[3]).

    An hourly mean is an average over its hour, not the value at its middle: at a demand peak it lies
    well above the bottom of the sag, and a straight line between hour means misses a 1-hour-wide peak
    by about 1 % of set pressure, twice a day, every day (a false G-leak). So each mean is first turned
    into the value at its middle (m - second difference / 8: a piecewise-linear curve through those
    values averages back to m over each hour), and a Catmull-Rom cubic goes through those values: it
    is continuous, has no step at hour boundaries, and passes through each hour middle.
    Plain arithmetic, so the reference implementation evaluates it in the same order on floats.
    """
    v1 = m[1] - (m[0] - 2.0 * m[1] + m[2]) / 8.0
    v2 = m[2] - (m[1] - 2.0 * m[2] + m[3]) / 8.0
    v3 = m[3] - (m[2] - 2.0 * m[3] + m[4]) / 8.0
    v4 = m[4] - (m[3] - 2.0 * m[4] + m[5]) / 8.0
    return 0.5 * ((2.0 * v2) + (v3 - v1) * w + (2.0 * v1 - 5.0 * v2 + 4.0 * v3 - v4) * (w * w)
                  + (3.0 * v2 - v1 - 3.0 * v3 + v4) * (w * w * w))


# Rows per block of `smooth_rows`: its ~30 temporaries of a block stay in the CPU cache (measured at 24,000
# rows: 0.29 ms in blocks of 4,096 against 0.9-1.6 ms in one go).
SMOOTH_BLOCK = 4096


def smooth_rows(m, w) -> np.ndarray:
    """`smooth_profile` of many rows (m: six arrays of hour means, w: fractions), block by block: the same
    operations on each element, so the same bits."""
    n = len(w)
    if n <= SMOOTH_BLOCK:
        return smooth_profile(m, w)
    out = np.empty(n)
    for a in range(0, n, SMOOTH_BLOCK):
        b = a + SMOOTH_BLOCK
        out[a:b] = smooth_profile([h[a:b] for h in m], w[a:b])
    return out


class GasProfile:
    """Shared time-of-week pressure profile per gas sensor: the mean of valid readings in each local
    hour of the week. An hour counts as learned once its readings come from at least `min_weeks`
    distinct local weeks and number at least `min_weeks` hours' worth (`learned_bins`): a count of
    readings alone would call one week's hour learned from a device sampling twice as fast, or from
    a back-fill that replays one week twice (a weekly profile needs several weeks). The profile at
    an instant is a smooth curve through the hours around it (`smooth_profile`, no step at hour
    boundaries) and counts as learned only where all six hours it uses are. Updated after the rules
    ran, so a reading is never judged against a profile that already contains it: round by round
    (`after`), or for a whole batch (`run_series` keeps what each row sees, `after_series` learns the rows
    after the rules, when every rule reading the profile takes whole batches: RuleSet).

    A reading outside the sensor's normal band (below its highest G-low level, above its G-high level)
    is an episode, not demand, and is not learned: a 90-minute sag learned into its hours would drag
    the curve through the next hours away from the pressure there (false G-leak alarms about an hour
    after the sag ended), and teach next week's same hours a sag that is not there. `learnable`."""

    def __init__(self, inv, group) -> None:
        self.inv, self.group = inv, group
        n = len(group)
        sample_s = inv.sample_s[group.global_index]
        weeks = inv.cfg.gas.profile.min_weeks
        # Readings per hour bin and week, times the weeks needed; the counter saturates at 255.
        self.need = np.minimum(255, np.maximum(1, weeks * np.ceil(3600 / sample_s))).astype(np.uint8)
        self.min_weeks = int(weeks)
        self.mean_ = np.zeros((n, WEEK_HOURS), np.float32)
        self.count_ = np.zeros((n, WEEK_HOURS), np.uint8)
        # Distinct local weeks each hour bin has readings from (saturates at 255), and the latest such
        # week (`week_number`; 0: none yet). A reading of an earlier week than the latest adds no week.
        self.weeks_ = np.zeros((n, WEEK_HOURS), np.uint8)
        self.last_week_ = np.zeros((n, WEEK_HOURS), np.uint16)
        # The normal band, limits from the config (not state): [highest G-low level, G-high level] x set.
        p_set = inv.p_set[group.global_index]
        low = [max((lv.below for lv in inv.low_levels[int(i)]), default=-np.inf) for i in group.global_index]
        self.band_lo = np.asarray(low, np.float64) * p_set
        self.band_hi = inv.rel_high[group.global_index] * p_set

    def state_bytes(self) -> int:
        return self.mean_.nbytes + self.count_.nbytes + self.weeks_.nbytes + self.last_week_.nbytes + self.need.nbytes

    def learned_bins(self, count, weeks, need) -> np.ndarray:
        """Whether hour bins count as learned, from their reading `count`s, distinct `weeks` and the
        sensor's readings `need`ed (arrays that broadcast together)."""
        return (count >= need) & (weeks >= self.min_weeks)

    def before(self, rnd) -> None:
        pass

    def learnable(self, view) -> tuple[np.ndarray, np.ndarray]:
        """(p, learnable): valid (valid_p) and inside the sensor's normal band [band_lo, band_hi]."""
        p, ok = valid_p(view, self.inv, self.group.global_index)
        return p, ok & (p >= self.band_lo[view.loc]) & (p <= self.band_hi[view.loc])

    def after(self, rnd) -> None:
        self._learn(rnd.view(self.group))

    def _learn(self, v) -> None:
        """Learn a view's rows, at most one per sensor (a round's)."""
        p, ok = self.learnable(v)
        flat = self._flat(v)
        local, lo, hi = _local_span(v)
        # The usual round lies within one week: one week number for every row.
        wlo, whi = week_number(lo), week_number(hi)
        week = wlo if wlo == whi else week_number(local)
        if not ok.all():
            idx = np.flatnonzero(ok)
            if not len(idx):
                return
            flat, p = flat[idx], p[idx]
            if wlo != whi:
                week = week[idx]
        # One reading per sensor in a round: `flat` holds no bin twice.
        weeks, last = self.weeks_.reshape(-1), self.last_week_.reshape(-1)
        later = week > last[flat]
        weeks[flat] = np.minimum(weeks[flat].astype(np.int16) + later, 255)
        last[flat] = np.maximum(last[flat], week)
        # Flat indexes into the (sensor, hour-of-week) tables: cheaper than 2-D fancy indexing.
        counts, means = self.count_.reshape(-1), self.mean_.reshape(-1)
        c = np.minimum(counts[flat], 254).astype(np.int16) + 1
        # Running mean up to the saturation count, then an exponential mean over the last 255 readings.
        m = means[flat]
        means[flat] = m + (p - m) / c
        counts[flat] = c

    def bin_chains(self, code: np.ndarray, week: np.ndarray) -> BinChains:
        """The learning rows with flat bin index `code` (sorted by bin, each bin's rows in time order) and
        local `week` (week_number) as chains per bin, with the counts and weeks each row leaves in its bin as
        `after` would: counts saturate at 255 (one more per reading up to it); a reading adds a week when it
        is later than the bin's latest week so far (a running maximum along the chain, from the bin's own)."""
        head, start, length, chain, rank = run_ranks(code)
        bins = code[start]
        counts, weeks, lasts = (t.reshape(-1) for t in (self.count_, self.weeks_, self.last_week_))
        count = np.minimum(counts[bins][chain].astype(np.int64) + rank + 1, 255)
        own = lasts[bins][chain].astype(np.int64)
        off = chain.astype(np.int64) << 16
        last = np.maximum.accumulate(np.maximum(week.astype(np.int64), own) + off) - off
        before = np.empty_like(last)  # the chain's latest week before each row
        before[:1] = 0
        before[1:] = last[:-1]
        later = (week > np.where(head, own, before)).astype(np.int64)
        csum = np.cumsum(later)
        nweek = np.minimum(weeks[bins][chain].astype(np.int64) + csum - (csum - later)[start][chain], 255)
        return BinChains(head, start, length, chain, rank, bins, count, nweek, last)

    def run_series(self, view) -> None:
        """A whole batch (each sensor's rows contiguous, in time order; a `Round` with once=False), as the
        rounds would see it: keeps for this view each row's `baseline` (the bins as the sensor's earlier
        rows of the batch left them) and what the rows teach the bins; `after_series` stores that once the
        rules ran (the rounds learn a round's rows after its rules, and G-flatline, which takes batches
        whole, reads the profile as it stood before the batch). A batch of one row per sensor is a round.

        The bins a row reads are those of its sensor's six hours around it; each (sensor, hour) bin is a
        chain of the batch's learnable rows in time order: counts and distinct weeks are cumulative sums,
        the latest week a running maximum, and the float32 running mean steps along the chains, all chains
        at once (one numpy step per position in the longest chain, with the rounds' arithmetic). A row's
        baseline reads, per bin, the state after the sensor's last learning row before it (else the bin's):
        by runs of rows where the rows come in bin order (the usual batch), else by a search per row and bin."""
        loc = view.loc
        n = len(loc)
        if n == 0 or len(np.flatnonzero(run_heads(loc))) == n:
            return  # a round: the rules read the state, `after_series` learns the rows
        p, ok = self.learnable(view)
        local = view.local_seconds()
        rows = np.flatnonzero(ok)
        if len(rows) == 0:
            return  # nothing to learn: every row reads the state (`baseline`), and nothing changes
        own = loc.astype(np.int64) * WEEK_HOURS + hour_of_week(local)  # each row's own (sensor, hour) bin
        # Rows in bin order (the usual batch: no week's end or clock set back inside) are in chain order already.
        in_order = bool(np.all(own[1:] >= own[:-1]))
        code = own[rows]
        if not in_order:
            o = np.argsort(code, kind="stable")  # chains of (sensor, hour), each in time order
            rows, code = rows[o], code[o]
        ch = self.bin_chains(code, week_number(local[rows]))
        start, length, chain, rank, first = ch.start, ch.length, ch.chain, ch.rank, ch.bins
        count, nweek, last = ch.reads.astype(np.int16), ch.nweek, ch.last
        means = self.mean_.reshape(-1)
        mean = self._chain_means(means[first], p[rows], count, chain, rank, start, length)
        end = run_ends(start, len(code))
        after = _After(code, count, nweek, mean)
        if in_order:
            view.cache["profile"] = self._series_baseline_in_order(loc, local, own, ok, after, first, end)
        else:
            view.cache["profile"] = self._series_baseline_search(loc, local, rows, after)
        view.cache["profile_learn"] = (first, count[end], nweek[end], last[end], mean[end])

    def _series_baseline_search(self, loc, local, rows, after: _After) -> tuple[np.ndarray, np.ndarray]:
        """`run_series`'s baselines for any batch: per row and bin, the state after the sensor's last learning
        row before the row (`rows`, sorted by bin then row, their state `after`), else the bin's."""
        n = len(loc)
        code = after.code
        counts, weeks, means = (t.reshape(-1) for t in (self.count_, self.weeks_, self.mean_))
        h0, w = week_position(local)
        flat = loc.astype(np.int64)[:, None] * WEEK_HOURS + (h0[:, None] + _AROUND) % WEEK_HOURS
        key = code * n + rows  # learning rows by (bin, row): rows were sorted by bin, then row
        at = np.searchsorted(key, flat * n + np.arange(n)[:, None]) - 1
        got = (at >= 0) & (code[np.maximum(at, 0)] == flat)
        j = np.maximum(at, 0)
        c = np.where(got, after.reads[j], counts[flat])
        wk = np.where(got, after.nweek[j], weeks[flat])
        learned = np.logical_and.reduce(self.learned_bins(c, wk, self.need[loc][:, None]), axis=1)
        prof = np.zeros(n)
        sel = np.flatnonzero(learned)
        if len(sel):
            m = np.where(got[sel], after.mean[j[sel]], means[flat[sel]]).astype(np.float64).T
            prof[sel] = smooth_rows(m, w[sel])
        return prof, learned

    def _series_baseline_in_order(self, loc, local, own, ok, after: _After, first: np.ndarray,
                                  end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`_series_baseline_search` when the rows' own bins `own` never decrease (rows in chain order): a bin
        below a row's own is one the sensor's rows left before the row (the state at its chain's `end`, if the
        batch taught it), a bin above one they reach after it (the stored state); only the row's own bin
        changes along its rows (the state after the last learning row before it). The six bins depend on the
        hour and its half only: worked out once per run of rows sharing them. first, end: each chain's bin and
        its last learning row (an index into `after`)."""
        n = len(loc)
        counts, weeks, means = (t.reshape(-1) for t in (self.count_, self.weeks_, self.mean_))
        # The hour middle at or before a row is its own hour's (second half) or the one before (first half).
        into = local % 3600
        upper = into < 1800
        col = 2 + upper  # the column of `_AROUND` holding the row's own hour
        head = run_heads(own * 2 + upper)
        fr = np.flatnonzero(head)
        run = np.cumsum(head) - 1
        h0 = week_position(local[fr])[0]
        bins = loc[fr].astype(np.int64)[:, None] * WEEK_HOURS + (h0[:, None] + _AROUND) % WEEK_HOURS
        ci = np.minimum(np.searchsorted(first, bins), len(first) - 1)
        done = (first[ci] == bins) & (bins < own[fr][:, None])
        e = end[ci]
        rc = np.where(done, after.reads[e], counts[bins])
        rw = np.where(done, after.nweek[e], weeks[bins])
        rm = np.where(done, after.mean[e], means[bins])
        other = self.learned_bins(rc, rw, self.need[loc[fr]][:, None])
        other[np.arange(len(fr)), col[fr]] = True
        # The row's own bin: the last learning row before it, if that row is of the same bin.
        at = np.cumsum(ok) - ok - 1
        j = np.maximum(at, 0)
        got = (at >= 0) & (after.code[j] == own)
        c = np.where(got, after.reads[j], counts[own])
        wk = np.where(got, after.nweek[j], weeks[own])
        learned = np.logical_and.reduce(other, axis=1)[run] & self.learned_bins(c, wk, self.need[loc])
        prof = np.zeros(n)
        sel = np.flatnonzero(learned)
        if len(sel):
            rs, up, r = run[sel], upper[sel], into[sel]
            mine = np.where(got[sel], after.mean[j[sel]], means[own[sel]]).astype(np.float64)
            hours = [h[rs] for h in rm.T.astype(np.float64)]
            hours[2], hours[3] = np.where(up, hours[2], mine), np.where(up, mine, hours[3])
            # week_position's fraction: (local - 1800) % 3600 from the seconds into the hour.
            prof[sel] = smooth_rows(hours, np.where(up, r + 1800, r - 1800) / 3600.0)
        return prof, learned

    @staticmethod
    def _chain_means(m0, p, count, chain, rank, start, length) -> np.ndarray:
        """The float32 running mean after each row of the chains (`after`'s m + (p - m) / c, stepped along
        every chain at once from its bin's mean m0)."""
        top = int(length.max()) if len(length) else 0
        if top <= 1:
            return (m0[chain] + (p - m0[chain]) / count).astype(np.float32)
        if len(p) <= PER_ROW_CHAINS * top:
            # One row at a time in plain floats, rounded to float32 as numpy's cast does (storing into a
            # float32 array) after each step.
            out = array("f", bytes(4 * len(p)))
            pl, cl = p.tolist(), count.tolist()
            bounds = start.tolist() + [len(p)]
            for j, m in enumerate(m0.tolist()):
                a, b = bounds[j], bounds[j + 1]
                i = a
                for pi, ci in zip(pl[a:b], cl[a:b]):
                    out[i] = m + (pi - m) / ci
                    m = out[i]
                    i += 1
            return np.frombuffer(out, np.float32).copy()
        k = len(start)
        ps = np.zeros((top, k))
        cs = np.ones((top, k))
        ps[rank, chain], cs[rank, chain] = p, count
        # Row r + 1 holds the means after step r: each step in float64 (m, a float32, and the counts are
        # exact in float64), rounded to float32 by the store. The arrays are small, so the calls are the
        # cost: outputs preallocated, row views made once, m kept as float64 (no mixed-type loops).
        grid = np.empty((top + 1, k), np.float32)
        grid[0] = m0
        m, t = m0.astype(np.float64), np.empty(k)
        sub, div, add, copy = np.subtract, np.divide, np.add, np.copyto
        for pr, cr, gr in zip(ps, cs, grid[1:]):
            sub(pr, m, out=t)
            div(t, cr, out=t)
            add(t, m, out=t)
            copy(gr, t, casting="same_kind")
            copy(m, gr)
        return grid[1:][rank, chain]

    def after_series(self, view) -> None:
        """Store what `run_series` found the batch teaches (or learn a round's rows): after the rules ran."""
        hit = view.cache.get("profile_learn")
        if hit is None:
            if len(view):
                self._learn(view)
            return
        first, count, nweek, last, mean = hit
        self.count_.reshape(-1)[first] = count
        self.weeks_.reshape(-1)[first] = nweek
        self.last_week_.reshape(-1)[first] = last
        self.mean_.reshape(-1)[first] = mean

    def _flat(self, view) -> np.ndarray:
        hit = view.cache.get("profile_flat")
        if hit is None:
            local, lo, hi = _local_span(view)
            # One hour for every row (the usual round) needs no per-row hour arithmetic.
            how = hour_of_week(lo) if lo // 3600 == hi // 3600 else hour_of_week(local)
            hit = view.cache["profile_flat"] = view.loc.astype(np.int64) * WEEK_HOURS + how
        return hit

    def baseline(self, view) -> tuple[np.ndarray, np.ndarray]:
        """(profile, learned) at each row's sensor and local time of week (see `smooth_profile`);
        the profile is 0 where not learned."""
        hit = view.cache.get("profile")
        if hit is None:
            local, lo, hi = _local_span(view)
            if (lo - 1800) // 3600 == (hi - 1800) // 3600:
                hit = self._baseline_one_hour(view, local, lo)
            else:
                hit = self._baseline_any(view, local)
            view.cache["profile"] = hit
        return hit

    def _baseline_any(self, view, local) -> tuple[np.ndarray, np.ndarray]:
        h0, w = week_position(local)
        # The six hours around each row, as flat indexes into the (sensor, hour) tables: one gather.
        flat = view.loc.astype(np.int64)[:, None] * WEEK_HOURS + (h0[:, None] + _AROUND) % WEEK_HOURS
        learned = self.learned_bins(self.count_.reshape(-1)[flat], self.weeks_.reshape(-1)[flat],
                                    self.need[view.loc][:, None]).all(axis=1)
        prof = np.zeros(len(w))
        rows = np.flatnonzero(learned)
        if len(rows):
            m = self.mean_.reshape(-1)[flat[rows]].astype(np.float64).T
            prof[rows] = smooth_profile(m, w[rows])
        # numpy stubs: all(axis=1) may be a scalar; over a 2-D array it is a 1-D array.
        return prof, learned  # type: ignore[return-value]

    def _baseline_one_hour(self, view, local, lo: int) -> tuple[np.ndarray, np.ndarray]:
        """`_baseline_any` when every row lies between the same two hour middles (the usual round: one
        reading per sensor at about the same time): the six hours are the same for all rows."""
        h0 = week_position(lo)[0]
        hours = [(h0 + int(a)) % WEEK_HOURS for a in _AROUND]
        w = ((local - 1800) % 3600) / 3600.0
        loc = view.loc
        need = self.need if view.full else self.need[loc]
        base = None if view.full else loc.astype(np.int64) * WEEK_HOURS
        counts, weeks = self.count_.reshape(-1), self.weeks_.reshape(-1)

        def column(table, flat_table, h):
            return table[:, h] if base is None else flat_table[base + h]

        learned = self.learned_bins(column(self.count_, counts, hours[0]), column(self.weeks_, weeks, hours[0]), need)
        for h in hours[1:]:
            learned &= self.learned_bins(column(self.count_, counts, h), column(self.weeks_, weeks, h), need)
        prof = np.zeros(len(w))
        rows = np.flatnonzero(learned)
        if len(rows):
            means = self.mean_.reshape(-1)
            m = [column(self.mean_, means, h)[rows].astype(np.float64) for h in hours]
            prof[rows] = smooth_profile(m, w[rows])
        return prof, learned


class _After(NamedTuple):
    """The learning rows of a batch in chain order (by bin, then row): each one's flat bin and the bin's reading
    count, distinct weeks and float32 mean after it (GasProfile.run_series)."""

    code: np.ndarray
    reads: np.ndarray
    nweek: np.ndarray
    mean: np.ndarray


class BinChains(NamedTuple):
    """Learning rows grouped by profile bin (GasProfile.bin_chains): each bin's rows a chain in time order."""

    head: np.ndarray    # bool per row: the first of its bin's chain
    start: np.ndarray   # row where each chain starts
    length: np.ndarray  # rows of each chain
    chain: np.ndarray   # each row's chain
    rank: np.ndarray    # each row's place in its chain
    bins: np.ndarray    # flat (sensor, hour) index of each chain's bin
    reads: np.ndarray   # the bin's reading count after the row (saturating at 255), int64
    nweek: np.ndarray   # the bin's distinct weeks after the row (saturating at 255), int64
    last: np.ndarray    # the bin's latest week after the row, int64


def _profile(shared: dict, inv, group) -> GasProfile:
    if "gas_profile" not in shared:
        shared["gas_profile"] = GasProfile(inv, group)
    return shared["gas_profile"]


class GasRule(LevelDetector):
    category = "gas"
    kinds = ("gas",)
    metric = "p"
    reads = ("p",)
    unit = "kPa"
    window = "sample"

    def setup(self, shared):
        super().setup(shared)
        self.g = self.inv.cfg.gas
        self.p_set = self.inv.p_set[self.sensors]
        pct = getattr(self.params, "hysteresis_pct", None)  # not every gas rule's Params has it
        pct = pct if pct is not None else self.g.hysteresis_pct
        self.hyst = pct / 100.0 * self.p_set

    def pressure(self, view):
        return valid_p(view, self.inv, self.sensors)


class LevelParams(RuleParams):
    hysteresis_pct: float | None = Field(None, ge=0, le=50)


class GasHigh(GasRule):
    """G-high: p above rel_high x set pressure (1.20 low-pressure, 1.10 medium and above): yellow."""

    batchwise = True

    type = "gas_high"
    Params = LevelParams
    params: LevelParams
    severity = 2

    def setup(self, shared):
        super().setup(shared)
        self.limit = self.inv.rel_high[self.sensors] * self.p_set

    def candidates(self, view):
        return view.col("p") > (self.limit - self.hyst)[view.loc]

    def evaluate(self, view) -> Eval:
        p, ok = self.pressure(view)
        lim = self.limit[view.loc]
        raw, held, limits = levels_above(p, [(self.severity, lim)], self.hyst[view.loc])
        return Eval(ok, raw, held, p, limits, 100.0 * (p - lim) / self.p_set[view.loc])


class GasHighHigh(GasHigh):
    """G-highhigh: p above min(MOP, GB 50028 protective-device start pressure): red."""

    type = "gas_highhigh"
    severity = 4

    def setup(self, shared):
        GasRule.setup(self, shared)
        self.limit = self.inv.highhigh_kpa[self.sensors]


class GasLow(GasRule):
    """G-low: p below `below` x set pressure at each configured level (0.85 yellow, 0.70 orange, 0.50 red)."""

    batchwise = True

    type = "gas_low"
    Params = LevelParams
    params: LevelParams

    def setup(self, shared):
        super().setup(shared)
        self.thr = np.full((5, self.n), np.nan)
        for j, i in enumerate(self.sensors):
            for lv in self.inv.low_levels[i]:
                self.thr[severity_code(lv.severity), j] = lv.below * self.p_set[j]
        self.sevs = [s for s in range(1, 5) if not np.isnan(self.thr[s]).all()]
        with np.errstate(invalid="ignore"):
            top = np.fmax.reduce(self.thr, axis=0)  # the highest lower limit of each sensor (NaN: none)
        self.cand_below = np.where(np.isnan(top), -np.inf, top + self.hyst)

    def candidates(self, view):
        return view.col("p") < self.cand_below[view.loc]

    def evaluate(self, view) -> Eval:
        p, ok = self.pressure(view)
        loc = view.loc
        raw, held, limits = levels_below(p, [(s, self.thr[s, loc]) for s in self.sevs], self.hyst[loc])
        return Eval(ok, raw, held, p, limits, 100.0 * (self.p_set[loc] - p) / self.p_set[loc])


class RuptureParams(RuleParams):
    hysteresis_pct: float | None = Field(None, ge=0, le=50)


class GasRupture(GasRule):
    """G-rupture: the residual (p minus the learned, smoothed time-of-week profile, or p itself where
    none is learned) dropped by drop_pct % of set pressure within window_s (5 % in 5 min orange, 10 % in
    15 min red, the PHMSA potential-rupture criterion).

    Each stored residual is tagged with whether the profile was learned for it, and a drop is measured
    only from residuals with the same tag as the current reading: a residual against the profile and a
    raw pressure are different quantities, so the switch from one to the other is never a drop (in
    effect the window restarts when the profile becomes learned, or stops being learned).

    A drop counts only from the normal level down: the peak it is measured from is taken at most
    hysteresis_pct % of set pressure above the profile (or above set pressure where none is learned).
    A return toward set pressure after an over-pressure episode (5.25 kPa back to 2.5) is not a rupture;
    a fall from there on below the normal level still is."""

    type = "gas_rupture"
    series = True  # whole batches (evaluate_series) while the shared GasProfile runs whole too (RuleSet)
    metric = "p_drop"
    unit = "%"  # value and limit are a drop in percent of set pressure, not kPa
    Params = RuptureParams
    params: RuptureParams

    def setup(self, shared):
        super().setup(shared)
        self.levels = sorted((severity_code(r.severity), r.drop_pct, r.window_s) for r in self.g.rupture)
        longest = max((w for _, _, w in self.levels), default=300)
        slot_s = int(self.inv.sample_s[self.sensors].min()) if self.n else 60
        self.window = "/".join(f"{w}s" for _, _, w in self.levels)
        self.ring = SlotRing(self.n, longest + slot_s, slot_s, np.float32)
        self.ring_val_, self.ring_key_ = self.ring.val_, self.ring.key_
        self.ring_tag_ = np.zeros(self.ring.val_.shape, np.bool_)   # residual taken against the profile
        self.blk_id_ = np.full(self.n, -(2**30), np.int32)          # block (slots // ring size) of blk_cur_
        self.blk_cur_ = np.full(self.n, -np.inf, np.float32)        # highest residual inserted in that block
        self.blk_prev_ = np.full(self.n, -np.inf, np.float32)       # ... and in the block before it
        self.profile = _profile(shared, self.inv, self.group)

    def evaluate(self, view) -> Eval:
        p, ok = self.pressure(view)
        loc, ts = view.loc, view.ts
        base, learned = self.profile.baseline(view)
        resid = p - np.where(learned, base, 0.0)
        self._insert(loc, ts, resid.astype(np.float32), learned, ok)
        ub = self._block_max(loc, ts, resid, ok, view.full)
        n = len(view)
        raw = np.zeros(n, np.int8)
        held = np.zeros(n, np.int8)
        limits = np.empty(5)
        drop_pct = np.zeros(n)
        p_set = self.p_set[loc]
        # Only rows whose residual lies far enough below the highest residual of the last two blocks can
        # reach a level: the exact windowed maximum is computed for those (and for active sensors) only.
        need = (min(pct for _, pct, _ in self.levels) - self.g.hysteresis_pct) * p_set / 100.0
        cand = np.flatnonzero(ok & ((ub - resid > need) | (self.level_[loc] > 0)))
        if len(cand):
            vals, age = self.ring.ages(loc[cand], ts[cand])
            same = self.ring_tag_[loc[cand]] == learned[cand][:, None]
            rc, ps = resid[cand], p_set[cand]
            # The normal level a drop may start from, in the units of the row's tag (residual or raw).
            ceiling = np.where(learned[cand], 0.0, ps) + self.hyst[loc[cand]]
            dc = np.zeros(len(cand))
            rr = np.zeros(len(cand), np.int8)
            hh = np.zeros(len(cand), np.int8)
            for sev, pct, w in self.levels:
                # The drop is from the highest residual at most window_s before this reading.
                mask = (age < self.ring.span(w + self.ring.slot_s)) & same
                peak = np.minimum(np.where(mask, vals, np.float32(-np.inf)).max(axis=1), ceiling)
                drop = 100.0 * (peak - rc) / ps
                dc = np.maximum(dc, np.where(np.isfinite(drop), drop, 0.0))
                r, h, _ = levels_above(drop, [(sev, pct)], self.g.hysteresis_pct)
                rr, hh = np.maximum(rr, r), np.maximum(hh, h)
            drop_pct[cand], raw[cand], held[cand] = dc, rr, hh
        for i, (sev, pct, _) in enumerate(self.levels):
            limits[sev] = pct
            if i == 0:
                limits[0] = pct
        return Eval(ok, raw, held, drop_pct, limits, drop_pct, {"p_kpa": p, "profile": learned})

    def evaluate_series(self, view) -> Eval:
        """`evaluate` over a whole batch (each sensor's rows contiguous, in time order), with the same Eval
        per row and the state the rounds leave: the residuals go into the ring at once (`insert_series`,
        the tags beside them), each row's block bound is the running maximum of its block as the rounds
        keep it, and the drop is computed for the rows that could reach a level.

        The rounds judge a row only where its residual lies far enough below the bound or its sensor is
        active; every other row reads 0 (a drop that cannot reach a level). A sensor's level before each row
        is known once the rows are latched: the drop is computed for every valid row of a sensor active
        before the batch or with a row under the bound, and the rows that turn out to follow level 0
        without being under the bound are set back to 0 (latched again if that changed a level)."""
        p, ok = self.pressure(view)
        loc, ts = view.loc, view.ts
        n = len(view)
        base, learned = self.profile.baseline(view)
        resid = p - np.where(learned, base, 0.0)
        seen = self.ring.insert_series(loc, ts, resid.astype(np.float32), ok)
        tags = seen.beside(self.ring_tag_, learned.astype(np.float64))
        ub = self._block_series(loc, ts, resid, ok)
        raw = np.zeros(n, np.int8)
        held = np.zeros(n, np.int8)
        limits = np.empty(5)
        drop_pct = np.zeros(n)
        for i, (sev, pct, _) in enumerate(self.levels):
            limits[sev] = pct
            if i == 0:
                limits[0] = pct
        p_set = self.p_set[loc]
        need = (min(pct for _, pct, _ in self.levels) - self.g.hysteresis_pct) * p_set / 100.0
        under = ok & (ub - resid > need)
        busy = self.level_ > 0
        busy[loc[under]] = True
        cand = np.flatnonzero(ok & busy[loc])
        if len(cand):
            ring = self.ring
            spans = [ring.span(w + ring.slot_s) for _, _, w in self.levels]
            top = np.full(len(cand), max(spans))
            vals, inside = seen.window(cand, top)
            tag = tags.window(cand, top)[0]
            age = (seen.key[cand].astype(np.int64)[:, None] - np.arange(ring.slots)) % ring.slots
            same = inside & (tag == learned[cand][:, None])
            rc, ps = resid[cand], p_set[cand]
            ceiling = np.where(learned[cand], 0.0, ps) + self.hyst[loc[cand]]
            dc = np.zeros(len(cand))
            rr = np.zeros(len(cand), np.int8)
            hh = np.zeros(len(cand), np.int8)
            for (sev, pct, _), span in zip(self.levels, spans):
                peak = np.minimum(np.where(same & (age < span), vals, -np.inf).max(axis=1), ceiling)
                drop = 100.0 * (peak - rc) / ps
                dc = np.maximum(dc, np.where(np.isfinite(drop), drop, 0.0))
                r, h, _ = levels_above(drop, [(sev, pct)], self.g.hysteresis_pct)
                rr, hh = np.maximum(rr, r), np.maximum(hh, h)
            drop_pct[cand], raw[cand], held[cand] = dc, rr, hh
            self._unjudged(loc, ok, under, raw, held, drop_pct)
        return Eval(ok, raw, held, drop_pct, limits, drop_pct, {"p_kpa": p, "profile": learned})

    def _unjudged(self, loc, ok, under, raw, held, drop_pct) -> None:
        """Set the rows the rounds would not judge (not under the bound, level 0 before them) back to 0."""
        idx = np.flatnonzero(ok)
        lc = loc[idx]
        start = run_heads(lc)
        first = np.flatnonzero(start)
        init = self.level_[lc[first]]
        while True:
            new = latch_levels(raw[idx], held[idx], start, init)
            prev = np.empty_like(new)
            prev[1:] = new[:-1]
            prev[first] = init
            off = idx[(prev == 0) & ~under[idx]]
            again = bool(raw[off].any())
            raw[off], held[off], drop_pct[off] = 0, 0, 0.0
            if not again:
                return

    def _block_series(self, loc, ts, resid, ok) -> np.ndarray:
        """`_block_max` over a whole batch: each row's bound as the rounds compute it, and the blocks'
        state after the batch. Along a sensor the blocks never go back, so a row is late exactly when its
        block is older than the state's; a row's current block maximum is the running maximum of its
        block's valid rows (from the state's, in the state's block), and the previous block's is that
        block's complete maximum."""
        ring = self.ring
        b = (ts // ring.slot_ns - ring.base).astype(np.int64) // ring.slots
        bid0 = self.blk_id_[loc].astype(np.int64)
        keep = ok & (b >= bid0)
        eff = None if keep.all() else np.flatnonzero(keep)  # None: every row (the usual batch)
        if eff is None:
            le, be, bid, v = loc, b, bid0, resid.astype(np.float32)
        elif len(eff) == 0:
            return np.full(len(loc), np.inf)
        else:
            le, be, bid, v = loc[eff], b[eff], bid0[eff], resid[eff].astype(np.float32)
        m = len(le)
        sens = run_heads(le)
        seg = sens | run_heads(be)
        # Per segment (a sensor's rows of one block): its head's sensor, block and state.
        heads = np.flatnonzero(seg)
        hl, hb = le[heads], be[heads]
        in_state = bid[heads] == hb  # the state's current block: its running maximum goes on
        cur0 = self.blk_cur_[hl]
        v[heads] = np.where(in_state, np.maximum(v[heads], cur0), v[heads])
        cur = _segment_cummax(v, seg)
        # The block before each segment: the sensor's previous segment when that is the block just before,
        # else the state's current block when that is it, else none.
        ends = run_ends(heads, m)
        has_prev = np.zeros(len(heads), bool)
        has_prev[1:] = ~sens[heads[1:]] & (hb[:-1] == hb[1:] - 1)
        last_cur = np.empty(len(heads), np.float32)
        last_cur[0] = -np.inf
        last_cur[1:] = cur[ends[:-1]]
        from_state = np.where(bid[heads] == hb - 1, cur0, np.float32(-np.inf))
        before = np.where(has_prev, last_cur, from_state)
        prev = np.where(in_state, self.blk_prev_[hl], before)[np.cumsum(seg) - 1]
        top = np.maximum(cur, prev).astype(np.float64)
        if eff is None:
            ub = top
        else:
            ub = np.full(len(loc), np.inf)
            ub[eff] = top
        last = run_ends(np.flatnonzero(sens), m)
        at = le[last]
        self.blk_id_[at] = be[last]
        self.blk_cur_[at] = cur[last]
        self.blk_prev_[at] = prev[last]
        return ub

    def _insert(self, loc, ts, resid, learned, ok) -> None:
        """Store the valid rows' residuals in the ring and their tags in the same slots (an older reading
        never overwrites a newer one; a round holds at most one reading per sensor)."""
        done = self.ring.insert(loc, ts, resid, ok)
        if done is not None:
            flat, newer = done
            self.ring_tag_.reshape(-1)[flat[newer]] = learned[newer]

    def _block_max(self, loc, ts, resid, ok, full=False) -> np.ndarray:
        """An upper bound of the residuals in each row's longest window: the maxima of the current and the
        previous block of `slots` slots (a window never spans more). +inf where unknown (late rows).
        Residuals of both tags are mixed here: the maximum over more values is still an upper bound."""
        key = (ts // self.ring.slot_ns - self.ring.base).astype(np.int64)
        b = key // self.ring.slots
        st = _Rows(None if full else loc)
        bid, cur, prev = st.get(self.blk_id_).astype(np.int64), st.get(self.blk_cur_), st.get(self.blk_prev_)
        v = np.where(ok, resid, -np.inf).astype(np.float32)
        same, nxt, late = b == bid, b == bid + 1, b < bid
        new_cur = np.where(same, np.maximum(cur, v), np.where(late, cur, v))
        new_prev = np.where(same | late, prev, np.where(nxt, cur, np.float32(-np.inf)))
        upd = ok & ~late
        st.put(self.blk_cur_, np.where(upd, new_cur, cur))
        st.put(self.blk_prev_, np.where(upd, new_prev, prev))
        st.put(self.blk_id_, np.where(upd, np.maximum(b, bid), bid))
        return np.where(late, np.inf, np.maximum(new_cur, new_prev).astype(np.float64))


def _segment_cummax(v: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Running maximum of float32 values (no NaN) restarting where `start`: the floats as order-preserving
    integers, each segment lifted above the ones before it, one `maximum.accumulate`."""
    bits = v.astype(np.float32).view(np.int32)
    key = (bits ^ ((bits >> 31) & 0x7FFFFFFF)).astype(np.int64) + 2**31
    lift = (np.cumsum(start) - 1).astype(np.int64) << 32
    top = (np.maximum.accumulate(key + lift) - lift - 2**31).astype(np.int32)
    return (top ^ ((top >> 31) & 0x7FFFFFFF)).view(np.float32)


class LeakParams(RuleParams):
    k_sigma: float | None = Field(None, ge=0, le=10)
    h_sigma: float | None = Field(None, gt=0, le=50)
    severity: Severity = "yellow"


class GasLeakCusum(GasRule):
    """G-leak: lower tabular CUSUM (Montgomery) on the residual against the learned time-of-week profile
    in sigma units, S = max(0, S - r/sigma - k), alarm at S >= h, clear when S is back at 0 (S is capped
    at 2h, so a repaired main clears within 2h/k readings instead of paying back hours of deficit).

    Runs only where the sensor's profile is learned (gas.profile.min_weeks, domain.md section 2.4):
    demand peaks recur every day and would look like leaks against anything slower. Until then the
    rule emits nothing and keeps no state. Sigma is learned from the residuals against the profile
    (never below sigma_floor_pct of set pressure), by an exponential mean over sigma_tau_s of event
    time, and only while S is 0 so a leak does not teach itself into sigma; the CUSUM starts after
    `warmup` such residuals.

    An episode is a reading outside the normal band (the profile's: below the highest G-low level or
    above G-high), owned by G-low, G-high and G-rupture. Its residuals neither move S (an active alarm
    holds) nor teach sigma, and when the pressure is back at the profile (r >= -k sigma, inside the band)
    S restarts at 0: the alarm clears when the episode ends instead of paying back the episode's
    deficit over the next 2h/k readings (or bending into the next demand peak)."""

    type = "gas_leak_cusum"
    series = True  # whole batches (evaluate_series) while the shared GasProfile runs whole too (RuleSet)
    metric = "cusum"
    unit = "sigma"
    window = "cusum"
    Params = LeakParams
    params: LeakParams

    def setup(self, shared):
        super().setup(shared)
        c = self.g.cusum
        self.k = self.params.k_sigma if self.params.k_sigma is not None else c.k_sigma
        self.h = self.params.h_sigma if self.params.h_sigma is not None else c.h_sigma
        self.sev = severity_code(self.params.severity)
        self.floor = c.sigma_floor_pct / 100.0 * self.p_set
        self.tau_ns = c.sigma_tau_s * NS
        self.warm = c.warmup
        self.seen_ = np.zeros(self.n, np.uint16)        # residuals against the profile seen so far (saturates)
        self.s_ = np.zeros(self.n)                      # CUSUM statistic, sigma units
        self.var_ = np.zeros(self.n, np.float32)        # residual variance, kPa^2
        self.last_ = np.full(self.n, -1, np.int64)      # event time of the last residual
        self.episode_ = np.zeros(self.n, np.bool_)      # S holds an episode's residual: restart at the profile
        self.profile = _profile(shared, self.inv, self.group)

    def evaluate(self, view) -> Eval:
        p, ok = self.pressure(view)
        prof, learned = self.profile.baseline(view)
        run = ok & learned
        if not run.any():
            n = len(view)  # no sensor of the view has its profile learned: nothing to judge, no state
            return Eval(np.zeros(n, bool), np.zeros(n, np.int8), np.zeros(n, np.int8), np.full(n, np.nan),
                        np.full(5, self.h), np.full(n, np.nan))
        if view.full and run.all():
            # Every sensor, every reading valid and learned (the usual case): state without gathers.
            st = _Rows(None)
            loc, ts = view.loc, view.ts
        else:
            idx = np.flatnonzero(run)
            st = _Rows(view.loc[idx])
            loc, ts, p, prof = view.loc[idx], view.ts[idx], p[idx], prof[idx]
        r = p - prof
        var = st.get(self.var_)
        sigma = np.maximum(np.sqrt(var.astype(np.float64)), self.floor[loc])
        seen = st.get(self.seen_)
        warm = seen >= self.warm
        inband = (p >= self.profile.band_lo[loc]) & (p <= self.profile.band_hi[loc])
        episode = st.get(self.episode_)
        back = episode & inband & (r >= -self.k * sigma)
        s0 = np.where(back, 0.0, st.get(self.s_))
        s = np.where(warm, np.where(inband, np.clip(s0 - r / sigma - self.k, 0.0, 2 * self.h), s0), 0.0)
        st.put(self.episode_, (~inband | (episode & ~back)) & (s > 0))
        st.put(self.seen_, np.minimum(seen.astype(np.int64) + 1, 65535))
        # Sigma learns with exponential weights by elapsed event time (a running mean during warm-up),
        # frozen while the CUSUM is away from 0.
        last = st.get(self.last_)
        dt = np.where(last >= 0, np.maximum(ts - last, 0), 0)
        a = np.where(last >= 0, -np.expm1(-dt / self.tau_ns), 1.0)
        a = np.where(warm, a, np.maximum(a, 1.0 / (seen + 1.0)))
        learn = (s == 0) & inband
        st.put(self.var_, np.where(learn & (last >= 0), (1 - a) * var + a * r * r, var))
        st.put(self.last_, ts)
        st.put(self.s_, s)
        n = len(view)
        if st.loc is None:
            value, known = s, warm
        else:
            value = np.full(n, np.nan)
            value[idx] = s
            known = np.zeros(n, np.bool_)
            known[idx] = warm
        raw = np.where(value >= self.h, self.sev, 0).astype(np.int8)
        held = np.where(value > 0, self.sev, 0).astype(np.int8)
        return Eval(known, raw, held, value, np.full(5, self.h), value)


    def evaluate_series(self, view) -> Eval:
        """`evaluate` over a whole batch (each sensor's rows contiguous, in time order): the same Eval per
        row and the state the rounds leave. What a row needs of the rows before it but not of the CUSUM
        (the count of residuals seen, so warm-up; the time since the last residual, so sigma's weight) is a
        running count and a shift along the sensor's judged rows; S, the episode mark and sigma depend on
        each other reading by reading, so they step along time, every sensor at once (one numpy step per
        reading of the sensor with the most, with the arithmetic of `evaluate`)."""
        p, ok = self.pressure(view)
        prof, learned = self.profile.baseline(view)
        n = len(view)
        run = ok & learned
        value = np.full(n, np.nan)
        known = np.zeros(n, np.bool_)
        idx = np.flatnonzero(run)
        if len(idx):
            loc, ts, pr = view.loc[idx], view.ts[idx], p[idx]
            r = pr - prof[idx]
            head, first, length, who, rank = run_ranks(loc)
            sl = loc[first]
            seen = np.minimum(self.seen_[loc].astype(np.int64) + rank, 65535).astype(np.uint16)
            warm = seen >= self.warm
            prev_ts = np.empty_like(ts)
            prev_ts[0] = -1
            prev_ts[1:] = ts[:-1]
            last = np.where(head, self.last_[loc], prev_ts)
            dt = np.where(last >= 0, np.maximum(ts - last, 0), 0)
            a = np.where(last >= 0, -np.expm1(-dt / self.tau_ns), 1.0)
            a = np.where(warm, a, np.maximum(a, 1.0 / (seen + 1.0)))
            inband = (pr >= self.profile.band_lo[loc]) & (pr <= self.profile.band_hi[loc])
            args = (r, warm, inband, (1 - a), a * r * r, last >= 0, self.floor[loc])
            state = (self.s_[sl], self.var_[sl], self.episode_[sl])
            top = int(length.max())
            if len(idx) <= PER_ROW_SENSORS * top:
                s, var, ep = self._chain_rows(*args, first, *state)
            else:
                s, var, ep = self._chain(*args, who, rank, *state, len(first), top)
            end = run_ends(first, len(idx))
            self.s_[sl], self.var_[sl], self.episode_[sl] = s[end], var[end], ep[end]
            self.seen_[sl] = np.minimum(seen[end].astype(np.int64) + 1, 65535)
            self.last_[sl] = ts[end]
            value[idx], known[idx] = s, warm
        raw = np.where(value >= self.h, self.sev, 0).astype(np.int8)
        held = np.where(value > 0, self.sev, 0).astype(np.int8)
        return Eval(known, raw, held, value, np.full(5, self.h), value)

    def _chain_rows(self, r, warm, inband, keep, add, had, floor, first, s0, var0, ep0):
        """`_chain` one row at a time in plain floats (cheaper than numpy steps for a few sensors): the same
        IEEE operations (sqrt and division correctly rounded, float32 rounding of the variance as numpy's
        cast, np.clip's comparisons), so the same bits."""
        n = len(r)
        out_s, out_v, out_e = [0.0] * n, [0.0] * n, [False] * n
        f32 = array("f", [0.0])
        k_, h2 = self.k, 2 * self.h
        rl, wl, bl, kl, al, hl, fl = (x.tolist() for x in (r, warm, inband, keep, add, had, floor))
        bounds = first.tolist() + [n]
        for j, (s, var, ep) in enumerate(zip(s0.tolist(), var0.tolist(), ep0.tolist())):
            for i in range(bounds[j], bounds[j + 1]):
                ri, inb = rl[i], bl[i]
                sigma = math.sqrt(var)
                if not sigma > fl[i]:
                    sigma = fl[i]
                back = ep and inb and ri >= -k_ * sigma
                s_0 = 0.0 if back else s
                if not wl[i]:
                    s = 0.0
                elif inb:
                    x = s_0 - ri / sigma - k_
                    x = x if x > 0.0 else 0.0
                    s = x if x < h2 else h2
                else:
                    s = s_0
                ep = (not inb or (ep and not back)) and s > 0
                if s == 0 and inb and hl[i]:
                    f32[0] = kl[i] * var + al[i]
                    var = f32[0]
                out_s[i], out_v[i], out_e[i] = s, var, ep
        return np.array(out_s), np.array(out_v, np.float32), np.array(out_e, np.bool_)

    def _chain(self, r, warm, inband, keep, add, had, floor, who, rank, s0, var0, ep0, k: int, top: int):
        """(S, variance, episode mark) after each judged row: `evaluate`'s recursion stepped along the rows
        of k sensors at once (row `rank` of sensor `who`), from their state (s0, var0, ep0). keep, add: the
        variance's (1 - a) and a r^2; had: a residual came before (sigma learns only then)."""
        def grid(x, fill):
            out = np.full((top, k), fill, dtype=np.asarray(x).dtype)
            out[rank, who] = x
            return out

        R, W, B, KP, AD, H, F = (grid(r, 0.0), grid(warm, False), grid(inband, False), grid(keep, 1.0),
                                 grid(add, 0.0), grid(had, False), grid(floor, 1.0))
        S, V, E = np.empty((top, k)), np.empty((top, k), np.float32), np.empty((top, k), np.bool_)
        s, var, ep = s0.copy(), var0.copy(), ep0.copy()
        k_, h2 = self.k, 2 * self.h
        for i in range(top):
            ri, inb = R[i], B[i]
            sigma = np.maximum(np.sqrt(var.astype(np.float64)), F[i])
            back = ep & inb & (ri >= -k_ * sigma)
            s_0 = np.where(back, 0.0, s)
            s = np.where(W[i], np.where(inb, np.clip(s_0 - ri / sigma - k_, 0.0, h2), s_0), 0.0)
            ep = (~inb | (ep & ~back)) & (s > 0)
            learn = (s == 0) & inb
            var = np.where(learn & H[i], KP[i] * var + AD[i], var).astype(np.float32)
            S[i], V[i], E[i] = s, var, ep
        return S[rank, who], V[rank, who], E[rank, who]


class _Rows:
    """Gather/scatter of per-sensor state for some rows (`loc`), or for all sensors in order (None)."""

    __slots__ = ("loc",)

    def __init__(self, loc) -> None:
        self.loc = loc

    def get(self, arr: np.ndarray) -> np.ndarray:
        return arr.copy() if self.loc is None else arr[self.loc]

    def put(self, arr: np.ndarray, values) -> None:
        if self.loc is None:
            arr[:] = values
        else:
            arr[self.loc] = values


class RangeParams(RuleParams):
    severity: Severity = "yellow"


class GasSensorRange(LevelDetector):
    """G-range: a pressure outside the sensor's physical range [min_kpa, fs_factor x full scale] is a
    device fault (not a process alarm); cleared by the next reading inside the range."""

    batchwise = True

    type = "gas_sensor_range"
    category = "device"
    kinds = ("gas",)
    metric = "p"
    reads = ("p",)
    unit = "kPa"
    window = "sample"
    Params = RangeParams
    params: RangeParams

    def setup(self, shared):
        super().setup(shared)
        rg = self.inv.cfg.gas.range
        self.lo = rg.min_kpa
        self.hi = rg.fs_factor * self.inv.full_scale[self.sensors]
        self.sev = severity_code(self.params.severity)

    def candidates(self, view):
        p = view.col("p")
        return (p < self.lo) | (p > self.hi[view.loc])

    def evaluate(self, view) -> Eval:
        p = view.col("p")
        hi = self.hi[view.loc]
        out = (p < self.lo) | (p > hi)
        raw = (out * self.sev).astype(np.int8)
        limits = np.broadcast_to(np.where(p < self.lo, self.lo, hi), (5, len(view)))
        return Eval(~np.isnan(p), raw, raw, p, limits, np.maximum(self.lo - p, p - hi))
