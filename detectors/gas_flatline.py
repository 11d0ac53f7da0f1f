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
from detectors.gas import PER_ROW_SENSORS, WEEK_HOURS, GasProfile, _profile, hour_of_week, week_number
from detectors.generic import Flatline, FlatlineParams
from detectors.rolling import run_ends, run_heads


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

    Peers are judged from per-sensor slot minima and maxima over the `PEER_SLOTS` whole slots (a window)
    before the reading's own slot, but for the last few of them (`peer_lag`: the peers' longest report
    interval plus gas.flatline.peer_latency_s, in whole slots). Devices report their samples in batches
    (every 15 min, some every hour), so when a sensor's report arrives its peers' readings of the last
    minutes may still be on the way; the lag makes the verdict read only peer readings that were reported
    before the reading itself was, so it does not depend on whether a peer's report came in the same
    batch as the sensor's or in the next one (a day replayed at another speed raises the same alerts).
    The slot rings keep a window more than the window, for a sensor whose own report comes after its
    peers have sent newer slots. The rule runs over whole batches (`step_batch`): every reading of the
    batch is in the slot tables before any reading is judged, as if the readings came one at a time in
    event-time order. Where devices report less often than once a window (2 h), or a peer's readings
    arrive later than their report interval allows (a back-fill after a link loss), a verdict reads
    what had arrived when it was given, and later readings do not change it.
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
        # Leading underscore: which sensors are peers, and how late their reports come, says nothing about
        # what the state below means.
        self._group, self._members, self._mstart = peer_groups(self.inv.cfg, self.sensors, f.peer_scopes, f.min_peers)
        self._lag = peer_lag(self.inv.report_s[self.sensors], self._group, self._members, self._mstart,
                             f.peer_latency_s, self.slot_s, self.slots)
        # The window's slots, the one being filled and a window more: a sensor's reading can be judged after
        # its peers' readings of up to a window later have arrived (it waits for its own report), and the
        # peers' slots it reads must still be in their rings then.
        ring = (self.n, 2 * self.slots + 1)
        self.slot_key_ = np.full(ring, -1, np.int64)          # slot (event time // slot_s) held, -1: none
        self.slot_lo_ = np.full(ring, np.inf)                 # lowest valid reading in that slot
        self.slot_hi_ = np.full(ring, -np.inf)                # highest valid reading in that slot
        if self.expect:
            _profile(shared, self.inv, self.group)            # learned from every gas reading, shared

    def step_batch(self, view):
        """Any number of readings per sensor, each sensor's rows contiguous and in time order: the flat
        run of each sensor one reading at a time (`_flat_runs`), then the peers and the profile of every
        flat row at once."""
        loc, ts = view.loc, view.ts
        x, ok = self.read(view)
        stuck, since = self._flat_runs(loc, ts, x, ok)
        flat_s = np.where(since >= 0, (ts - since) / NS, 0.0)
        flat = ok & (flat_s >= self.win_s)
        raw = np.where(flat, self.sev, 0).astype(np.int8)
        facts = None
        recs = self._records(loc, ts, x, ok)
        cand = np.flatnonzero(flat)
        if len(cand):
            keep, facts = self._expected(view, cand, recs)
            raw[cand] = np.where(keep, raw[cand], 0)
        self._store(*recs)
        return self._emit_batch(view, ok, raw, flat_s, stuck, cand, facts)

    def _flat_runs(self, loc, ts, x, ok) -> tuple[np.ndarray, np.ndarray]:
        """(ref, since) after each row, and stored for each sensor's last row: Flatline.evaluate's update
        (a valid reading more than min_change away from ref, or the first one, restarts the run) stepped
        along each sensor's rows, as if they came one at a time."""
        n = len(loc)
        head = run_heads(loc)
        first = np.flatnonzero(head)
        last = run_ends(first, n)
        run = np.cumsum(head) - 1
        arange = np.arange(n)
        run_start = first[run]
        rank = arange - run_start
        sensor = loc[first]
        ref0, since0 = self.ref_[sensor], self.since_[sensor]
        if self.min_change == 0:
            # No dead band: a valid reading moves iff it differs from the previous valid one (ref then
            # equals it, but for the sign of a zero: ref is the value of the latest moving row, taken
            # from it, as the one-at-a-time update does).
            def latest(mask, strict):
                acc = np.maximum.accumulate(np.where(mask, arange, -1))
                if strict:
                    acc[1:] = acc[:-1].copy()
                    acc[:1] = -1
                return np.where(acc >= run_start, acc, -1)
            pv = latest(ok, True)
            before = np.where(pv >= 0, x[pv], ref0[run])
            moved = ok & (np.isnan(before) | (np.abs(x - before) > self.min_change))
            at = latest(moved, False)
            ref, since = np.where(at >= 0, x[at], ref0[run]), np.where(at >= 0, ts[at], since0[run])
        elif n <= PER_ROW_SENSORS * (int(rank.max()) + 1):
            # A dead band (a play operator: ref depends on the whole path since the last move), few sensors
            # per rank: one row at a time in plain floats (the same float64 difference and comparison).
            xs, oks, tss = x.tolist(), ok.tolist(), ts.tolist()
            refs, sinces = [0.0] * n, [0] * n
            mc = float(self.min_change)
            bounds = first.tolist() + [n]
            for j, (r, t) in enumerate(zip(ref0.tolist(), since0.tolist())):
                for i in range(bounds[j], bounds[j + 1]):
                    if oks[i]:
                        v = xs[i]
                        if r != r or abs(v - r) > mc:
                            r, t = v, tss[i]
                    refs[i], sinces[i] = r, t
            ref, since = np.array(refs, np.float64), np.array(sinces, np.int64)
        else:
            # Many sensors per rank: one numpy step per rank over the sensors holding a reading of it.
            ref, since = np.empty(n), np.empty(n, np.int64)
            cur_ref, cur_since = ref0.astype(np.float64), since0.copy()
            by_rank = stable_argsort(rank)
            edges = np.flatnonzero(np.r_[True, np.diff(rank[by_rank]) != 0, True])
            for a, b in zip(edges[:-1], edges[1:]):
                idx = by_rank[a:b]
                ri = run[idx]
                r, t, xi = cur_ref[ri], cur_since[ri], x[idx]
                upd = ok[idx] & (np.isnan(r) | (np.abs(xi - r) > self.min_change))
                ref[idx] = cur_ref[ri] = np.where(upd, xi, r)
                since[idx] = cur_since[ri] = np.where(upd, ts[idx], t)
        self.ref_[sensor], self.since_[sensor] = ref[last], since[last]
        return ref, since

    # ----- peers ----------------------------------------------------------------------------------
    def _records(self, loc, ts, x, ok):
        """(sensor, slot, lo, hi) of the batch's valid readings, one record per sensor and slot, sorted
        (rows come by sensor and time, so sensor and slot already ascend)."""
        idx = np.flatnonzero(ok)
        key = ts[idx] // (self.slot_s * NS)
        comb = loc[idx].astype(np.int64) << 32 | key
        if len(idx) == 0:
            return comb, x[idx], x[idx]
        starts = np.flatnonzero(run_heads(comb))
        return comb[starts], np.minimum.reduceat(x[idx], starts), np.maximum.reduceat(x[idx], starts)

    def _store(self, comb, lo, hi) -> None:
        """Merge the batch's slot records into each sensor's ring (an older slot never overwrites a newer)."""
        if len(comb) == 0:
            return
        s, key = comb >> 32, comb & 0xFFFFFFFF
        size = self.slot_key_.shape[1]
        # The newest record of each (sensor, ring position): records ascend by slot within a sensor.
        cell = s * size + key % size
        order = np.lexsort((key, cell))
        sc = cell[order]
        last = order[run_ends(np.flatnonzero(run_heads(sc)), len(sc))]  # each cell's last record
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
        rcomb = np.repeat(ps.astype(np.int64), rk.shape[1]).reshape(rk.shape)[live] << 32 | rk[live]
        bcomb, blo, bhi = recs
        comb = np.r_[rcomb, bcomb]
        lo, hi = np.r_[self.slot_lo_[ps][live], blo], np.r_[self.slot_hi_[ps][live], bhi]
        order = np.argsort(comb, kind="stable")
        comb, lo, hi = comb[order], lo[order], hi[order]
        if len(comb):
            starts = np.flatnonzero(run_heads(comb))
            comb, lo, hi = comb[starts], np.minimum.reduceat(lo, starts), np.maximum.reduceat(hi, starts)
        # The window: the PEER_SLOTS slots before the candidate's own slot, but for the last `lag` of them
        # (the peers' readings there may not have been reported yet).
        k = cand_ts[pc] // (self.slot_s * NS)
        want = (peer.astype(np.int64) << 32)[:, None] | (k[:, None] - self.slots + np.arange(self.slots))
        at = np.minimum(np.searchsorted(comb, want), max(len(comb) - 1, 0))
        hit = (comb[at] == want) if len(comb) else np.zeros(want.shape, bool)
        hit &= np.arange(self.slots) < self.slots - self._lag[cand_loc[pc]][:, None]
        wlo = np.where(hit, lo[at] if len(comb) else 0.0, np.inf).min(axis=1)
        whi = np.where(hit, hi[at] if len(comb) else 0.0, -np.inf).max(axis=1)
        seen = hit.any(axis=1)
        return pc[seen], 100.0 * (whi[seen] - wlo[seen]) / self.p_set[peer[seen]]

    def _expected(self, view, cand, recs):
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
            learned[ask], swing[ask] = self._profile_swing(view, cand[ask], prof)
        by_profile = learned & (swing > self._vary_pct)
        unknown = ~peers_known & ~learned
        flag = by_peers | by_profile | unknown
        basis = np.where(by_peers, 0, np.where(by_profile, 1, np.where(unknown, 2, np.where(peers_known, 0, 1))))
        has_group = self._group[loc] >= 0 if self.expect else np.zeros(nc, bool)
        return flag, (basis, has_group, n_peers, med, learned, swing)

    # ----- profile --------------------------------------------------------------------------------
    def _profile_swing(self, view, rows, prof):
        """(learned, swing %) of the profile's hour means over the window before each of `rows`, as the
        profile stood just before that reading: the profile learns after each round of the rule set,
        while this rule reads it as it stood before the batch, so each row sees its hour bins as the
        sensor's earlier learnable rows of the batch left them (GasProfile.after's arithmetic).

        Each (sensor, hour) bin is a chain of the batch's learnable rows in time order (as in
        GasProfile.run_series): counts and distinct weeks are cumulative, the float32 running mean steps
        along the chain (only when some row's window is learned: counts and weeks never fall, so a bin
        not learned after the whole batch is not learned before any of its rows). Each judged row reads,
        per bin of its window, the state after the latest learnable row of its sensor before it."""
        loc = view.loc
        n = len(loc)
        local = view.local_seconds()
        # The local hours the window [t - window_s, t] touches, as absolute hour numbers.
        a0 = (local[rows] - self.win_s) // 3600
        span = local[rows] // 3600 - a0
        j = np.arange(self.win_s // 3600 + 2)
        inside = j <= span[:, None]
        want = loc[rows].astype(np.int64)[:, None] * WEEK_HOURS + hour_of_week((a0[:, None] + j) * 3600)
        counts, weeks, means = (t.reshape(-1) for t in (prof.count_, prof.weeks_, prof.mean_))
        # The learnable rows of the judged sensors (GasProfile.after), as chains by bin, each in row order.
        p, valid = prof.learnable(view)
        judged = np.zeros(self.n, bool)
        judged[loc[rows]] = True
        lr = np.flatnonzero(valid & judged[loc])
        code = loc[lr].astype(np.int64) * WEEK_HOURS + hour_of_week(local[lr])
        if len(code) > 1 and not bool(np.all(code[1:] >= code[:-1])):  # sorted unless the batch wraps a week
            o = np.argsort(code, kind="stable")
            lr, code = lr[o], code[o]
        ch = prof.bin_chains(code, week_number(local[lr]))
        start, length, chain, pos, bins = ch.start, ch.length, ch.chain, ch.rank, ch.bins
        cnt, nweek = ch.reads, ch.nweek
        # Per judged row and window hour: the latest learnable row of the bin before the judged row.
        at = np.searchsorted(code * n + lr, want * n + rows[:, None]) - 1
        at = np.maximum(at, 0) if len(code) else np.zeros_like(want)
        got = (code[at] == want) & (lr[at] < rows[:, None]) if len(code) else np.zeros(want.shape, bool)
        c = np.where(got, cnt[at] if len(code) else 0, counts[want])
        wk = np.where(got, nweek[at] if len(code) else 0, weeks[want])
        ok_h = prof.learned_bins(c, wk, prof.need[loc[rows]][:, None]) | ~inside
        learned = ok_h.all(axis=1)
        swing = np.full(len(rows), np.nan)
        sel = np.flatnonzero(learned)
        if len(sel):
            m = means[want[sel]]
            if got[sel].any():
                mean = GasProfile._chain_means(means[bins], p[lr], cnt.astype(np.int16), chain, pos, start, length)
                m = np.where(got[sel], mean[at[sel]], m)
            m = m.astype(np.float64)
            hi = np.where(inside[sel], m, -np.inf).max(axis=1)
            lo = np.where(inside[sel], m, np.inf).min(axis=1)
            swing[sel] = 100.0 * (hi - lo) / self.p_set[loc[rows[sel]]]
        return learned, swing

    # ----- output ---------------------------------------------------------------------------------
    def _emit_batch(self, view, ok, raw, flat_s, stuck, cand, facts):
        """Levels without hysteresis: each known row's level is its own; emit while a level is above 0
        and the row that drops it back to 0. The flat rows' contexts say what the verdict rests on."""
        idx = np.flatnonzero(ok)
        if len(idx) == 0:
            return None
        loc = view.loc[idx]
        start = run_heads(loc)
        new = raw[idx]
        prev = np.empty_like(new)
        prev[1:] = new[:-1]
        prev[start] = self.level_[loc[start]]
        last = run_ends(np.flatnonzero(start), len(idx))
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


def peer_lag(report_s: np.ndarray, group: np.ndarray, members: np.ndarray, mstart: np.ndarray, latency_s: int,
             slot_s: int, slots: int) -> np.ndarray:
    """Each sensor's lag in slots: how many of the last slots before a reading's own its peers' window
    leaves out, so that the peers' readings it reads have been reported by the time the reading itself
    is (a peer's reading waits up to its report interval on the device, then up to `latency_s` on the
    way). The longest report interval among the sensor's peers (itself excluded) plus latency_s, in whole
    slots; at most `slots` - 1 (the window keeps its first slot). 0 for a sensor without peers.

    Without it the verdict would depend on whether a peer's report arrived before the sensor's own, in the
    same batch or the next: the same day replayed at another speed raised other alerts."""
    n = len(group)
    lag = np.zeros(n, np.int64)
    has = np.flatnonzero(group >= 0)
    if len(has) == 0:
        return lag
    ng = len(mstart) - 1
    label = np.repeat(np.arange(ng), np.diff(mstart))
    rep = report_s[members]
    # The longest and the second longest interval of each group (a sensor's peers are its group but itself).
    top = np.full(ng, -1, np.int64)
    np.maximum.at(top, label, rep)
    at_top = rep == top[label]
    n_top = np.bincount(label[at_top], minlength=ng)
    second = np.full(ng, -1, np.int64)
    np.maximum.at(second, label[~at_top], rep[~at_top])
    g = group[has]
    own = report_s[has]
    longest = np.where((own < top[g]) | (n_top[g] > 1), top[g], second[g])
    wait = np.maximum(longest, 0) + latency_s
    lag[has] = np.minimum(-(-wait // slot_s), slots - 1)
    return lag

