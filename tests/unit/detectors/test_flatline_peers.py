"""G-flatline fires only where the sensor should have varied: a frozen sensor among varying peers, not one
whose peers are steady too; by its learned time-of-week profile where it has no peers; the flat window
alone where nothing is known. Vectorized == reference, and any split of the feed in event-time order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import Detections
from detectors.gas_flatline import peer_groups, peer_lag
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import batch, local_ns, make_config, rows_of
from tests.unit.detectors.reference import ReferenceRuleSet

SITES = [
    {"id": "GS-1", "name": "station 1", "district": "Huli", "lat": 24.5, "lon": 118.1, "kind": "gas_network"},
    {"id": "GS-2", "name": "station 2", "district": "Huli", "lat": 24.51, "lon": 118.1, "kind": "gas_network"},
    {"id": "GS-3", "name": "station 3", "district": "Siming", "lat": 24.45, "lon": 118.08, "kind": "gas_network"},
]
MIN = 60 * 10**9


def medium(id_: str, site: str = "GS-1", sample_s: int = 60) -> dict:
    return {"id": id_, "kind": "gas", "site": site, "report_interval_s": 900, "sample_interval_s": sample_s,
            "pressure_class": "medium_a", "set_pressure_kpa": 300.0, "mop_kpa": 400.0, "full_scale_kpa": 600.0}


def config(devices, **flatline):
    return make_config(rules=[{"id": "G-flatline", "type": "gas_flatline"}], devices=devices, sites=SITES,
                       gas={"flatline": flatline} if flatline else {})


def wave(n: int, amp_pct: float, phase: float = 0.0) -> np.ndarray:
    """A 300 kPa main swinging by amp_pct % of set pressure over a 3-hour period."""
    return 300.0 * (1 + amp_pct / 100.0 * np.sin(np.arange(n) * 2 * np.pi / 180 + phase))


def feed(series: dict[str, np.ndarray], start: str = "2025-06-03 06:00", step_s: int = 60) -> list[tuple]:
    t0 = local_ns(start)
    return [(dev, t0 + i * step_s * 10**9, {"p": float(v)}) for dev, vals in series.items() for i, v in enumerate(vals)]


def run(cfg, rows, cuts=()):
    """Detections of the rows in one batch, or split in event-time order at the given fractions."""
    rs = RuleSet.from_config(cfg)
    if not cuts:
        return rs.process(batch(rows, cfg))
    ordered = sorted(rows, key=lambda r: r[1])
    ks = [0] + [int(c * len(ordered)) for c in cuts] + [len(ordered)]
    return Detections.concat([rs.process(batch(ordered[a:b], cfg)) for a, b in zip(ks[:-1], ks[1:])])


KEYS = ("basis", "peers", "peer_change_pct", "profile_swing_pct", "stuck_value")


def same(a: Detections, b: Detections) -> None:
    ra, rb = rows_of(a), rows_of(b)
    assert [(r["sensor"], r["ts_ns"], r["severity"]) for r in ra] == [(r["sensor"], r["ts_ns"], r["severity"]) for r in rb]
    for x, y in zip(ra, rb):
        assert np.isclose(x["value"], y["value"]) and np.isclose(x["score"], y["score"])
        cx, cy = x["context"], y["context"]
        assert set(cx) == set(cy), (cx, cy)
        for k in KEYS:
            if isinstance(cx.get(k), float):
                assert cx[k] == pytest.approx(cy[k], rel=1e-9), (k, cx, cy)
            else:
                assert cx.get(k) == cy.get(k), (k, cx, cy)


# ----- table tests ----------------------------------------------------------------------------------

def test_a_frozen_sensor_among_varying_peers_is_flagged_by_peers():
    cfg = config([medium("G-A"), medium("G-B"), medium("G-C"), medium("G-D")])
    n = 240
    rows = feed({"G-A": np.full(n, 297.5), "G-B": wave(n, 3), "G-C": wave(n, 2.5, 0.4), "G-D": wave(n, 4, 1.0)})
    found = run(cfg, rows)
    a = [r for r in rows_of(found) if r["sensor"] == 0]
    assert a, "the frozen sensor is flagged"
    assert all(r["severity"] == "yellow" for r in a)
    # First at 2 h after its first reading, then at every reading.
    assert a[0]["ts_ns"] == local_ns("2025-06-03 08:00") and len(a) == n - 120
    assert {r["context"]["basis"] for r in a} == {"peers"}
    assert all(r["context"]["peers"] == 3 and r["context"]["peer_change_pct"] > 1.0 for r in a)
    assert a[0]["context"]["stuck_value"] == 297.5
    assert not [r for r in rows_of(found) if r["sensor"] != 0], "the varying peers are not"
    same(found, ReferenceRuleSet(cfg).process(batch(rows, cfg)))


def test_a_frozen_sensor_whose_peers_are_steady_too_is_not_flagged():
    """A regulator outlet at night: the whole site is steady (peers move by 0.4 % of set pressure)."""
    cfg = config([medium("G-A"), medium("G-B"), medium("G-C"), medium("G-D")])
    n = 240
    rows = feed({"G-A": np.full(n, 297.5), "G-B": wave(n, 0.2), "G-C": wave(n, 0.15, 0.4), "G-D": np.full(n, 301.0)},
                start="2025-06-03 01:00")
    found = run(cfg, rows)
    assert len(found) == 0
    assert len(ReferenceRuleSet(cfg).process(batch(rows, cfg))) == 0


def test_peers_that_start_varying_raise_it_and_stopping_clears_it():
    cfg = config([medium("G-A"), medium("G-B"), medium("G-C")])
    n = 480
    moving = np.r_[np.full(180, 300.0), wave(150, 3), np.full(150, 300.0)]
    rows = feed({"G-A": np.full(n, 298.0), "G-B": moving, "G-C": moving + 1.0}, start="2025-06-03 04:00")
    found = run(cfg, rows)
    a = rows_of(found)
    assert a and all(r["sensor"] == 0 for r in a)
    raised = [r for r in a if r["severity"] == "yellow"]
    # The peers move from 07:00; their window reads whole 15-minute slots before the reading's own but for
    # the last two (peers report every 15 min, plus 60 s on the way: 16 min, two slots), so 07:45.
    assert raised[0]["ts_ns"] == local_ns("2025-06-03 07:45") and raised[0]["context"]["basis"] == "peers"
    assert a[-1]["severity"] != "yellow" and a[-1]["context"]["basis"] == "peers"   # steady again: cleared
    same(found, ReferenceRuleSet(cfg).process(batch(rows, cfg)))


def test_a_single_sensor_without_peers_or_profile_is_flagged_on_the_window_only():
    cfg = config([medium("G-A")])
    rows = feed({"G-A": np.full(150, 297.5)})
    a = rows_of(run(cfg, rows))
    assert len(a) == 30 and {r["context"]["basis"] for r in a} == {"window_only"}
    assert "peers" not in a[0]["context"] and "profile_swing_pct" not in a[0]["context"]


def test_too_few_peers_reporting_falls_back_to_the_window():
    """Peers exist in the inventory, but only one of them has readings in the window (min_peers 2)."""
    cfg = config([medium("G-A"), medium("G-B"), medium("G-C")])
    rows = feed({"G-A": np.full(150, 297.5), "G-B": wave(150, 0.1)})
    a = rows_of(run(cfg, rows))
    assert a and {r["context"]["basis"] for r in a} == {"window_only"}
    assert a[0]["context"]["peers"] == 1


def test_peer_groups_narrowest_scope_with_enough_peers():
    devices = [medium("A1", "GS-1"), medium("A2", "GS-1"), medium("A3", "GS-1"), medium("B1", "GS-2"),
               medium("C1", "GS-3"), dict(medium("L1", "GS-1"), pressure_class="low", set_pressure_kpa=2.5,
                                          mop_kpa=3.5, full_scale_kpa=10.0)]
    cfg = config(devices)
    sensors = np.arange(len(devices))
    group, members, start = peer_groups(cfg, sensors, ["site", "district", "class"], 2)

    def peers(i):
        g = group[i]
        return sorted(devices[m]["id"] for m in members[start[g]:start[g + 1]] if m != i) if g >= 0 else None

    assert peers(0) == ["A2", "A3"]                 # its site has two more
    assert peers(3) == ["A1", "A2", "A3"]           # alone at GS-2: the district (Huli)
    assert peers(4) == ["A1", "A2", "A3", "B1"]     # alone in Siming: the whole medium_a class
    assert peers(5) is None                         # the only low-pressure sensor
    group, _, _ = peer_groups(cfg, sensors, ["site"], 2)
    assert group[3] == -1
    group, _, _ = peer_groups(cfg, sensors, [], 2)
    assert (group == -1).all()


def test_peer_scopes_must_not_repeat():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="must not repeat a scope"):
        config([medium("G-A")], peer_scopes=["site", "site"])
    with pytest.raises(ValidationError):
        config([medium("G-A")], peer_scopes=["street"])


# ----- profile basis --------------------------------------------------------------------------------

STEP = 300


def demand(n: int, seed: int) -> np.ndarray:
    """A 300 kPa main with a morning peak sagging 6 % (07-09) and a flat night, plus 0.2 kPa noise."""
    h = (np.arange(n) * STEP / 3600.0) % 24
    return 300.0 - 18.0 * np.exp(-0.5 * ((h - 8.0) / 0.7) ** 2) + np.random.default_rng(seed).normal(0, 0.2, n)


@pytest.fixture(scope="module")
def learned_week():
    """One sensor, no peers, a week of normal demand (profile learned, min_weeks 1), then frozen twice on
    the eighth day: 01:00-05:00 (a steady night) and 06:00-11:00 (across the morning peak)."""
    cfg = make_config(rules=[{"id": "G-flatline", "type": "gas_flatline"}], devices=[medium("G-A", sample_s=STEP)],
                      sites=SITES, gas={"profile": {"min_weeks": 1}})
    day = 86400 // STEP
    p = demand(8 * day, 5)
    h = (np.arange(len(p)) * STEP / 3600.0) % 24
    last = np.arange(len(p)) >= 7 * day
    p[last & (h >= 1) & (h < 5)] = 299.9
    p[last & (h >= 6) & (h < 11)] = 291.3
    rows = feed({"G-A": p}, start="2025-06-02 00:00", step_s=STEP)
    return cfg, rows


def test_profile_basis_flags_a_freeze_across_the_peak_not_in_the_steady_night(learned_week):
    cfg, rows = learned_week
    found = run(cfg, rows)
    raised = [r for r in rows_of(found) if r["severity"] == "yellow"]
    assert raised
    assert {r["context"]["basis"] for r in raised} == {"profile"}
    assert all(r["context"]["profile_swing_pct"] > 1.0 for r in raised)
    day8 = local_ns("2025-06-09 00:00")
    # Frozen at night from 01:00: flat for 2 h from 03:00, but the profile says the night is steady.
    assert not [r for r in raised if r["ts_ns"] < day8 + 6 * 3600 * 10**9]
    # Frozen from 06:00: 2 h flat at 08:00, in the peak.
    assert raised[0]["ts_ns"] == day8 + 8 * 3600 * 10**9
    # The first week (profile not learned, nothing frozen) raises nothing.
    assert all(r["ts_ns"] >= day8 for r in rows_of(found))


def test_profile_basis_matches_reference_and_any_split(learned_week):
    cfg, rows = learned_week
    whole = run(cfg, rows)
    same(whole, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    same(whole, run(cfg, rows, cuts=(0.5, 0.9, 0.93, 0.97)))


# ----- batch splits ---------------------------------------------------------------------------------

CASES = {
    "peers vary": ({"G-A": np.full(240, 297.5), "G-B": wave(240, 3), "G-C": wave(240, 2.5, 0.4)}, "06:00"),
    "peers flat": ({"G-A": np.full(240, 297.5), "G-B": wave(240, 0.2), "G-C": np.full(240, 301.0)}, "01:00"),
    "alone": ({"G-A": np.full(240, 297.5)}, "06:00"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("cuts", [(0.5,), (0.1, 0.37, 0.62, 0.9), tuple(np.linspace(0.02, 0.98, 40))])
def test_batch_split_in_event_time_gives_the_same_detections(case, cuts):
    series, at = CASES[case]
    cfg = config([medium(d) for d in ("G-A", "G-B", "G-C")])
    rows = feed(series, start=f"2025-06-03 {at}")
    whole = run(cfg, rows)
    same(whole, run(cfg, rows, cuts=cuts))
    same(whole, ReferenceRuleSet(cfg).process(batch(rows, cfg)))


def test_a_peer_whose_rows_come_later_in_the_batch_counts_as_if_in_time_order():
    """In one batch the rule set evaluates by rank within each sensor; a sensor with few readings (the
    frozen one, reporting its 2 h at once) must still see every peer reading that is earlier in time."""
    cfg = config([medium("G-A"), medium("G-B"), medium("G-C")])
    sparse = feed({"G-A": np.full(9, 297.5)}, step_s=900)                      # 06:00 .. 08:00 every 15 min
    dense = feed({"G-B": wave(121, 3), "G-C": wave(121, 2, 0.3)})              # every minute
    found = run(cfg, sparse + dense)
    a = rows_of(found)
    assert [r["ts_ns"] for r in a] == [local_ns("2025-06-03 08:00")]
    assert a[0]["context"]["basis"] == "peers" and a[0]["context"]["peers"] == 2
    same(found, run(cfg, dense + sparse[::-1][::-1]))
    same(found, run(cfg, sparse + dense, cuts=(0.3, 0.8)))


def test_peer_lag_is_the_peers_longest_report_interval_plus_latency_in_whole_slots():
    report = np.array([900, 900, 3600, 900, 300, 900])
    group = np.array([0, 0, 0, 1, 1, -1])               # two peer groups; the last sensor has no peers
    members, mstart = np.array([0, 1, 2, 3, 4]), np.array([0, 3, 5])
    # Sensors 0 and 1 have an hourly peer: 3600 + 60 s = 4.07 slots of 900 s -> 5; sensor 2 is the hourly
    # one, its peers report every 15 min: 960 s -> 2; sensor 3's peer every 5 min: 1; sensor 4's: 2.
    assert peer_lag(report, group, members, mstart, 60, 900, 8).tolist() == [5, 5, 2, 1, 2, 0]
    assert peer_lag(report, group, members, mstart, 0, 900, 8).tolist() == [4, 4, 1, 1, 1, 0]
    # Two sensors share the longest interval: each has the other as a peer.
    assert peer_lag(np.array([3600, 3600, 900]), np.zeros(3, int), np.arange(3), np.array([0, 3]), 60, 900, 8).tolist() \
        == [5, 5, 5]
    # A peer reporting once a day: the window keeps its first slot.
    assert peer_lag(np.array([86400, 900]), np.zeros(2, int), np.arange(2), np.array([0, 2]), 60, 900, 8).tolist() == [2, 7]


def reports(series: dict[str, np.ndarray], first: str, start: str = "2025-06-03 06:00", step_s: int = 300,
            every_s: int = 3600) -> list[list[tuple]]:
    """The readings as the devices send them: a report every `every_s` carries the samples since the
    previous one; at each report time the devices publish in turn, `first` before its peers."""
    rows = feed(series, start=start, step_s=step_s)
    t0 = local_ns(start)
    by_report: dict[tuple[int, int], list[tuple]] = {}
    order = [first] + [d for d in series if d != first]
    for r in rows:
        n = -(-(r[1] - t0) // (every_s * 10**9))
        by_report.setdefault((n, order.index(r[0])), []).append(r)
    return [by_report[k] for k in sorted(by_report)]


@pytest.mark.parametrize("first", ["G-A", "G-B"])
def test_hourly_reports_arriving_in_any_order_and_batches_give_the_same_verdicts(first):
    """Regression: devices report an hour of samples at once, all at the same minute. When the frozen
    sensor's report came in a batch before its peers', its readings were judged against peers whose last
    hour had not arrived yet; in the same batch, against the whole hour. The paced and the fast replay of
    the city day raised different G-flatline alerts (CI, test_simulate_pipeline). Now the peers' window
    leaves out the slots their reports may still be on the way for, wherever the batches are cut."""
    devs = [dict(medium(d, sample_s=300), report_interval_s=3600) for d in ("G-A", "G-B", "G-C")]
    cfg = config(devs)
    n = 12 * 8
    rows_by_report = reports({"G-A": np.full(n, 297.5), "G-B": wave(n, 12, 0.5), "G-C": wave(n, 10, 1.2)}, first)
    whole = run(cfg, [r for rep in rows_by_report for r in rep])
    found = rows_of(whole)
    assert found and {r["sensor"] for r in found} == {0}
    assert {r["context"]["basis"] for r in found} == {"peers"}
    rs = RuleSet.from_config(cfg)
    one_by_one = Detections.concat([rs.process(batch(rep, cfg)) for rep in rows_by_report])
    same(whole, one_by_one)
    ordered = sorted((r for rep in rows_by_report for r in rep), key=lambda r: r[1])
    same(whole, ReferenceRuleSet(cfg).process(batch(ordered, cfg)))


# ----- property: vectorized == reference, any split ---------------------------------------------------

@st.composite
def peer_feeds(draw):
    start = local_ns("2025-06-03 06:00")
    rows = []
    for dev in draw(st.lists(st.sampled_from(["G-A", "G-B", "G-C", "G-D", "G-E"]), min_size=1, max_size=5, unique=True)):
        n = draw(st.integers(0, 40))
        t = start + draw(st.sampled_from([0, 60, 420])) * 10**9
        v = 300.0
        for _ in range(n):
            t += draw(st.sampled_from([60, 300, 600, 900])) * 10**9
            if draw(st.integers(0, 3)) == 0:
                v = 300.0 + draw(st.sampled_from([-9.0, -4.5, -1.0, 0.5, 2.0, 6.0]))
            q = draw(st.sampled_from([None, None, None, None, "D"]))
            rows.append((dev, t, {"p": v}, q))
    return rows


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows=peer_feeds(), cut=st.floats(0, 1), cut2=st.floats(0, 1))
def test_property_vectorized_equals_reference_and_any_split(rows, cut, cut2):
    # Report intervals differ, so each sensor's lag is its peers' longest (G-B: 1 h, G-D: 5 min).
    devices = [medium("G-A"), dict(medium("G-B"), report_interval_s=3600), medium("G-C", "GS-2"),
               dict(medium("G-D", "GS-2"), report_interval_s=300), medium("G-E", "GS-3")]
    cfg = make_config(rules=[{"id": "G-flatline", "type": "gas_flatline", "window_s": 3600}], devices=devices,
                      sites=SITES, gas={"flatline": {"min_peers": 1}})
    whole = RuleSet.from_config(cfg).process(batch(rows, cfg))
    same(whole, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    same(whole, run(cfg, rows, cuts=tuple(sorted((cut, cut2)))))


def test_config_errors_name_the_file_line_and_key(tmp_path):
    import shutil
    from pathlib import Path

    from config import load_config
    from config.errors import ConfigError

    for f in Path("config").glob("*.yaml"):
        shutil.copy(f, tmp_path / f.name)
    path = tmp_path / "thresholds.yaml"
    text = path.read_text()
    path.write_text(text.replace("peer_scopes: [site, district, class]", "peer_scopes: [site, site]")
                        .replace("min_peers: 2 ", "min_peers: 0 "))
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path)
    lines = str(err.value).splitlines()
    at = 1 + next(i for i, ln in enumerate(path.read_text().splitlines()) if "peer_scopes:" in ln)
    assert any(ln.endswith(f"thresholds.yaml:{at}: gas.flatline.peer_scopes: must not repeat a scope (got ['site', 'site'])")
               for ln in lines), lines
    assert any("gas.flatline.min_peers:" in ln and "(got 0)" in ln for ln in lines), lines
