"""Generate `xm_night_2025-06-01.csv`: one evening and night (20:00-02:00 Asia/Shanghai) of the shipped
inventory, with a few scenarios of domain.md §6 planted at known times (see SCENARIOS below).

Run from the repository root: `python examples/feeds/make_xm_night.py`. Deterministic (fixed seed).
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import random
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
START = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)  # 20:00 local
HOURS = 6
COLUMNS = ["ts", "device_id", "flag", "leq", "lmax", "lmin", "l10", "l50", "l90", "p", "batt_v"]

# What is planted, in local time (UTC+8), and which rules should see it.
SCENARIOS = {
    "XM0001NOISE": "S5 permitted night pour 22:30-01:30 under P-SM-2025-0601, Leq1 60-64: N-night with permit_id, no N-prohibited",
    "XM0002NOISE": "S4 illegal night pour 23:00-01:30, Leq1 62-68, Lmax 80-90: N-prohibited, N-night, N-night-max",
    "XM0003NOISE": "S3 breaker 20:00-21:00, Leq1 74-79: N-day yellow/orange, N-pre",
    "XM0005NOISE": "C4 fault flag D 00:00-00:40: N-data",
    "XM0007NOISE": "stops reporting at 23:30: Offline",
    "XMG0003": "G8 flatline from 21:00 (2.48 kPa exactly): G-flatline after 2 h",
    "XMG0005": "G9 battery fade 3.35 -> 3.02 V: Batt yellow then orange",
    "XMG0025": "G4 rupture at 00:10, -40 % in 3 min: G-rupture red, G-low",
    "XMG0027": "G5 slow leak from 21:00, -2 %/h: no G-leak in a one-night feed (no learned profile)",
    "XMG0031": "G3 regulator failing open 23:00 (300 -> 360 kPa in 20 min), OPSO trips 23:40 (-> 2 kPa): G-high, G-highhigh, G-low, G-rupture",
    "XMG0035": "sensor out of range 01:00-01:05 (1200 kPa, FS 1000): G-range, no process alarm",
}


def local_hour(t: dt.datetime) -> float:
    lt = t + dt.timedelta(hours=8)
    return lt.hour + lt.minute / 60


def noise_row(rng, dev, t):
    h = local_hour(t)
    night = h >= 22 or h < 6
    leq = rng.gauss(46, 1.5) if night else rng.gauss(57, 2)
    lmax_over = rng.uniform(6, 12)
    flag = "N"
    minutes_from_start = (t - START).total_seconds() / 60
    if dev == "XM0001NOISE" and (h >= 22.5 or h < 1.5):
        leq, lmax_over = rng.uniform(60, 64), rng.uniform(10, 14)
    if dev == "XM0002NOISE" and (h >= 23 or h < 1.5):
        leq, lmax_over = rng.uniform(62, 68), rng.uniform(16, 22)
    if dev == "XM0003NOISE" and 20 <= h < 21:
        leq, lmax_over = rng.uniform(74, 79), rng.uniform(8, 12)
    if dev == "XM0005NOISE" and 0 <= h < (40 / 60):
        flag = "D"
    if dev == "XM0007NOISE" and minutes_from_start >= 210:
        return None
    l90 = leq - rng.uniform(5, 9)
    return {"flag": flag, "leq": round(leq, 1), "lmax": round(leq + lmax_over, 1), "lmin": round(l90 - 2, 1),
            "l10": round(leq + 2.5, 1), "l50": round(leq - 1.5, 1), "l90": round(l90, 1)}


def gas_row(rng, dev, t, set_kpa):
    h = local_hour(t)
    # Evening demand sag around 19-21 h and a quiet night: a smooth daily profile of +-2 %.
    p = set_kpa * (1 + 0.02 * math.cos((h - 3) / 24 * 2 * math.pi)) + rng.gauss(0, 0.003 * set_kpa)
    batt = 3.55 + rng.gauss(0, 0.01)
    hrs = (t - START).total_seconds() / 3600
    if dev == "XMG0003" and hrs >= 1:
        p = 2.48
    if dev == "XMG0005":
        batt = 3.35 - 0.33 * hrs / HOURS
    if dev == "XMG0025" and hrs >= 4 + 10 / 60:
        k = min(1.0, (hrs - (4 + 10 / 60)) * 60 / 3)
        p *= 1 - 0.40 * k
    if dev == "XMG0027" and hrs >= 1:
        p *= 1 - 0.02 * (hrs - 1)
    if dev == "XMG0031" and hrs >= 3:
        m = (hrs - 3) * 60
        p = set_kpa * (1 + 0.2 * min(1.0, m / 20)) + rng.gauss(0, 0.5) if m < 40 else 2.0 + rng.gauss(0, 0.2)
    if dev == "XMG0035" and 5 <= hrs < 5 + 5 / 60:
        p = 1200.0
    return {"flag": "N", "p": round(p, 3), "batt_v": round(batt, 3)}


def main() -> None:
    inv = yaml.safe_load((HERE.parents[1] / "config" / "inventory.yaml").read_text())
    rng = random.Random(20250601)
    rows = []
    end = START + dt.timedelta(hours=HOURS)
    for d in inv["devices"]:
        step = d.get("sample_interval_s") or d["report_interval_s"]
        t = START + dt.timedelta(seconds=step)
        while t <= end:
            rec = noise_row(rng, d["id"], t) if d["kind"] == "noise" else gas_row(rng, d["id"], t, d["set_pressure_kpa"])
            if rec is not None:
                rows.append({"ts": t.strftime("%Y-%m-%dT%H:%M:%SZ"), "device_id": d["id"], **rec})
            t += dt.timedelta(seconds=step)
    rows.sort(key=lambda r: (r["ts"], r["device_id"]))
    out = HERE / "xm_night_2025-06-01.csv"
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {len(rows)} rows to {out}")


if __name__ == "__main__":
    main()
