"""fuzzy_art (issue 16, item 2, ARTime family): fuzzy ART categories of each sensor's recent windows
with bounded state: a new shape alarms, a shape that recurs stops alarming, the vectorized rule equals
the reference."""

from __future__ import annotations

import numpy as np
import pytest

from config.errors import ConfigError
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import small_config
from tests.unit.detectors.test_knn_cad import at, run, wave

RULE = {"id": "A", "type": "fuzzy_art", "field": "v"}


def test_the_cycle_alone_rarely_alarms():
    # 1400 judged readings of a noisy cycle: fuzzy ART's boxes leave some noisy windows outside.
    assert len(at(run(wave(1500), RULE))) <= 10


def test_a_value_at_the_wrong_phase_is_caught_while_in_the_window():
    v = wave(1500, 3)
    v[1000] = 45.0 if v[1000] > 55 else 58.0
    hits = at(run(v, RULE))
    assert 1000 in hits


@pytest.mark.slow
def test_a_step_alarms_then_is_learned():
    v = wave(1500, 3)
    v[1000:] += 15.0
    hits = at(run(v, RULE))
    assert 1000 in hits
    assert len([h for h in hits if h >= 1100]) <= 3     # the new level's windows have their own categories


def test_constant_warmup_and_missing_values():
    assert run([7.0] * 300, RULE) == []
    v = wave(300)
    v[50] = 500.0                     # inside the warm-up (100 readings): learned range, never judged
    v[200] = np.nan                   # missing: not judged, never "normal"
    hits = at(run(v, RULE))
    assert all(h >= 100 for h in hits) and 200 not in hits


def test_vectorized_equals_reference_with_few_categories():
    """Four categories for a cycle: the least recently used is replaced again and again."""
    rule = dict(RULE, dim=4, categories=4, warmup=20, rho=0.85, beta=0.5)
    run(wave(400, 3) + np.where(np.arange(400) % 37 == 0, 9.0, 0.0), rule, sensors=("G-MED", "G-LOW", "N-PLAIN"))


def test_state_is_bounded():
    rs = RuleSet.from_config(small_config([RULE]))
    dim, cats = 8, 32
    assert rs.rules[0].state_bytes() == (8 * dim + 16 + cats * (16 * dim + 4) + 9) * rs.rules[0].n


@pytest.mark.parametrize("bad, message", [
    ({"dim": 8, "warmup": 4}, "warmup (4) must be at least dim (8)"),
    ({"rho": 1.0}, "rules[0].rho"),
    ({"categories": 1}, "rules[0].categories"),
])
def test_parameters_are_checked(bad, message):
    with pytest.raises(ConfigError) as exc:
        RuleSet.from_config(small_config([dict(RULE, **bad)]))
    assert message in str(exc.value)
