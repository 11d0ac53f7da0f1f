"""The plain per-reading reference implementation of every registered detector.

One reading at a time, Python scalars and dicts, local time through `datetime`/`zoneinfo`: slow and
obvious on purpose. The conformance suite checks that the vectorized `RuleSet` gives the same
detections, and `bench/bench_detectors.py` measures how much faster the vectorized one is.
Where the vectorized state is float32 (to stay within the per-sensor memory budget) this code rounds
through float32 at the same places, so both make the same decisions at the same thresholds.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from config.base import SEVERITY_RANK, minutes
from core import Detections, ReadingBatch
from core.timefmt import NS_PER_S as NS
from detectors.calendar import EXAM_MODES, distance_m
from detectors.context import device_start_kpa
from detectors.gas_flatline import PEER_SLOTS
from detectors.registry import rule_kinds, validate_rules

NAN = float("nan")
BASE_S = 1_577_836_800  # slot keys count from 2020-01-01 UTC, as in detectors.rolling


def _f32(x: float) -> float:
    return float(np.float32(x))


def _below_85(x: float) -> float:
    return float(np.nextafter(x, -np.inf))


class Clock:
    """Local-time facts of one reading, the slow way."""

    def __init__(self, cfg) -> None:
        t = cfg.time
        self.cfg, self.tz = cfg, t.tz
        self.day_s, self.night_s = minutes(t.day_start) * 60, minutes(t.night_start) * 60
        self.prohibited = [(minutes(w.start) * 60, minutes(w.end) * 60) for w in t.prohibited_windows]
        self.site_of = {d.id: d.site for d in cfg.devices}
        sites = {s.id: s for s in cfg.sites}
        self.near = {}
        for d in cfg.devices:
            s = sites[d.site]
            self.near[d.id] = any(distance_m(s.lat, s.lon, x.lat, x.lon) <= t.exam.radius_m for x in t.exam.sites)
        bounds = {self.day_s, self.night_s}
        for a, b in self.prohibited:
            bounds |= {a, b}
        for p in t.permits:
            for w in p.windows:
                bounds |= {minutes(w.start) * 60, minutes(w.end) * 60}
        self.bounds = sorted(b % 86400 for b in bounds)

    def local(self, ts_ns: int) -> tuple[dt.date, int, int]:
        """(local date, seconds of day, local seconds since the epoch)."""
        t = dt.datetime.fromtimestamp(ts_ns // NS, self.tz)
        sod = t.hour * 3600 + t.minute * 60 + t.second
        epoch_local = (t.date() - dt.date(1970, 1, 1)).days * 86400 + sod
        return t.date(), sod, epoch_local

    @staticmethod
    def _in(sod, s, e):
        return s <= sod < e if s < e else (sod >= s or sod < e)

    def facts(self, device_id: str, ts_ns: int) -> dict:
        date, sod, local = self.local(ts_ns)
        night = self._in(sod, self.night_s, self.day_s)
        prohibited = any(self._in(sod, s, e) for s, e in self.prohibited)
        permit = None
        for p in self.cfg.time.permits:
            if permit is not None or p.site != self.site_of[device_id]:
                continue
            for w in p.windows:
                s, e = minutes(w.start) * 60, minutes(w.end) * 60
                if s < e:
                    hit = s <= sod < e and p.from_ <= date <= p.to
                else:
                    yday = date - dt.timedelta(days=1)
                    hit = (sod >= s and p.from_ <= date <= p.to) or (sod < e and p.from_ <= yday <= p.to)
                if hit:
                    permit = p.id
                    break
        exam = 0
        if self.near[device_id]:
            if any(x.from_ <= date <= x.to for x in self.cfg.time.exam.periods):
                exam = 1
            for lt in self.cfg.time.exam.listening_tests:
                if lt.date == date and minutes(lt.start) * 60 <= sod < minutes(lt.end) * 60:
                    exam = 2
        since = min((sod - b) % 86400 for b in self.bounds)
        period = "prohibited" if prohibited else ("night" if night else "day")
        return {"night": night, "prohibited": prohibited, "permit": permit, "exam": exam, "local": local,
                "since": since, "period": period}


class Row:
    """One reading as the reference rules see it."""

    def __init__(self, sensor, device, ts, values, quality, facts) -> None:
        self.sensor, self.device, self.ts, self.values, self.quality, self.facts = sensor, device, ts, values, quality, facts

    def get(self, name) -> float:
        v = self.values.get(name, NAN)
        return float(v)

    def valid_db(self, name) -> tuple[float, bool]:
        x = self.get(name)
        return x, self.quality == 0 and 25.0 <= x <= 140.0


class Out:
    """A rule's verdict on one reading (see detectors.base.Eval)."""

    def __init__(self, known, raw, held, value, limits: dict, score, extra=None) -> None:
        self.known, self.raw, self.held, self.value, self.limits, self.score = known, raw, held, value, limits, score
        self.extra = extra or {}


def above(value, levels, hyst):
    """(raw, held, limits) for ascending severities: strictly above a threshold reaches it."""
    raw = held = 0
    limits = {}
    for i, (sev, thr) in enumerate(sorted(levels, key=lambda x: x[0])):
        limits[sev] = thr
        if i == 0:
            limits[0] = thr
        if value > thr:
            raw = sev
        if value > thr - hyst:
            held = sev
    return raw, held, limits


def below(value, levels, hyst):
    raw, held, limits = above(-value, [(s, -t) for s, t in levels], hyst)
    return raw, held, {k: -v for k, v in limits.items()}


class RefRule:
    category = "data"
    calendar = False
    kinds: tuple[str, ...]  # device kinds it runs on, set by ReferenceRuleSet

    def __init__(self, rule_id, cls, params, cfg, sensors, shared) -> None:
        self.rule_id, self.cls, self.p, self.cfg, self.sensors, self.shared = rule_id, cls, params, cfg, sensors, shared
        self.category = cls.category
        self.metric, self.unit, self.window = cls.metric, cls.unit, cls.window
        self.level: dict[int, int] = {}
        self.st: dict[int, dict] = {}
        self.setup()

    def setup(self) -> None:
        pass

    def state(self, sensor) -> dict:
        return self.st.setdefault(sensor, {})

    def judge(self, row) -> Out:
        raise NotImplementedError

    def feed(self, row, out: list) -> None:
        o = self.judge(row)
        if getattr(self.p, "limit", None) == "auto":
            o = self.auto_limit(row, o)
        prev = self.level.get(row.sensor, 0)
        new = max(o.raw, min(prev, o.held)) if o.known else prev
        self.level[row.sensor] = new
        if o.known and (new > 0 or prev > 0):
            ctx = {"metric": self.metric, "unit": self.unit, "window": self.window}
            if self.calendar:
                ctx.update(period=row.facts["period"], permit_id=row.facts["permit"], exam_mode=EXAM_MODES[row.facts["exam"]])
            ctx.update(o.extra)
            out.append((row.sensor, row.ts, self.rule_id, self.category, new, o.value, o.limits.get(new, NAN), o.score, ctx))

    def advance(self, now_ns, out) -> None:
        pass

    def auto_limit(self, row, o: Out) -> Out:
        """`limit: auto` one reading at a time (detectors.autolimit.AutoLimit): the first limit_train
        scored readings of a sensor train, the limit is resolved from them, later ones are judged."""
        from detectors.autolimit import resolve_limit, training_quantile
        from detectors.multivariate import t2_limit

        p = self.p
        opts = getattr(self.cls, "auto_options", {})
        scale = t2_limit(p) if self.cls.type == "hotelling_t2" else 1.0
        st = self.state(row.sensor).setdefault("auto", {"scores": [], "t0": 0, "lim": None})
        if not o.known or o.score != o.score:
            return Out(False, 0, 0, o.value, {}, o.score, o.extra)
        if st["lim"] is None:
            if not st["scores"]:
                st["t0"] = row.ts
            st["scores"].append(_f32(o.score))
            if len(st["scores"]) == p.limit_train:
                q = training_quantile(p, p.limit_train, row.ts - st["t0"])
                st["lim"] = resolve_limit(st["scores"], q)
            return Out(False, 0, 0, o.value, {}, o.score, o.extra)
        lim, sev = st["lim"], SEVERITY_RANK[p.severity]
        over = (o.score >= lim and o.score > 0) if opts.get("inclusive") else o.score > lim
        raw = sev if over else 0
        hyst = getattr(p, "hysteresis", 0.0) or 0.0
        held = o.held if opts.get("held_own") else (sev if o.score > lim - hyst else 0)
        return Out(True, raw, max(held, raw), o.value, {k: lim * scale for k in range(5)}, o.score,
                   {**o.extra, "limit_auto": lim * scale})


# ----- noise -------------------------------------------------------------------------------------

class Energy:
    """Slots of 1-minute Leq energies per sensor (dict slot key -> energy), as detectors.noise.NoiseEnergy."""

    def __init__(self, cfg, sensors) -> None:
        self.cfg = cfg
        self.windows: set[int] = set()
        self.report = {s: cfg.devices[s].report_interval_s for s in sensors}
        self.slot_s = min(self.report.values()) if self.report else 60
        self.slots: dict[int, dict] = {}

    def key(self, ts):
        return ts // (self.slot_s * NS) - BASE_S // self.slot_s

    def before(self, row) -> None:
        x, ok = row.valid_db("leq")
        if ok:
            k = self.key(row.ts)
            nslots = max(1, math.ceil(max(self.windows | {60}) / self.slot_s))
            ring = self.slots.setdefault(row.sensor, {})
            pos = k % nslots
            if pos not in ring or k >= ring[pos][0]:
                ring[pos] = (k, 10.0 ** (x / 10.0))

    def after(self, row) -> None:
        pass

    def leq(self, row, window_s) -> tuple[float, bool]:
        k = self.key(row.ts)
        nslots = max(1, math.ceil(max(self.windows | {60}) / self.slot_s))
        span = min(nslots, math.ceil(window_s / self.slot_s))
        span = min(span, max(1, -(-row.facts["since"] // self.slot_s)))
        vals = [e for kk, e in self.slots.get(row.sensor, {}).values() if 0 <= k - kk < span]
        n = len(vals)
        leq = 10.0 * math.log10(sum(vals) / n) if n and sum(vals) > 0 else NAN
        expected = max(1, window_s // self.report[row.sensor])
        return leq, n >= math.ceil(self.cfg.noise.min_coverage * expected - 1e-9)


class Background:
    def __init__(self) -> None:
        self.bg: dict[int, float] = {}

    def before(self, row) -> None:
        pass

    def after(self, row) -> None:
        x, ok = row.valid_db("l90")
        if not ok:
            return
        b = self.bg.get(row.sensor, NAN)
        if math.isnan(b):
            self.bg[row.sensor] = x
        else:
            w = 0.5 if x < b else 1.0 / 240.0
            self.bg[row.sensor] = b + w * (x - b)


class NoiseRef(RefRule):
    calendar = True

    def setup(self):
        self.nz = self.cfg.noise
        h = getattr(self.p, "hysteresis_db", None)
        self.hyst = h if h is not None else self.nz.hysteresis_db
        if "energy" not in self.shared:
            self.shared["energy"] = Energy(self.cfg, self.sensors)
            self.shared["background"] = Background()
        self.energy, self.bgs = self.shared["energy"], self.shared["background"]
        self.limits = _noise_limits(self.cfg)
        self.more()

    def more(self):
        pass

    def win(self, default):
        w = getattr(self.p, "window_s", None) or default
        self.energy.windows.add(w)
        self.window = f"Leq{w // 60}" if w % 60 == 0 else f"Leq{w}s"
        return w


def _noise_limits(cfg):
    out = {}
    nz = cfg.noise
    for d in cfg.devices:
        day, night, over = nz.limits.day_db, nz.limits.night_db, nz.limits.night_lmax_over_db
        for o in sorted(nz.overrides, key=lambda o: o.device is not None):
            if (d.site == o.site) if o.site else (d.id == o.device):
                day = o.limits.day_db if o.limits.day_db is not None else day
                night = o.limits.night_db if o.limits.night_db is not None else night
                over = o.limits.night_lmax_over_db if o.limits.night_lmax_over_db is not None else over
        out[d.id] = (day, night, over)
    return out


class RefDay(NoiseRef):
    def more(self):
        self.w = self.win(self.nz.rolling_window_s)

    def judge(self, row):
        _, ok = row.valid_db("leq")
        leq, enough = self.energy.leq(row, self.w)
        lim = self.limits[row.device][0]
        known, extra = ok and enough, {}
        if self.p.background_correction == "gb12523":
            leq, known, extra = _corrected(self, row, leq, known)
        raw, held, limits = above(leq, [(2, lim), (3, lim + self.nz.day_orange_over_db)], self.hyst)
        if row.facts["night"]:
            raw = held = 0
        return Out(known, raw, held, leq, limits, leq - lim, extra)


class RefNight(NoiseRef):
    def more(self):
        self.w = self.win(self.nz.rolling_window_s)

    def judge(self, row):
        _, ok = row.valid_db("leq")
        leq, enough = self.energy.leq(row, self.w)
        lim = self.limits[row.device][1]
        known, extra = ok and enough, {}
        if self.p.background_correction == "gb12523":
            leq, known, extra = _corrected(self, row, leq, known)
        raw, held, limits = above(leq, [(3, lim)], self.hyst)
        if not row.facts["night"]:
            raw = held = 0
        return Out(known, raw, held, leq, limits, leq - lim, extra)


def _corrected(rule, row, leq, known):
    """GB 12523 background correction of one reading (detectors.noise.RollingLeqLimit.corrected)."""
    from detectors.background import gb12523_correct_one

    site = next(s.background_db for s in rule.cfg.sites if s.id == rule.cfg.devices[row.sensor].site)
    bg = float(site) if site is not None else rule.bgs.bg.get(row.sensor, NAN)
    value, valid, corr = gb12523_correct_one(leq, bg)
    source = "site" if site is not None else (None if bg != bg else "l90")
    extra = {"measured_db": round(leq, 1), "background_db": round(bg, 1), "background_source": source,
             "correction_db": corr, "corrected_db": round(value, 1)}
    return value, known and valid, extra


class RefLmax(NoiseRef):
    def judge(self, row):
        x, ok = row.valid_db("lmax")
        _, night, over = self.limits[row.device]
        lim = night + over
        red = self.nz.night_lmax_red_db
        raw, held, limits = above(x, [(3, lim), (4, _below_85(red))], self.hyst)
        limits[4] = red
        if not row.facts["night"]:
            raw = held = 0
        return Out(ok, raw, held, x, limits, x - lim)


class RefProhibited(NoiseRef):
    def more(self):
        pr = self.nz.prohibited
        self.w = self.win(pr.window_s)
        self.sev = SEVERITY_RANK[self.p.severity or pr.severity]

    def judge(self, row):
        pr = self.nz.prohibited
        _, ok = row.valid_db("leq")
        leq, enough = self.energy.leq(row, self.w)
        bg = self.bgs.bg.get(row.sensor, NAN)
        lim = pr.floor_db if math.isnan(bg) else max(bg + pr.background_margin_db, pr.floor_db)
        raw, held, limits = above(leq, [(self.sev, lim)], self.hyst)
        if not (row.facts["prohibited"] and row.facts["permit"] is None):
            raw = held = 0
        return Out(ok and enough, raw, held, leq, limits, leq - lim, {"background_db": round(bg, 1) if not math.isnan(bg) else bg})


class RefExam(NoiseRef):
    def more(self):
        self.w = self.win(self.nz.rolling_window_s)

    def judge(self, row):
        ex = self.nz.exam
        x, ok = row.valid_db("leq")
        leq, enough = self.energy.leq(row, self.w)
        f = row.facts
        class1 = ex.class1_night_db if f["night"] else ex.class1_day_db
        raw, held, limits = above(leq, [(3, class1)], self.hyst)
        if not (f["exam"] >= 1 and enough):
            raw = held = 0
        bg = self.bgs.bg.get(row.sensor, NAN)
        quiet = class1 if math.isnan(bg) else bg + ex.listening_margin_db
        r2, h2, _ = above(x, [(4, quiet)], self.hyst)
        listening = f["exam"] == 2
        if listening:
            raw, held = max(raw, r2), max(held, h2)
        limits[4] = quiet
        value = x if listening else leq
        lim = quiet if listening else class1
        return Out(ok and (enough or listening), raw, held, value, limits, value - lim)


class RefPre(NoiseRef):
    def more(self):
        self.w = self.win(self.nz.prohibited.window_s)
        self.margin = self.p.margin_db if self.p.margin_db is not None else self.nz.pre_warning_margin_db

    def judge(self, row):
        ex = self.nz.exam
        _, ok = row.valid_db("leq")
        leq, enough = self.energy.leq(row, self.w)
        f = row.facts
        day, night, _ = self.limits[row.device]
        limit = night if f["night"] else day
        if f["exam"] >= 1:
            limit = ex.class1_night_db if f["night"] else ex.class1_day_db
        raw, held, limits = above(leq, [(1, limit - self.margin)], self.hyst)
        return Out(ok and enough, raw, held, leq, limits, leq - limit)


class RefDataQuality(RefRule):
    def setup(self):
        dq = self.cfg.noise.data_quality
        self.min_vdr = self.p.min_vdr if self.p.min_vdr is not None else dq.min_vdr
        self.bad_s = self.p.bad_flag_for_s or dq.bad_flag_for_s
        self.sev = SEVERITY_RANK[self.p.severity]

    def judge(self, row):
        s = self.st.setdefault(row.sensor, {"hour": -1, "count": 0, "first": True, "vdr": NAN, "bad_since": -1})
        interval = self.cfg.devices[row.sensor].report_interval_s
        hour = (row.ts - 1) // (3600 * NS)
        cur = s["hour"]
        rolled, started = hour > cur, cur >= 0
        expected = max(1, 3600 // interval)
        vdr = s["vdr"]
        if rolled and started and not s["first"]:
            vdr = s["count"] / expected if hour == cur + 1 else 0.0
        s["vdr"] = _f32(vdr)
        if rolled:
            s["first"] = not started
        if hour >= cur:
            main = "leq" if self.cfg.devices[row.sensor].kind == "noise" else "p"
            valid = row.quality == 0 and math.isfinite(row.get(main))
            s["count"] = (0 if rolled else s["count"]) + valid
        s["hour"] = max(hour, cur)
        bad = row.quality != 0
        if bad:
            if s["bad_since"] < 0:
                s["bad_since"] = row.ts
            bad_s = (row.ts - s["bad_since"]) / NS + interval
        else:
            s["bad_since"] = -1
            bad_s = 0.0
        cond = bad_s >= self.bad_s or vdr < self.min_vdr
        raw = self.sev if cond else 0
        reason = "flag" if bad_s >= self.bad_s else ("vdr" if vdr < self.min_vdr else None)
        return Out(True, raw, raw, vdr, {k: self.min_vdr for k in range(5)}, 1.0 - vdr, {"bad_flag_s": bad_s, "reason": reason})


# ----- gas ---------------------------------------------------------------------------------------

class Profile:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.mean: dict = {}
        self.count: dict = {}
        self.weeks: dict = {}   # distinct local weeks per (sensor, hour bin)
        self.last: dict = {}    # the latest of those weeks

    def need(self, sensor) -> int:
        d = self.cfg.devices[sensor]
        return int(min(255, max(1, self.cfg.gas.profile.min_weeks * math.ceil(3600 / d.sample_s))))

    def learned(self, sensor, h) -> bool:
        """An hour bin is learned with min_weeks hours' worth of readings from min_weeks distinct weeks."""
        return (self.count.get((sensor, h), 0) >= self.need(sensor)
                and self.weeks.get((sensor, h), 0) >= self.cfg.gas.profile.min_weeks)

    @staticmethod
    def bin(local) -> int:
        return ((local // 86400 + 3) % 7) * 24 + (local % 86400) // 3600

    def baseline(self, row):
        """(profile, learned): a Catmull-Rom cubic through the hour-middle values of the six hours around
        the local instant, each the hour mean minus its second difference / 8 (detectors.gas.smooth_profile)."""
        local = row.facts["local"]
        sow = ((local // 86400 + 3) % 7) * 86400 + local % 86400
        x = sow - 1800
        h0 = (x // 3600) % 168
        w = (x % 3600) / 3600.0
        hours = [(h0 + d) % 168 for d in range(-2, 4)]
        learned = all(self.learned(row.sensor, h) for h in hours)
        m = [float(self.mean.get((row.sensor, h), 0.0)) for h in hours]
        v = [m[j] - (m[j - 1] - 2.0 * m[j] + m[j + 1]) / 8.0 for j in (1, 2, 3, 4)]
        v1, v2, v3, v4 = v
        prof = 0.5 * ((2.0 * v2) + (v3 - v1) * w + (2.0 * v1 - 5.0 * v2 + 4.0 * v3 - v4) * (w * w)
                      + (3.0 * v2 - v1 - 3.0 * v3 + v4) * (w * w * w))
        return prof, learned

    def before(self, row):
        pass

    def after(self, row):
        p, ok = valid_p(self.cfg, row)
        if not ok or not in_band(self.cfg, row.sensor, p):
            return  # not valid, or an episode outside the normal band: not learned
        b = self.bin(row.facts["local"])
        key = (row.sensor, b)
        c = self.count.get(key, 0) + 1
        m = self.mean.get(key, 0.0)
        self.mean[key] = _f32(m + (p - m) / min(c, 255))
        self.count[key] = min(c, 255)
        week = (row.facts["local"] // 86400 + 3) // 7 + 1   # Monday-to-Sunday local weeks
        if week > self.last.get(key, 0):
            self.weeks[key] = min(self.weeks.get(key, 0) + 1, 255)
            self.last[key] = week


def in_band(cfg, sensor, p) -> bool:
    """p inside the gas sensor's normal band: [highest G-low level, G-high level] x set pressure."""
    d = cfg.devices[sensor]
    rel_high, low = _rel_high(cfg, d)
    return max((lv.below for lv in low), default=-math.inf) * d.set_pressure_kpa <= p <= rel_high * d.set_pressure_kpa


def valid_p(cfg, row):
    rg = cfg.gas.range
    p = row.get("p")
    fs = cfg.devices[row.sensor].full_scale_kpa
    return p, row.quality == 0 and rg.min_kpa <= p <= rg.fs_factor * fs


class GasRef(RefRule):
    def setup(self):
        self.g = self.cfg.gas
        pct = getattr(self.p, "hysteresis_pct", None)
        self.pct = pct if pct is not None else self.g.hysteresis_pct
        if "profile" not in self.shared:
            self.shared["profile"] = Profile(self.cfg)
        self.profile = self.shared["profile"]
        self.more()

    def more(self):
        pass

    def dev(self, row):
        return self.cfg.devices[row.sensor]


def _rel_high(cfg, d):
    g = cfg.gas
    r = g.rel_high.low if d.pressure_class == "low" else g.rel_high.medium
    low = list(g.rel_low)
    for o in sorted(g.overrides, key=lambda o: o.device is not None):
        if (d.site == o.site) if o.site else (d.id == o.device):
            r = o.rel_high if o.rel_high is not None else r
            low = list(o.rel_low) if o.rel_low is not None else low
    return r, low


class RefHigh(GasRef):
    def judge(self, row):
        p, ok = valid_p(self.cfg, row)
        d = self.dev(row)
        lim = _rel_high(self.cfg, d)[0] * d.set_pressure_kpa
        raw, held, limits = above(p, [(2, lim)], self.pct / 100 * d.set_pressure_kpa)
        return Out(ok, raw, held, p, limits, 100 * (p - lim) / d.set_pressure_kpa)


class RefHighHigh(GasRef):
    def judge(self, row):
        p, ok = valid_p(self.cfg, row)
        d = self.dev(row)
        lim = min(d.mop_kpa, device_start_kpa(d.set_pressure_kpa))
        raw, held, limits = above(p, [(4, lim)], self.pct / 100 * d.set_pressure_kpa)
        return Out(ok, raw, held, p, limits, 100 * (p - lim) / d.set_pressure_kpa)


class RefLow(GasRef):
    def judge(self, row):
        p, ok = valid_p(self.cfg, row)
        d = self.dev(row)
        levels = [(SEVERITY_RANK[lv.severity], lv.below * d.set_pressure_kpa) for lv in _rel_high(self.cfg, d)[1]]
        raw, held, limits = below(p, levels, self.pct / 100 * d.set_pressure_kpa)
        return Out(ok, raw, held, p, limits, 100 * (d.set_pressure_kpa - p) / d.set_pressure_kpa)


class RefRupture(GasRef):
    def more(self):
        self.levels = sorted((SEVERITY_RANK[r.severity], r.drop_pct, r.window_s) for r in self.g.rupture)
        longest = max((w for _, _, w in self.levels), default=300)
        self.slot_s = min(self.cfg.devices[s].sample_s for s in self.sensors) if self.sensors else 60
        self.slots = max(1, math.ceil((longest + self.slot_s) / self.slot_s))
        self.window = "/".join(f"{w}s" for _, _, w in self.levels)
        self.metric = "p_drop"

    def judge(self, row):
        p, ok = valid_p(self.cfg, row)
        d = self.dev(row)
        base, learned = self.profile.baseline(row)
        resid = p - (base if learned else 0.0)
        ring = self.state(row.sensor)
        k = row.ts // (self.slot_s * NS) - BASE_S // self.slot_s
        if ok:
            pos = k % self.slots
            if pos not in ring or k >= ring[pos][0]:
                ring[pos] = (k, _f32(resid), learned)
        raw = held = 0
        limits = {}
        drop_pct = 0.0
        for i, (sev, pct, w) in enumerate(self.levels):
            span = min(self.slots, math.ceil((w + self.slot_s) / self.slot_s))
            vals = [v for kk, v, tag in ring.values() if 0 <= k - kk < span and tag == learned]
            ceiling = (0.0 if learned else d.set_pressure_kpa) + self.pct / 100 * d.set_pressure_kpa
            peak = min(max(vals), ceiling) if vals else -math.inf
            drop = 100.0 * (peak - resid) / d.set_pressure_kpa
            drop_pct = max(drop_pct, drop if math.isfinite(drop) else 0.0)
            r, h, _ = above(drop, [(sev, pct)], self.g.hysteresis_pct)
            raw, held = max(raw, r), max(held, h)
            limits[sev] = pct
            if i == 0:
                limits[0] = pct
        return Out(ok, raw, held, drop_pct, limits, drop_pct, {"p_kpa": p, "profile": learned})


class RefLeak(GasRef):
    def more(self):
        c = self.g.cusum
        self.k = self.p.k_sigma if self.p.k_sigma is not None else c.k_sigma
        self.h = self.p.h_sigma if self.p.h_sigma is not None else c.h_sigma
        self.sev = SEVERITY_RANK[self.p.severity]
        self.metric, self.unit, self.window = "cusum", "sigma", "cusum"

    def judge(self, row):
        c = self.g.cusum
        p, ok = valid_p(self.cfg, row)
        d = self.dev(row)
        none = Out(False, 0, 0, NAN, {k: self.h for k in range(5)}, NAN)
        if not ok:
            return none
        prof, learned = self.profile.baseline(row)
        if not learned:
            return none  # no CUSUM, and no learning, before the time-of-week profile is learned
        s = self.st.setdefault(row.sensor, {"S": 0.0, "var": 0.0, "last": -1, "seen": 0, "episode": False})
        r = p - prof
        sigma = max(math.sqrt(s["var"]), c.sigma_floor_pct / 100 * d.set_pressure_kpa)
        warm = s["seen"] >= c.warmup
        inband = in_band(self.cfg, row.sensor, p)
        back = s["episode"] and inband and r >= -self.k * sigma   # the episode is over: restart
        S0 = 0.0 if back else s["S"]
        if not warm:
            S = 0.0
        elif inband:
            S = min(max(0.0, S0 - r / sigma - self.k), 2 * self.h)
        else:
            S = S0  # an episode's residual is not a leak's: S holds
        s["episode"] = (not inband or (s["episode"] and not back)) and S > 0
        last = s["last"]
        a = -math.expm1(-max(row.ts - last, 0) / (c.sigma_tau_s * NS)) if last >= 0 else 1.0
        if not warm:
            a = max(a, 1.0 / (s["seen"] + 1.0))
        s["seen"] = min(s["seen"] + 1, 65535)
        if S == 0 and inband and last >= 0:
            s["var"] = _f32((1 - a) * s["var"] + a * r * r)
        s["last"], s["S"] = row.ts, S
        return Out(warm, self.sev if S >= self.h else 0, self.sev if S > 0 else 0, S, {k: self.h for k in range(5)}, S)


class RefRange(RefRule):
    def judge(self, row):
        rg = self.cfg.gas.range
        p = row.get("p")
        hi = rg.fs_factor * self.cfg.devices[row.sensor].full_scale_kpa
        lo = rg.min_kpa
        raw = SEVERITY_RANK[self.p.severity] if (p < lo or p > hi) else 0
        lim = lo if p < lo else hi
        return Out(not math.isnan(p), raw, raw, p, {k: lim for k in range(5)}, max(lo - p, p - hi))


class RefBattery(RefRule):
    def judge(self, row):
        b = self.cfg.gas.battery
        yellow = self.p.yellow_v if self.p.yellow_v is not None else b.yellow_v
        orange = self.p.orange_v if self.p.orange_v is not None else b.orange_v
        v = row.get("batt_v")
        raw, held, limits = below(v, [(2, yellow), (3, orange)], self.p.hysteresis_v)
        return Out(0 < v < 6, raw, held, v, limits, yellow - v)


# ----- generic -----------------------------------------------------------------------------------

class FieldRef(RefRule):
    def setup(self):
        self.category = self.p.category
        self.metric, self.unit = self.p.field, self.p.unit
        self.more()

    def more(self):
        pass

    def read(self, row):
        x = row.get(self.p.field)
        ok = math.isfinite(x) and (self.p.flags == "any" or row.quality == 0)
        return x, ok


def _mag(v, direction):
    return v if direction == "rise" else (-v if direction == "fall" else abs(v))


class RefThreshold(FieldRef):
    def judge(self, row):
        x, ok = self.read(row)
        ups = [(SEVERITY_RANK[lv.severity], lv.above) for lv in self.p.levels if lv.above is not None]
        downs = [(SEVERITY_RANK[lv.severity], lv.below) for lv in self.p.levels if lv.below is not None]
        raw = held = 0
        limits = {}
        for fn, lv in ((above, ups), (below, downs)):
            if lv:
                r, h, lim = fn(x, lv, self.p.hysteresis)
                raw, held = max(raw, r), max(held, h)
                for sev, _ in lv:
                    limits[sev] = lim[sev]
        limits[0] = sorted(ups + downs)[0][1]
        return Out(ok, raw, held, x, limits, 1.0 if raw > 0 else 0.0)


class RefRate(FieldRef):
    def more(self):
        self.window = f"per {self.p.per_s:g}s"

    def judge(self, row):
        x, ok = self.read(row)
        s = self.st.setdefault(row.sensor, {"x": NAN, "t": -1})
        dt_s = (row.ts - s["t"]) / NS
        have = ok and s["t"] >= 0 and 0 < dt_s <= self.p.max_gap_s
        rate = (x - s["x"]) / dt_s * self.p.per_s if have else NAN
        if ok and row.ts > s["t"]:
            s["x"], s["t"] = x, row.ts
        mag = _mag(rate, self.p.direction)
        raw, held, limits = above(mag, [(SEVERITY_RANK[self.p.severity], self.p.limit)], self.p.hysteresis)
        return Out(have, raw, held, rate, limits, mag)


def _median(vals):
    s = sorted(vals)
    c = len(s)
    return (s[(c - 1) // 2] + s[c // 2]) / 2.0 if c else NAN


class RefRobustZ(FieldRef):
    def more(self):
        self.window = f"{self.p.window} readings"

    def judge(self, row):
        x, ok = self.read(row)
        s = self.st.setdefault(row.sensor, {"buf": [NAN] * self.p.window, "pos": 0})
        hist = [v for v in s["buf"] if not math.isnan(v)]
        med = _median(hist)
        mad = _median([abs(v - med) for v in hist])
        if self.p.min_mad is not None:
            mad = max(mad, self.p.min_mad)
        else:
            gaps = [b - a for a, b in zip(sorted(hist), sorted(hist)[1:]) if b - a > 0]
            if gaps and not math.isnan(mad):
                mad = max(mad, min(gaps))
        dev = x - med
        if dev == 0:
            z = 0.0
        elif math.isnan(dev) or math.isnan(mad):
            z = NAN
        elif mad == 0:
            z = math.copysign(math.inf, dev)
        else:
            z = 0.6745 * dev / mad
        mag = _mag(z, self.p.direction)
        raw, held, limits = above(mag, [(SEVERITY_RANK[self.p.severity], self.p.z)], self.p.hysteresis)
        known = ok and len(hist) >= self.p.min_count
        if ok:
            s["buf"][s["pos"]] = x
            s["pos"] = (s["pos"] + 1) % self.p.window
        return Out(known, raw, held, x, limits, mag, {"median": med})


class LearnRef(FieldRef):
    def learn(self, row, x, ok):
        s = self.st.setdefault(row.sensor, {"n": 0, "mean": 0.0, "m2": 0.0})
        cnt, mean, m2 = s["n"], s["mean"], s["m2"]
        phase2 = cnt >= self.p.warmup
        if ok and not phase2:
            c1 = cnt + 1
            d = x - mean
            mean1 = mean + d / c1
            s["n"], s["mean"], s["m2"] = c1, mean1, m2 + d * (x - mean1)
        mu = self.p.target if self.p.target is not None else mean
        sd = self.p.sigma if self.p.sigma is not None else math.sqrt(m2 / max(cnt - 1, 1))
        return phase2 and ok, mu, sd, s


class RefEwma(LearnRef):
    def judge(self, row):
        x, ok = self.read(row)
        run, mu, sd, s = self.learn(row, x, ok)
        lam = self.p.lam
        z0 = s.get("z", NAN)
        z = lam * x + (1 - lam) * (mu if math.isnan(z0) else z0) if run else z0
        s["z"] = z
        den = sd * math.sqrt(lam / (2 - lam))
        num = abs(z - mu)
        if num <= 1e-9 * max(1.0, abs(mu)):
            num = 0.0
        if den == 0:
            score = NAN if (num == 0 or math.isnan(num)) else math.inf
        else:
            score = num / den
        if math.isnan(score) and run:
            score = 0.0 if num == 0 else math.inf
        raw, held, limits = above(score, [(SEVERITY_RANK[self.p.severity], self.p.width)], self.p.hysteresis)
        return Out(run, raw, held, z, limits, score)


class RefCusum(LearnRef):
    def judge(self, row):
        x, ok = self.read(row)
        run, mu, sd, s = self.learn(row, x, ok)
        z = ((x - mu) / sd if sd > 0 else 0.0) if run else 0.0
        hi, lo = s.get("hi", 0.0), s.get("lo", 0.0)
        if run:
            hi, lo = max(0.0, hi + z - self.p.k), max(0.0, lo - z - self.p.k)
        if self.p.direction == "up":
            lo = 0.0
        elif self.p.direction == "down":
            hi = 0.0
        S = max(hi, lo)
        sev = SEVERITY_RANK[self.p.severity]
        raw = sev if S >= self.p.h else 0
        direction = "up" if hi >= lo else "down"
        if self.p.after_alarm == "reset":
            held = raw
            if raw:
                hi = lo = 0.0
        else:
            held = sev if S > 0 else 0
        s["hi"], s["lo"] = hi, lo
        return Out(run, raw, held, S, {k: self.p.h for k in range(5)}, S, {"direction": direction})


class RefFlatline(FieldRef):
    def more(self):
        if self.cls.type == "gas_flatline":
            f = self.cfg.gas.flatline
            w, c = f.window_s, f.min_change_kpa
        else:
            w, c = 7200, 0.0
        self.win = self.p.window_s or w
        self.minc = self.p.min_change if self.p.min_change is not None else c
        self.window = f"{self.win}s"

    def judge(self, row):
        x, ok = self.read(row)
        s = self.st.setdefault(row.sensor, {"ref": NAN, "since": -1})
        moved = math.isnan(s["ref"]) or abs(x - s["ref"]) > self.minc
        if ok and moved:
            s["ref"], s["since"] = x, row.ts
        flat = (row.ts - s["since"]) / NS if s["since"] >= 0 else 0.0
        raw = SEVERITY_RANK[self.p.severity] if flat >= self.win else 0
        return Out(ok, raw, raw, flat, {k: self.win for k in range(5)}, flat / self.win, {"stuck_value": s["ref"]})


class RefGasFlatline(RefFlatline):
    """G-flatline: a flat window counts only where the peers' median change or the learned profile's
    swing over it says the sensor should have varied (detectors.gas_flatline.GasFlatline)."""

    def more(self):
        super().more()
        f = self.cfg.gas.flatline
        self.vary, self.min_peers = f.vary_pct, f.min_peers
        self.slot_s = max(1, -(-self.win // PEER_SLOTS))
        self.nslots = -(-self.win // self.slot_s)
        self.expect = self.p.field == "p"
        if self.expect and "profile" not in self.shared:
            self.shared["profile"] = Profile(self.cfg)
        # Peers: the first scope (same pressure class at the site, in the district, anywhere) with at
        # least min_peers other sensors of this rule.
        district = {s.id: s.district for s in self.cfg.sites}
        keys = {"site": lambda d: (d.site, d.pressure_class), "district": lambda d: (district[d.site], d.pressure_class),
                "class": lambda d: (d.pressure_class,)}
        self.peers: dict[int, list[int]] = {}
        for s in self.sensors:
            d = self.cfg.devices[s]
            for scope in f.peer_scopes:
                group = [o for o in self.sensors if keys[scope](self.cfg.devices[o]) == keys[scope](d) and o != s]
                if len(group) >= f.min_peers:
                    self.peers[s] = group
                    break
        # The peers' window leaves out this many slots before the reading's own: the peers' longest report
        # interval plus the latency allowed, in whole slots; the window keeps its first slot.
        self.lag = {s: min(self.nslots - 1, math.ceil((max(self.cfg.devices[b].report_interval_s for b in group)
                                                   + f.peer_latency_s) / self.slot_s))
                    for s, group in self.peers.items()}
        self.mine = set(self.sensors)
        self.ring: dict[int, dict[int, list]] = {}     # sensor -> ring position -> [slot, lo, hi]
        self.pending: dict[int, dict[int, list]] = {}  # the current batch: sensor -> slot -> [lo, hi]

    def begin(self, batch) -> None:
        """Every valid reading of the batch into the slot tables before any reading is judged; the
        previous batch's slots go into the bounded rings first."""
        for s, slots in self.pending.items():
            ring = self.ring.setdefault(s, {})
            for k in sorted(slots):
                lo, hi = slots[k]
                pos = k % (2 * self.nslots + 1)
                cur = ring.get(pos)
                if cur is None or cur[0] < k:
                    ring[pos] = [k, lo, hi]
                elif cur[0] == k:
                    ring[pos] = [k, min(cur[1], lo), max(cur[2], hi)]
        self.pending = {}
        x_all = batch.values.get(self.p.field)
        for i in range(len(batch)):
            s = int(batch.sensor[i])
            if s not in self.mine or x_all is None:
                continue
            x = float(x_all[i])
            if not (math.isfinite(x) and (self.p.flags == "any" or int(batch.quality[i]) == 0)):
                continue
            k = int(batch.ts_ns[i]) // (self.slot_s * NS)
            cell = self.pending.setdefault(s, {}).setdefault(k, [x, x])
            cell[0], cell[1] = min(cell[0], x), max(cell[1], x)

    def slot(self, s, k):
        got = [v[1:] for v in self.ring.get(s, {}).values() if v[0] == k]
        if k in self.pending.get(s, {}):
            got.append(self.pending[s][k])
        if not got:
            return None
        return min(g[0] for g in got), max(g[1] for g in got)

    def judge(self, row):
        out = super().judge(row)
        if not (out.known and out.raw):
            return out
        info = {}
        by_peers = peers_known = False
        if self.expect and row.sensor in self.peers:
            k = row.ts // (self.slot_s * NS)
            changes = []
            for b in self.peers[row.sensor]:
                got = [g for g in (self.slot(b, kk) for kk in range(k - self.nslots, k - self.lag[row.sensor])) if g is not None]
                if got:
                    changes.append(100.0 * (max(g[1] for g in got) - min(g[0] for g in got)) / self.cfg.devices[b].set_pressure_kpa)
            changes.sort()
            info["peers"] = len(changes)
            if changes:
                med = (changes[(len(changes) - 1) // 2] + changes[len(changes) // 2]) / 2.0
                info["peer_change_pct"] = med
                peers_known = len(changes) >= self.min_peers
                by_peers = peers_known and med > self.vary
        learned = by_profile = False
        prof = self.shared.get("profile") if self.expect else None
        if prof is not None and not by_peers:
            local = row.facts["local"]
            a0, a1 = (local - self.win) // 3600, local // 3600
            bins = [Profile.bin(a * 3600) for a in range(a0, a1 + 1)]
            learned = all(prof.learned(row.sensor, h) for h in bins)
            if learned:
                m = [float(prof.mean.get((row.sensor, h), 0.0)) for h in bins]
                swing = 100.0 * (max(m) - min(m)) / self.cfg.devices[row.sensor].set_pressure_kpa
                by_profile = swing > self.vary
        unknown = not peers_known and not learned
        if by_peers:
            basis = "peers"
        elif by_profile:
            basis = "profile"
        elif unknown:
            basis = "window_only"
        else:
            basis = "peers" if peers_known else "profile"
        ctx = {"stuck_value": out.extra["stuck_value"], "basis": basis, **info}
        if learned:
            ctx["profile_swing_pct"] = swing
        raw = out.raw if (by_peers or by_profile or unknown) else 0
        return Out(True, raw, raw, out.value, out.limits, out.score, ctx)


class RefDeadman(RefRule):
    def setup(self):
        o = self.cfg.offline
        p = self.p
        factor = p.interval_factor if p.interval_factor is not None else o.interval_factor
        grace = p.grace_s if p.grace_s is not None else o.grace_s
        self.orange = p.orange_after_s if p.orange_after_s is not None else o.orange_after_s
        self.after = {s: factor * self.cfg.devices[s].report_interval_s + grace for s in self.sensors}
        self.last: dict[int, int] = {}
        self.raised: dict[int, int] = {}  # time of the newest active row per sensor
        self.start = None

    def feed(self, row, out):
        if self.start is None:
            self.start = row.ts  # rows arrive sorted by sensor, so this is corrected in RefRuleSet.process
        self.last[row.sensor] = max(self.last.get(row.sensor, -1), row.ts)
        if self.level.get(row.sensor, 0) > 0:
            # "Alive now": never stamped before the active row it ends.
            ts = max(row.ts, self.raised.get(row.sensor, -1))
            out.append((row.sensor, ts, self.rule_id, self.category, 0, 0.0, self.after[row.sensor], 0.0,
                        {"metric": self.metric, "unit": self.unit, "window": self.window}))
        self.level[row.sensor] = 0

    def advance(self, now, out):
        if self.start is None:
            self.start = now
        for s in self.sensors:
            last = self.last.get(s, -1)
            silent = (now - (last if last >= 0 else self.start)) / NS
            lv = 3 if silent > self.orange else (2 if silent > self.after[s] else 0)
            if silent < 0:
                lv = max(lv, self.level.get(s, 0))
            self.level[s] = lv
            if lv:
                self.raised[s] = max(self.raised.get(s, -1), now)
                lim = float(self.orange) if lv >= 3 else self.after[s]
                out.append((s, now, self.rule_id, self.category, lv, silent, lim, silent / self.after[s],
                            {"metric": self.metric, "unit": self.unit, "window": self.window, "never_reported": last < 0,
                             "last_reading_ns": last if last >= 0 else None}))


class RefHotelling(RefRule):
    """hotelling_t2 one reading at a time: mean and covariance as plain lists, one solve per reading."""

    def setup(self):
        from detectors.multivariate import RIDGE, TINY, t2_limit

        self.category, self.unit = self.p.category, self.p.unit
        self.limit = t2_limit(self.p)
        self.ridge, self.tiny = RIDGE, TINY
        self.window = f"ewm {1.0 / self.p.lam:g} readings"

    def judge(self, row):
        import numpy as np

        p, k = self.p, len(self.p.fields)
        x = [row.get(f) for f in p.fields]
        ok = all(math.isfinite(v) for v in x) and (p.flags == "any" or row.quality == 0)
        s = self.st.setdefault(row.sensor, {"n": 0, "mean": [0.0] * k, "cov": [[0.0] * k for _ in range(k)]})
        d = [x[j] - s["mean"][j] for j in range(k)]
        t2, top = NAN, p.fields[0]
        if ok:
            if all(v == 0 for v in d):
                t2, shares = 0.0, [0.0] * k
            else:
                scale = sum(s["cov"][j][j] for j in range(k)) / k
                reg = [[s["cov"][i][j] + ((self.ridge * scale + self.tiny) if i == j else 0.0) for j in range(k)]
                       for i in range(k)]
                sol = np.linalg.solve(np.array(reg), np.array(d))
                shares = [d[j] * float(sol[j]) for j in range(k)]
                t2 = max(sum(shares), 0.0)
            top = p.fields[max(range(k), key=lambda j: (shares[j], -j))]
        run = ok and s["n"] >= p.warmup
        t2 = t2 if run else NAN
        if ok and (s["n"] < p.warmup or t2 <= self.limit):
            a = 1.0 / (s["n"] + 1.0) if s["n"] < p.warmup else p.lam
            s["mean"] = [s["mean"][j] + a * d[j] for j in range(k)]
            s["cov"] = [[(1.0 - a) * (s["cov"][i][j] + a * d[i] * d[j]) for j in range(k)] for i in range(k)]
            s["n"] = min(s["n"] + 1, p.warmup)
        raw, held, limits = above(t2, [(SEVERITY_RANK[p.severity], self.limit)], p.hysteresis)
        return Out(run, raw, held, t2, limits, t2 / self.limit, {"top_field": top})


class RefKnnCad(FieldRef):
    """knn_cad one reading at a time: lists for the last values, the windows and the non-conformities."""

    def more(self):
        self.window = f"{self.p.dim} x {self.p.train} readings"

    def judge(self, row):
        import numpy as np

        p = self.p
        x, ok = self.read(row)
        s = self.st.setdefault(row.sensor, {"last": [], "train": [], "cal": []})
        win = (s["last"] + [x])[-p.dim:]
        full = ok and len(win) == p.dim
        alpha = math.inf
        if full and s["train"]:
            d = np.sqrt(((np.array(s["train"]) - np.array(win)) ** 2).sum(axis=1))
            near = sorted(float(v) for v in d)[:p.k]
            if len(near) == p.k:
                alpha = sum(near) / p.k
        known = full and len(s["train"]) > p.k and len(s["cal"]) >= p.min_calib
        score = NAN
        if known:
            cal = sorted(s["cal"])
            ref = cal[min(max(math.ceil(p.quantile * len(cal)) - 1, 0), p.calib - 1)]
            score = 0.0 if alpha == 0 else (alpha / ref if ref > 0 else math.inf)
        if ok:
            s["last"] = win
            if full:
                s["train"] = (s["train"] + [win])[-p.train:]
                if math.isfinite(alpha):
                    s["cal"] = (s["cal"] + [alpha])[-p.calib:]
        fixed = p.limit if p.limit != "auto" else math.inf   # auto: auto_limit judges the score
        raw, held, limits = above(score, [(SEVERITY_RANK[p.severity], fixed)], p.hysteresis)
        return Out(known, raw, held, x, limits, score, {"nonconformity": alpha})


class RefSpectralResidual(FieldRef):
    """spectral_residual one reading at a time: a list of the last values, one 1-D FFT per reading,
    the extension, the trailing means and the score written out as loops."""

    def more(self):
        self.window = f"{self.p.window} readings"

    def score(self, win):
        import numpy as np

        from detectors.spectral import REL_EPS, TINY

        p, w = self.p, self.p.window
        x = list(win)
        if p.extend:
            m = p.grad_points
            y = x[w - m - 2:w - 1]
            x += [y[1] + sum((y[m] - y[i]) / (m - i) for i in range(m))] * p.extend
        mean = sum(win) / w
        f = np.fft.fft(np.array([v - mean for v in x]))
        mag = [abs(complex(v)) for v in f]
        eps = REL_EPS * max(mag) + TINY
        logm = [math.log(a) if a > eps else 0.0 for a in mag]
        q = p.mag_window
        avg = [sum(logm[max(0, i - q + 1):i + 1]) / min(i + 1, q) for i in range(len(logm))]
        g2 = [0.0 if mag[i] <= eps else complex(f[i]) * math.exp(logm[i] - avg[i]) / mag[i] for i in range(len(f))]
        s = [abs(complex(v)) for v in np.fft.ifft(np.array(g2, complex))]
        prev = s[w - 1 - p.score_window:w - 1]
        ref = sum(prev) / len(prev)
        return (s[w - 1] - ref) / max(ref, REL_EPS * max(s) + TINY)

    def judge(self, row):
        p = self.p
        x, ok = self.read(row)
        st = self.state(row.sensor)
        last = st.setdefault("last", [])
        win = (last + [x])[-p.window:]
        full = ok and len(win) == p.window
        score = self.score(win) if full else NAN
        if ok:
            st["last"] = win
        raw, held, limits = above(score, [(SEVERITY_RANK[p.severity], p.limit)], p.hysteresis)
        return Out(full, raw, held, x, limits, score)


class RefGroupT2(RefRule):
    """group_t2 bucket by bucket: dicts of open buckets per group, plain lists for the mean and
    covariance, one sub-block inverse per judged bucket. Readings are collected as they come; buckets
    close at the end of each batch (`finish`) or at a watermark (`advance`), as in detectors.group."""

    def setup(self):
        from detectors.group import NEVER, build_groups, group_keys

        p = self.p
        self.category, self.unit = p.category, p.unit
        self.metric = "group_t2"
        self.window = f"{p.bucket_s} s buckets, ewm {1.0 / p.lam:g} buckets"
        self.bucket = p.bucket_s * NS
        self.groups = [(name, [self.sensors[i] for i in m])
                       for name, m in build_groups(group_keys(self.cfg, self.sensors, p.group_by), p.max_members)]
        self.where = {s: (g, j) for g, (_, m) in enumerate(self.groups) for j, s in enumerate(m)}
        self.last: dict[int, int] = {}
        self.never = NEVER
        self.gs = []
        for _, m in self.groups:
            k = len(m)
            self.gs.append({"done": NEVER, "open": {}, "mean": [0.0] * k, "cov": [[0.0] * k for _ in range(k)],
                            "n": [[0] * k for _ in range(k)], "level": 0, "anchor": None, "warm": max(p.warmup, k + 2)})

    def feed(self, row, out):
        if row.sensor not in self.where:
            return
        g, j = self.where[row.sensor]
        key = (row.ts - 1) // self.bucket
        self.last[row.sensor] = max(self.last.get(row.sensor, self.never), key)
        st = self.gs[g]
        x = row.get(self.p.field)
        if key <= st["done"] or not math.isfinite(x) or (self.p.flags == "n_only" and row.quality != 0):
            return
        cell = st["open"].setdefault(key, {}).setdefault(j, [0.0, 0])
        cell[0] += x
        cell[1] += 1

    def finish(self, out):
        for g, (_, members) in enumerate(self.groups):
            last = [self.last.get(s, self.never) for s in members]
            newest = max(last)
            bound = max(min(last) - 1, self.never if newest == self.never else newest - self.p.max_open)
            self.close(g, [k for k in self.gs[g]["open"] if k <= bound], out)

    def advance(self, now_ns, out):
        limit = (now_ns - self.p.grace_s * NS) // self.bucket - 1
        for g in range(len(self.groups)):
            self.close(g, [k for k in self.gs[g]["open"] if k <= limit], out)

    def close(self, g, keys, out):
        for k in sorted(keys):
            cells = self.gs[g]["open"].pop(k)
            self.gs[g]["done"] = max(self.gs[g]["done"], k)
            self.judge_bucket(g, k, cells, out)

    def statistic(self, pres, d, cov, k):
        """(T^2, z per judged member, limit) over the judged members `pres` (slots) of a group of k."""
        import numpy as np

        from detectors.group import RIDGE, TINY

        p = self.p
        t2, z = NAN, {}
        if pres:
            sub = np.array([[cov[a][b] + ((RIDGE * cov[a][a] + TINY) if a == b else 0.0) for b in pres]
                            for a in pres])
            inv = np.linalg.inv(sub)
            dv = np.array([d[j] for j in pres])
            sol = inv @ dv
            t2 = 0.0 if all(d[j] == 0 for j in pres) else max(float(dv @ sol), 0.0)
            z = {j: float(sol[i]) / math.sqrt(max(float(inv[i, i]), TINY)) for i, j in enumerate(pres)}
        if p.limit is not None:
            limit = float(p.limit) if pres else NAN
        else:
            from scipy.stats import chi2

            limit = float(chi2.ppf(1.0 - p.alpha, len(pres))) if pres else NAN
        return t2, z, limit

    def judge_bucket(self, g, key, cells, out):
        p, st = self.p, self.gs[g]
        name, members = self.groups[g]
        k, warm = len(members), st["warm"]
        n = st["n"]
        present = [j for j in range(k) if j in cells]
        x = {j: cells[j][0] / cells[j][1] for j in present}
        d = {j: x[j] - st["mean"][j] for j in present}
        pres = [j for j in present if n[j][j] >= warm]
        pairs_ok = all(n[a][b] >= warm for a in pres for b in pres)
        t2, z, limit = self.statistic(pres, d, st["cov"], k)
        judged = pairs_ok and len(pres) >= p.min_present
        if not judged or t2 <= limit:
            mean = list(st["mean"])
            fixed = getattr(p, "fit", "online") == "train"   # group_residual's fit: train: entries past warm-up stay
            for i in present:
                a = p.lam if n[i][i] >= warm else 1.0 / (n[i][i] + 1.0)
                if not (fixed and n[i][i] >= warm):
                    st["mean"][i] = mean[i] + a * d[i]
                for j in present:
                    a = p.lam if n[i][j] >= warm else 1.0 / (n[i][j] + 1.0)
                    if not (fixed and n[i][j] >= warm):
                        st["cov"][i][j] = (1.0 - a) * (st["cov"][i][j] + a * d[i] * d[j])
            for i in present:
                for j in present:
                    n[i][j] = min(n[i][j] + 1, warm)
        if not judged:
            return
        sev = SEVERITY_RANK[p.severity]
        raw = sev if t2 > limit else 0
        held = sev if t2 > limit - p.hysteresis else 0
        prev = st["level"]
        new = max(raw, min(prev, held))
        st["level"] = new
        top = pres[0]
        for j in pres:
            if abs(z[j]) > abs(z[top]):
                top = j
        if prev == 0 and new > 0:
            st["anchor"] = top
        if new or prev:
            ctx = {"metric": self.metric, "unit": self.unit, "window": self.window, "group": name,
                   "top_device": self.cfg.devices[members[top]].id, "top_z": z[top], "present": len(pres),
                   "members": k}
            out.append((members[st["anchor"]], (key + 1) * self.bucket, self.rule_id, self.category, new, t2, limit,
                        t2 / limit, ctx))
        if new == 0:
            st["anchor"] = None


class RefGroupResidual(RefGroupT2):
    """group_residual: group_t2's buckets with the PCA residual of the judged members, from the same
    padded correlation as detectors.residual.masked_spe (one eigh per judged bucket)."""

    def setup(self):
        super().setup()
        self.metric = "group_spe"
        if self.p.fit == "train":
            self.window = f"{self.p.bucket_s} s buckets, first {self.p.warmup} buckets"

    def statistic(self, pres, d, cov, k):
        from scipy.stats import chi2

        from detectors.residual import ABSENT, EIG_FLOOR, RIDGE, TINY

        p, c = self.p, self.p.components
        if len(pres) <= c:
            return NAN, {}, NAN
        sd = [math.sqrt(cov[j][j] + RIDGE * cov[j][j] + TINY) for j in range(k)]
        on = set(pres)
        corr = np.array([[cov[a][b] / (sd[a] * sd[b]) if a in on and b in on else (ABSENT if a == b else 0.0)
                          for b in range(k)] for a in range(k)])
        w, v = np.linalg.eigh(corr)
        z = [d[j] / sd[j] if j in on else 0.0 for j in range(k)]
        keep = range(k - len(pres), k - c)
        u = {m: sum(float(v[j, m]) * z[j] for j in range(k)) for m in keep}
        r = {j: sum(float(v[j, m]) * u[m] for m in keep) for j in pres}
        spe = 0.0 if all(d[j] == 0 for j in pres) else sum(e * e for e in r.values())
        lam_r = [max(float(w[m]), EIG_FLOOR) for m in keep]
        th1, th2 = sum(lam_r), sum(e * e for e in lam_r)
        limit = float(p.limit) if p.limit is not None else th2 / th1 * float(chi2.ppf(1.0 - p.alpha, th1 * th1 / th2))
        return spe, r, limit


class RefCombinator(RefRule):
    """any_of / all_of one reading at a time: fed after every other rule, it reads the rows the rules
    appended for this reading (detectors.combinators.Combinator)."""

    def setup(self):
        self.seen = 0
        self.members = list(self.p.rules)
        self.need_all = self.cls.type == "all_of"
        self.tol = round(getattr(self.p, "tolerance_s", 0.0) * NS)
        self.category = self.p.category
        self.window = f"{getattr(self.p, 'tolerance_s', 0.0):g}s" if self.need_all else ""

    def feed(self, row, out: list) -> None:
        new = [r for r in out[self.seen:] if r[2] in self.members and r[0] == row.sensor and r[1] == row.ts]
        self.seen = len(out)
        if not new:
            return
        st = self.state(row.sensor)
        lv, last, sev = st.setdefault("lv", {}), st.setdefault("last", {}), st.setdefault("sev", {})
        for r in new:
            lv[r[2]] = r[4]
            if r[4] > 0:
                last[r[2]], sev[r[2]] = row.ts, r[4]
        cur = [lv.get(m, 0) for m in self.members]
        if not self.need_all:
            level = max(cur)
            firing = [m for m, c in zip(self.members, cur) if c > 0]
        elif not any(cur):
            level, firing = 0, []
        else:
            eff = [c if c > 0 else (sev[m] if m in last and row.ts - last[m] <= self.tol else 0)
                   for m, c in zip(self.members, cur)]
            level, firing = min(eff), [m for m, e in zip(self.members, eff) if e > 0]
        prev = self.level.get(row.sensor, 0)
        self.level[row.sensor] = level
        if level or prev:
            k = len(self.members) if self.need_all else 1
            ctx = {"metric": "members", "unit": "", "window": self.window, "members": ",".join(firing)}
            out.append((row.sensor, row.ts, self.rule_id, self.category, level, float(len(firing)), float(k),
                        len(firing) / k, ctx))
        self.seen = len(out)


class RefFuzzyArt(FieldRef):
    """fuzzy_art one reading at a time: lists for the window and the categories, one category at a time."""

    def more(self):
        self.window = f"{self.p.dim} readings, {self.p.categories} categories"

    def judge(self, row):
        import numpy as np

        from detectors.art import CHOICE

        p = self.p
        x, ok = self.read(row)
        s = self.st.setdefault(row.sensor, {"last": [], "lo": math.inf, "hi": -math.inf, "w": [], "seen": [], "n": 0})
        warm = s["n"] >= p.warmup
        if not ok:
            return Out(False, 0, 0, x, {0: p.limit, SEVERITY_RANK[p.severity]: p.limit}, NAN)
        tick = min(s["n"] + 1, 2**31 - 2)
        if not warm:
            s["lo"], s["hi"] = min(s["lo"], x), max(s["hi"], x)
        win = (s["last"] + [x])[-p.dim:]
        full = len(win) == p.dim
        score = NAN
        if full:
            lo, hi = s["lo"], s["hi"]
            span = hi - lo
            scale = span * (1.0 + 2.0 * p.margin) if span > 0 else 1.0
            f = [min(max((v - (lo - p.margin * span)) / scale, 0.0), 1.0) for v in win]
            feat = np.array(f + [1.0 - v for v in f])
            best, pick, pick_t = 0.0, None, -math.inf
            for j, w in enumerate(s["w"]):
                inter = float(np.minimum(feat, w).sum())
                m = inter / p.dim
                best = max(best, m) if j else m
                if m >= p.rho:
                    t = inter / (CHOICE + float(w.sum()))
                    if t > pick_t:
                        pick, pick_t = j, t
            if not s["w"]:
                best = 0.0
            score = (1.0 - best) / (1.0 - p.rho)
            if pick is not None:
                w = s["w"][pick]
                s["w"][pick] = p.beta * np.minimum(feat, w) + (1.0 - p.beta) * w
            elif len(s["w"]) < p.categories:
                pick = len(s["w"])
                s["w"].append(feat)
                s["seen"].append(0)
            else:
                pick = min(range(len(s["seen"])), key=lambda k: (s["seen"][k], k))
                s["w"][pick] = feat
            s["seen"][pick] = tick
        s["last"], s["n"] = win, tick
        known = full and warm
        score = score if known else NAN
        raw, held, limits = above(score, [(SEVERITY_RANK[p.severity], p.limit)], p.hysteresis)
        return Out(known, raw, held, x, limits, score)


class RefPcaResidual(RefRule):
    """pca_residual one reading at a time: mean and covariance as plain lists, one eigh per reading."""

    def setup(self):
        p = self.p
        self.category, self.unit = p.category, p.unit
        self.window = f"first {p.train} readings" if p.fit == "train" else f"{p.train} readings, then ewm {1.0 / p.lam:g} readings"

    def judge(self, row):
        from scipy.stats import chi2

        from detectors.residual import EIG_FLOOR, RIDGE, TINY

        p, k, c = self.p, len(self.p.fields), self.p.components
        x = [row.get(f) for f in p.fields]
        ok = all(math.isfinite(v) for v in x) and (p.flags == "any" or row.quality == 0)
        s = self.st.setdefault(row.sensor, {"n": 0, "mean": [0.0] * k, "cov": [[0.0] * k for _ in range(k)]})
        d = [x[j] - s["mean"][j] for j in range(k)]
        var = [s["cov"][j][j] for j in range(k)]
        ridge = RIDGE * (sum(var) / k) + TINY
        sd = [math.sqrt(var[j] + ridge) for j in range(k)]
        corr = np.array([[s["cov"][i][j] / (sd[i] * sd[j]) for j in range(k)] for i in range(k)])
        w, v = np.linalg.eigh(corr)
        z = [d[j] / sd[j] for j in range(k)]
        u = [sum(float(v[j, m]) * z[j] for j in range(k)) for m in range(k - c)]
        res = [sum(float(v[j, m]) * u[m] for m in range(k - c)) ** 2 for j in range(k)]
        lam_r = [max(float(w[m]), EIG_FLOOR) for m in range(k - c)]
        th1, th2 = sum(lam_r), sum(e * e for e in lam_r)
        limit = th2 / th1 * float(chi2.ppf(1.0 - p.alpha, th1 * th1 / th2))
        spe, top = NAN, p.fields[0]
        if ok:
            spe = 0.0 if all(e == 0 for e in d) else sum(res)
            top = p.fields[max(range(k), key=lambda j: (res[j], -j))]
        run = ok and s["n"] >= p.train
        spe = spe if run else NAN
        learn = ok and (s["n"] < p.train or (p.fit == "online" and spe <= limit))
        if learn:
            a = 1.0 / (s["n"] + 1.0) if s["n"] < p.train else p.lam
            s["mean"] = [s["mean"][j] + a * d[j] for j in range(k)]
            s["cov"] = [[(1.0 - a) * (s["cov"][i][j] + a * d[i] * d[j]) for j in range(k)] for i in range(k)]
            s["n"] = min(s["n"] + 1, p.train)
        raw, held, limits = above(spe, [(SEVERITY_RANK[p.severity], limit)], p.hysteresis * limit)
        return Out(run, raw, held, spe, limits, spe / limit, {"top_field": top})


REFERENCES = {
    "any_of": RefCombinator, "all_of": RefCombinator,
    "noise_day_limit": RefDay, "noise_night_limit": RefNight, "noise_night_lmax": RefLmax,
    "noise_prohibited": RefProhibited, "noise_exam": RefExam, "noise_pre_warning": RefPre,
    "noise_data_quality": RefDataQuality, "gas_high": RefHigh, "gas_highhigh": RefHighHigh, "gas_low": RefLow,
    "gas_rupture": RefRupture, "gas_leak_cusum": RefLeak, "gas_sensor_range": RefRange, "battery": RefBattery,
    "gas_flatline": RefGasFlatline, "threshold": RefThreshold, "rate_of_change": RefRate, "robust_z": RefRobustZ,
    "ewma": RefEwma, "cusum": RefCusum, "flatline": RefFlatline, "deadman": RefDeadman,
    "hotelling_t2": RefHotelling, "knn_cad": RefKnnCad,
    "group_t2": RefGroupT2, "spectral_residual": RefSpectralResidual, "fuzzy_art": RefFuzzyArt,
    "pca_residual": RefPcaResidual, "group_residual": RefGroupResidual,
}


class ReferenceRuleSet:
    """Every enabled rule of a Config, one reading at a time (same interface as RuleSet.process/advance)."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.clock = Clock(cfg)
        self.rules: list[RefRule] = []
        self.components: list = []
        shared_by_kinds: dict = {}
        kind_of = [d.kind for d in cfg.devices]
        _, built = validate_rules(cfg)
        for rule, cls, params in built:
            kinds = rule_kinds(rule, cls)
            sensors = [i for i, k in enumerate(kind_of) if k in kinds]
            shared = shared_by_kinds.setdefault(tuple(sorted(kinds)), {})
            self.rules.append(REFERENCES[cls.type](rule.id, cls, params, cfg, sensors, shared))
            self.rules[-1].kinds = kinds
        # any_of / all_of read the rows the other rules append for a reading: they are fed last.
        self.rules.sort(key=lambda r: isinstance(r, RefCombinator))
        for shared in shared_by_kinds.values():
            for name in ("energy", "background", "profile"):
                if name in shared and shared[name] not in self.components:
                    self.components.append(shared[name])

    def process(self, batch: ReadingBatch) -> Detections:
        out: list = []
        n = len(batch)
        if n:
            for r in self.rules:
                if isinstance(r, RefDeadman) and r.start is None:
                    r.start = int(batch.ts_ns.min())
        for r in self.rules:
            if hasattr(r, "begin"):  # rules that read other sensors' readings of the batch (G-flatline peers)
                r.begin(batch)
        order = sorted(range(n), key=lambda i: (int(batch.sensor[i]), int(batch.ts_ns[i]), i))
        names = list(batch.values)
        for i in order:
            s = int(batch.sensor[i])
            if not 0 <= s < len(self.cfg.devices):
                continue
            dev = self.cfg.devices[s]
            ts = int(batch.ts_ns[i])
            row = Row(s, dev.id, ts, {k: float(batch.values[k][i]) for k in names}, int(batch.quality[i]),
                      self.clock.facts(dev.id, ts))
            for c in self.components:
                if s in getattr(c, "report", {s: 0}) or isinstance(c, (Background, Profile)):
                    c.before(row)
            for r in self.rules:
                if dev.kind in r.kinds:
                    r.feed(row, out)
            for c in self.components:
                c.after(row)
        for r in self.rules:
            if hasattr(r, "finish"):  # rules that judge once the batch is in (group_t2's closed buckets)
                r.finish(out)
        return _detections(out)

    def advance(self, now_ns: int) -> Detections:
        out: list = []
        for r in self.rules:
            r.advance(int(now_ns), out)
        return _detections(out)


def _detections(rows: list) -> Detections:
    if not rows:
        return Detections.empty()
    cols = list(zip(*rows))
    return Detections(
        np.array(cols[0], np.int32), np.array(cols[1], np.int64), np.array(cols[2], object), np.array(cols[3], object),
        np.array(cols[4], np.int8), np.array(cols[5], np.float64), np.array(cols[6], np.float64),
        np.array(cols[7], np.float64), list(cols[8]),
    )
