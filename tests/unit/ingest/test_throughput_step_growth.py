"""The detector thread's step grows with a backlog spread over the devices (issue 17), never for a lone back-fill.

DetectionPipeline._split is called on a stand-in holding only the config: the split needs nothing else."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np

from citywatch.pipeline import STEP_GROWTH_MAX, DetectionPipeline
from config import load_config
from core import ReadingBatch
from detectors.registry import take_step

CFG = load_config(Path(__file__).resolve().parents[3] / "config", env={})
BOUND = CFG.alerting.detect_step_rows_per_device


def _batch(rows_per_sensor: dict[int, int]) -> ReadingBatch:
    sensor = np.concatenate([np.full(n, s, np.int32) for s, n in rows_per_sensor.items()])
    ts = np.concatenate([1_700_000_000_000_000_000 + np.arange(n, dtype=np.int64) * 10**9 for n in rows_per_sensor.values()])
    return ReadingBatch(sensor, ts, {"p": np.full(len(sensor), 300.0)})


def _split(batch: ReadingBatch) -> tuple[ReadingBatch, ReadingBatch]:
    return DetectionPipeline._split(SimpleNamespace(cfg=CFG), batch, take_step)


def _per_sensor(b: ReadingBatch) -> dict[int, int]:
    s, n = np.unique(b.sensor, return_counts=True)
    return dict(zip(s.tolist(), n.tolist()))


def test_minute_batches_of_many_devices_go_in_one_step():
    batch = _batch({s: 60 for s in range(48)})
    step, rest = _split(batch)
    assert len(step) == len(batch) and len(rest) == 0


def test_a_lone_backfill_keeps_the_configured_bound():
    step, rest = _split(_batch({3: 3000}))
    assert len(step) == BOUND and len(rest) == 3000 - BOUND


def test_a_backfill_beside_other_devices_new_readings_keeps_the_bound():
    step, rest = _split(_batch({3: 3000, 4: 1, 5: 2}))
    assert _per_sensor(step) == {3: BOUND, 4: 1, 5: 2}
    assert _per_sensor(rest) == {3: 3000 - BOUND}


def test_growth_is_capped():
    step, rest = _split(_batch({s: 5000 for s in range(4)}))
    assert _per_sensor(step) == {s: BOUND * STEP_GROWTH_MAX for s in range(4)}
    assert len(rest) == 4 * (5000 - BOUND * STEP_GROWTH_MAX)


def test_step_then_rest_keep_each_devices_rows_in_order():
    batch = _batch({s: 40 + 7 * s for s in range(6)})
    step, rest = _split(batch)
    for s in range(6):
        got = np.concatenate([step.ts_ns[step.sensor == s], rest.ts_ns[rest.sensor == s]])
        assert np.array_equal(got, batch.ts_ns[batch.sensor == s])
