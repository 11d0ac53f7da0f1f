"""The whole-batch helpers under the series paths against plain references: `SlotRing.insert_series` and
`RingSeries.beside` leave the ring and a table beside it as inserting the rows one at a time does (each
slot keeps its last stored row, also when a sensor's keys span more than the ring), and the registry's row
order is lexsort's (sensor, then event time, ties in input order) for any batch."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.registry import _sensor_time_order
from detectors.rolling import SlotRing, _last_in_slot

S = 1_000_000_000
T0 = 1_750_000_000 * S


@st.composite
def sensor_runs(draw, max_sensors: int = 4, max_rows: int = 12):
    """(loc, ts, stored): each sensor's rows contiguous and in time order, steps of 0-12 s (a step of
    10 s or more crosses the 8-slot ring), some rows not stored."""
    sensors = draw(st.lists(st.integers(0, max_sensors - 1), min_size=1, max_size=max_sensors, unique=True))
    loc, ts = [], []
    for s in sensors:
        t = T0 + draw(st.integers(0, 20)) * S
        for step in draw(st.lists(st.integers(0, 12), min_size=1, max_size=max_rows)):
            t += step * S
            loc.append(s)
            ts.append(t)
    stored = draw(st.lists(st.booleans(), min_size=len(loc), max_size=len(loc)))
    return np.array(loc, np.int32), np.array(ts, np.int64), np.array(stored, bool)


@settings(max_examples=300, deadline=None)
@given(sensor_runs())
def test_last_in_slot_is_each_slots_last_stored_row(case):
    loc, ts, stored = case
    slots = 8
    key = (ts // S).astype(np.int32)
    last: dict = {}
    for i in np.flatnonzero(stored):
        last[(int(loc[i]), int(key[i]) % slots)] = int(i)
    assert _last_in_slot(loc, key, stored, slots).tolist() == sorted(last.values())


def test_last_in_slot_when_a_sensor_comes_back_to_a_slot():
    # Keys 0 and 8 share slot 0 of an 8-slot ring: only the later row stays; keys 1 and 5 keep their own.
    loc = np.zeros(4, np.int32)
    key = np.array([0, 1, 5, 8], np.int32)
    assert _last_in_slot(loc, key, np.ones(4, bool), 8).tolist() == [1, 2, 3]
    # A gap without a return to the same slot: every row stays.
    key = np.array([0, 2, 5, 9], np.int32)
    assert _last_in_slot(loc, key, np.ones(4, bool), 8).tolist() == [0, 1, 2, 3]


@settings(max_examples=200, deadline=None)
@given(sensor_runs(), st.integers(0, 3))
def test_insert_series_and_beside_equal_one_row_at_a_time(case, warm):
    loc, ts, stored = case
    n = 4
    whole, single = SlotRing(n, 8, 1), SlotRing(n, 8, 1)
    tag_whole, tag_single = np.zeros(whole.val_.shape, bool), np.zeros(single.val_.shape, bool)
    # A ring already holding readings, some newer than the batch's first rows (those rows store nothing).
    for ring in (whole, single):
        for s in range(n):
            ring.insert(np.array([s]), np.array([T0 + (s * 7 + warm * 5) * S]), np.array([-1.0]))
    value = np.arange(len(loc), dtype=np.float64) + 0.5
    tags = (np.arange(len(loc)) % 3 == 0).astype(np.float64)
    seen = whole.insert_series(loc, ts, value, stored)
    seen.beside(tag_whole, tags)
    for i in range(len(loc)):
        done = single.insert(loc[i:i + 1], ts[i:i + 1], value[i:i + 1], stored[i:i + 1])
        assert done is not None
        flat, newer = done
        tag_single.reshape(-1)[flat[newer]] = tags[i:i + 1][newer]
    assert np.array_equal(whole.val_, single.val_)
    assert np.array_equal(whole.key_, single.key_)
    assert np.array_equal(tag_whole, tag_single)


@st.composite
def any_batch(draw):
    n = draw(st.integers(0, 30))
    sensor = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
    return np.array(sensor, np.int32), np.array(ts, np.int64) * S


@settings(max_examples=300, deadline=None)
@given(any_batch())
def test_sensor_time_order_is_lexsorts(batch):
    sensor, ts = batch
    assert _sensor_time_order(sensor, ts).tolist() == np.lexsort((ts, sensor)).tolist()


def test_sensor_time_order_of_interleaved_messages():
    # Three devices' 60-row messages interleaved message by message: not time-ordered as a whole, each
    # device's rows are; and the same with one device's message sent out of order.
    sensor = np.repeat(np.tile(np.array([2, 0, 1], np.int32), 2), 60)
    ts = np.concatenate([T0 + (m * 60 + np.arange(60)) * S for m in (0, 0, 0, 1, 1, 1)])
    assert _sensor_time_order(sensor, ts).tolist() == np.lexsort((ts, sensor)).tolist()
    ts[:60] += 120 * S
    assert _sensor_time_order(sensor, ts).tolist() == np.lexsort((ts, sensor)).tolist()
