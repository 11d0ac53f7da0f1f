"""A device's chart series for the console's device page: the last hours of a noise monitor's Leq, Lmax and
L90 from InfluxDB (the citywatch account), downsampled to one point a minute, with the limit in force per
minute; a gas device's pressure with its set pressure and alert levels.

Leq is averaged as energy with the detectors' own `energy_mean_db` conversions and the limit comes from the
detectors' `limit_in_force`, so the chart and the rules cannot disagree. Only readings flagged N inside the
plausible dB range count, as for the rules (`detectors.noise.valid_db`).
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request

import numpy as np

from config.connections import basic_auth
from detectors.context import Inventory
from detectors.noise import VALID_DB, db_to_energy, energy_to_db, limit_in_force

log = logging.getLogger(__name__)

NS = 1_000_000_000
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


def device_series(cfg, env: dict, inv: Inventory, device_id: str, hours: int, now_ns: int | None = None) -> dict:
    """The JSON of /api/devices/<id>/series: the device, the minute series, the limit or the gas levels, and
    `newest_ms`, the time of the newest reading (None when there is none in the range)."""
    dev = cfg.device(device_id)
    i = inv.ids.index(device_id)
    t1 = now_ns or time.time_ns()
    t0 = t1 - hours * 3600 * NS
    head = {"device": {"id": dev.id, "kind": dev.kind, "site": dev.site}, "hours": hours,
            "from_ms": t0 // 1_000_000, "to_ms": t1 // 1_000_000}
    if dev.kind == "noise":
        rows, err = query_influx(cfg, env, "noise", dev.id, ["leq", "lmax", "l90", "flag"], t0, t1)
        ts = np.array(rows.get("time", []), np.int64)
        nan = lambda k: np.array([np.nan if v is None else v for v in rows.get(k, [])], float)
        series = minute_series(ts, nan("leq"), nan("lmax"), nan("l90"), np.array(rows.get("flag", []), object))
        # The current minute's point is stamped at its end, a little ahead of now: keep it on the axis.
        head["to_ms"] = max(head["to_ms"], *(series["t_ms"][-1:] or [0]))
        return {**head, "error": err, "newest_ms": int(ts.max() // 1_000_000) if len(ts) else None,
                "series": series, "limit": limit_steps(inv, i, t0, t1)}
    rows, err = query_influx(cfg, env, "gas_pressure", dev.id, ["p", "flag"], t0, t1)
    ts = np.array(rows.get("time", []), np.int64)
    p = np.array([np.nan if v is None else v for v in rows.get("p", [])], float)
    ok = np.array(rows.get("flag", []), object) == "N"
    ts, p = ts[ok], p[ok] if len(p) else p
    if len(ts):
        # Pressure is a level, not an energy: the minute's last reading is shown at its own time, never
        # smoothed away.
        end = -(-ts // (BUCKET_S * NS)) * BUCKET_S * NS
        last = np.flatnonzero(np.r_[end[1:] != end[:-1], True])
        ts_m, p_m = ts[last], p[last]
    else:
        ts_m, p_m = ts, p
    return {**head, "error": err, "newest_ms": int(ts.max() // 1_000_000) if len(ts) else None,
            "series": {"t_ms": (ts_m // 1_000_000).tolist(), "p_kpa": _round(p_m)}, "gas": gas_levels(inv, i)}
