"""hotelling_t2 (issue 16, item 1): T^2 over the fields of one device, learned online with forgetting:
warm-up, a broken correlation caught while every field stays inside its own range, the field named."""

from __future__ import annotations

import numpy as np
import pytest

from config.errors import ConfigError
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import batch, local_ns, rows_of, series, small_config
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same

RULE = {"id": "T2", "type": "hotelling_t2", "fields": ["leq", "lmax", "l90"], "warmup": 60, "lam": 0.02}


def minutes(n: int, seed: int = 1) -> list[dict]:
    """A monitor's minutes: a common level (traffic, work) moves Leq, Lmax and L90 together."""
    rng = np.random.default_rng(seed)
    level = 55.0 + 6.0 * np.sin(np.arange(n) / 40.0) + rng.normal(0, 2.0, n)
    return [{"leq": float(a), "lmax": float(a + 12 + rng.normal(0, 1.0)), "l90": float(a - 6 + rng.normal(0, 0.7))}
            for a in level]


def run(values, rule=RULE):
    cfg = small_config([rule])
    rows = series("N-PLAIN", local_ns("2025-06-05 10:00"), values)
    vec = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(vec, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    return [r for r in rows_of(vec) if r["severity"] != "clear"]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_normal_minutes_rarely_alarm_after_warmup(seed):
    # alpha 0.001 assumes a known mean and covariance; learned ones, following a level that drifts by
    # 12 dB, run wider: still under 1 % of the 340 judged minutes.
    assert len(run(minutes(400, seed))) <= 3


def test_a_broken_correlation_is_caught_and_its_field_named():
    values = minutes(300)
    # Lmax 9 dB above its usual gap to Leq: Lmax itself (about 67) is well inside what it reaches.
    odd = dict(values[-1], lmax=values[-1]["leq"] + 21.0)
    found = run(values + [odd])
    odd_ts = local_ns("2025-06-05 10:00") + 300 * 60 * 10**9
    assert found and found[-1]["ts_ns"] == odd_ts
    assert found[-1]["context"]["top_field"] == "lmax"
    assert found[-1]["value"] > 3 * found[-1]["limit"]


def test_nothing_is_judged_during_warmup():
    values = minutes(59)
    values[30] = dict(values[30], lmax=values[30]["leq"] + 40.0)
    assert run(values) == []


def test_a_reading_missing_a_field_is_missing():
    values = minutes(200) + [{"leq": 50.0, "lmax": float("nan"), "l90": 80.0}]
    assert run(values) == []


def test_limit_from_alpha_is_the_chi_square_quantile():
    from scipy.stats import chi2

    rs = RuleSet.from_config(small_config([dict(RULE, alpha=0.01)]))
    assert rs.rules[0].limit == pytest.approx(chi2.ppf(0.99, 3))
    assert rs.rules[0].state_bytes() == (8 * (9 + 3 + 1) + 1) * rs.rules[0].n   # and the level, 1 byte


@pytest.mark.parametrize("bad, message", [
    ({"fields": ["leq"]}, "rules[0].fields"),
    ({"fields": ["leq", "leq"]}, "each field once"),
    ({"warmup": 4}, "warmup (4) must be at least the number of fields + 2 (5)"),
])
def test_parameters_are_checked(bad, message):
    with pytest.raises(ConfigError) as exc:
        RuleSet.from_config(small_config([dict(RULE, **bad)]))
    assert message in str(exc.value)
