"""spectral_residual (issue 16, item 2): the saliency of each reading as the newest point of its
sensor's last `window` values (Ren et al. 2019) with bounded state: quiet on a smooth cycle, a spike
caught at its reading, missing values not judged, the vectorized rule equal to the reference."""

from __future__ import annotations

import numpy as np
import pytest

from config.errors import ConfigError
from detectors.registry import RuleSet
from detectors.spectral import SpectralResidualParams, sr_score
from tests.unit.detectors.helpers import batch, local_ns, rows_of, series, small_config
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same

RULE = {"id": "SR", "type": "spectral_residual", "field": "v"}
START = local_ns("2025-06-05 10:00")


def cycle(n: int, seed: int = 1, noise: float = 0.2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 50.0 + 10.0 * np.sin(2 * np.pi * np.arange(n) / 48.0) + rng.normal(0, noise, n)


def run(values, rule=RULE, sensors=("G-MED",)):
    cfg = small_config([rule])
    rows = sorted((r for s in sensors for r in series(s, START, [{"v": float(x)} for x in values])), key=lambda r: r[1])
    vec = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(vec, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    return [r for r in rows_of(vec) if r["severity"] != "clear"]


def at(found):
    return sorted({(r["ts_ns"] - START) // (60 * 10**9) for r in found})


def test_a_smooth_cycle_stays_quiet():
    assert run(cycle(400)) == []


def test_a_spike_is_caught_at_its_reading():
    v = cycle(400)
    v[300] += 12.0
    found = run(v)
    assert at(found) == [300]
    assert found[0]["score"] > 5.0 and found[0]["value"] == pytest.approx(v[300])


def test_nothing_is_judged_before_the_window_is_full():
    v = cycle(63)
    v[40] += 30.0
    assert run(v) == []


def test_constant_and_missing_values():
    assert run([7.0] * 200) == []
    v = cycle(300)
    v[200] = np.nan                      # missing: not judged, and the window skips it
    v[250] += 12.0
    assert at(run(v)) == [250]


def test_the_score_ignores_scale_and_offset():
    p = SpectralResidualParams(field="v")
    win = np.lib.stride_tricks.sliding_window_view(cycle(200, 2), 64)
    assert np.allclose(sr_score(win, p), sr_score(1000.0 + 30.0 * win, p), rtol=1e-6, atol=1e-9)


def test_vectorized_equals_reference_over_many_sensors_and_long_feeds():
    rule = dict(RULE, window=16, score_window=8, limit=1.5)
    v = cycle(300, 3, noise=1.0) + np.where(np.arange(300) % 37 == 0, 9.0, 0.0)
    assert run(v, rule, sensors=("G-MED", "G-LOW", "N-PLAIN"))


def test_state_is_bounded():
    rs = RuleSet.from_config(small_config([RULE]))
    assert rs.rules[0].state_bytes() == (8 * 64 + 1) * rs.rules[0].n


@pytest.mark.parametrize("bad, message", [
    ({"score_window": 64}, "score_window (64) must be below window (64)"),
    ({"window": 8, "score_window": 4, "grad_points": 7}, "grad_points (7) must be at most window - 2 (6)"),
    ({"window": 4}, "rules[0].window: must be"),
    ({"limit": 0}, "rules[0].limit"),
])
def test_parameters_are_checked(bad, message):
    with pytest.raises(ConfigError) as exc:
        RuleSet.from_config(small_config([dict(RULE, **bad)]))
    assert message in str(exc.value)


def test_a_long_history_in_one_batch_equals_reading_by_reading():
    """The series path (sliding windows over each sensor's history) against the per-round path, with
    missing values, two sensors and the history split into batches."""
    rule = dict(RULE, window=16, score_window=8, limit=1.5)
    cfg = small_config([rule])
    v = cycle(500, 4, noise=1.0) + np.where(np.arange(500) % 41 == 0, 9.0, 0.0)
    v[[7, 100, 101, 300]] = np.nan
    rows = sorted((r for s in ("G-MED", "N-PLAIN") for r in series(s, START, [{"v": float(x)} for x in v])),
                  key=lambda r: r[1])
    rows = [(d, t, val, "F" if i % 97 == 5 else None) for i, (d, t, val, _) in enumerate(rows)]
    whole = RuleSet.from_config(cfg).process(batch(rows, cfg))
    stepped = RuleSet.from_config(cfg, series=False).process(batch(rows, cfg))
    assert_same(whole, stepped)
    rs = RuleSet.from_config(cfg)
    parts = [rs.process(batch(rows[a:b], cfg)) for a, b in ((0, 13), (13, 400), (400, len(rows)))]
    from core import Detections

    assert_same(whole, Detections.concat(parts))
    assert len(whole) > 10
