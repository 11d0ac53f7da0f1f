"""robust_z on a quantised signal (issue 16, item 7): the MAD is floored by the window's resolution (or
min_mad), so a one-step change is no infinite z; windows longer than 64 readings."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import batch, local_ns, rows_of, series, small_config
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same


def found(values, **params):
    rule = {"id": "Z", "type": "robust_z", "field": "v", "window": 20, "min_count": 10, **params}
    cfg = small_config([rule])
    rows = series("G-MED", local_ns("2025-06-05 09:00"), [{"v": float(x)} for x in values])
    vec = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(vec, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    return [r for r in rows_of(vec) if r["severity"] != "clear"]


# A whole-dB signal: mostly 50 with an occasional 51 (MAD 0), then the next reading.
QUANTISED = [50, 50, 51, 50, 50, 50, 50, 51, 50, 50, 50, 50, 50, 50, 50, 51]


@pytest.mark.parametrize("nxt, alarm", [
    (51, False),   # one step up: z = 0.67 (was infinity)
    (49, False),   # one step down
    (56, True),    # six steps: z = 4.0 > 3.5
    (50, False),
])
def test_quantised_signal_steps_are_judged_by_the_resolution(nxt, alarm):
    assert bool(found(QUANTISED + [nxt])) == alarm


def test_min_mad_sets_the_floor_and_zero_restores_the_old_behaviour():
    assert found(QUANTISED + [53], min_mad=0.5)            # z = 0.6745 x 3 / 0.5 = 4.0
    assert not found(QUANTISED + [53])                      # resolution 1: z = 2.0
    assert found(QUANTISED + [51], min_mad=0)               # no floor: MAD 0, z = infinity


def test_a_window_of_one_value_still_flags_any_change():
    assert found([50] * 15 + [51])                          # no resolution known: z = infinity


def test_windows_longer_than_64():
    values = [10.0 + 0.1 * (i % 7) for i in range(300)] + [30.0]
    assert found(values, window=256, min_count=200)
    with pytest.raises(ConfigError, match=r"rules\[0\]\.window: must be between 3 and 1024 \(got 2000\)"):
        RuleSet.from_config(small_config([{"id": "Z", "type": "robust_z", "field": "v", "window": 2000}]))
