"""GB 12523-2011 background correction of an assessed construction-noise level (issue 16 item 9):
measured minus background, by the standard's correction table, and where the background is known.

GB 12523-2011 §5 (measurement method, "测量结果修正" and its Table 2; clause text recalled from the
standard, domain.md §1.3: verify against the 2025 edition, which replaces it from 2026-01-01):
  - background more than 10 dB(A) below the measured value: the measured value is not corrected;
  - a difference of 3 to 10 dB(A): the difference is rounded (修约, GB/T 8170: to an integer, a half
    to the even neighbour) and the measured value corrected by Table 2: 3 -> -3, 4-5 -> -2, 6-10 -> -1;
  - a difference under 3 dB(A): the measurement cannot be assessed ("采取措施降低背景噪声后" re-measure
    with the background lowered): a monitor cannot do that, so such a reading is not judged at all.

The background (rule key `background_correction: gb12523`, detectors/noise.py): the site's surveyed
`background_db` (inventory.yaml, measured with the works stopped, as the standard intends) where it is
configured, else the measured L90 background the noise rules already track (NoiseBackground: follows
quiet minutes within minutes and busy ones over hours, so hours of work do not become the background).
"""

from __future__ import annotations

import numpy as np

# Table 2 of GB 12523-2011 as (lowest rounded difference, correction dB), highest first.
GB12523_TABLE = ((11, 0.0), (6, -1.0), (4, -2.0), (3, -3.0))
MIN_DIFFERENCE_DB = 3  # below this (rounded) the measurement is not valid for assessment


def gb12523_correct(measured_db, background_db) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Correct measured levels for the background by GB 12523-2011 Table 2.

    measured_db, background_db: arrays (or scalars) in dB(A); NaN background = unknown.
    Returns (corrected_db, valid, correction_db): `valid` is False where the rounded difference is
    under 3 dB (corrected NaN, correction NaN) and where the measured value is NaN; an unknown
    background leaves the measured value as it is (correction 0, valid).
    """
    m = np.asarray(measured_db, dtype=float)
    b = np.asarray(background_db, dtype=float)
    with np.errstate(invalid="ignore"):
        diff = np.round(m - b)   # numpy rounds a half to even, as GB/T 8170 does
    corr = np.zeros(np.broadcast(m, b).shape)
    for low, c in reversed(GB12523_TABLE):
        corr = np.where(diff >= low, c, corr)
    unknown = np.isnan(b)
    valid = np.isfinite(m) & (unknown | (diff >= MIN_DIFFERENCE_DB))
    corr = np.where(unknown, 0.0, np.where(valid, corr, np.nan))
    return np.where(valid, m + corr, np.nan), valid, corr


def gb12523_correct_one(measured_db: float, background_db: float) -> tuple[float, bool, float]:
    """`gb12523_correct` of one reading in plain Python arithmetic (the per-reading reference)."""
    if measured_db != measured_db:
        return float("nan"), False, float("nan")
    if background_db != background_db:
        return measured_db, True, 0.0
    diff = round(measured_db - background_db)   # Python rounds a half to even too
    if diff < MIN_DIFFERENCE_DB:
        return float("nan"), False, float("nan")
    corr = next(c for low, c in GB12523_TABLE if diff >= low)
    return measured_db + corr, True, corr


def site_background_db(cfg, sensors) -> np.ndarray:
    """The configured `background_db` of each sensor's site (NaN where none is configured)."""
    by_site = {s.id: s.background_db for s in cfg.sites}
    out = []
    for i in np.asarray(sensors):
        b = by_site.get(cfg.devices[int(i)].site)
        out.append(np.nan if b is None else float(b))
    return np.asarray(out, dtype=float)
