"""InfluxWriter's split logic (413 halves, 400 bisection to the refused lines, retryable statuses) and Backoff.

The HTTP exchange is replaced by a table of answers here; the real servers are in
tests/integration/test_ingest_writers.py.
"""

from __future__ import annotations

import pytest

from core.backoff import Backoff
from ingest.influx_writer import InfluxWriter, RejectedWriteError, RetryableWriteError


class Scripted(InfluxWriter):
    """Accepts bodies up to max_bytes (else 413) and refuses (400) any body holding a line with 'bad'."""

    def __init__(self, max_bytes=10**9, status=None, retry_after=None):
        self.max_bytes = max_bytes
        self.status = status
        self.retry_after = retry_after
        self.accepted: list[bytes] = []
        self.requests = 0

    def _post(self, lines):
        self.requests += 1
        if self.status:
            return self.status, "overloaded", self.retry_after
        if len(lines) > self.max_bytes:
            return 413, "too large", None
        good = [ln for ln in lines.split(b"\n") if ln and b"bad" not in ln]
        self.accepted += good  # InfluxDB writes the valid points of a partial write
        if len(good) != len([ln for ln in lines.split(b"\n") if ln]):
            return 400, 'partial write: field type conflict dropped=1', None
        return 204, "", None


def body(n, bad=()):
    return b"".join(f"m,t=x {'bad' if i in bad else 'f'}=1 {i}\n".encode() for i in range(n))


def test_413_splits_until_every_part_fits():
    w = Scripted(max_bytes=100)
    w.write(body(40))
    assert sorted(w.accepted) == sorted(body(40).strip().split(b"\n"))


def test_400_bisects_to_exactly_the_refused_lines():
    w = Scripted()
    with pytest.raises(RejectedWriteError) as info:
        w.write(body(64, bad=(5, 40)))
    assert info.value.lines.split(b"\n") == [b"m,t=x bad=1 5", b"m,t=x bad=1 40"]
    assert "conflict" in info.value.message
    assert len(set(w.accepted)) == 62


@pytest.mark.parametrize("status", [500, 503, 429, 401, 404])
def test_other_failures_are_retryable_and_keep_retry_after(status):
    w = Scripted(status=status, retry_after=7.0)
    with pytest.raises(RetryableWriteError) as info:
        w.write(body(3))
    assert info.value.status == status and info.value.retry_after_s == 7.0


def test_blank_body_sends_nothing():
    w = Scripted()
    w.write(b"\n")
    assert w.requests == 0


def test_backoff_doubles_to_its_cap_and_honours_retry_after():
    now = [0.0]
    b = Backoff(0.5, 4.0, clock=lambda: now[0])
    assert b.ready() and not b.failing
    assert [b.failed() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert not b.ready()
    now[0] += 4.0
    assert b.ready()
    assert b.failed(retry_after_s=20) == 20
    b.succeeded()
    assert b.ready() and not b.failing
