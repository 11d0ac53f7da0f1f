"""group_residual (issue 16, item 1): the PCA residual over a group of related devices, on group_t2's
buckets: a monitor leaving its site flags and is named, a change the whole site shares does not (group_t2
flags it), a missing member is judged on the others, strict keys."""

from __future__ import annotations

import numpy as np
import pytest

from config.errors import ConfigError
from core import Detections
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import batch, rows_of
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same
from tests.unit.detectors.test_group_t2 import RULE as T2
from tests.unit.detectors.test_group_t2 import START, config, minutes, rows_for

MIN = 60 * 10**9
RULE = {"id": "GR", "type": "group_residual", "kind": "noise", "field": "leq", "group_by": "site"}


def run(values, rule=RULE):
    cfg = config(rule)
    rows = rows_for(values, rule["field"])
    vec = RuleSet.from_config(cfg).process(batch(rows, cfg))
    want = ReferenceRuleSet(cfg).process(batch(rows, cfg))
    assert_same(vec, want)
    for a, b in zip(vec.sorted().context, want.sorted().context):
        assert (a["top_device"], a["present"]) == (b["top_device"], b["present"])
    return [r for r in rows_of(vec) if r["severity"] != "clear"]


def at(found, minute):
    return [r for r in found if r["ts_ns"] == START + minute * MIN]  # a bucket ends at its reading


# (case, change at minute 300 per member, group_residual flags, group_t2 flags, device named)
CASES = [
    ("N-B 8 dB up alone", {"N-B": 8.0}, True, True, "N-B"),
    ("N-C 9 dB down alone", {"N-C": -9.0}, True, True, "N-C"),
    ("the whole site 25 dB up: work starts", {"N-A": 25.0, "N-B": 25.0, "N-C": 25.0}, False, True, None),
    ("the whole site 20 dB down", {"N-A": -20.0, "N-B": -20.0, "N-C": -20.0}, False, True, None),
]


@pytest.mark.parametrize("case,by,flags,t2_flags,device", CASES, ids=[c[0] for c in CASES])
def test_a_member_leaving_its_group_flags_and_a_shared_change_does_not(case, by, flags, t2_flags, device):
    v = minutes(400)
    for d, x in by.items():
        v[d][300] += x
    found = at(run(v), 300)
    assert bool(found) is flags, case
    if flags:
        c = found[0]["context"]
        assert (c["top_device"], c["present"], c["members"], c["metric"]) == (device, 3, 3, "group_spe")
        # top_z is the residual in the member's own standard deviations (the site's common swing included).
        assert abs(c["top_z"]) > 1 and found[0]["value"] > 3 * found[0]["limit"]
    assert bool(at(run(v, T2), 300)) is t2_flags, case


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_normal_minutes_rarely_flag_after_warmup(seed):
    assert len(run(minutes(400, seed))) <= 3


def test_a_missing_member_is_judged_on_the_others():
    v = minutes(400)
    v["N-A"][290:320] = np.nan
    v["N-C"][305] -= 9.0
    hits = [r for r in run(v) if r["ts_ns"] >= START + 290 * MIN]
    assert [(r["ts_ns"] - START) // MIN for r in hits] == [305]
    assert hits[0]["context"]["present"] == 2


def test_the_split_of_a_batch_does_not_matter():
    v = minutes(300)
    v["N-B"][250:254] += 8.0
    cfg = config(RULE)
    rows = rows_for(v)
    whole = RuleSet.from_config(cfg).process(batch(rows, cfg))
    rs = RuleSet.from_config(cfg)
    parts = Detections.concat([rs.process(batch(rows[:400], cfg)), rs.process(batch(rows[400:], cfg))])
    assert_same(whole, parts)
    assert len(whole) > 0


@pytest.mark.parametrize("params,problem", [
    ({"components": 2}, "min_present (2) must exceed components (2)"),
    ({"components": 0}, "components"),
    ({"fields": ["leq", "lmax"]}, "fields"),
])
def test_bad_keys_are_errors(params, problem):
    with pytest.raises(ConfigError) as exc:
        RuleSet.from_config(config(dict(RULE, **params)))
    assert problem in str(exc.value)
