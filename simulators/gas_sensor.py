"""Gas-pressure sensor model: pressure (kPa gauge) on a daily demand profile per pressure class, battery
voltage and device temperature, with the gas faults of domain.md section 6 (G1-G9)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from simulators.faults import param
from simulators.series import DeviceSeries, device_rng, in_fault, local_minutes

if TYPE_CHECKING:
    from config.inventory import Device
    from simulators.scenario import Scenario

# Demand peaks 07-09 and 17-20 pull the pressure down; night demand is low (G1: +-5 % daily profile).
_PEAKS = ((8.0 * 60, 55.0), (18.5 * 60, 70.0))   # (centre minute, sigma minutes)
PROFILE_HIGH, PROFILE_SPAN = 1.03, 0.08           # pressure factor = HIGH - SPAN * demand, demand in [0, 1]
NOISE_FRACTION = 0.003                            # sensor + flow noise, fraction of the set pressure


def demand(minute: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Relative demand in [0, 1] by local minute of day."""
    d = sum(np.exp(-0.5 * ((minute - c) / s) ** 2) for c, s in _PEAKS)
    return np.clip(0.1 + 0.9 * d, 0.0, 1.0)


def pressure_decimals(device: Device) -> int:
    """Resolution the sensor reports: 1 Pa on low-pressure points, 10 Pa above."""
    return 3 if device.pressure_class == "low" else 2


def simulate_gas(device: Device, scenario: Scenario, offset_s: int) -> DeviceSeries:
    """Samples of one gas-pressure sensor over the scenario (p kPa, batt_v V, t_dev degC), faults applied.

    device:   config Device (kind gas) with set_pressure_kpa, full_scale_kpa, sample_s
    scenario: simulators.scenario.Scenario
    offset_s: the local zone's UTC offset in seconds
    """
    step = device.sample_s * 1000
    ts = np.arange(scenario.start_ms + step, scenario.end_ms + 1, step, dtype=np.int64)
    n = len(ts)
    rng = device_rng(scenario.seed, device.id)
    d_p, d_b, d_t = rng.normal(0, 1, n), rng.normal(0, 1, n), rng.normal(0, 1, n)
    minute = local_minutes(ts, offset_s)
    # config.inventory.Device requires set_pressure_kpa and full_scale_kpa of every gas device.
    assert device.set_pressure_kpa is not None and device.full_scale_kpa is not None
    ps = float(device.set_pressure_kpa)
    base = ps * (PROFILE_HIGH - PROFILE_SPAN * demand(minute))
    p = base + ps * NOISE_FRACTION * d_p
    batt = 3.60 + 0.004 * d_b
    t_dev = 26.0 + 4.0 * np.sin(2 * np.pi * (minute / 60.0 - 9.0) / 24.0) + 0.2 * d_t
    fs = float(device.full_scale_kpa)

    for f in scenario.faults_of(device.id):
        m = in_fault(ts, f)
        if not m.any():
            continue
        frng = device_rng(scenario.seed, device.id, f.id)
        el_min = (ts[m] - f.start_ms) / 60000.0
        code = f.type.code
        if code == "G3":
            # Regulator failing open: rise to the relief setting, plateau, then the OPSO slam-shut trips to ~0.
            rise, plateau = float(param(f, "rise_min")), float(param(f, "plateau_min"))
            peak = ps * float(param(f, "peak_ratio"))
            start = p[m]
            ramp = np.clip(el_min / rise, 0, 1)
            v = start + (peak - start) * ramp + ps * 0.004 * frng.normal(0, 1, len(el_min))
            v = np.where(el_min >= rise + plateau, float(param(f, "after_kpa")) + 0.002 * ps * frng.uniform(0, 1, len(el_min)), v)
            p[m] = v
        elif code == "G4":
            drop = float(param(f, "drop_pct")) / 100.0
            ramp = np.clip(el_min / max(1e-9, float(param(f, "ramp_min"))), 0, 1)
            p[m] = p[m] * (1.0 - drop * ramp)
        elif code == "G5":
            p[m] = p[m] - ps * float(param(f, "rate_pct_per_h")) / 100.0 * el_min / 60.0
        elif code == "G6":
            drop = float(param(f, "drop_pct")) / 100.0
            r = float(param(f, "ramp_min"))
            total = (f.end_ms - f.start_ms) / 60000.0
            shape = np.clip(np.minimum(el_min / r, (total - el_min) / r), 0, 1)
            p[m] = p[m] - ps * drop * shape
        elif code == "G7":
            p[m] = p[m] + fs * float(param(f, "pct_fs_per_day")) / 100.0 * el_min / 1440.0
        elif code == "G8":
            if param(f, "mode") == "open_loop":
                p[m] = -0.05 * fs      # open 4-20 mA loop reads below zero
            else:
                p[m] = np.round(p[np.flatnonzero(m)[0]], pressure_decimals(device))
        elif code == "G9":
            total = max(1.0, (f.end_ms - f.start_ms) / 60000.0)
            v0, v1 = float(param(f, "from_v")), float(param(f, "to_v"))
            fade = v0 + (v1 - v0) * el_min / total
            # Transmitting draws current: the sample at each report time dips.
            tx = ((ts[m] - scenario.start_ms) % (device.report_interval_s * 1000)) == 0
            batt[m] = fade - np.where(tx, float(param(f, "dip_v")), 0.0)
            after = ts >= f.end_ms
            batt[after] = v1 + 0.004 * d_b[after]

    values = {
        "p": np.round(p, pressure_decimals(device)),
        "batt_v": np.round(batt, 2),
        "t_dev": np.round(t_dev, 1),
    }
    return DeviceSeries(device.id, ts, values, None)
