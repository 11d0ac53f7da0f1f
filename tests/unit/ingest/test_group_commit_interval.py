"""The spool group commit's minimum interval (issue 17): with ack_after spool a batch is cut once the durability
thread is free and the last cut is GROUP_COMMIT_MIN_S old (or, without a Receive Maximum, once it holds
GROUP_COMMIT_MESSAGES messages), and the decode side wakes when the interval is over.

IngestPipeline._commit_now and _timeout are called on stand-ins holding only what they read; the clock is injected."""

from __future__ import annotations

import queue
from types import SimpleNamespace

import pytest

from ingest.batcher import MicroBatcher
from ingest.pipeline import GROUP_COMMIT_MESSAGES, GROUP_COMMIT_MIN_S, IngestPipeline

T0 = 1000.0


def _pipe(messages: int, *, ack_after: str = "spool", busy: bool = False, queued: int = 0,
          commit_messages: int | None = GROUP_COMMIT_MESSAGES, last_cut: float = T0) -> SimpleNamespace:
    flushes: queue.Queue[object] = queue.Queue()
    for _ in range(queued):
        flushes.put(object())
    return SimpleNamespace(ack_after=ack_after, batcher=SimpleNamespace(messages=messages), _durable_busy=busy,
                           _flushes=flushes, _commit_messages=commit_messages, _last_cut=last_cut)


def commit_now(p: SimpleNamespace, now: float) -> bool:
    return IngestPipeline._commit_now(p, now)


def test_a_batch_waits_out_the_interval_since_the_last_cut():
    p = _pipe(3)
    assert not commit_now(p, T0)
    assert not commit_now(p, T0 + GROUP_COMMIT_MIN_S / 2)
    assert commit_now(p, T0 + GROUP_COMMIT_MIN_S * 1.01)


def test_without_a_receive_maximum_enough_messages_leave_at_once():
    assert commit_now(_pipe(GROUP_COMMIT_MESSAGES), T0)
    assert not commit_now(_pipe(GROUP_COMMIT_MESSAGES - 1), T0)


def test_an_mqtt5_session_waits_out_the_interval_whatever_the_messages():
    assert not commit_now(_pipe(GROUP_COMMIT_MESSAGES * 10, commit_messages=None), T0)
    assert commit_now(_pipe(1, commit_messages=None), T0 + GROUP_COMMIT_MIN_S * 1.01)


@pytest.mark.parametrize("kw", [{"busy": True}, {"queued": 1}, {"ack_after": "influxdb"}])
def test_no_cut_while_the_durability_thread_has_work_or_acks_wait_for_influxdb(kw):
    assert not commit_now(_pipe(GROUP_COMMIT_MESSAGES * 2, **kw), T0 + 1.0)


def test_an_empty_batch_is_never_cut():
    assert not commit_now(_pipe(0), T0 + 1.0)


def _timeout_pipe(ack_after: str, last_cut: float, first_at: float | None) -> SimpleNamespace:
    batcher = MicroBatcher(10_000, 0.2, clock=lambda: first_at if first_at is not None else T0)
    if first_at is not None:
        batcher.add(None, token=1)
    return SimpleNamespace(ack_after=ack_after, batcher=batcher, idle_s=0.02, _last_cut=last_cut)


def timeout(p: SimpleNamespace, now: float) -> float:
    return IngestPipeline._timeout(p, now)


def test_the_decode_side_wakes_when_the_interval_is_over():
    p = _timeout_pipe("spool", last_cut=T0, first_at=T0)
    assert timeout(p, T0 + 0.005) == pytest.approx(GROUP_COMMIT_MIN_S - 0.005)
    # Past the interval: the idle and age limits as before.
    assert timeout(p, T0 + GROUP_COMMIT_MIN_S * 1.01) == pytest.approx(0.02)


def test_acks_after_influxdb_keep_the_idle_and_age_limits():
    p = _timeout_pipe("influxdb", last_cut=T0, first_at=T0)
    assert timeout(p, T0 + 0.005) == pytest.approx(0.02)
    assert timeout(p, T0 + 0.19) == pytest.approx(0.01)


def test_an_empty_batch_waits_half_a_second():
    assert timeout(_timeout_pipe("spool", last_cut=T0, first_at=None), T0) == 0.5
