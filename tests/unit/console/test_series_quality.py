"""The device page's gas profile band, battery and data-quality series (issue 11 item 3): the band is the
detectors' own learned `GasProfile`, restored from the state snapshot the service writes; battery levels are
the battery rule's; data quality counts what N-data counts and marks the silences Offline would call offline.
Pure logic and files: no servers."""

from __future__ import annotations

import numpy as np
import pytest

from console.series import LearnedRules, battery_series, data_quality, profile_band
from detectors import snapshot
from detectors.context import Round
from detectors.gas import GasProfile
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import TEST_DEVICES, TEST_SITES, batch, local_ns, make_config

NS = 1_000_000_000
RULES = [{"id": "G-leak", "type": "gas_leak_cusum", "kind": "gas"},
         {"id": "Batt", "type": "battery", "kind": "gas"},
         {"id": "N-data", "type": "noise_data_quality", "kind": "noise"},
         {"id": "Offline", "type": "deadman", "kind": "any"}]


# G-MED sampling every 5 minutes: a week to learn from in 2,016 readings rather than 10,080 (what the band is
# checked against does not depend on the cadence; an hour counts as learned from its interval's worth).
PROFILE_DEVICES = [dict(d, sample_interval_s=300) if d["id"] == "G-MED" else d for d in TEST_DEVICES]


def _cfg(tmp_path, devices=TEST_DEVICES):
    return make_config(rules=RULES, devices=devices, sites=TEST_SITES,
                       alerting={"detector_state_path": str(tmp_path / "state.npz")},
                       gas={"profile": {"min_weeks": 1}})


def _demand(local_hour: np.ndarray) -> np.ndarray:
    """A medium-A main's daily sag: 300 kPa, 8 kPa lower around 08:00 and 18:30 (domain.md G1)."""
    return 300.0 - 8.0 * np.exp(-((local_hour - 8.0) ** 2) / 2.0) - 8.0 * np.exp(-((local_hour - 18.5) ** 2) / 2.0)


def _learn_week(cfg, start: str, step_s: int) -> RuleSet:
    rules = RuleSet.from_config(cfg)
    t0 = local_ns(start)
    ts = t0 + np.arange(1, 7 * 86400 // step_s + 1, dtype=np.int64) * step_s * NS
    hour = ((ts - t0) / NS / 3600.0) % 24.0
    rng = np.random.default_rng(7)
    p = _demand(hour) + rng.normal(0, 0.3, len(ts))
    rows = [("G-MED", int(t), {"p": float(v), "batt_v": 3.6}, None) for t, v in zip(ts, p, strict=True)]
    for a in range(0, len(rows), 2000):
        rules.process(batch(rows[a:a + 2000], cfg))
    return rules


def test_profile_band_is_the_detectors_learned_profile_from_the_snapshot(tmp_path):
    cfg = _cfg(tmp_path, PROFILE_DEVICES)
    i = cfg.device_index("G-MED")
    t0, t1 = local_ns("2026-03-16 06:00"), local_ns("2026-03-16 21:00")
    # before the service saved any state: no band, and the page is told why
    empty = profile_band(LearnedRules(cfg), i, t0, t1)
    assert all(v is None for v in empty["p_kpa"]) and "no detector state" in empty["error"]

    live = _learn_week(cfg, "2026-03-09 00:00", 300)   # Monday to Monday
    snapshot.save(live, tmp_path / "state.npz")
    band = profile_band(LearnedRules(cfg), i, t0, t1)
    assert band["error"] is None and band["learned_hours"] == 168 and band["saved_ms"] is not None
    ts = np.array(band["t_ms"], np.int64) * 1_000_000
    assert len(ts) == 15 * 60 + 1
    # the values the live detectors judge with, at the same instants
    prof = next(c for c in live.components if isinstance(c, GasProfile))
    rnd = Round(np.full(len(ts), i, np.int32), ts, None, np.zeros(len(ts), np.int8), live.inv.calendar, once=False)
    expect, learned = prof.baseline(rnd.view(prof.group))
    assert learned.all()
    assert band["p_kpa"] == pytest.approx(np.round(expect, 2).tolist(), abs=0.006)
    # ... which follow the demand the week had: the 08:00 and 18:30 sags, flat at noon
    hour = (ts - t0) / NS / 3600.0 + 6.0
    assert np.max(np.abs(np.array(band["p_kpa"]) - _demand(hour))) < 1.0
    # the band is G-leak's: profile -/+ k sigma, sigma never below its floor (0.6 % of 300 kPa)
    assert band["k_sigma"] == 0.5 and band["sigma_kpa"] >= 1.8 - 1e-9
    half = band["k_sigma"] * band["sigma_kpa"]
    assert np.allclose(np.array(band["p_kpa"]) - np.array(band["lo_kpa"]), half, atol=0.011)
    assert np.allclose(np.array(band["hi_kpa"]) - np.array(band["p_kpa"]), half, atol=0.011)

    # a changed set pressure means another profile: the snapshot is not restored for that device
    moved = [dict(d, set_pressure_kpa=290.0) if d["id"] == "G-MED" else d for d in PROFILE_DEVICES]
    cfg2 = make_config(rules=RULES, devices=moved, sites=TEST_SITES,
                       alerting={"detector_state_path": str(tmp_path / "state.npz")}, gas={"profile": {"min_weeks": 1}})
    other = profile_band(LearnedRules(cfg2), i, t0, t1)
    assert other["learned_hours"] == 0 and all(v is None for v in other["p_kpa"])


def test_learned_rules_reload_when_the_service_writes_a_new_snapshot(tmp_path):
    cfg = _cfg(tmp_path)
    learned = LearnedRules(cfg)
    first = learned.get()
    assert first[1] is None and learned.get()[0] is first[0]      # built once while nothing changes
    snapshot.save(RuleSet.from_config(cfg), tmp_path / "state.npz")
    second = learned.get()
    assert second[0] is not first[0] and second[1] is not None and second[2] is None
    (tmp_path / "state.npz").write_bytes(b"not a snapshot")
    broken = learned.get()
    assert "truncated or corrupt" in broken[2]


def test_battery_keeps_each_minutes_lowest_reading_and_the_rules_levels(tmp_path):
    cfg = _cfg(tmp_path)
    rules = RuleSet.from_config(cfg)
    t0 = local_ns("2026-03-10 09:00")
    ts = t0 + np.array([10, 40, 70, 100, 130], np.int64) * NS
    v = np.array([3.41, 3.22, np.nan, 3.40, 3.39])      # a transmit dip at 40 s
    b = battery_series(rules, cfg.device_index("G-MED"), ts, v)
    assert b["t_ms"] == [(t0 + 60 * NS) // 1_000_000, (t0 + 120 * NS) // 1_000_000, (t0 + 180 * NS) // 1_000_000]
    assert b["v"] == [3.22, 3.4, 3.39]
    assert (b["rule"], b["yellow_v"], b["orange_v"], b["hysteresis_v"]) == ("Batt", 3.3, 3.1, 0.3)
    # the shipped rules run Batt on gas devices only: a noise monitor has no battery level to draw
    nb = battery_series(rules, cfg.device_index("N-PLAIN"), ts[:0], v[:0])
    assert nb["rule"] is None and nb["v"] == []


def test_data_quality_counts_readings_per_hour_like_n_data_and_marks_offline_silences(tmp_path):
    cfg = _cfg(tmp_path)
    rules = RuleSet.from_config(cfg)
    i = cfg.device_index("N-PLAIN")                      # one reading a minute: 60 an hour
    h0 = local_ns("2026-03-10 09:00")
    minutes = np.r_[np.arange(1, 61), np.arange(1, 21) + 60, np.arange(41, 61) + 60, np.arange(1, 31) + 120]
    ts = h0 + minutes.astype(np.int64) * 60 * NS
    valid = np.ones(len(ts), bool)
    valid[:6] = False                                    # six readings flagged other than N in the first hour
    now = h0 + (150 * 60 + 30) * NS                      # 11:30:30
    q = data_quality(rules, i, ts, valid, h0 + 30 * 60 * NS, now)
    assert q["t_ms"] == [(h0 + k * 3600 * NS) // 1_000_000 for k in range(3)]
    assert q["received"] == [60, 40, 30] and q["valid"] == [54, 40, 30]
    assert q["expected"][:2] == [60.0, 60.0] and q["partial"] == [False, False, True]
    assert q["expected"][2] == pytest.approx(60 * (30.5 / 60), abs=0.01)
    assert q["vdr"][:2] == [0.9, round(40 / 60, 3)]
    assert (q["rule"], q["min_vdr"]) == ("N-data", 0.75)
    # the 20-minute silence (10:20 to 10:41) is longer than Offline's 2 x 60 s + 300 s; none still going on
    assert q["gap_rule"] == "Offline" and q["gap_after_s"] == 420.0
    assert [(g["from_ms"], g["to_ms"], g["open"]) for g in q["gaps"]] == [
        ((h0 + 80 * 60 * NS) // 1_000_000, (h0 + 101 * 60 * NS) // 1_000_000, False)]
    # the device goes silent: a gap open at the end of the range
    later = h0 + (150 + 30) * 60 * NS
    q2 = data_quality(rules, i, ts, valid, h0, later)
    assert q2["gaps"][-1]["open"] and q2["gaps"][-1]["to_ms"] == later // 1_000_000
    # a gas device outside N-data: one reading per sample interval is what its hour should hold
    g = data_quality(rules, cfg.device_index("G-MED"), ts[:0], valid[:0], h0, h0 + 3600 * NS)
    assert g["rule"] is None and g["expected"] == [60.0] and g["received"] == [0]
    assert g["gaps"] == [{"from_ms": h0 // 1_000_000, "to_ms": (h0 + 3600 * NS) // 1_000_000, "open": True}]
