"""SpoolWriter.drain_merged (issue 17): many small group-commit records leave in one write, in order, bounded,
and are removed only once the write returned; a reopen resumes after the last merged write."""

from __future__ import annotations

import threading

import pytest

from ingest.spool import _HEADER, SpoolWriter


def test_merges_consecutive_records_in_order_within_the_byte_bound(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=100_000, segment_max_bytes=200)  # several segments
    payloads = [f"m,d=x v={i:02d}i {i:02d}\n".encode() for i in range(40)]  # one size
    for p in payloads:
        s.append(p)
    writes: list[bytes] = []
    bound = 5 * (_HEADER.size + len(payloads[0]))
    while not s.empty():
        assert s.drain_merged(writes.append, bound) > 0
    assert b"".join(writes) == b"".join(payloads)
    assert all(w.count(b"\n") <= 5 for w in writes) and len(writes) == 8
    assert s.stats().records == 0 and s.stats().bytes == 0


def test_a_record_without_a_final_newline_does_not_glue_to_the_next(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    s.append(b"a v=1i 1")
    s.append(b"b v=2i 2\n")
    got: list[bytes] = []
    assert s.drain_merged(got.append, 10_000) == 2
    assert got == [b"a v=1i 1\nb v=2i 2\n"]


def test_a_record_larger_than_the_bound_still_leaves_alone(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    s.append(b"x" * 500 + b"\n")
    s.append(b"y\n")
    got: list[bytes] = []
    assert s.drain_merged(got.append, 100) == 1
    assert s.drain_merged(got.append, 100) == 1
    assert got == [b"x" * 500 + b"\n", b"y\n"]


def test_a_failed_write_removes_nothing_and_a_reopen_resumes_after_the_last_success(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    for i in range(6):
        s.append(f"r{i}\n".encode())
    got: list[bytes] = []
    assert s.drain_merged(got.append, 10_000, max_records=2) == 2

    def down(_payload: bytes) -> None:
        raise ConnectionError("influx down")

    with pytest.raises(ConnectionError):
        s.drain_merged(down, 10_000)
    assert len(s) == 4
    s.close()
    s2 = SpoolWriter(tmp_path, max_bytes=10_000)  # a crash after the failed write: nothing lost, nothing repeated
    assert s2.drain_merged(got.append, 10_000) == 4
    assert b"".join(got) == b"r0\nr1\nr2\nr3\nr4\nr5\n"


def test_wait_appended_wakes_on_an_append_from_another_thread(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    assert s.wait_appended(0.0) is False
    t = threading.Thread(target=s.append, args=(b"z\n",))
    t.start()
    assert s.wait_appended(30.0) is True
    t.join()
    assert s.wait_appended(0.0) is False  # consumed: the next wait needs a new append
