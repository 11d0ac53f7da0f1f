"""Construction-noise monitor model: 1-minute aggregates (Leq, Lmax, Lmin, L10, L50, L90, flag) of a
site's background, its crews' work schedule and the noise faults of domain.md section 6 (S1-S10)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from simulators.faults import param
from simulators.series import DeviceSeries, device_rng, energy_sum, in_fault, local_minutes, uniform

if TYPE_CHECKING:
    from config.inventory import Device
    from simulators.scenario import Scenario

_Floats = npt.NDArray[np.float64]

# Background Leq by local minute of day (S2: day 55-62, night 42-50 dB(A)). The evening falls off
# before 22:00 so that the 20-minute Leq has settled below the night limit when night begins.
_BG_KNOTS_MIN = [0, 360, 420, 1200, 1290, 1320, 1440]
_BG_KNOTS_DB = [45.0, 47.0, 57.0, 57.0, 49.0, 45.0, 45.0]

NOISE_ORDER = ("leq", "lmax", "lmin", "l10", "l50", "l90")


def simulate_noise(device: Device, scenario: Scenario, offset_s: int) -> DeviceSeries:
    """Readings of one noise monitor over the scenario, faults applied.

    device:   config Device (kind noise); its report interval is the aggregation interval
    scenario: simulators.scenario.Scenario
    offset_s: the local zone's UTC offset in seconds (Asia/Shanghai: 28800, no daylight saving)
    """
    step = device.sample_s * 1000
    ts = np.arange(scenario.start_ms + step, scenario.end_ms + 1, step, dtype=np.int64)
    n = len(ts)
    rng = device_rng(scenario.seed, device.id)
    # Every draw is made up front and in a fixed order, so faults never shift the normal readings.
    d_bg, d_work = rng.normal(0, 1.0, n), rng.normal(0, 1.2, n)
    u = rng.uniform(0, 1, (6, n))
    minute = local_minutes(ts - step, offset_s)  # the minute the interval starts in

    leq = np.interp(minute, _BG_KNOTS_MIN, _BG_KNOTS_DB) + d_bg
    night = (minute < 360) | (minute >= 1320)
    leq = np.where(night, np.minimum(leq, 48.5), leq)
    # Background statistics: steady, narrow spread.
    l10 = leq + 1.0 + 1.5 * u[0]
    l50 = leq - 0.3 - 0.7 * u[1]
    l90 = leq - 2.0 - 2.0 * u[2]
    lmax = leq + 7.0 + 5.0 * u[3]
    lmin = l90 - 1.0 - 1.0 * u[4]

    if device.site in scenario.work_sites:
        working = np.zeros(n, bool)
        for a, b in scenario.work_windows:
            working |= (minute >= a) & (minute < b)
        work = np.clip(scenario.work_leq_db + d_work, scenario.work_leq_db - 3.5, scenario.work_leq_db + 3.0)
        _set_source(working, work, None, leq, l10, l50, l90, lmax, lmin, u, impulsive=False)

    flags = np.full(n, "N", dtype="<U1")
    extra: dict[str, np.ndarray] = {}
    for f in scenario.faults_of(device.id):
        m = in_fault(ts - step + 1, f) | in_fault(ts - 1, f)   # any overlap of the interval with the fault
        k = int(m.sum())
        if not k:
            continue
        frng = device_rng(scenario.seed, device.id, f.id)
        code = f.type.code
        if code in ("S1", "S3", "S4", "S5", "S6"):
            src = uniform(frng, param(f, "leq_db"), k)
            lmx = uniform(frng, param(f, "lmax_db"), k) if param(f, "lmax_db") is not None else None
            _set_source(m, src, lmx, leq, l10, l50, l90, lmax, lmin, u, impulsive=code == "S3")
        elif code == "S7":
            # One 1-s value of 115-125 dB. The monitor's impulse rejection keeps an isolated spike out of
            # the interval's Leq; it shows in Lmax only (no rule judges a day Lmax).
            first = np.flatnonzero(m)[0]
            lmax[first] = max(lmax[first], float(param(f, "peak_db")))
        elif code == "S8":
            add = uniform(frng, param(f, "add_db"), k)
            for col in (leq, l10, l50, l90, lmax, lmin):
                col[m] += add
            extra.setdefault("wind_ms", np.full(n, np.nan))[m] = np.round(uniform(frng, param(f, "wind_ms"), k), 1)
            extra.setdefault("rain", np.full(n, np.nan))[m] = float(param(f, "rain_mm"))
        elif code == "S9":
            level = float(param(f, "level_db"))
            if param(f, "mode") == "stuck":
                level = float(np.round(leq[np.flatnonzero(m)[0]], 1))
            for col in (leq, l10, l50, l90, lmax, lmin):
                col[m] = level
            flags[m] = str(param(f, "flag"))
        elif code == "S10":
            frac = (ts[m] - f.start_ms) / max(1, f.end_ms - f.start_ms)
            drift = float(param(f, "from_db")) + frac * (float(param(f, "to_db")) - float(param(f, "from_db")))
            for col in (leq, l10, l50, l90, lmax, lmin):
                col[m] += drift
            extra.setdefault("cal_dev", np.full(n, np.nan))[m] = np.round(drift, 1)
        elif code == "C4" and param(f, "mode") == "flag":
            flags[m] = str(param(f, "flag"))

    # Keep the order statistics consistent (domain.md section 4): lmin <= l90 <= l50 <= l10 <= lmax, lmin <= leq <= lmax.
    l50 = np.maximum(l50, l90)
    l10 = np.maximum(l10, l50)
    lmax = np.maximum.reduce([lmax, l10, leq])
    lmin = np.minimum.reduce([lmin, l90, leq])
    values = {k: np.round(v, 1) for k, v in zip(NOISE_ORDER, (leq, lmax, lmin, l10, l50, l90))}
    values.update(extra)
    return DeviceSeries(device.id, ts, values, flags)


def _set_source(mask: npt.NDArray[np.bool_], src: _Floats, src_lmax: _Floats | float | None, leq: _Floats,
                l10: _Floats, l50: _Floats, l90: _Floats, lmax: _Floats, lmin: _Floats, u: _Floats,
                impulsive: bool) -> None:
    """Energy-add a source of level `src` (one value per masked row) to the background in place."""
    if not mask.any():
        return
    if src.shape[0] == mask.shape[0]:
        src = src[mask]
    bg = leq[mask]
    total = energy_sum(bg, src)
    uu = u[:, mask]
    leq[mask] = total
    # Work is busier than background: L10-L90 of 5-12 dB (S1), wider again for impact work.
    spread = 8.0 + 4.0 * uu[5] if impulsive else 5.5 + 3.0 * uu[5]
    l10[mask] = total + 0.3 * spread + 0.5 * uu[0]
    l50[mask] = total - 0.1 * spread
    l90[mask] = np.maximum(total - 0.7 * spread, bg - 2.0 * uu[2])
    lmin[mask] = l90[mask] - 1.0 - 2.0 * uu[4]
    lmax[mask] = src_lmax if src_lmax is not None else total + 15.0 + 4.0 * uu[3]
