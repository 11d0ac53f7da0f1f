"""Table tests that pin the domain rules at their edges (domain.md §1, §2, §5)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detectors.calendar import Calendar, distance_m
from detectors.context import device_start_kpa
from detectors.registry import RuleSet
from detectors.rolling import energy_mean_db
from tests.unit.detectors.helpers import (
    EXAM_SITE,
    TEST_DEVICES,
    TEST_SITES,
    batch,
    local_ns,
    make_config,
    rows_of,
    series,
    small_config,
)

MIN = 60_000_000_000


def run(cfg, rows):
    return RuleSet.from_config(cfg).process(batch(rows, cfg))


# ----- time rules --------------------------------------------------------------------------------

@pytest.mark.parametrize("local, night", [
    ("2025-06-01 21:59:59", False), ("2025-06-01 22:00:00", True),
    ("2025-06-02 05:59:59", True), ("2025-06-02 06:00:00", False),
])
def test_day_night_edge(local, night):
    cfg = small_config([])
    f = Calendar(cfg).facts(np.array([1]), np.array([local_ns(local)]))
    assert bool(f.night[0]) is night


@pytest.mark.parametrize("local, lmax, expected", [
    ("2025-06-01 21:59:59", 80.0, []),          # still day: no night Lmax limit
    ("2025-06-01 22:00:00", 80.0, ["orange"]),  # night: 80 > 55 + 15
    ("2025-06-01 22:00:00", 70.0, []),          # at the limit is not above it
    ("2025-06-01 22:00:00", 85.0, ["red"]),     # at or above 85 is red
    ("2025-06-01 22:00:00", 84.9, ["orange"]),
])
def test_night_lmax_edges(local, lmax, expected):
    cfg = small_config([{"id": "N-night-max", "type": "noise_night_lmax"}])
    found = run(cfg, [("N-PLAIN", local_ns(local), {"leq": 50.0, "lmax": lmax})])
    assert [r["severity"] for r in found.records()] == expected


@pytest.mark.parametrize("local, permitted", [
    ("2025-05-31 23:00", False),   # before the first date
    ("2025-06-01 03:00", False),   # that night started on 05-31: not permitted
    ("2025-06-01 21:59", False),
    ("2025-06-01 22:00", True),    # the window starts at 22:00 on the first date ...
    ("2025-06-02 05:59", True),    # ... and runs into the next morning
    ("2025-06-02 06:00", False),
    ("2025-06-03 23:30", True),    # the last date a window starts
    ("2025-06-04 05:30", True),    # its morning part, on a date after `to`
    ("2025-06-04 22:30", False),
])
def test_permit_2200_to_0600_next_day(local, permitted):
    cfg = small_config([])  # P-SM-2025-0601: SM-2025-101, 06-01..06-03, 22:00-06:00
    cal = Calendar(cfg)
    f = cal.facts(np.array([cfg.device_index("N-PERMIT"), cfg.device_index("N-PLAIN")]), np.array([local_ns(local)] * 2))
    assert (cal.permit_id(int(f.permit[0])) == "P-SM-2025-0601") is permitted
    assert f.permit[1] == -1  # a permit is for its site only


def loud_night(device, start="2025-06-01 23:00", n=25, leq=62.0):
    return series(device, local_ns(start), [{"leq": leq, "lmax": leq + 10, "l90": leq - 20}] * n)


def test_permit_changes_the_rule_instead_of_muting_it():
    cfg = small_config([{"id": "N-prohibited", "type": "noise_prohibited"}, {"id": "N-night", "type": "noise_night_limit"}])
    found = run(cfg, loud_night("N-PERMIT") + loud_night("N-PLAIN"))
    permit = rows_of(found)
    by = {(r["sensor"], r["rule_id"]) for r in permit}
    p, q = cfg.device_index("N-PERMIT"), cfg.device_index("N-PLAIN")
    assert (p, "N-prohibited") not in by and (p, "N-night") in by      # judged against the night limit
    assert (q, "N-prohibited") in by and (q, "N-night") in by          # suspected illegal work
    night_rows = [r for r in permit if r["sensor"] == p and r["rule_id"] == "N-night"]
    assert {r["context"]["permit_id"] for r in night_rows} == {"P-SM-2025-0601"}
    assert {r["context"]["period"] for r in night_rows} == {"prohibited"}


def test_prohibited_noon_window_uses_background_plus_margin():
    cfg = small_config([{"id": "N-prohibited", "type": "noise_prohibited"}])
    quiet = series("N-PLAIN", local_ns("2025-06-05 11:00"), [{"leq": 52.0, "l90": 50.0}] * 60)
    # Background 50 -> limit max(50 + 10, 55) = 60: Leq5 of 59 passes, 61 is suspected illegal work.
    noon59 = series("N-PLAIN", local_ns("2025-06-05 12:01"), [{"leq": 59.0, "l90": 50.0}] * 10)
    assert rows_of(run(cfg, quiet + noon59)) == []
    noon61 = series("N-PLAIN", local_ns("2025-06-05 12:01"), [{"leq": 61.0, "l90": 50.0}] * 10)
    hits = rows_of(run(cfg, quiet + noon61))
    assert hits and {r["severity"] for r in hits} == {"orange"} and hits[0]["limit"] == pytest.approx(60.0)
    # The same noise at 11:50 is not in a prohibited window.
    late = series("N-PLAIN", local_ns("2025-06-05 14:31"), [{"leq": 61.0, "l90": 50.0}] * 10)
    assert rows_of(run(cfg, quiet[:30] + late)) == []


def test_rolling_leq_does_not_reach_back_across_22_00():
    cfg = small_config([{"id": "N-night", "type": "noise_night_limit"}])
    evening = series("N-PLAIN", local_ns("2025-06-05 21:01"), [{"leq": 68.0}] * 59)   # 21:01 .. 21:59
    night = series("N-PLAIN", local_ns("2025-06-05 22:00"), [{"leq": 45.0}] * 40)    # quiet after 22:00
    assert rows_of(run(cfg, evening + night)) == []


# ----- exam periods ------------------------------------------------------------------------------

METRES_PER_DEG_LAT = 6_371_008.8 * math.pi / 180


@pytest.mark.parametrize("metres, inside", [(299.0, True), (300.0 - 1e-6, True), (300.5, False), (301.0, False)])
def test_exam_radius_boundary(metres, inside):
    lat = EXAM_SITE[0] + metres / METRES_PER_DEG_LAT
    assert distance_m(lat, EXAM_SITE[1], *EXAM_SITE) == pytest.approx(metres, abs=1e-3)
    sites = TEST_SITES + [{"id": "EDGE", "name": "edge", "district": "Siming", "lat": lat, "lon": EXAM_SITE[1]}]
    devices = TEST_DEVICES + [{"id": "N-EDGE", "kind": "noise", "site": "EDGE", "report_interval_s": 60}]
    cfg = make_config(rules=[{"id": "N-exam", "type": "noise_exam"}], devices=devices, sites=sites)
    assert bool(Calendar(cfg).exam_near[cfg.device_index("N-EDGE")]) is inside
    # Exam day, 10:00: Leq20 of 58 passes class 2 (60) but fails class 1 (55) inside the radius only.
    found = run(cfg, series("N-EDGE", local_ns("2025-06-09 10:00"), [{"leq": 58.0, "l90": 45.0}] * 20))
    assert bool(rows_of(found)) is inside
    if inside:
        assert {r["context"]["exam_mode"] for r in rows_of(found)} == {"class1"}


def test_listening_test_window_is_red_above_background():
    cfg = small_config([{"id": "N-exam", "type": "noise_exam"}])
    calm = series("N-EXAM", local_ns("2025-06-08 14:00"), [{"leq": 44.0, "l90": 40.0}] * 44)  # to 14:43
    noisy = series("N-EXAM", local_ns("2025-06-08 14:46"), [{"leq": 46.0, "l90": 40.0}])    # > 40 + 5
    found = rows_of(run(cfg, calm + noisy))
    assert [(r["severity"], r["context"]["exam_mode"]) for r in found] == [("red", "listening")]


# ----- noise levels ------------------------------------------------------------------------------

def test_energy_average_of_60_and_70_is_67_4_not_65():
    assert energy_mean_db([60, 70]) == pytest.approx(67.4, abs=0.01)


def test_rolling_leq20_is_an_energy_average():
    cfg = small_config([{"id": "N-day", "type": "noise_day_limit"}],
                       noise={"overrides": [{"site": "HL-2025-102", "limits": {"day_db": 66}}]})
    rows = series("N-PLAIN", local_ns("2025-06-05 09:00"), [{"leq": 60.0 if i % 2 else 70.0} for i in range(20)])
    found = rows_of(run(cfg, rows))
    assert found, "an arithmetic mean (65) would stay under the 66 limit"
    assert found[-1]["value"] == pytest.approx(67.4, abs=0.01) and found[-1]["limit"] == 66


@pytest.mark.parametrize("leq, expected", [(70.0, None), (70.5, "yellow"), (75.0, "yellow"), (75.5, "orange")])
def test_day_limit_levels(leq, expected):
    cfg = small_config([{"id": "N-day", "type": "noise_day_limit"}])
    found = rows_of(run(cfg, series("N-PLAIN", local_ns("2025-06-05 09:00"), [{"leq": leq}] * 20)))
    assert (found[-1]["severity"] if found else None) == expected


def test_hysteresis_clears_only_2_db_below_the_limit():
    cfg = small_config([{"id": "N-pre", "type": "noise_pre_warning"}])
    # Day limit 70, pre-warning above 67; clears below 65.
    levels = [68.0] * 5 + [66.0] * 10 + [64.0] * 10
    found = rows_of(run(cfg, series("N-PLAIN", local_ns("2025-06-05 09:00"), [{"leq": x} for x in levels])))
    sev = [r["severity"] for r in found]
    assert sev[0] == "blue" and sev[-1] == "clear" and sev.count("clear") == 1


def test_bad_flags_for_15_minutes_are_a_data_quality_alert():
    cfg = small_config([{"id": "N-data", "type": "noise_data_quality"}])
    rows = series("N-PLAIN", local_ns("2025-06-05 09:01"), [{"leq": 50.0}] * 16, flag="D")
    found = rows_of(run(cfg, rows))
    assert [r["ts_ns"] for r in found] == [rows[14][1], rows[15][1]]  # 15 one-minute readings = 15 min
    assert found[0]["context"]["reason"] == "flag"


def test_hourly_valid_data_rate():
    cfg = small_config([{"id": "N-data", "type": "noise_data_quality"}])
    t0 = local_ns("2025-06-05 09:00")
    # 09:xx complete hour (first hour is partial and not judged) then 10:xx with 44 of 60 readings (73 %).
    rows = [("N-PLAIN", t0 + i * MIN, {"leq": 50.0}) for i in range(1, 61)]
    rows += [("N-PLAIN", t0 + (60 + i) * MIN, {"leq": 50.0}) for i in range(1, 61) if i <= 44]
    rows += [("N-PLAIN", t0 + (120 + i) * MIN, {"leq": 50.0}) for i in range(1, 61)]
    found = rows_of(run(cfg, rows))
    assert found[0]["ts_ns"] == t0 + 121 * MIN and found[0]["value"] == pytest.approx(44 / 60)


# ----- gas ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("set_kpa, start", [(2.5, 3.75), (79.0, 118.5), (100.0, 140.0), (300.0, 340.0), (600.0, 660.0)])
def test_protective_device_start_pressure(set_kpa, start):
    assert device_start_kpa(set_kpa) == pytest.approx(start)


GAS = [{"id": "G-high", "type": "gas_high"}, {"id": "G-highhigh", "type": "gas_highhigh"}, {"id": "G-low", "type": "gas_low"}]


@pytest.mark.parametrize("device, p, expected", [
    ("G-LOW", 3.0, set()), ("G-LOW", 3.001, {("G-high", "yellow")}),                 # 1.20 x 2.5 (low pressure)
    ("G-LOW", 3.501, {("G-high", "yellow"), ("G-highhigh", "red")}),                   # MOP 3.5 < 1.5 x 2.5
    ("G-MED", 330.0, set()), ("G-MED", 330.01, {("G-high", "yellow")}),              # 1.10 x 300 (medium)
    ("G-MED", 340.01, {("G-high", "yellow"), ("G-highhigh", "red")}),                 # min(MOP 400, 300 + 40)
    ("G-MED", 255.0, set()), ("G-MED", 254.99, {("G-low", "yellow")}),               # 0.85 x 300
    ("G-MED", 209.99, {("G-low", "orange")}), ("G-MED", 149.99, {("G-low", "red")}),  # 0.70, 0.50
])
def test_set_pressure_percentages(device, p, expected):
    cfg = small_config(GAS)
    found = rows_of(run(cfg, [(device, local_ns("2025-06-05 09:00"), {"p": p})]))
    assert {(r["rule_id"], r["severity"]) for r in found} == expected


def test_gas_hysteresis_is_2_percent_of_set_pressure():
    cfg = small_config(GAS[:1])
    found = rows_of(run(cfg, series("G-MED", local_ns("2025-06-05 09:00"), [{"p": x} for x in (331, 325, 324.5, 323.9)])))
    assert [r["severity"] for r in found] == ["yellow", "yellow", "yellow", "clear"]


def test_out_of_range_is_a_device_fault_not_a_process_alarm():
    cfg = small_config(GAS + [{"id": "G-range", "type": "gas_sensor_range"}])
    found = rows_of(run(cfg, [("G-MED", local_ns("2025-06-05 09:00"), {"p": 661.0}),     # > 1.1 x FS 600
                              ("G-MED", local_ns("2025-06-05 09:01"), {"p": 300.0})]))
    assert [(r["rule_id"], r["category"], r["severity"]) for r in found] == [
        ("G-range", "device", "yellow"), ("G-range", "device", "clear")]


@pytest.mark.parametrize("drops, expected", [
    ([300, 300, 300, 300, 300, 284], {"orange"}),        # 5.3 % within 5 min
    ([300, 300, 300, 300, 300, 286], set()),             # 4.7 %
    ([300] * 5 + [290, 280, 268], {"orange", "red"}),    # 10.7 % within 15 min
    ([300 - 1.5 * i for i in range(40)], set()),         # 0.5 %/min: never 5 % in 5 min nor 10 % in 15 min
])
def test_rupture_share_of_set_pressure_within_window(drops, expected):
    cfg = small_config([{"id": "G-rupture", "type": "gas_rupture"}])
    found = rows_of(run(cfg, series("G-MED", local_ns("2025-06-05 09:00"), [{"p": float(x)} for x in drops])))
    assert {r["severity"] for r in found if r["severity"] != "clear"} == expected


def test_slow_leak_cusum_is_silent_without_a_learned_profile():
    # G-leak runs only against the learned time-of-week profile (tests/unit/detectors/test_gas_profile.py).
    cfg = small_config([{"id": "G-leak", "type": "gas_leak_cusum"}])
    steady = [300.0 + (0.5 if i % 2 else -0.5) for i in range(120)]
    leak = [300.0 - 0.1 * i for i in range(1, 121)]   # -2 %/h on a 300 kPa main
    assert rows_of(run(cfg, series("G-MED", local_ns("2025-06-05 01:00"), [{"p": x} for x in steady + leak]))) == []


@pytest.mark.parametrize("mode, expected", [
    ("hold", ["yellow", "yellow", "clear"]),    # S: 1.5, 3.0, 4.5 (alarm), 1.0 (held), 0 (clear)
    ("reset", ["yellow", "clear"]),             # S restarts at 0 after the alarm row
])
def test_cusum_reset(mode, expected):
    rule = {"id": "C", "type": "cusum", "field": "v", "target": 0.0, "sigma": 1.0, "k": 0.5, "h": 4.0,
            "direction": "down", "after_alarm": mode, "warmup": 2}
    cfg = small_config([rule])
    vals = [0.0, 0.0, -2.0, -2.0, -2.0, 3.0, 3.0, 0.0]
    found = rows_of(run(cfg, series("G-MED", local_ns("2025-06-05 09:00"), [{"v": x} for x in vals])))
    assert [r["severity"] for r in found] == expected
    assert found[0]["value"] == pytest.approx(4.5)


def test_cusum_statistic_never_goes_below_zero():
    rule = {"id": "C", "type": "cusum", "field": "v", "target": 0.0, "sigma": 1.0, "k": 0.5, "h": 4.0,
            "direction": "down", "warmup": 2}
    cfg = small_config([rule])
    vals = [0.0, 0.0] + [5.0] * 10 + [-2.0] * 3   # a long positive run must not bank credit
    found = rows_of(run(cfg, series("G-MED", local_ns("2025-06-05 09:00"), [{"v": x} for x in vals])))
    assert [r["severity"] for r in found] == ["yellow"] and found[0]["ts_ns"] == local_ns("2025-06-05 09:14")


@pytest.mark.parametrize("volts, expected", [(3.31, None), (3.29, "yellow"), (3.1, "yellow"), (3.09, "orange")])
def test_battery_levels(volts, expected):
    cfg = small_config([{"id": "Batt", "type": "battery"}])
    found = rows_of(run(cfg, [("G-LOW", local_ns("2025-06-05 09:00"), {"batt_v": volts})]))
    assert (found[0]["severity"] if found else None) == expected


# ----- deadman -----------------------------------------------------------------------------------

def test_deadman_counts_never_reported_devices_and_clears_on_data():
    cfg = small_config([{"id": "Offline", "type": "deadman"}])
    rs = RuleSet.from_config(cfg)
    t0 = local_ns("2025-06-05 09:00")
    rs.process(batch([("N-PLAIN", t0, {"leq": 50.0})], cfg))
    # Noise: 2 x 60 s + 300 s = 420 s. Gas: 2 x 900 s + 300 s = 2100 s.
    assert rows_of(rs.advance(t0 + 420 * 10**9)) == []
    late = rows_of(rs.advance(t0 + 421 * 10**9))
    ids = {cfg.devices[r["sensor"]].id for r in late}
    assert ids == {"N-PLAIN", "N-PERMIT", "N-EXAM"}
    assert {r["context"]["never_reported"] for r in late if cfg.devices[r["sensor"]].id != "N-PLAIN"} == {True}
    day = rows_of(rs.advance(t0 + 86401 * 10**9))
    assert {r["severity"] for r in day} == {"orange"} and len(day) == 5
    back = rows_of(rs.process(batch([("N-PLAIN", t0 + 86402 * 10**9, {"leq": 50.0})], cfg)))
    assert [(r["rule_id"], r["severity"]) for r in back] == [("Offline", "clear")]
