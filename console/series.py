"""A device's chart series for the console's device page: the last hours of a noise monitor's Leq, Lmax and
L90 from InfluxDB (the citywatch account), downsampled to one point a minute, with the limit in force per
minute; a gas device's pressure with its set pressure and alert levels.

Leq is averaged as energy with the detectors' own `energy_mean_db` conversions and the limit comes from the
detectors' `limit_in_force`, so the chart and the rules cannot disagree. Only readings flagged N inside the
plausible dB range count, as for the rules (`detectors.noise.valid_db`).

Every device also gets its battery voltage with the battery rule's levels, and its data quality: readings
received and valid per hour against what its reporting period promises, with the silences the Offline rule
would call offline. A gas device gets the learned time-of-week profile band: the detectors' own `GasProfile`
restored from the service's state snapshot (`LearnedRules`), never a second implementation.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.parse
import urllib.request

import numpy as np

from config.connections import basic_auth
from core.timefmt import NS_PER_S as NS
from detectors.context import Inventory, Round
from detectors.noise import VALID_DB, db_to_energy, energy_to_db, limit_in_force

log = logging.getLogger(__name__)

BUCKET_S = 60           # at most one chart point a minute
MAX_HOURS = 72
MAX_ROWS = 200_000      # a bound on what one request reads from InfluxDB


def minute_series(ts_ns: np.ndarray, leq: np.ndarray, lmax: np.ndarray, l90: np.ndarray,
                  flag: np.ndarray) -> dict:
    """Readings (interval-end UTC ns) -> one point per minute, stamped at the minute's end: Leq the energy
    mean of the minute's valid Leqs, Lmax their maximum, L90 their median (a statistic, not energy).
    Invalid readings (flag not N, outside the plausible range) are left out; a minute with none has no point."""
    ts_ns = np.asarray(ts_ns, np.int64)
    leq, lmax, l90 = (np.asarray(a, float) for a in (leq, lmax, l90))
    ok = (np.asarray(flag) == "N") & (leq >= VALID_DB[0]) & (leq <= VALID_DB[1])
    ts_ns, leq, lmax, l90 = ts_ns[ok], leq[ok], lmax[ok], l90[ok]
    if not len(ts_ns):
        return {"t_ms": [], "leq": [], "lmax": [], "l90": [], "n": []}
    # A reading stamped at 10:01:00 closes the minute 10:00-10:01: bucket by the interval end.
    end = -(-ts_ns // (BUCKET_S * NS)) * BUCKET_S * NS
    ends, inv, counts = np.unique(end, return_inverse=True, return_counts=True)
    energy = np.bincount(inv, weights=db_to_energy(leq), minlength=len(ends))
    leq_m = energy_to_db(energy / counts)
    lmax = np.where((lmax >= VALID_DB[0]) & (lmax <= VALID_DB[1]), lmax, np.nan)
    lmax_m = np.full(len(ends), np.nan)
    np.fmax.at(lmax_m, inv, lmax)
    order = np.lexsort((l90, inv))
    l90_m = np.array([np.nanmedian(g) if np.isfinite(g).any() else np.nan
                      for g in np.split(l90[order], np.cumsum(counts)[:-1])])
    return {"t_ms": (ends // 1_000_000).tolist(), "leq": _round(leq_m), "lmax": _round(lmax_m),
            "l90": _round(l90_m), "n": counts.tolist()}


def _round(x: np.ndarray) -> list:
    return [None if not np.isfinite(v) else round(float(v), 2) for v in x]


def limit_steps(inv: Inventory, device_index: int, t0_ns: int, t1_ns: int) -> dict:
    """The limit in force each minute from t0 to t1 (the detectors' `limit_in_force`), plus the minutes
    inside a prohibited window without a permit and under an exam, for a step line and shaded bands."""
    step = BUCKET_S * NS
    ts = np.arange(-(-t0_ns // step) * step, t1_ns + 1, step, dtype=np.int64)
    f = limit_in_force(inv, device_index, ts)
    return {"t_ms": (ts // 1_000_000).tolist(), "limit_db": _round(f["limit_db"]),
            "night": f["night"].tolist(), "prohibited": f["prohibited"].tolist(), "exam": (f["exam"] > 0).tolist()}


def gas_levels(inv: Inventory, device_index: int) -> dict:
    """A gas device's set pressure and the G-high, G-highhigh and G-low levels in kPa (the rules' values)."""
    p_set = float(inv.p_set[device_index])
    return {"set_kpa": p_set, "high_kpa": round(float(inv.rel_high[device_index]) * p_set, 3),
            "highhigh_kpa": float(inv.highhigh_kpa[device_index]),
            "low_kpa": [round(float(lv.below) * p_set, 3) for lv in inv.low_levels[device_index]]}


HOUR_S = 3600            # data quality is counted per hour, as the N-data rule counts its valid-data rate


class LearnedRules:
    """The detectors as the service last saved them: a RuleSet built from the config (the battery, data-quality
    and Offline rules' settings), with the state snapshot `alerting.detector_state_path` restored into it by
    `detectors.snapshot` (device by device, only where the device's settings are unchanged). Rebuilt when the
    snapshot file changes (the service writes it every `detector_state_save_s` and at stop). Thread-safe."""

    def __init__(self, cfg) -> None:
        self.cfg = cfg
        self.path = cfg.resolve_path(cfg.alerting.detector_state_path)
        self._lock = threading.Lock()
        self._key: object = ()
        self._state: tuple = (None, None, None)

    def get(self):
        """(RuleSet, snapshot saved at UTC ns or None, why nothing was restored or None)."""
        from detectors import snapshot
        from detectors.registry import RuleSet

        try:
            st = self.path.stat()
            key: object = (st.st_mtime_ns, st.st_size)
        except OSError:
            key = None
        with self._lock:
            if key != self._key or self._state[0] is None:
                rules = RuleSet.from_config(self.cfg)
                saved: int | None = None
                error: str | None = f"no detector state yet ({self.path})"
                if key is not None:
                    try:
                        snap = snapshot.read(self.path)
                        report = snapshot.restore(rules, snap, str(self.path))
                        saved, error = snap.saved_ns, report.error
                    except snapshot.SnapshotError as exc:
                        error = str(exc)
                self._key, self._state = key, (rules, saved, error)
            return self._state


def rule_for(rules, rule_type: str, device_index: int):
    """(rule, its local index of the device) of the first enabled rule of `rule_type` running on the device,
    or (None, -1)."""
    for r in rules.rules:
        if r.type == rule_type and r.group.local[device_index] >= 0:
            return r, int(r.group.local[device_index])
    return None, -1


class _NoValues:
    """Round values for time-only questions (the profile reads only the sensor and the local time)."""

    def take(self, name, sel):
        return None


def profile_band(learned: LearnedRules, device_index: int, t0_ns: int, t1_ns: int) -> dict:
    """The learned time-of-week profile of a gas device each minute from t0 to t1, from the detectors' own
    `GasProfile.baseline` with the state the service saved, and G-leak's band around it: profile -/+ k sigma
    with G-leak's learned residual sigma (never below its floor). Below the band's lower edge the CUSUM
    grows. Minutes where the profile is not learned are None."""
    from detectors.gas import GasLeakCusum, GasProfile

    rules, saved_ns, error = learned.get()
    step = BUCKET_S * NS
    ts = np.arange(-(-t0_ns // step) * step, t1_ns + 1, step, dtype=np.int64)
    out = {"t_ms": (ts // 1_000_000).tolist(), "p_kpa": [None] * len(ts), "lo_kpa": [None] * len(ts),
           "hi_kpa": [None] * len(ts), "learned_hours": 0, "k_sigma": None, "sigma_kpa": None,
           "saved_ms": None if saved_ns is None else saved_ns // 1_000_000, "error": error}
    profile = next((c for c in rules.components if isinstance(c, GasProfile)
                    and c.group.local[device_index] >= 0), None)
    if profile is None:
        out["error"] = error or "no rule learns a time-of-week profile (G-leak, G-rupture) for this device"
        return out
    loc = int(profile.group.local[device_index])
    out["learned_hours"] = int((profile.count_[loc] >= profile.need[loc]).sum())
    rnd = Round(np.full(len(ts), device_index, np.int32), ts, _NoValues(), np.zeros(len(ts), np.int8),
                rules.inv.calendar, once=False)
    prof, ok = profile.baseline(rnd.view(profile.group))
    leak, lk = rule_for(rules, GasLeakCusum.type, device_index)
    half = 0.0
    if leak is not None:
        sigma = max(float(np.sqrt(float(leak.var_[lk]))), float(leak.floor[lk]))
        out["k_sigma"], out["sigma_kpa"] = float(leak.k), round(sigma, 4)
        half = leak.k * sigma
    out["p_kpa"] = _round(np.where(ok, prof, np.nan))
    out["lo_kpa"] = _round(np.where(ok, prof - half, np.nan))
    out["hi_kpa"] = _round(np.where(ok, prof + half, np.nan))
    return out


def battery_series(rules, device_index: int, ts_ns: np.ndarray, volts: np.ndarray) -> dict:
    """Battery voltage, the lowest of each minute (the rule judges every reading, transmit dips included),
    with the levels of the battery rule that runs on the device (None when none does)."""
    from detectors.device_health import Battery

    ts_ns, volts = np.asarray(ts_ns, np.int64), np.asarray(volts, float)
    keep = np.isfinite(volts)
    ts_ns, volts = ts_ns[keep], volts[keep]
    out: dict = {"t_ms": [], "v": [], "rule": None, "yellow_v": None, "orange_v": None, "hysteresis_v": None}
    if len(ts_ns):
        end = -(-ts_ns // (BUCKET_S * NS)) * BUCKET_S * NS
        ends, inv = np.unique(end, return_inverse=True)
        low = np.full(len(ends), np.inf)
        np.fmin.at(low, inv, volts)
        out["t_ms"], out["v"] = (ends // 1_000_000).tolist(), _round(low)
    rule, _ = rule_for(rules, Battery.type, device_index)
    if rule is not None:
        out.update(rule=rule.rule_id, yellow_v=float(rule.yellow), orange_v=float(rule.orange),
                   hysteresis_v=float(rule.params.hysteresis_v))
    return out


def data_quality(rules, device_index: int, ts_ns: np.ndarray, valid: np.ndarray, t0_ns: int, t1_ns: int) -> dict:
    """Readings received and valid per local hour from the hour of t0 to t1, against the readings the hour
    should hold; and the silences longer than the Offline rule's limit.

    expected: the N-data rule's count for the device where it runs (3600 / report interval), else one
    reading per sample interval. Readings are stamped at their interval's end: a reading at 11:00:00
    belongs to 10:00-11:00, as for N-data. The current hour is partial (`partial`); its expected count is
    pro rata. gaps: [start_ms, end_ms] of each silence longer than after_s (the Offline rule's
    interval_factor x report interval + grace; 2 x the sample interval where no Offline rule runs),
    including one still going on at t1 ("open")."""
    from detectors.deadman import Deadman
    from detectors.device_health import DataQuality

    inv = rules.inv
    ts_ns, valid = np.asarray(ts_ns, np.int64), np.asarray(valid, bool)
    h = HOUR_S * NS
    first, last = t0_ns // h, max(t0_ns // h, (t1_ns - 1) // h)
    hours = np.arange(first, last + 1, dtype=np.int64)
    nd, nloc = rule_for(rules, DataQuality.type, device_index)
    if nd is not None:
        expected = float(nd.expected[nloc])
    else:
        expected = float(max(1, HOUR_S // int(inv.sample_s[device_index])))
    bucket = (ts_ns - 1) // h - first
    inside = (bucket >= 0) & (bucket < len(hours))
    received = np.bincount(bucket[inside], minlength=len(hours))
    good = np.bincount(bucket[inside], weights=valid[inside], minlength=len(hours)).astype(np.int64)
    exp = np.full(len(hours), expected)
    partial = np.zeros(len(hours), bool)
    # The current hour has not ended: it should hold only the readings of its elapsed part.
    if (t1_ns - hours[-1] * h) < h:
        exp[-1] = expected * (t1_ns - hours[-1] * h) / h
        partial[-1] = True
    dm, dloc = rule_for(rules, Deadman.type, device_index)
    after_s = float(dm.after_s[dloc]) if dm is not None else 2.0 * float(inv.sample_s[device_index])
    gaps = []
    edges = np.r_[hours[0] * h, np.sort(ts_ns[inside]), t1_ns]
    for i in np.flatnonzero(np.diff(edges) > after_s * NS):
        gaps.append({"from_ms": int(edges[i] // 1_000_000), "to_ms": int(edges[i + 1] // 1_000_000),
                     "open": bool(i == len(edges) - 2)})
    return {"bucket_s": HOUR_S, "t_ms": (hours * h // 1_000_000).tolist(), "received": received.tolist(),
            "valid": good.tolist(), "expected": [round(float(x), 2) for x in exp], "partial": partial.tolist(),
            "vdr": [round(float(g / e), 3) if e > 0 else None for g, e in zip(good, exp, strict=True)],
            "rule": nd.rule_id if nd is not None else None,
            "min_vdr": float(nd.min_vdr) if nd is not None else None,
            "gap_after_s": after_s, "gap_rule": dm.rule_id if dm is not None else None, "gaps": gaps}


def query_influx(cfg, env: dict, measurement: str, device_id: str, fields: list[str], t0_ns: int,
                 t1_ns: int) -> tuple[dict[str, list], str | None]:
    """(columns by name, error) of one device's rows between t0 and t1 from InfluxDB v1, oldest first."""
    influx = cfg.connections.influx
    if influx.api != "v1":
        return {}, f"InfluxDB api {influx.api} is not supported by the console"
    cols = ", ".join(f'"{f}"' for f in fields)
    q = (f'SELECT {cols} FROM "{measurement}" WHERE "device_id" = \'{device_id}\' AND time > {t0_ns} '
         f'AND time <= {t1_ns} ORDER BY time ASC LIMIT {MAX_ROWS}')
    url = influx.url.rstrip("/") + "/query?" + urllib.parse.urlencode({"db": influx.database, "q": q, "epoch": "ns"})
    req = urllib.request.Request(url, headers=basic_auth(influx.credentials(env)))
    try:
        with urllib.request.urlopen(req, timeout=min(influx.timeout_s, 10)) as resp:
            body = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        log.warning("console: InfluxDB series of %s: %s", device_id, exc)
        return {}, f"InfluxDB unreachable: {exc}"
    out: dict[str, list] = {"time": [], **{f: [] for f in fields}}
    for result in body.get("results", []):
        if result.get("error"):
            return {}, f"InfluxDB: {result['error']}"
        for series in result.get("series", []) or []:
            names = series["columns"]
            for values in series["values"]:
                rec = dict(zip(names, values, strict=False))
                for k, col in out.items():
                    col.append(rec.get(k))
    return out, None


EARLIEST_END_NS = 946_684_800 * NS     # 2000-01-01: no earlier `end` is a time anyone means


def parse_end(text: str | None, now_ns: int | None = None) -> int | None:
    """The `end` query parameter (ms since 1970, UTC) as UTC ns, or None when absent (now). Raises ValueError
    saying what is accepted."""
    if text is None or text == "":
        return None
    try:
        ms = int(text)
    except ValueError:
        raise ValueError(f"end must be a whole number of ms since 1970 (got {text[:40]!r})") from None
    limit = (now_ns or time.time_ns()) + 86400 * NS
    if not EARLIEST_END_NS <= ms * 1_000_000 <= limit:
        raise ValueError(f"end must lie between 2000-01-01 and a day from now (got {ms} ms)")
    return ms * 1_000_000


def latest_reading_ms(cfg, env: dict, measurement: str, device_id: str) -> int | None:
    """The time of the device's newest row in InfluxDB (any flag), ms; None when it has none or InfluxDB cannot
    be read. For the page to offer the device's last data when the range holds none."""
    influx = cfg.connections.influx
    if influx.api != "v1":
        return None
    q = f'SELECT last("flag") FROM "{measurement}" WHERE "device_id" = \'{device_id}\''
    url = influx.url.rstrip("/") + "/query?" + urllib.parse.urlencode({"db": influx.database, "q": q, "epoch": "ms"})
    req = urllib.request.Request(url, headers=basic_auth(influx.credentials(env)))
    try:
        with urllib.request.urlopen(req, timeout=min(influx.timeout_s, 10)) as resp:
            body = json.loads(resp.read())
        return int(body["results"][0]["series"][0]["values"][0][0])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return None


def device_series(cfg, env: dict, inv: Inventory, device_id: str, hours: int, now_ns: int | None = None,
                  learned: LearnedRules | None = None) -> dict:
    """The JSON of /api/devices/<id>/series: the device, the minute series, the limit or the gas levels (and the
    learned profile band), battery voltage, data quality, and `newest_ms`, the time of the newest reading
    (None when there is none in the range). `learned` (the console keeps one) saves rebuilding the rules."""
    dev = cfg.device(device_id)
    i = inv.ids.index(device_id)
    t1 = now_ns or time.time_ns()
    t0 = t1 - hours * 3600 * NS
    # Data quality counts whole hours: read from the start of t0's hour.
    tq = t0 // (HOUR_S * NS) * HOUR_S * NS
    learned = learned or LearnedRules(cfg)
    rules = learned.get()[0]
    measurement = "noise" if dev.kind == "noise" else "gas_pressure"
    head = {"device": {"id": dev.id, "kind": dev.kind, "site": dev.site, "report_interval_s": dev.report_interval_s,
                       "sample_s": dev.sample_s}, "hours": hours,
            "from_ms": t0 // 1_000_000, "to_ms": t1 // 1_000_000}
    main = "leq" if dev.kind == "noise" else "p"
    fields = ["leq", "lmax", "l90"] if dev.kind == "noise" else ["p"]
    rows, err = query_influx(cfg, env, measurement, dev.id, [*fields, "batt_v", "flag"], tq, t1)
    ts_all = np.array(rows.get("time", []), np.int64)
    nan = lambda k: np.array([np.nan if v is None else v for v in rows.get(k, [])], float)  # noqa: E731
    flags = np.array(rows.get("flag", []), object)
    # N-data's valid reading: flagged N with the device's main value.
    quality = data_quality(rules, i, ts_all, (flags == "N") & np.isfinite(nan(main)), t0, t1)
    rng = ts_all > t0
    battery = battery_series(rules, i, ts_all[rng], nan("batt_v")[rng])
    ts = ts_all[rng]
    newest = int(ts.max() // 1_000_000) if len(ts) else None
    # Nothing in the range (a device silent for long, a replayed or simulated day): where its data ends.
    latest = latest_reading_ms(cfg, env, measurement, dev.id) if not len(ts) and err is None else None
    extra = {"battery": battery, "quality": quality, "latest_ms": latest}
    if dev.kind == "noise":
        series = minute_series(ts, nan("leq")[rng], nan("lmax")[rng], nan("l90")[rng], flags[rng])
        # The current minute's point is stamped at its end, a little ahead of now: keep it on the axis.
        head["to_ms"] = max(head["to_ms"], *(series["t_ms"][-1:] or [0]))
        return {**head, "error": err, "newest_ms": newest, "series": series, "limit": limit_steps(inv, i, t0, t1),
                **extra}
    p = nan("p")[rng]
    ok = flags[rng] == "N"
    ts, p = ts[ok], p[ok]
    if len(ts):
        # Pressure is a level, not an energy: the minute's last reading is shown at its own time, never
        # smoothed away.
        end = -(-ts // (BUCKET_S * NS)) * BUCKET_S * NS
        last = np.flatnonzero(np.r_[end[1:] != end[:-1], True])
        ts_m, p_m = ts[last], p[last]
    else:
        ts_m, p_m = ts, p
    return {**head, "error": err, "newest_ms": int(ts.max() // 1_000_000) if len(ts) else None,
            "series": {"t_ms": (ts_m // 1_000_000).tolist(), "p_kpa": _round(p_m)}, "gas": gas_levels(inv, i),
            "profile": profile_band(learned, i, t0, t1), **extra}
