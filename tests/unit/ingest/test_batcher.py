"""MicroBatcher: flush on rows, messages and age; columns with differing fields; tokens in order."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from core import ReadingBatch
from ingest.batcher import MicroBatcher


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def rb(n, sensor=0, fields=("leq",), start=0):
    return ReadingBatch(np.full(n, sensor), np.arange(start, start + n) * 1000,
                        {f: np.arange(start, start + n, dtype=float) + i for i, f in enumerate(fields)})


def test_flushes_on_row_count():
    b = MicroBatcher(max_rows=10, max_age_s=1.0, clock=Clock())
    assert not b.add(rb(4), "m1")
    assert not b.add(rb(5), "m2")
    assert b.add(rb(3), "m3")
    f = b.take()
    assert len(f.batch) == 12 and f.tokens == ["m1", "m2", "m3"] and f.messages == 3
    assert b.take() is None and b.rows == 0


def test_flushes_on_age_with_injected_clock():
    clock = Clock()
    b = MicroBatcher(max_rows=1000, max_age_s=0.2, clock=clock)
    assert not b.due()
    b.add(rb(1), "m1")
    clock.t += 0.1
    assert not b.due() and abs(b.time_left() - 0.1) < 1e-9
    clock.t += 0.15
    assert b.due()


def test_flushes_on_message_count_even_without_rows():
    b = MicroBatcher(max_rows=1000, max_age_s=1.0, max_messages=3, clock=Clock())
    b.add(None, "bad1", ["dead letter"])
    b.add(rb(0), "status")
    assert b.add(rb(1), "m3")
    f = b.take()
    assert f.tokens == ["bad1", "status", "m3"] and f.deadletters == ["dead letter"] and len(f.batch) == 1


def test_fields_missing_in_some_messages_are_nan():
    b = MicroBatcher(max_rows=100, max_age_s=1.0, clock=Clock())
    b.add(rb(2, fields=("leq",)), 1)
    b.add(rb(2, sensor=3, fields=("p",)), 2)
    f = b.take().batch
    assert np.isnan(f.values["p"][:2]).all() and np.isnan(f.values["leq"][2:]).all()
    assert f.values["leq"][:2].tolist() == [0.0, 1.0] and f.sensor.tolist() == [0, 0, 3, 3]
    # The buffers are reused: a field of the previous batch must not leak into the next one.
    b.add(rb(1, fields=("p",)), 3)
    g = b.take().batch
    assert set(g.values) == {"p"}


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from([("leq",), ("p",), ("leq", "lmax")])), max_size=30),
       st.integers(1, 64))
def test_flushed_batches_concatenate_to_the_input(msgs, max_rows):
    """However the flushes fall, their concatenation equals the concatenation of the messages."""
    b = MicroBatcher(max_rows=max_rows, max_age_s=1.0, clock=Clock())
    inputs, outputs, start = [], [], 0
    for i, (n, fields) in enumerate(msgs):
        part = rb(n, sensor=i, fields=fields, start=start)
        start += n
        inputs.append(part)
        if b.add(part, i):
            outputs.append(b.take())
    last = b.take()
    if last:
        outputs.append(last)
    want = ReadingBatch.concat(inputs)
    got = ReadingBatch.concat([f.batch for f in outputs])
    assert [t for f in outputs for t in f.tokens] == list(range(len(msgs)))
    assert got.sensor.tolist() == want.sensor.tolist() and got.ts_ns.tolist() == want.ts_ns.tolist()
    for k in want.values:
        np.testing.assert_array_equal(got.column(k), want.column(k))
