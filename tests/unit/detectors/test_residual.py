"""pca_residual (issue 16, item 1): the PCA residual of several fields of one device (MSET-style):
a broken relation between the fields flags and names its field, a common shift of every field does not
(that is Hotelling's job), the warm-up judges nothing, the training window stays fixed, strict keys."""

from __future__ import annotations

import numpy as np
import pytest

from config.errors import ConfigError
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import batch, local_ns, rows_of, series, small_config
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same

RULE = {"id": "PCA", "type": "pca_residual", "fields": ["leq", "lmax", "l90"], "train": 120}
T2 = {"id": "T2", "type": "hotelling_t2", "fields": ["leq", "lmax", "l90"], "warmup": 120, "lam": 0.01}
T0 = "2025-06-05 10:00"


def minutes(n: int, seed: int = 1) -> list[dict]:
    """A monitor's minutes: a common level (traffic, work) moves Leq, Lmax and L90 together."""
    rng = np.random.default_rng(seed)
    level = 55.0 + 6.0 * np.sin(np.arange(n) / 40.0) + rng.normal(0, 3.0, n)
    return [{"leq": float(a), "lmax": float(a + 12 + rng.normal(0, 0.8)), "l90": float(a - 6 + rng.normal(0, 0.8))}
            for a in level]


def run(values, rule=RULE):
    cfg = small_config([rule])
    rows = series("N-PLAIN", local_ns(T0), values)
    vec = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(vec, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    return [r for r in rows_of(vec) if r["severity"] != "clear"]


def at(i: int) -> int:
    return local_ns(T0) + i * 60 * 10**9


def shifted(v: dict, **by) -> dict:
    return {k: x + by.get(k, 0.0) for k, x in v.items()}


# (case, the change made to reading 200 of 201, pca_residual flags it, Hotelling T^2 flags it, field named)
CASES = [
    ("Lmax alone 8 dB above its gap to Leq", {"lmax": 8.0}, True, True, "lmax"),
    ("L90 alone 7 dB up: background without the level", {"l90": 7.0}, True, True, "l90"),
    ("Leq alone 6 dB down, Lmax and L90 as usual", {"leq": -6.0}, True, True, "leq"),
    ("every field 40 dB up together: a louder minute", {"leq": 40.0, "lmax": 40.0, "l90": 40.0}, False, True, None),
    ("every field 30 dB down together", {"leq": -30.0, "lmax": -30.0, "l90": -30.0}, False, True, None),
]


@pytest.mark.parametrize("case,by,flags,t2_flags,field", CASES, ids=[c[0] for c in CASES])
def test_a_broken_relation_flags_and_a_common_shift_does_not(case, by, flags, t2_flags, field):
    values = minutes(200)
    odd = shifted(values[-1], **by)
    found = [r for r in run(values + [odd]) if r["ts_ns"] == at(200)]
    assert bool(found) is flags, case
    if flags:
        assert found[0]["context"]["top_field"] == field
        assert found[0]["value"] > 3 * found[0]["limit"]
        assert found[0]["score"] == pytest.approx(found[0]["value"] / found[0]["limit"])
    # The contrast the design rests on: T^2 flags a level change, the residual only a broken relation.
    assert bool([r for r in run(values + [odd], T2) if r["ts_ns"] == at(200)]) is t2_flags, case


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_normal_minutes_rarely_flag_after_training(seed):
    # alpha 0.001 per reading; the covariance is estimated from 120 readings: under 1 % of 380 judged.
    assert len(run(minutes(500, seed))) <= 3


def test_nothing_is_judged_in_the_training_window():
    values = minutes(119)
    values[60] = shifted(values[60], lmax=30.0)
    assert run(values) == []


def test_the_training_window_stays_fixed_and_online_learning_follows():
    # After training the relation changes for good (Lmax 8 dB further from Leq): the fixed model flags
    # every reading of the new regime; online learning within the limit flags it too (each reading is
    # beyond the limit, so none is learned) - and a reading missing a field is missing, not normal.
    values = minutes(160)
    new = [shifted(v, lmax=8.0) for v in values[120:]]
    fixed = run(values[:120] + new)
    assert len({r["ts_ns"] for r in fixed}) == 40
    online = run(values[:120] + new, dict(RULE, fit="online", lam=0.05))
    assert len({r["ts_ns"] for r in online}) == 40
    gap = values[:150] + [{"leq": 50.0, "lmax": float("nan"), "l90": 44.0}]
    assert run(gap) == []


@pytest.mark.slow
def test_online_learning_follows_a_slow_change_of_relation():
    # Lmax drifts 0.02 dB a minute away from Leq: the online model follows, the fixed one flags.
    values = minutes(700)
    drift = [shifted(v, lmax=0.02 * max(0, i - 120)) for i, v in enumerate(values)]
    assert len(run(drift, dict(RULE, fit="online", lam=0.05))) <= 10   # of 580 judged
    assert len(run(drift)) > 100


@pytest.mark.parametrize("params,problem", [
    ({"fields": ["leq"]}, "at least 2"),
    ({"fields": ["leq", "leq", "lmax"]}, "each field once"),
    ({"components": 3}, "must be fewer than the fields (3)"),
    ({"train": 4}, "train (4) must be at least the number of fields + 2 (5)"),
    ({"fit": "batch"}, "rules[0].fit: must be one of train, online (got 'batch')"),
    ({"hysteresis": 1.0}, "rules[0].hysteresis: must be at least 0 and below 1 (got 1.0)"),
    ({"window": 5}, "window"),
])
def test_bad_keys_are_errors(params, problem):
    with pytest.raises(ConfigError) as exc:
        RuleSet.from_config(small_config([dict(RULE, **params)]))
    assert problem in str(exc.value)


def test_state_is_8_k2_k_1_plus_1_bytes_per_sensor():
    cfg = small_config([RULE])
    rs = RuleSet.from_config(cfg)
    per = rs.state_bytes() / rs.rules[0].n
    assert per == 8 * (9 + 3 + 1) + 1
