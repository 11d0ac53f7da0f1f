"""any_of / all_of (issue 16 item 9): combined severity, the all_of tolerance, any batch split, the
per-reading reference, and the config's cross-reference errors."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from core import Detections
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import TEST_DEVICES, TEST_SITES, batch, local_ns, make_config, rows_of, series
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same

T0 = local_ns("2025-06-02 10:00")
MEMBERS = [
    # A: v above 5 yellow, above 10 red. B: w above 1 orange.
    {"id": "A", "type": "threshold", "field": "v", "flags": "any",
     "levels": [{"above": 5.0, "severity": "yellow"}, {"above": 10.0, "severity": "red"}]},
    {"id": "B", "type": "threshold", "field": "w", "flags": "any", "levels": [{"above": 1.0, "severity": "orange"}]},
]


def config(comb: dict, members=MEMBERS):
    return make_config(rules=[{"id": "C", **comb}, *members], devices=TEST_DEVICES, sites=TEST_SITES)


def run(cfg, values, device="N-PLAIN"):
    return [(int((r["ts_ns"] - T0) // 60_000_000_000), r["severity"], r["context"].get("members"))
            for r in rows_of(RuleSet.from_config(cfg).process(batch(series(device, T0, values), cfg)), "C")]


V = [  # minute by minute: v and w
    {"v": 0.0, "w": 0.0},   # 0: nothing
    {"v": 6.0, "w": 0.0},   # 1: A yellow
    {"v": 12.0, "w": 2.0},  # 2: A red, B orange
    {"v": 6.0, "w": 2.0},   # 3: A yellow, B orange
    {"v": 0.0, "w": 2.0},   # 4: A clear, B orange
    {"v": 0.0, "w": 0.0},   # 5: B clear
    {"v": 0.0, "w": 0.0},   # 6
]


def test_any_of_takes_the_highest_member_and_clears_when_all_are_clear():
    assert run(config({"type": "any_of", "rules": ["A", "B"]}), V) == [
        (1, "yellow", "A"), (2, "red", "A,B"), (3, "orange", "A,B"), (4, "orange", "B"), (5, "clear", "")]


def test_all_of_takes_the_lowest_member_while_both_fire():
    assert run(config({"type": "all_of", "rules": ["A", "B"]}), V) == [
        (2, "orange", "A,B"), (3, "yellow", "A,B"), (4, "clear", "B")]


TOLERANCE = [
    # (tolerance_s, expected rows): A fires at minute 1 only, B at minute 2 only
    (0, []),
    (59, []),
    (60, [(2, "yellow", "A,B"), (3, "clear", "")]),
    (120, [(2, "yellow", "A,B"), (3, "clear", "")]),
]


@pytest.mark.parametrize("tol,expected", TOLERANCE)
def test_all_of_tolerance_lets_members_a_minute_apart_coincide(tol, expected):
    vals = [{"v": 0.0, "w": 0.0}, {"v": 6.0, "w": 0.0}, {"v": 0.0, "w": 2.0}, {"v": 0.0, "w": 0.0}, {"v": 0.0, "w": 0.0}]
    assert run(config({"type": "all_of", "rules": ["A", "B"], "tolerance_s": tol}), vals) == expected


def test_all_of_clears_when_a_member_is_past_its_tolerance():
    """B keeps firing; A fired once: all_of holds for tolerance_s after A's row, then clears."""
    vals = [{"v": 6.0, "w": 2.0}] + [{"v": 0.0, "w": 2.0}] * 4
    assert run(config({"type": "all_of", "rules": ["A", "B"], "tolerance_s": "2m"}), vals) == [
        (0, "yellow", "A,B"), (1, "yellow", "A,B"), (2, "yellow", "A,B"), (3, "clear", "B")]


@pytest.mark.parametrize("rtype", ["any_of", "all_of"])
def test_any_split_equals_one_batch_and_the_reference(rtype):
    cfg = config({"type": rtype, "rules": ["A", "B"], "tolerance_s": 90} if rtype == "all_of"
                 else {"type": rtype, "rules": ["A", "B"]})
    rows = series("N-PLAIN", T0, V * 3) + series("N-PERMIT", T0 + 30 * 10**9, list(reversed(V)) * 3)
    rows.sort(key=lambda r: r[1])
    whole = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(whole, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    assert len([r for r in whole.rule_id if r == "C"]) > 0
    for k in range(1, len(rows)):
        rs = RuleSet.from_config(cfg)
        parts = Detections.concat([rs.process(batch(rows[:k], cfg)), rs.process(batch(rows[k:], cfg))])
        assert_same(whole, parts)


def test_members_of_another_kind_run_on_their_devices_only():
    members = [{"id": "A", "type": "threshold", "kind": "noise", "field": "v", "flags": "any",
                "levels": [{"above": 5.0, "severity": "yellow"}]},
               {"id": "B", "type": "battery", "kind": "gas"}]
    cfg = config({"type": "any_of", "rules": ["A", "B"]}, members)
    assert run(cfg, [{"v": 6.0}]) == [(0, "yellow", "A")]


@pytest.mark.parametrize("comb,extra,message", [
    ({"type": "any_of", "rules": ["A", "Bx"]}, [],
     "config: rules[0].rules: unknown rule; did you mean 'B'? (got 'Bx')"),
    ({"type": "any_of", "rules": ["A", "D"]}, [{"id": "D", "type": "any_of", "rules": ["A", "B"]}],
     "config: rules[0].rules: 'D' is itself an any_of rule: list its members instead"),
    ({"type": "all_of", "rules": ["A", "Off"]}, [{"id": "Off", "type": "deadman"}],
     "config: rules[0].rules: 'Off' is a deadman rule, whose findings also come from the clock, not only from "
     "readings: it cannot be a member"),
    ({"type": "all_of", "rules": ["A", "E"]}, [{**MEMBERS[0], "id": "E", "enabled": False}],
     "config: rules[0].rules: 'E' is disabled: the combination would never fire"),
    ({"type": "any_of", "rules": ["A", "A"]}, [], "config: rules[0]: rules: each member once (got ['A', 'A'])"),
    ({"type": "any_of", "rules": ["A"]}, [], "config: rules[0].rules: "),
])
def test_config_errors(comb, extra, message):
    with pytest.raises(ConfigError) as exc:
        RuleSet.from_config(config(comb, MEMBERS + extra))
    assert str(exc.value).startswith(message), str(exc.value)


def test_tolerance_belongs_to_all_of_only():
    with pytest.raises(ConfigError) as exc:
        RuleSet.from_config(config({"type": "any_of", "rules": ["A", "B"], "tolerance_s": 60}))
    assert "rules[0].tolerance_s" in str(exc.value)
