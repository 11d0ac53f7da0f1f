"""G-flatline (domain.md §2): a gas pressure frozen over a window while its peers or its learned
time-of-week profile say it should have varied; the flatline rule of detectors/generic.py judged against
the network around the sensor.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field

from detectors.base import severity_code, stable_argsort
from detectors.calendar import NS
from detectors.gas import _profile, hour_of_week, week_number
from detectors.generic import Flatline, FlatlineParams


class GasFlatlineParams(FlatlineParams):
    """Flatline's keys with the gas pressure as the default field."""

    field: str = Field("p", pattern=r"^[a-z][a-z0-9_]{0,31}$")
    unit: str = "kPa"


# The peers' window is made of whole time slots, this many per window.
PEER_SLOTS = 8


class GasFlatline(Flatline):
    """G-flatline: a gas pressure that does not change over gas.flatline.window_s (2 h) while it should
    have varied: a regulator outlet can be genuinely steady at night, a stuck sensor is frozen while the
    network around it moves.

    A flat window is flagged where the median change (max - min, % of set pressure) of the sensor's
    peers over the window exceeds vary_pct (basis "peers"), or where its learned time-of-week profile
    (the shared gas profile's hour means over the window) swings by more (basis "profile"). With too
    few peers with readings in the window and no learned profile, the flat window alone is flagged
    (basis "window_only"); where what is known says the sensor should be steady, nothing is.

    Peers are judged from per-sensor slot minima and maxima over the `PEER_SLOTS` whole slots of the
    window before the reading's own slot (so the verdict at t reads only peer readings before t's slot,
    wherever the batches were cut in time). The rule runs over whole batches (`step_batch`): every
    reading of the batch is in the slot tables before any reading is judged, as if the readings came
    one at a time in event-time order. A peer's back-filled readings that arrive after a verdict do
    not change it.
    """

    batchwise = True  # state of its own, but it needs the whole batch: see step_batch

    type = "gas_flatline"
    kinds = ("gas",)
    Params = GasFlatlineParams
    params: GasFlatlineParams

    def defaults(self) -> tuple[int, float]:
        f = self.inv.cfg.gas.flatline
        return f.window_s, f.min_change_kpa

    def setup(self, shared):
        super().setup(shared)
        f = self.inv.cfg.gas.flatline
        self.shared = shared
        self._vary_pct = f.vary_pct      # (underscore: tuning them does not change what the state means)
        self._min_peers = f.min_peers
        self.sev = severity_code(self.params.severity)
        # Peers and profile are pressures relative to set pressure: they judge the field p only.
        self.expect = self.params.field == "p"
        self.p_set = self.inv.p_set[self.sensors]
        self.slot_s = max(1, -(-self.win_s // PEER_SLOTS))
        self.slots = -(-self.win_s // self.slot_s)
        # Leading underscore: which sensors are peers says nothing about what the state below means.
        self._group, self._members, self._mstart = peer_groups(self.inv.cfg, self.sensors, f.peer_scopes, f.min_peers)
        ring = (self.n, self.slots + 1)                       # the window's slots and the one being filled
        self.slot_key_ = np.full(ring, -1, np.int64)          # slot (event time // slot_s) held, -1: none
        self.slot_lo_ = np.full(ring, np.inf)                 # lowest valid reading in that slot
        self.slot_hi_ = np.full(ring, -np.inf)                # highest valid reading in that slot
        if self.expect:
            _profile(shared, self.inv, self.group)            # learned from every gas reading, shared

    def step_batch(self, view):
        """Any number of readings per sensor, each sensor's rows contiguous and in time order: the flat
        run of each sensor one reading at a time (a loop over the rank of a reading within its sensor,
        vectorized over sensors, as the rule set's rounds), then the peers and the profile of every
        flat row at once."""
        n = len(view)
        loc, ts = view.loc, view.ts
        first = np.flatnonzero(np.r_[True, loc[1:] != loc[:-1]])
        rank = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
        x, ok = self.read(view)
        flat_s, stuck = np.empty(n), np.empty(n)
        by_rank = stable_argsort(rank)
        bounds = np.flatnonzero(np.r_[True, np.diff(rank[by_rank]) != 0, True])
        for a, b in zip(bounds[:-1], bounds[1:]):
            # Flatline.evaluate's state update for the readings of this rank, on plain arrays.
            idx = by_rank[a:b]
            xi, li, ti = x[idx], loc[idx], ts[idx]
            ref, since = self.ref_[li], self.since_[li]
            upd = ok[idx] & (np.isnan(ref) | (np.abs(xi - ref) > self.min_change))
            ref = np.where(upd, xi, ref)
            since = np.where(upd, ti, since)
            self.ref_[li] = ref
            self.since_[li] = since
            flat_s[idx] = np.where(since >= 0, (ti - since) / NS, 0.0)
            stuck[idx] = ref
        flat = ok & (flat_s >= self.win_s)
        raw = np.where(flat, self.sev, 0).astype(np.int8)
        facts = None
        recs = self._records(loc, ts, x, ok)
        cand = np.flatnonzero(flat)
        if len(cand):
            keep, facts = self._expected(view, cand, rank, recs)
            raw[cand] = np.where(keep, raw[cand], 0)
        self._store(*recs)
        return self._emit_batch(view, ok, raw, flat_s, stuck, cand, facts)

    # ----- peers ----------------------------------------------------------------------------------
    def _records(self, loc, ts, x, ok):
        """(sensor, slot, lo, hi) of the batch's valid readings, one record per sensor and slot, sorted
        (rows come by sensor and time, so sensor and slot already ascend)."""
        idx = np.flatnonzero(ok)
        key = ts[idx] // (self.slot_s * NS)
        comb = loc[idx].astype(np.int64) << 32 | key
        if len(idx) == 0:
            return comb, x[idx], x[idx]
        starts = np.flatnonzero(np.r_[True, comb[1:] != comb[:-1]])
        return comb[starts], np.minimum.reduceat(x[idx], starts), np.maximum.reduceat(x[idx], starts)

    def _store(self, comb, lo, hi) -> None:
        """Merge the batch's slot records into each sensor's ring (an older slot never overwrites a newer)."""
        if len(comb) == 0:
            return
        s, key = comb >> 32, comb & 0xFFFFFFFF
        pos = key % (self.slots + 1)
        # The newest record of each (sensor, ring position): records ascend by slot within a sensor.
        cell = s * (self.slots + 1) + pos
        order = np.lexsort((key, cell))
        last = order[np.r_[cell[order][1:] != cell[order][:-1], True]]
        cell, key, lo, hi = cell[last], key[last], lo[last], hi[last]
        keys, los, his = self.slot_key_.reshape(-1), self.slot_lo_.reshape(-1), self.slot_hi_.reshape(-1)
        old = keys[cell]
        same, newer = old == key, old < key
        los[cell] = np.where(same, np.minimum(los[cell], lo), np.where(newer, lo, los[cell]))
        his[cell] = np.where(same, np.maximum(his[cell], hi), np.where(newer, hi, his[cell]))
        keys[cell] = np.maximum(old, key)

    def _peer_changes(self, cand_loc, cand_ts, recs):
        """(pair candidate, pair peer change %) of every candidate row and each of its peers that has
        valid readings in the window: max - min over the window's slots, % of the peer's set pressure."""
        g = self._group[cand_loc]
        has = g >= 0
        ci = np.flatnonzero(has)
        cnt = self._mstart[g[ci] + 1] - self._mstart[g[ci]]
        pc = np.repeat(ci, cnt)
        off = np.arange(len(pc)) - np.repeat(np.cumsum(cnt) - cnt, cnt)
        peer = self._members[np.repeat(self._mstart[g[ci]], cnt) + off]
        other = peer != cand_loc[pc]
        pc, peer = pc[other], peer[other]
        if len(pc) == 0:
            return pc, np.zeros(0)
        # Slot records of the peers: the rings (earlier batches) and this batch, merged per slot.
        ps = np.unique(peer)
        rk = self.slot_key_[ps]
        live = rk >= 0
        rcomb = np.repeat(ps.astype(np.int64), self.slots + 1).reshape(rk.shape)[live] << 32 | rk[live]
        bcomb, blo, bhi = recs
        comb = np.r_[rcomb, bcomb]
        lo, hi = np.r_[self.slot_lo_[ps][live], blo], np.r_[self.slot_hi_[ps][live], bhi]
        order = np.argsort(comb, kind="stable")
        comb, lo, hi = comb[order], lo[order], hi[order]
        if len(comb):
            starts = np.flatnonzero(np.r_[True, comb[1:] != comb[:-1]])
            comb, lo, hi = comb[starts], np.minimum.reduceat(lo, starts), np.maximum.reduceat(hi, starts)
        # The window: the PEER_SLOTS slots before the candidate's own slot.
        k = cand_ts[pc] // (self.slot_s * NS)
        want = (peer.astype(np.int64) << 32)[:, None] | (k[:, None] - self.slots + np.arange(self.slots))
        at = np.minimum(np.searchsorted(comb, want), max(len(comb) - 1, 0))
        hit = (comb[at] == want) if len(comb) else np.zeros(want.shape, bool)
        wlo = np.where(hit, lo[at] if len(comb) else 0.0, np.inf).min(axis=1)
        whi = np.where(hit, hi[at] if len(comb) else 0.0, -np.inf).max(axis=1)
        seen = hit.any(axis=1)
        return pc[seen], 100.0 * (whi[seen] - wlo[seen]) / self.p_set[peer[seen]]

    def _expected(self, view, cand, rank, recs):
        """(flag, facts) of the flat rows `cand`: flag where the sensor should have varied over the
        window, or where nothing is known about that (window_only); facts: per-row context columns."""
        loc, nc = view.loc[cand], len(cand)
        by_peers = np.zeros(nc, bool)
        peers_known = np.zeros(nc, bool)
        n_peers = np.zeros(nc, np.int64)
        med = np.full(nc, np.nan)
        if self.expect:
            # Rows of one sensor in one slot share their peers' window: each pair is judged once.
            key = loc.astype(np.int64) << 32 | view.ts[cand] // (self.slot_s * NS)
            _, one, back = np.unique(key, return_index=True, return_inverse=True)
            pc, change = self._peer_changes(loc[one], view.ts[cand][one], recs)
            if len(pc):
                order = np.lexsort((change, pc))
                pc, change = pc[order], change[order]
                cnt = np.bincount(pc, minlength=len(one))
                start = np.cumsum(cnt) - cnt
                got = np.flatnonzero(cnt)
                mid = np.full(len(one), np.nan)
                mid[got] = (change[start[got] + (cnt[got] - 1) // 2] + change[start[got] + cnt[got] // 2]) / 2.0
                n_peers, med = cnt[back], mid[back]
                peers_known = n_peers >= self._min_peers
                by_peers = peers_known & (med > self._vary_pct)
        learned = np.zeros(nc, bool)
        swing = np.full(nc, np.nan)
        prof = self.shared.get("gas_profile") if self.expect else None
        ask = np.flatnonzero(~by_peers)
        if prof is not None and prof.group is self.group and len(ask):
            learned[ask], swing[ask] = self._profile_swing(view, cand[ask], rank, prof)
        by_profile = learned & (swing > self._vary_pct)
        unknown = ~peers_known & ~learned
        flag = by_peers | by_profile | unknown
        basis = np.where(by_peers, 0, np.where(by_profile, 1, np.where(unknown, 2, np.where(peers_known, 0, 1))))
        has_group = self._group[loc] >= 0 if self.expect else np.zeros(nc, bool)
        return flag, (basis, has_group, n_peers, med, learned, swing)

    # ----- profile --------------------------------------------------------------------------------
    def _profile_swing(self, view, rows, rank, prof):
        """(learned, swing %) of the profile's hour means over the window before each of `rows`, as the
        profile stood just before that reading: the profile learns after each round of the rule set,
        while this rule runs before them, so the batch's earlier readings of the sensor are replayed
        into a copy of its profile rows (as GasProfile.after does)."""
        loc = view.loc
        sens = np.unique(loc[rows])
        mean, count = prof.mean_[sens], prof.count_[sens]
        weeks, last_week = prof.weeks_[sens], prof.last_week_[sens]
        # Every batch row of those sensors, in rank order, and where it goes in the copy.
        mine = np.flatnonzero(np.isin(loc, sens))
        srow = np.searchsorted(sens, loc)
        p, valid = prof.learnable(view)   # the readings the profile learns (GasProfile.after)
        local = view.local_seconds()
        hour = hour_of_week(local)
        # The local hours the window [t - window_s, t] touches, as absolute hour numbers.
        a0 = (local - self.win_s) // 3600
        span = (local // 3600 - a0)
        hours = self.win_s // 3600 + 2
        need = prof.need[sens]
        learned, swing = np.zeros(len(rows), bool), np.full(len(rows), np.nan)
        top = int(rank[rows].max())
        # Rows to judge and readings to learn, each in rank order, sliced per rank below.
        given = np.argsort(rank[rows], kind="stable")
        rows = rows[given]
        judge_at = np.searchsorted(rank[rows], np.arange(top + 2))
        mine = mine[valid[mine] & (rank[mine] < top)]
        mine = mine[np.argsort(rank[mine], kind="stable")]
        learn_at = np.searchsorted(rank[mine], np.arange(top + 2))
        j = np.arange(hours)
        for r in range(top + 1):
            now = rows[judge_at[r]:judge_at[r + 1]]
            if len(now):
                a = a0[now][:, None] + j
                inside = j <= span[now][:, None]
                bins = hour_of_week(a * 3600)
                sr = srow[now][:, None]
                m = mean[sr, bins].astype(np.float64)
                ok_h = prof.learned_bins(count[sr, bins], weeks[sr, bins], need[srow[now]][:, None]) | ~inside
                hi = np.where(inside, m, -np.inf).max(axis=1)
                lo = np.where(inside, m, np.inf).min(axis=1)
                k = slice(judge_at[r], judge_at[r + 1])
                learned[k] = ok_h.all(axis=1)
                swing[k] = np.where(learned[k], 100.0 * (hi - lo) / self.p_set[loc[now]], np.nan)
            upd = mine[learn_at[r]:learn_at[r + 1]]
            if len(upd):
                sr, h = srow[upd], hour[upd]
                c = count[sr, h].astype(np.int64) + 1
                m = mean[sr, h]
                mean[sr, h] = m + (p[upd] - m) / np.minimum(c, 255)
                count[sr, h] = np.minimum(c, 255)
                wk = week_number(local[upd])
                weeks[sr, h] = np.minimum(weeks[sr, h].astype(np.int16) + (wk > last_week[sr, h]), 255)
                last_week[sr, h] = np.maximum(last_week[sr, h], wk)
        # Back to the order of `rows` as given.
        out_l, out_s = np.empty_like(learned), np.empty_like(swing)
        out_l[given], out_s[given] = learned, swing
        return out_l, out_s

    # ----- output ---------------------------------------------------------------------------------
    def _emit_batch(self, view, ok, raw, flat_s, stuck, cand, facts):
        """Levels without hysteresis: each known row's level is its own; emit while a level is above 0
        and the row that drops it back to 0. The flat rows' contexts say what the verdict rests on."""
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return None
        loc = view.loc[idx]
        start = np.r_[True, loc[1:] != loc[:-1]]
        new = raw[idx]
        prev = np.empty_like(new)
        prev[1:] = new[:-1]
        prev[start] = self.level_[loc[start]]
        last = np.r_[np.flatnonzero(start)[1:] - 1, len(idx) - 1]
        self.level_[loc[last]] = new[last]
        emit = np.flatnonzero((new | prev) != 0)
        if len(emit) == 0:
            return None
        rows = idx[emit]
        base = self.context_base()
        at = np.full(len(view), -1)
        at[cand] = np.arange(len(cand))
        contexts = []
        for i in rows:  # emitted rows only
            c = dict(base)
            c["stuck_value"] = float(stuck[i])
            j = at[i]
            if j >= 0:
                basis, has_group, n_peers, med, learned, swing = facts
                c["basis"] = BASES[basis[j]]
                if has_group[j]:
                    c["peers"] = int(n_peers[j])
                    if n_peers[j]:
                        c["peer_change_pct"] = float(med[j])
                if learned[j]:
                    c["profile_swing_pct"] = float(swing[j])
            contexts.append(c)
        return self.rows(view.sensor[rows], view.ts[rows], new[emit], flat_s[rows], np.full(len(rows), float(self.win_s)),
                         flat_s[rows] / self.win_s, contexts)


BASES = ("peers", "profile", "window_only")


def peer_groups(cfg, sensors: np.ndarray, scopes: Sequence[str], min_peers: int):
    """Each sensor's peer group as CSR: (group per sensor, -1: no peers; member local indexes by group;
    group start offsets). A sensor's group is the first scope in `scopes` where the gas sensors of its
    pressure class (at its site, in its district, anywhere) number at least min_peers besides itself;
    the group holds every such sensor, whatever scope they use themselves. Raises nothing."""
    devs = [cfg.devices[int(i)] for i in sensors]
    district = {s.id: s.district for s in cfg.sites}
    label = {
        "site": lambda d: f"site\0{d.site}\0{d.pressure_class}",
        "district": lambda d: f"district\0{district.get(d.site, '')}\0{d.pressure_class}",
        "class": lambda d: f"class\0{d.pressure_class}",
    }
    n = len(devs)
    group = np.full(n, -1, np.int64)
    labels = np.array([label[sc](d) for sc in scopes for d in devs], object).reshape(len(scopes), n)
    if n == 0 or not scopes:
        return group, np.zeros(0, np.int64), np.zeros(1, np.int64)
    names, inv, counts = np.unique(labels.reshape(-1).astype(str), return_inverse=True, return_counts=True)
    inv = inv.reshape(len(scopes), n)
    for lv in range(len(scopes)):
        take = (group < 0) & (counts[inv[lv]] - 1 >= min_peers)
        group[take] = inv[lv][take]
    members = np.argsort(inv.reshape(-1), kind="stable") % n   # sensors of each label, label by label
    mstart = np.r_[0, np.cumsum(counts)]
    return group, members.astype(np.int64), mstart
