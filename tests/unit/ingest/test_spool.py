"""SpoolWriter: order, durability across reopen, torn-tail recovery, size bound, segment cleanup."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ingest.spool import _HEADER, SpoolFull, SpoolLocked, SpoolWriter


def drain_all(spool: SpoolWriter) -> list[bytes]:
    out: list[bytes] = []
    spool.drain(out.append)
    return out


def test_drains_in_append_order_and_survives_reopen(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000, segment_max_bytes=64)
    payloads = [f"line {i}\n".encode() * (i % 3 + 1) for i in range(20)]
    for p in payloads:
        s.append(p)
    assert len(s) == 20 and not s.empty()
    got: list[bytes] = []
    s.drain(got.append, max_records=7)
    s.close()
    s2 = SpoolWriter(tmp_path, max_bytes=10_000, segment_max_bytes=64)
    assert len(s2) == 13
    assert got + drain_all(s2) == payloads
    assert s2.empty() and s2.stats().bytes == 0


def test_failed_write_keeps_the_record_first_in_line(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    s.append(b"a")
    s.append(b"b")

    def failing(payload):
        raise ConnectionError("influx down")

    with pytest.raises(ConnectionError):
        s.drain(failing)
    assert [r.payload for r in s.peek(5)] == [b"a", b"b"]
    assert drain_all(s) == [b"a", b"b"]


def test_torn_tail_is_cut_and_earlier_records_kept(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    for p in (b"one", b"two", b"three"):
        s.append(p)
    s.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    size = seg.stat().st_size
    with open(seg, "r+b") as f:  # a crash in the middle of the last append
        f.truncate(size - 2)
    s2 = SpoolWriter(tmp_path, max_bytes=10_000)
    assert s2.recovered_bytes_cut == _HEADER.size + len(b"three") - 2
    s2.append(b"four")
    assert drain_all(s2) == [b"one", b"two", b"four"]


def test_corrupt_record_is_detected_by_its_checksum(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    s.append(b"good")
    s.append(b"flipped")
    s.close()
    seg = sorted(tmp_path.glob("*.seg"))[-1]
    data = bytearray(seg.read_bytes())
    data[-1] ^= 0xFF
    seg.write_bytes(bytes(data))
    assert drain_all(SpoolWriter(tmp_path, max_bytes=10_000)) == [b"good"]


def test_size_bound_refuses_appends_until_drained(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=3 * (_HEADER.size + 10))
    for _ in range(3):
        s.append(b"x" * 10)
    assert not s.room_for(10)
    with pytest.raises(SpoolFull):
        s.append(b"x" * 10)
    s.drain(lambda p: None, max_records=1)
    s.append(b"y" * 10)
    assert len(s) == 3


def test_one_record_larger_than_the_bound_still_fits_an_empty_spool(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10)
    s.append(b"z" * 100)
    with pytest.raises(SpoolFull):
        s.append(b"z")


def test_drained_segments_are_deleted(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=100_000, segment_max_bytes=100)
    for _ in range(50):
        s.append(b"p" * 40)
    assert len(list(tmp_path.glob("*.seg"))) > 10
    drain_all(s)
    assert len(list(tmp_path.glob("*.seg"))) <= 1


def test_second_process_cannot_open_the_same_spool(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=1000)
    with pytest.raises(SpoolLocked):
        SpoolWriter(tmp_path, max_bytes=1000)
    s.close()
    SpoolWriter(tmp_path, max_bytes=1000).close()


def test_inspect_reads_another_processes_spool(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    for p in (b"a" * 5, b"b" * 7, b"c"):
        s.append(p, now_ns=1000)
    s.drain(lambda p: None, max_records=1)
    st = SpoolWriter.inspect(tmp_path)
    assert (st.records, st.bytes, st.oldest_ns) == (2, 2 * _HEADER.size + 8, 1000)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.binary(min_size=0, max_size=50)),
        st.tuples(st.just("drain"), st.integers(1, 4)),
        st.tuples(st.just("crash"), st.integers(0, 30)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops)
def test_model_fifo_survives_crashes_and_torn_tails(tmp_path_factory, ops):
    """Against a plain list: drained order equals appended order; a crash that tears the last append loses
    only that append (it was never acknowledged); nothing else is lost or duplicated."""
    d = tmp_path_factory.mktemp("spool")
    s = SpoolWriter(d, max_bytes=1 << 20, segment_max_bytes=120)
    model: list[bytes] = []
    drained: list[bytes] = []
    expected_drained: list[bytes] = []
    last_appended = None
    for op, arg in ops:
        if op == "append":
            s.append(arg)
            model.append(arg)
            last_appended = arg
        elif op == "drain":
            s.drain(drained.append, max_records=arg)
            expected_drained += model[:arg]
            del model[:arg]
        else:
            s.close()
            segs = sorted(d.glob("*.seg"))
            if arg and segs and last_appended is not None and model and model[-1] is last_appended:
                seg = segs[-1]
                size = seg.stat().st_size
                cut = min(arg, _HEADER.size + len(last_appended))
                if cut and size >= cut:
                    with open(seg, "r+b") as f:
                        f.truncate(size - cut)
                    model.pop()
            s = SpoolWriter(d, max_bytes=1 << 20, segment_max_bytes=120)
            last_appended = None
        assert len(s) == len(model)
    s.drain(drained.append)
    assert drained == expected_drained + model
    s.close()
