"""The gas profile's "learned" test counts distinct local weeks, not readings (issue 16 item 9): two
weeks' worth of readings squeezed into one week is still one week of a weekly profile."""

from __future__ import annotations

import numpy as np
import pytest

from detectors.gas import GasProfile, week_number
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import TEST_SITES, batch, local_ns, make_config, rows_of
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same

# Weeks of minute readings through the learned gas profile: long by nature (`make test` runs them).
pytestmark = pytest.mark.slow

START = "2025-06-02 00:00"   # a Monday, local time
WEEK_S = 7 * 86400


def device(id_: str) -> dict:
    return {"id": id_, "kind": "gas", "site": "GS-1", "report_interval_s": 900, "sample_interval_s": 300,
            "pressure_class": "medium_a", "set_pressure_kpa": 300.0, "mop_kpa": 400.0, "full_scale_kpa": 600.0}


def config(min_weeks: int = 2):
    rules = [{"id": "G-leak", "type": "gas_leak_cusum"}, {"id": "G-rupture", "type": "gas_rupture"},
             {"id": "G-flatline", "type": "gas_flatline"}]
    return make_config(rules=rules, devices=[device("G-A")], sites=TEST_SITES, gas={"profile": {"min_weeks": min_weeks}})


def readings(weeks: list[tuple[int, int]]) -> list[tuple]:
    """(week offset from START, seconds between readings) per block: a week of 300 kPa readings each."""
    rows = []
    rng = np.random.default_rng(7)
    for w, step in weeks:
        t0 = local_ns(START) + w * WEEK_S * 10**9
        for k in range(WEEK_S // step):
            rows.append(("G-A", t0 + k * step * 10**9, {"p": float(300.0 + rng.normal(0, 0.3))}))
    rows.sort(key=lambda r: r[1])
    return rows


def profile_of(rs: RuleSet) -> GasProfile:
    return next(c for c in rs.components if isinstance(c, GasProfile))


CASES = [
    # (what, week blocks (offset, step s), learned after them)
    ("two weeks at the device's own rate", [(0, 300), (1, 300)], True),
    ("one week at twice the rate: two weeks' readings, one week", [(0, 150)], False),
    ("one week at four times the rate", [(0, 75)], False),
    ("two weeks, the second at a third of the rate: too few readings", [(0, 300), (1, 900)], False),
    ("two weeks with a gap week between them", [(0, 300), (2, 300)], True),
    ("three weeks at half the rate: enough readings from enough weeks", [(0, 600), (1, 600), (2, 600), (3, 600)], True),
]


@pytest.mark.parametrize("what,blocks,learned", CASES, ids=[c[0] for c in CASES])
def test_an_hour_is_learned_after_min_weeks_distinct_weeks(what, blocks, learned):
    cfg = config()
    rs = RuleSet.from_config(cfg)
    rs.process(batch(readings(blocks), cfg))
    prof = profile_of(rs)
    bins = prof.learned_bins(prof.count_[0], prof.weeks_[0], prof.need[0])
    assert bins.all() if learned else not bins.any(), what


def test_weeks_table_counts_each_week_once_and_ignores_a_late_earlier_week():
    cfg = config()
    rs = RuleSet.from_config(cfg)
    rows = readings([(0, 300), (1, 300)])
    rs.process(batch(rows, cfg))
    prof = profile_of(rs)
    assert prof.weeks_[0].tolist() == [2] * 168
    # A late back-fill of the first week again adds readings but no week.
    rs.process(batch([r for r in rows if r[1] < local_ns(START) + WEEK_S * 10**9][:50], cfg))
    assert int(prof.weeks_[0].max()) == 2


def test_week_number_starts_on_monday_local():
    monday = local_ns(START) // 10**9 + 8 * 3600   # local epoch seconds of Monday 00:00
    w = week_number(np.array([monday - 1, monday, monday + WEEK_S - 1, monday + WEEK_S]))
    assert (w[1:] - w[0]).tolist() == [1, 1, 2]


def test_compressed_week_vectorized_equals_reference():
    """The week count in the rule set, in gas_flatline's replay and in the per-reading reference agree."""
    cfg = config(min_weeks=1)
    rows = readings([(0, 150), (1, 300)])
    rows.append(("G-A", rows[-1][1] + 300 * 10**9, {"p": 250.0}))   # a sudden drop once learned
    vec = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(vec, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    assert "G-rupture" in {r["rule_id"] for r in rows_of(vec)}
