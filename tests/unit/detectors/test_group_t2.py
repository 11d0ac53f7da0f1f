"""group_t2 (issue 16, item 1): T^2 over a group of related devices aligned by event-time bucket: a
device that leaves its group is caught and named, missing members are judged honestly, buckets close
when complete or at the watermark, and any split in event-time order gives the findings of one batch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.errors import ConfigError
from core import Detections
from detectors.group import build_groups
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import TEST_SITES, batch, local_ns, make_config, rows_of
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same

START = local_ns("2025-06-05 10:00")
MIN = 60 * 10**9
# A site of three monitors (they share the construction schedule), a lone monitor elsewhere, and two
# low-pressure gas sensors and one medium one in the Huli district.
DEVICES = [
    {"id": "N-A", "kind": "noise", "site": "SM-2025-101", "report_interval_s": 60},
    {"id": "N-B", "kind": "noise", "site": "SM-2025-101", "report_interval_s": 60},
    {"id": "N-C", "kind": "noise", "site": "SM-2025-101", "report_interval_s": 60},
    {"id": "N-LONE", "kind": "noise", "site": "HL-2025-102", "report_interval_s": 60},
    {"id": "G-1", "kind": "gas", "site": "GS-1", "report_interval_s": 60, "pressure_class": "low",
     "set_pressure_kpa": 2.5, "mop_kpa": 3.5, "full_scale_kpa": 10.0},
    {"id": "G-2", "kind": "gas", "site": "HL-2025-102", "report_interval_s": 60, "pressure_class": "low",
     "set_pressure_kpa": 2.5, "mop_kpa": 3.5, "full_scale_kpa": 10.0},
    {"id": "G-M", "kind": "gas", "site": "GS-1", "report_interval_s": 60, "pressure_class": "medium_a",
     "set_pressure_kpa": 300.0, "mop_kpa": 400.0, "full_scale_kpa": 600.0},
]
RULE = {"id": "GT", "type": "group_t2", "kind": "noise", "field": "leq", "group_by": "site"}
SITE = ("N-A", "N-B", "N-C")


def config(rule=RULE, devices=DEVICES):
    return make_config(rules=[rule], devices=devices, sites=TEST_SITES)


def minutes(n: int, seed: int = 1) -> dict[str, np.ndarray]:
    """Each monitor's Leq: the site's common level (the work schedule) plus its own small noise."""
    rng = np.random.default_rng(seed)
    common = 60.0 + 6.0 * np.sin(np.arange(n) / 30.0) + rng.normal(0, 2.0, n)
    return {d: common + off + rng.normal(0, 0.8, n) for d, off in zip(SITE, (0.0, -3.0, 2.0))}


def rows_for(values: dict[str, np.ndarray], field="leq"):
    return [(d, START + i * MIN, {field: float(v[i])}, None) for i in range(len(next(iter(values.values()))))
            for d, v in values.items()]


def run(values, rule=RULE, advance=None, devices=DEVICES):
    cfg = config(rule, devices)
    rows = rows_for(values, rule["field"])
    rs, ref = RuleSet.from_config(cfg), ReferenceRuleSet(cfg)
    vec, want = rs.process(batch(rows, cfg)), ref.process(batch(rows, cfg))
    if advance is not None:
        vec = Detections.concat([vec, rs.advance(advance)])
        want = Detections.concat([want, ref.advance(advance)])
    assert_same(vec, want)
    for a, b in zip(vec.sorted().context, want.sorted().context):
        assert (a["top_device"], a["present"]) == (b["top_device"], b["present"])
    return [r for r in rows_of(vec) if r["severity"] != "clear"], rs


def minute_of(r) -> int:
    return (r["ts_ns"] - START) // MIN


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_normal_minutes_rarely_alarm_after_warmup(seed):
    found, _ = run(minutes(400, seed))
    assert len(found) <= 3


def test_a_monitor_leaving_its_site_is_caught_and_named():
    v = minutes(400)
    v["N-B"][300:304] += 8.0      # 8 dB up while the others are not: inside what N-B itself reaches
    assert v["N-B"][300:304].max() < v["N-B"][:300].max()
    found, _ = run(v)
    hits = [r for r in found if minute_of(r) >= 300]
    assert hits and minute_of(hits[0]) == 300 and all(minute_of(r) < 310 for r in hits)
    assert {r["context"]["top_device"] for r in hits} == {"N-B"}
    assert {r["sensor"] for r in hits} == {1}      # the episode's rows go to N-B (inventory index 1)
    c = hits[0]["context"]
    assert (c["group"], c["present"], c["members"]) == ("SM-2025-101", 3, 3) and c["top_z"] > 5
    assert hits[0]["value"] > hits[0]["limit"] and hits[0]["ts_ns"] == START + 300 * MIN


def test_a_missing_member_is_judged_on_the_others():
    v = minutes(400)
    v["N-A"][290:320] = np.nan    # N-A silent with NaN readings (alive, no value)
    v["N-C"][305] -= 9.0
    found, rs = run(v)
    hits = [r for r in found if minute_of(r) >= 290]
    assert [minute_of(r) for r in hits] == [305]
    assert hits[0]["context"]["top_device"] == "N-C" and hits[0]["context"]["present"] == 2
    assert hits[0]["limit"] == pytest.approx(13.8155, rel=1e-4)     # chi-square 0.999 with 2 degrees of freedom


def test_a_member_that_never_reports_takes_no_part():
    """A device of the inventory that is not installed yet (or died): the others are judged without it."""
    devices = DEVICES + [{"id": "N-D", "kind": "noise", "site": "SM-2025-101", "report_interval_s": 60}]
    v = minutes(400)
    v["N-B"][300:304] += 9.0
    found, rs = run(v, devices=devices)
    hits = [r for r in found if 300 <= minute_of(r) < 304]
    assert [minute_of(r) for r in hits] == [300, 301, 302, 303]
    assert len(found) - len(hits) <= 2      # a learned covariance runs a little wider than chi-square says
    assert {(r["context"]["top_device"], r["context"]["present"], r["context"]["members"]) for r in hits} \
        == {("N-B", 3, 4)}
    assert rs.rules[0].cnt_[0][3].tolist() == [0, 0, 0, 0]


def test_two_members_disagreeing_cannot_say_which_of_them_moved():
    v = minutes(400)
    del v["N-C"]
    v["N-B"][300] += 12.0
    found, _ = run(v)
    hit = [r for r in found if minute_of(r) == 300]
    assert hit and hit[0]["context"]["present"] == 2 and hit[0]["context"]["top_device"] in ("N-A", "N-B")


def test_a_member_that_joins_later_has_its_own_warmup():
    """Its entries learn from its first bucket on; it is judged once they have `warmup` buckets. Its
    cross-covariances start biased low while the group's level drifts (they were learned against
    means of different spans) and settle within about 1 / lam buckets: a joiner is judged leniently at
    first, never harshly."""
    v = minutes(500)
    v["N-C"][:200] = np.nan
    v["N-C"][380] += 10.0
    found, rs = run(v)
    hit = [r for r in found if minute_of(r) == 380]
    assert hit and hit[0]["context"]["top_device"] == "N-C" and hit[0]["context"]["present"] == 3
    assert len(found) <= 4
    # Before its own warm-up ends (60 buckets from minute 200), N-C is not judged: two members are.
    assert {r["context"]["present"] for r in found if minute_of(r) < 260} <= {2}


def test_one_reading_per_bucket_on_average_and_the_row_at_the_bucket_end():
    rule = dict(RULE, bucket_s=300, warmup=30)
    v = minutes(1500)
    v["N-A"][1200:1205] += 10.0    # one bucket of 5 minutes
    found, _ = run(v, rule)
    assert [minute_of(r) for r in found] == [1205]


def test_buckets_close_when_complete_or_at_the_watermark():
    v = minutes(200)
    v["N-B"][199] += 12.0          # the last minute: its bucket is not complete (nobody is past it)
    found, rs = run(v)
    assert all(minute_of(r) < 199 for r in found)
    d = rs.rules[0]
    assert d.okey_[0].tolist().count(d.okey_[0].max()) == 1 and (d.okey_[0] > -(2**62)).sum() == 1
    end = START + 199 * MIN
    # The watermark closes it once grace_s (600 s) past its end, unless a member's readings wait.
    hold = np.zeros(len(DEVICES), bool)
    hold[2] = True
    assert len(rs.advance(end + 600 * 10**9, hold=hold)) == 0
    assert len(rs.advance(end + 600 * 10**9 - 1)) == 0
    late = rs.advance(end + 600 * 10**9)
    assert [r["severity"] for r in late.records()] == ["yellow"]
    assert late.records()[0]["context"]["top_device"] == "N-B"
    found2, _ = run(v, advance=end + 600 * 10**9)
    assert any(minute_of(r) == 199 for r in found2)


def test_a_late_reading_for_a_closed_bucket_is_dropped():
    cfg = config()
    v = minutes(200)
    rows = rows_for(v)
    rs = RuleSet.from_config(cfg)
    rs.process(batch(rows, cfg))
    late = [("N-B", START + 100 * MIN, {"leq": 120.0}, None)]
    assert len(rs.process(batch(late, cfg))) == 0


def test_gas_sensors_of_one_class_in_a_district():
    rule = {"id": "GG", "type": "group_t2", "kind": "gas", "field": "p", "group_by": "district_class"}
    rs = RuleSet.from_config(config(rule))
    d = rs.rules[0]
    assert d.names == ["Huli/low"]                      # G-M (medium_a) is alone in its class
    assert sorted(d.ids[d.sensors[m]] for m in d.members[0]) == ["G-1", "G-2"]


def test_groups_above_max_members_are_split_into_balanced_chunks():
    keys = [("a",)] * 7 + [("b",)] + [None, ("c",), ("c",)]
    assert build_groups(keys, 3) == [("a#1", [0, 1, 2]), ("a#2", [3, 4]), ("a#3", [5, 6]), ("c", [9, 10])]


def test_state_is_bounded():
    rs = RuleSet.from_config(config())
    d = rs.rules[0]
    k, b = 3, 16
    assert d.state_bytes() == 12 * k * k + 8 * k + 13 + b * (8 + 12 * k) + 8 * d.n


@pytest.mark.parametrize("bad, message", [
    ({"min_present": 5, "max_members": 4}, "min_present (5) must not exceed max_members (4)"),
    ({"group_by": "street"}, "rules[0].group_by"),
    ({"bucket_s": 0}, "rules[0].bucket_s"),
    ({"fields": ["leq"]}, "rules[0].fields"),
])
def test_parameters_are_checked(bad, message):
    with pytest.raises(ConfigError) as exc:
        RuleSet.from_config(config(dict(RULE, **bad)))
    assert message in str(exc.value)


# ----- vectorized = reference, and any split in event-time order = one batch ----------------------

GROUP_RULE = {"id": "GT", "type": "group_t2", "kind": "any", "field": "v", "group_by": "district", "flags": "any",
              "warmup": 4, "lam": 0.2, "bucket_s": 120, "max_open": 3, "alpha": 0.05, "hysteresis": 0.5}


@st.composite
def group_feeds(draw):
    """Every device each minute: a shared level plus its own noise, sometimes a jump, NaN or no reading."""
    n = draw(st.integers(1, 60))
    rows = []
    for i in range(n):
        common = draw(st.sampled_from([0.0, 1.0, 2.5, 4.0]))
        for d in DEVICES:
            what = draw(st.sampled_from(["ok"] * 6 + ["jump", "nan", "skip"]))
            if what == "skip":
                continue
            x = common + draw(st.sampled_from([-0.3, 0.0, 0.2, 0.5])) + (9.0 if what == "jump" else 0.0)
            rows.append((d["id"], START + i * MIN + draw(st.sampled_from([0, 10, 59])) * 10**9,
                         {"v": float("nan") if what == "nan" else x}, None))
    return rows


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(rows=group_feeds(), cuts=st.lists(st.floats(0, 1), min_size=2, max_size=2))
def test_vectorized_equals_reference_and_any_split(rows, cuts):
    cfg = config(GROUP_RULE)
    whole = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(whole, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    ordered = sorted(rows, key=lambda r: r[1])
    a, b = sorted(int(c * len(ordered)) for c in cuts)
    rs = RuleSet.from_config(cfg)
    parts = Detections.concat([rs.process(batch(p, cfg)) for p in (ordered[:a], ordered[a:b], ordered[b:]) if p])
    assert_same(whole, parts)


def test_the_feeds_above_do_raise_findings():
    cfg = config(GROUP_RULE)
    rng = np.random.default_rng(5)
    rows = [(d["id"], START + i * MIN, {"v": float(rng.choice([0.0, 0.2, 9.0], p=[0.45, 0.45, 0.1]))}, None)
            for i in range(60) for d in DEVICES]
    found = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(found, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    assert {r["severity"] for r in found.records()} == {"yellow", "clear"}


def test_state_survives_a_snapshot(tmp_path):
    from detectors import snapshot

    cfg = config()
    v = minutes(300)
    v["N-C"][250] += 10.0
    rows = rows_for(v)
    cut = next(i for i, r in enumerate(rows) if r[1] >= START + 200 * MIN) + 1   # inside minute 200's bucket
    whole = RuleSet.from_config(cfg).process(batch(rows, cfg))
    first = RuleSet.from_config(cfg)
    a = first.process(batch(rows[:cut], cfg))
    snapshot.save(first, tmp_path / "state.npz")
    again = RuleSet.from_config(cfg)
    snapshot.load(again, tmp_path / "state.npz")
    b = again.process(batch(rows[cut:], cfg))
    assert_same(whole, Detections.concat([a, b]))
    assert any(r["severity"] == "yellow" for r in b.records())
