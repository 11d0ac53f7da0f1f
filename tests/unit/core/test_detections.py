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


def _lazy(n: int, calls: list[int]) -> Detections:
    from core import LazyContexts

    def make(i: int) -> dict:
        calls.append(i)
        return {"i": i}

    d = _dets(n)
    d.context = LazyContexts(n, make)
    return d


def test_lazy_contexts_build_only_the_rows_read_and_equal_the_list():
    calls: list[int] = []
    d = _lazy(6, calls)
    assert calls == []
    assert d.context[4] == {"i": 4} and d.context[-1] == {"i": 5} and calls == [4, 5]
    assert d.context == [{"i": i} for i in range(6)] and [{"i": i} for i in range(6)] == d.context
    assert d.context != [{"i": i} for i in range(5)]
    assert d.context[1:3] == [{"i": 1}, {"i": 2}]
    for bad in (6, -7):
        try:
            d.context[bad]
        except IndexError:
            pass
        else:
            raise AssertionError(f"row {bad} of 6 must raise IndexError")


def test_lazy_contexts_through_concat_take_and_records_match_plain_lists():
    import pickle

    calls: list[int] = []
    lazy = Detections.concat([_dets(3), _lazy(4, calls), _dets(2)])
    plain = Detections.concat([_dets(3), _dets(4), _dets(2)])
    assert lazy.records() == plain.records()
    picked = np.array([8, 3, 0, 5])
    assert lazy.take(picked).records() == plain.take(picked).records()
    assert lazy.take(picked > 4).records() == plain.take(picked > 4).records()
    assert lazy.sorted().records() == plain.sorted().records()
    assert pickle.loads(pickle.dumps(lazy.context)) == list(plain.context)
    calls.clear()
    lazy.take(np.array([4]))  # taking rows builds nothing
    assert calls == []


def test_an_assigned_lazy_context_row_keeps_its_value():
    d = _lazy(3, [])
    d.context[1] = {"replaced": True}
    assert list(d.context) == [{"i": 0}, {"replaced": True}, {"i": 2}]
