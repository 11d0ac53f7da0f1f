"""SpoolWriter.defer_cursor (issue 17): the drain thread writes the cursor (two fsyncs) only once the records
drained since are old or large enough; a kill -9 in between re-delivers those records (InfluxDB rewrites are
idempotent), in order, and loses none; a clean close or `sync_cursor` leaves nothing to re-send."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from ingest.influx_target import PRIMARY, InfluxTarget
from ingest.influx_writer import InfluxWriter
from ingest.metrics import IngestMetrics
from ingest.spool import _HEADER, SpoolWriter

ROOT = Path(__file__).resolve().parents[3]


def _cursor(d: Path) -> str:
    return (d / "cursor").read_text().strip() if (d / "cursor").exists() else "none"


def _drain_all(s: SpoolWriter) -> list[bytes]:
    got: list[bytes] = []
    while not s.empty():
        s.drain_merged(got.append, 1 << 20, max_records=1)
    return got


def test_without_deferral_every_drain_writes_the_cursor(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    for i in range(3):
        s.append(f"r{i}\n".encode())
    _drain_all(s)
    assert s.cursor_writes == 3
    s.close()


def test_a_deferred_cursor_is_written_once_the_drained_bytes_reach_the_bound(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    rec = _HEADER.size + len(b"r0\n")
    s.defer_cursor(3600.0, 3 * rec)
    for i in range(7):
        s.append(f"r{i}\n".encode())
    _drain_all(s)
    assert s.cursor_writes == 2  # after the 3rd and the 6th record; the 7th waits
    assert _cursor(tmp_path) == f"0 {6 * rec}"
    assert s.sync_cursor(min_age_s=3600.0) is False  # drained just now: not old enough yet
    assert s.sync_cursor() is True
    assert _cursor(tmp_path) == f"0 {7 * rec}"
    assert s.sync_cursor() is False  # nothing new drained
    s.close()


def test_a_deferred_cursor_follows_the_time_bound(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    s.defer_cursor(0.0, 1 << 30)  # 0 s: every drain is old enough
    s.append(b"a\n")
    _drain_all(s)
    assert s.cursor_writes == 1
    s.close()


def test_close_writes_a_lagging_cursor_so_a_reopen_re_sends_nothing(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    s.defer_cursor(3600.0, 1 << 30)
    for i in range(4):
        s.append(f"r{i}\n".encode())
    _drain_all(s)
    assert _cursor(tmp_path) == "none"
    s.close()
    assert SpoolWriter.inspect(tmp_path).records == 0
    s2 = SpoolWriter(tmp_path, max_bytes=10_000)
    assert s2.empty()
    s2.close()


def test_negative_bounds_are_refused(tmp_path):
    s = SpoolWriter(tmp_path, max_bytes=10_000)
    with pytest.raises(ValueError, match="cursor bounds must be 0 or above, got -1.0 s and 0 bytes"):
        s.defer_cursor(-1.0, 0)
    s.close()


KILLED = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {root!r})
    from ingest.spool import SpoolWriter
    s = SpoolWriter({d!r}, max_bytes=1 << 20, segment_max_bytes=40)  # a few records per segment
    s.defer_cursor(3600.0, {every_bytes})
    for i in range(12):
        s.append(f"r{{i:02d}}\\n".encode())
    n = 0
    while n < 9:
        n += s.drain_merged(lambda b: None, 1 << 20, max_records=1)
    os.kill(os.getpid(), signal.SIGKILL)
""")


@pytest.mark.parametrize("every_records", [4, 100])
def test_kill_9_with_a_lagging_cursor_re_sends_the_drained_records_and_loses_none(tmp_path, every_records):
    rec = _HEADER.size + len(b"r00\n")
    code = KILLED.format(root=str(ROOT), d=str(tmp_path), every_bytes=every_records * rec)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    assert proc.returncode == -9, proc.stderr.decode()
    s = SpoolWriter(tmp_path, max_bytes=1 << 20, segment_max_bytes=40)
    got = [p.decode() for p in _drain_all(s)]
    # The cursor was last written after the 8th record (every 4) or never (every 100): from there on, again.
    first = 8 if every_records == 4 else 0
    assert got == [f"r{i:02d}\n" for i in range(first, 12)]
    s.close()


class _Recording(InfluxWriter):
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.done = threading.Event()

    def write(self, lines: bytes) -> None:
        self.writes.append(lines)
        if b"".join(self.writes).count(b"\n") >= 20:
            self.done.set()

    def ping(self) -> bool:
        return True


def test_the_drain_thread_writes_in_order_and_leaves_a_current_cursor_when_halted(tmp_path):
    spool = SpoolWriter(tmp_path, max_bytes=1 << 20)
    writer = _Recording()
    target = InfluxTarget(PRIMARY, writer, spool, IngestMetrics(), lambda exc, topic: None)
    halt = threading.Event()
    target.start_drain(halt)
    for i in range(20):
        spool.append(f"m v={i}i {i}\n".encode())
    assert writer.done.wait(60)
    halt.set()
    target.join(60)
    assert b"".join(writer.writes) == b"".join(f"m v={i}i {i}\n".encode() for i in range(20))
    assert spool.cursor_writes < 20  # at most one per drain write, and deferred
    assert SpoolWriter.inspect(tmp_path).records == 0  # a stop leaves nothing to re-send
    spool.close()
