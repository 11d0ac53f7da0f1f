"""Local-time facts of readings, vectorized: day/night, prohibited windows, night-work permits, exam mode.

Every time rule of domain.md §1.2 is judged in the configured zone (Asia/Shanghai) from the reading's
event time, at one-second resolution, so 21:59:59 is day and 22:00:00 is night.
"""

from __future__ import annotations

import datetime as dt
import math

import numpy as np

from config.base import minutes
from core.timefmt import NS_PER_S as NS

DAY_S = 86_400
_EPOCH = dt.date(1970, 1, 1)

EXAM_NONE, EXAM_CLASS1, EXAM_LISTENING = 0, 1, 2
EXAM_MODES = {EXAM_NONE: None, EXAM_CLASS1: "class1", EXAM_LISTENING: "listening"}
EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG), for the exam-site radius


def day_number(d: dt.date) -> int:
    """Days since 1970-01-01 of a calendar date."""
    return (d - _EPOCH).days


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle (haversine) distance in metres between two WGS-84 points in degrees."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def _spans_s(start: str, end: str) -> tuple[int, int]:
    """A daily window as (start, end) seconds of day; end <= start means it runs past midnight."""
    return minutes(start) * 60, minutes(end) * 60


def _in_window(sod: np.ndarray, day: np.ndarray, s: int, e: int, first: int, last: int) -> np.ndarray:
    """Rows inside a daily window (s, e in seconds of day) that starts on a date in [first, last]."""
    if s < e:
        return (sod >= s) & (sod < e) & (day >= first) & (day <= last)
    # Runs past midnight: the part after midnight belongs to the window that started the day before.
    return ((sod >= s) & (day >= first) & (day <= last)) | ((sod < e) & (day - 1 >= first) & (day - 1 <= last))


class Calendar:
    """Time rules of one configuration, evaluated for many readings at once.

    Built from a Config; `sensor_site` maps each dense sensor index to a site index, `exam_near` says
    which sensors lie within the exam radius of an exam site.
    """

    def __init__(self, cfg) -> None:
        t = cfg.time
        self.tz = t.tz
        self.day_start_s = minutes(t.day_start) * 60
        self.night_start_s = minutes(t.night_start) * 60
        self.prohibited = [_spans_s(w.start, w.end) for w in t.prohibited_windows]
        site_index = {s.id: i for i, s in enumerate(cfg.sites)}
        self.sensor_site = np.array([site_index.get(d.site, -1) for d in cfg.devices], dtype=np.int32)
        self.permit_ids = [p.id for p in t.permits]
        self.permits = [
            (site_index.get(p.site, -1), day_number(p.from_), day_number(p.to), [_spans_s(w.start, w.end) for w in p.windows])
            for p in t.permits
        ]
        self.exam_days = [(day_number(p.from_), day_number(p.to)) for p in t.exam.periods]
        self.listening = [(day_number(x.date), *_spans_s(x.start, x.end)) for x in t.exam.listening_tests]
        # Every time of day at which a rule's judgement can change: a rolling level never reaches back
        # across one (a night Leq20 at 22:05 is not made of evening minutes).
        bounds = {self.day_start_s, self.night_start_s}
        for s, e in self.prohibited:
            bounds |= {s, e}
        for _, _, _, spans in self.permits:
            for s, e in spans:
                bounds |= {s, e}
        self.boundaries = sorted(b % DAY_S for b in bounds)
        # ... and with the listening-test windows, every time of day at which any fact can change.
        self._edges = np.array(sorted(set(self.boundaries) | {x % DAY_S for _, s, e in self.listening for x in (s, e)}),
                               np.int64)
        self._at_cache: dict[tuple[int, int], tuple] = {}  # (day, edge interval) -> `_time_facts`
        self._hour_cache: dict[int, int | None] = {}  # UTC hour -> `_hour_offset_s`
        sites = {s.id: s for s in cfg.sites}
        near = []
        for d in cfg.devices:
            site = sites.get(d.site)
            near.append(
                site is not None
                and any(distance_m(site.lat, site.lon, x.lat, x.lon) <= t.exam.radius_m for x in t.exam.sites)
            )
        self.exam_near = np.array(near, dtype=bool)

    # ----- local time -------------------------------------------------------------------------
    def _offset_s(self, epoch_s: int) -> int:
        off = dt.datetime.fromtimestamp(epoch_s, self.tz).utcoffset()
        assert off is not None  # a datetime with a zone always has an offset
        return int(off.total_seconds())

    def _hour_offset_s(self, hour: int) -> int | None:
        """The zone's offset all through one UTC hour (epoch seconds // 3600), or None if it differs at the
        hour's first and last second. Kept per hour: every step of a live feed asks for the same hour or two."""
        if hour in self._hour_cache:
            return self._hour_cache[hour]
        try:
            a, b = self._offset_s(hour * 3600), self._offset_s(hour * 3600 + 3599)
        except (OverflowError, ValueError, OSError):
            return None  # out of datetime's range: local_seconds' own lookups say what is wrong
        off = a if a == b else None
        if len(self._hour_cache) >= 64:
            self._hour_cache.clear()
        self._hour_cache[hour] = off
        return off

    def local_seconds(self, ts_ns: np.ndarray) -> np.ndarray:
        """Local wall-clock seconds since 1970-01-01 00:00 local, int64, for UTC ns timestamps."""
        sec = np.floor_divide(ts_ns, NS)
        if len(sec) == 0:
            return sec
        lo, hi = int(sec.min()), int(sec.max())
        # The common step: both ends in hours of one known offset (the rule below, without two
        # datetime.fromtimestamp calls a step).
        if hi - lo <= DAY_S:
            off = self._hour_offset_s(lo // 3600)
            if off is not None and (hi // 3600 == lo // 3600 or self._hour_offset_s(hi // 3600) == off):
                return sec + off
        off_lo = self._offset_s(lo)
        # Zone offsets change at most a few times a year: equal offsets at both ends of a span of at
        # most a day mean there was no change inside it.
        if hi - lo <= DAY_S and self._offset_s(hi) == off_lo:
            return sec + off_lo
        hours, inverse = np.unique(sec // 3600, return_inverse=True)
        offsets = np.array([self._offset_s(int(h) * 3600) for h in hours], dtype=np.int64)
        return sec + offsets[inverse]

    def since_boundary_s(self, local: np.ndarray) -> np.ndarray:
        """Seconds since the most recent time-rule boundary (day/night, prohibited or permit window edge)."""
        sod = local % DAY_S
        out = np.full(len(sod), DAY_S, np.int64)
        for b in self.boundaries:
            d = sod - b
            np.minimum(out, np.where(d < 0, d + DAY_S, d), out=out)
        return out

    def facts(self, sensor: np.ndarray, ts_ns: np.ndarray) -> TimeFacts:
        """Period, prohibited window, permit and exam mode of readings (sensor index, UTC ns)."""
        local = self.local_seconds(ts_ns)
        if len(local) > 1:
            lo, hi = int(local.min()), int(local.max())
            if lo // DAY_S == hi // DAY_S:
                a, b = lo % DAY_S, hi % DAY_S
                if not ((self._edges > a) & (self._edges <= b)).any():
                    return self._facts_at(sensor, local, lo)
        return self._facts(sensor, local)

    def _facts_at(self, sensor: np.ndarray, local: np.ndarray, lo: int) -> TimeFacts:
        """`facts` when every row lies on one day between the same two edges (the usual round: readings
        of about the same minute): the time-of-day facts are those of `lo` for all rows, and only the
        per-sensor parts (permit sites, exam radius) are looked up per row."""
        n = len(local)
        day, sod = lo // DAY_S, lo % DAY_S
        # The time-of-day facts are the same from one edge to the next on a day: computed once per
        # (day, edge interval) and kept (rounds of a few readings each ask for the same ones).
        key = (day, int(np.searchsorted(self._edges, sod, "right")))
        hit = self._at_cache.get(key)
        if hit is None:
            hit = self._time_facts(day, sod)
            if len(self._at_cache) >= 64:
                self._at_cache.clear()
            self._at_cache[key] = hit
        night, prohibited, active, exam_mode = hit
        permit = np.full(n, -1, np.int16)
        if active:
            site = self.sensor_site[sensor]
            for i, site_i in active:
                permit[(site == site_i) & (permit < 0)] = i
        exam = np.zeros(n, np.int8)
        if exam_mode:
            exam[self.exam_near[sensor]] = exam_mode
        return TimeFacts(np.full(n, night), np.full(n, prohibited), permit, exam, local)

    def _time_facts(self, day: int, sod: int) -> tuple[bool, bool, list[tuple[int, int]], int]:
        """(night, prohibited, [(permit index, site index) of the permits in force], exam mode) at one time."""
        if self.night_start_s > self.day_start_s:
            night = sod >= self.night_start_s or sod < self.day_start_s
        else:
            night = self.night_start_s <= sod < self.day_start_s
        prohibited = any((s <= sod < e) if s < e else (sod >= s or sod < e) for s, e in self.prohibited)
        active = [(i, site_i) for i, (site_i, first, last, spans) in enumerate(self.permits)
                  if any(_in_window(np.array([sod]), np.array([day]), s, e, first, last)[0] for s, e in spans)]
        exam_mode = EXAM_NONE
        if self.exam_days:
            on = any(first <= day <= last for first, last in self.exam_days)
            listening = any(d == day and s <= sod < e for d, s, e in self.listening)
            if on or listening:
                exam_mode = EXAM_LISTENING if listening else EXAM_CLASS1
        return night, prohibited, active, exam_mode

    def _facts(self, sensor: np.ndarray, local: np.ndarray) -> TimeFacts:
        day = local // DAY_S
        sod = local - day * DAY_S
        if self.night_start_s > self.day_start_s:
            night = (sod >= self.night_start_s) | (sod < self.day_start_s)
        else:
            night = (sod >= self.night_start_s) & (sod < self.day_start_s)
        prohibited = np.zeros(len(sod), bool)
        for s, e in self.prohibited:
            prohibited |= (sod >= s) & (sod < e) if s < e else (sod >= s) | (sod < e)
        permit = np.full(len(sod), -1, np.int16)
        if self.permits and len(sod):
            site = self.sensor_site[sensor]
            for i, (site_i, first, last, spans) in enumerate(self.permits):
                here = (site == site_i) & (permit < 0)
                if not here.any():
                    continue
                for s, e in spans:
                    permit[here & _in_window(sod, day, s, e, first, last)] = i
        exam = np.zeros(len(sod), np.int8)
        if self.exam_days and len(sod):
            near = self.exam_near[sensor]
            if near.any():
                on = np.zeros(len(sod), bool)
                for first, last in self.exam_days:
                    on |= (day >= first) & (day <= last)
                exam[near & on] = EXAM_CLASS1
                for d, s, e in self.listening:
                    exam[near & (day == d) & (sod >= s) & (sod < e)] = EXAM_LISTENING
        return TimeFacts(night, prohibited, permit, exam, local)

    def permit_id(self, index: int) -> str | None:
        return self.permit_ids[index] if index >= 0 else None


class TimeFacts:
    """Per-row results of `Calendar.facts`: night (bool), prohibited (bool), permit index (-1 none),
    exam mode (EXAM_*), and local seconds since the epoch (for time-of-week profiles)."""

    __slots__ = ("night", "prohibited", "permit", "exam", "local")

    def __init__(self, night, prohibited, permit, exam, local) -> None:
        self.night, self.prohibited, self.permit, self.exam, self.local = night, prohibited, permit, exam, local

    def take(self, idx: np.ndarray) -> TimeFacts:
        return TimeFacts(self.night[idx], self.prohibited[idx], self.permit[idx], self.exam[idx], self.local[idx])

    def period_name(self, i: int) -> str:
        if self.prohibited[i]:
            return "prohibited"
        return "night" if self.night[i] else "day"
