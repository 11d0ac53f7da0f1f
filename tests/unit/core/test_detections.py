"""Detections.take keeps every column and the context aligned (the engine drops unknown sensors with it)."""

from __future__ import annotations

import numpy as np

from core import Detections


def _dets(n: int) -> Detections:
    return Detections(np.arange(n, dtype=np.int32), np.arange(n, dtype=np.int64) * 10,
                      np.array([f"r{i}" for i in range(n)], object), np.array(["gas"] * n, object),
                      np.arange(n, dtype=np.int8) % 5, np.arange(n, dtype=float), np.full(n, 2.5),
                      np.arange(n, dtype=float) / 10, [{"i": i} for i in range(n)])


def test_take_by_mask_and_by_index():
    d = _dets(5)
    by_mask = d.take(np.array([True, False, True, False, True]))
    assert by_mask.records() == [d.records()[i] for i in (0, 2, 4)]
    by_index = d.take(np.array([4, 1]))
    assert [r["context"] for r in by_index.records()] == [{"i": 4}, {"i": 1}]
    assert len(d.take(np.zeros(5, bool))) == 0


def test_sorted_orders_by_time_sensor_rule():
    d = _dets(4).take(np.array([3, 0, 2, 1]))
    assert [r["ts_ns"] for r in d.sorted().records()] == [0, 10, 20, 30]
