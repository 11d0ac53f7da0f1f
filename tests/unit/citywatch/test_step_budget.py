"""A grown detection step is also bounded in time (issue 17): by the last step's wall time per round it aims at
STEP_BUDGET_S, so a reading that arrives meanwhile never waits behind a step of 8 x the setting; never below
`detect_step_rows_per_device`. Pure logic: the cost per round is injected, nothing is timed."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from citywatch.pipeline import STEP_BUDGET_S, STEP_GROWTH_MAX, DetectionPipeline, step_bound
from config import load_config
from core import ReadingBatch
from detectors.registry import take_step

CFG = load_config(Path(__file__).resolve().parents[3] / "config", env={})
SETTING = CFG.alerting.detect_step_rows_per_device


def _batch(rows_per_sensor: dict[int, int]) -> ReadingBatch:
    sensor = np.concatenate([np.full(n, s, np.int32) for s, n in rows_per_sensor.items()])
    ts = np.concatenate([1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 10**9 for n in rows_per_sensor.values()])
    return ReadingBatch(sensor, ts, {"p": np.full(len(sensor), 300.0)})


def _rows_per_sensor(b: ReadingBatch) -> dict[int, int]:
    s, n = np.unique(b.sensor, return_counts=True)
    return dict(zip(s.tolist(), n.tolist()))


BACKLOG = np.full(49, 5000)  # 49 devices with a long backlog each: the median asks for full growth


@pytest.mark.parametrize("cost, expected", [
    (None, SETTING * STEP_GROWTH_MAX),                  # not measured yet: growth alone
    (STEP_BUDGET_S / 1000, SETTING * STEP_GROWTH_MAX),  # cheap rounds: the growth cap binds
    (STEP_BUDGET_S / 100, 100),                         # 100 rounds fit in the budget
    (STEP_BUDGET_S / 10, SETTING),                      # dear rounds: never below the setting
    (0.0, SETTING * STEP_GROWTH_MAX),                   # a zero cost (clock resolution) does not divide
])
def test_the_budget_bounds_a_grown_step(cost, expected):
    assert step_bound(BACKLOG, SETTING, cost) == expected


def test_the_budget_never_grows_a_step_the_median_does_not():
    assert step_bound(np.array([3000, 1, 2]), SETTING, STEP_BUDGET_S / 10_000) == SETTING  # a lone back-fill
    assert step_bound(np.array([5000]), SETTING, STEP_BUDGET_S / 10_000) == SETTING
    assert step_bound(np.full(10, 50), SETTING, STEP_BUDGET_S / 10_000) == max(SETTING, 50)


def _stand_in(round_cost_s: float | None = None) -> SimpleNamespace:
    p = SimpleNamespace(cfg=CFG)
    if round_cost_s is not None:
        p._round_cost_s = round_cost_s
    return p


def test_split_takes_the_injected_cost_into_account():
    batch = _batch({s: 1000 for s in range(6)})
    step, rest = DetectionPipeline._split(_stand_in(STEP_BUDGET_S / 100), batch, take_step)
    assert _rows_per_sensor(step) == {s: 100 for s in range(6)}
    assert len(rest) == 6 * 900
    step, _ = DetectionPipeline._split(_stand_in(), batch, take_step)
    assert _rows_per_sensor(step) == {s: SETTING * STEP_GROWTH_MAX for s in range(6)}


def test_a_steps_time_becomes_the_cost_per_round_of_the_next():
    p = _stand_in()
    DetectionPipeline._split(p, _batch({s: 1000 for s in range(6)}), take_step)
    assert p._step_rounds == SETTING * STEP_GROWTH_MAX
    DetectionPipeline._step_took(p, 0.512)
    assert p._round_cost_s == pytest.approx(0.512 / (SETTING * STEP_GROWTH_MAX))
    # A small arrival taken whole says nothing about the cost per round: the last measure stays.
    DetectionPipeline._split(p, _batch({1: 2, 2: 1}), take_step)
    DetectionPipeline._step_took(p, 5.0)
    assert p._round_cost_s == pytest.approx(0.512 / (SETTING * STEP_GROWTH_MAX))
    # Rows of one device only: its rounds are its rows in the step.
    DetectionPipeline._split(p, _batch({4: 40}), take_step)
    DetectionPipeline._step_took(p, 0.064)
    assert p._round_cost_s == pytest.approx(0.064 / SETTING)
