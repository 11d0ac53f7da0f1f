"""knn_cad (issue 16, item 2): a conformal k-NN detector of recent value patterns with bounded state:
a new pattern alarms, a pattern that recurs stops alarming, the vectorized rule equals the reference."""

from __future__ import annotations

import numpy as np
import pytest

from config.errors import ConfigError
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import batch, local_ns, rows_of, series, small_config
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same

RULE = {"id": "K", "type": "knn_cad", "field": "v"}
START = local_ns("2025-06-05 10:00")


def wave(n: int, seed: int = 1) -> np.ndarray:
    """A daily-like cycle of 48 readings with noise."""
    rng = np.random.default_rng(seed)
    return 50.0 + 10.0 * np.sin(2 * np.pi * np.arange(n) / 48.0) + rng.normal(0, 0.5, n)


def run(values, rule=RULE, sensors=("G-MED",)):
    cfg = small_config([rule])
    rows = sorted((r for s in sensors for r in series(s, START, [{"v": float(x)} for x in values])), key=lambda r: r[1])
    vec = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(vec, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    return [r for r in rows_of(vec) if r["severity"] != "clear"]


def at(found):
    return sorted({(r["ts_ns"] - START) // (60 * 10**9) for r in found})


def test_the_cycle_alone_stays_quiet():
    assert run(wave(600)) == []


def test_a_spike_inside_the_normal_range_is_caught():
    v = wave(600)
    v[400] = 45.0 if v[400] > 55 else 58.0    # a value the cycle reaches, at the wrong phase
    hits = at(run(v))
    assert hits and hits[0] == 400 and all(h < 400 + 8 for h in hits)   # while it is in the window


def test_a_new_pattern_stops_alarming_once_it_recurs():
    v = wave(600)
    v[300:] += 15.0                              # a step: new windows, far from the recent ones
    hits = at(run(v))
    assert hits and hits[0] == 300
    assert max(hits) < 300 + 60                  # learned: its own windows become neighbours


def test_constant_and_missing_values():
    assert run([7.0] * 200) == []
    v = wave(200)
    v[100] = np.nan                              # missing: not judged, never "normal"
    assert 100 not in at(run(v))


def test_vectorized_equals_reference_over_many_sensors_and_long_feeds():
    rule = dict(RULE, dim=4, train=16, k=2, calib=16, min_calib=8)
    run(wave(300, 3) + np.where(np.arange(300) % 37 == 0, 9.0, 0.0), rule, sensors=("G-MED", "G-LOW", "N-PLAIN"))


def test_state_is_bounded():
    rs = RuleSet.from_config(small_config([RULE]))
    assert rs.rules[0].state_bytes() == (8 * (8 * 65 + 128) + 5) * rs.rules[0].n


@pytest.mark.parametrize("bad, message", [
    ({"k": 8, "train": 8}, "k (8) must be below train (8)"),
    ({"min_calib": 200}, "min_calib (200) must not exceed calib (128)"),
    ({"dim": 33}, "rules[0].dim: must be between 1 and 32"),
])
def test_parameters_are_checked(bad, message):
    with pytest.raises(ConfigError) as exc:
        RuleSet.from_config(small_config([dict(RULE, **bad)]))
    assert message in str(exc.value)
