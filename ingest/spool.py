"""Crash-safe, append-only spool of line-protocol batches that are not yet in InfluxDB.

Records live in numbered segment files; each record is `header + payload` with the payload's CRC32, and is
fsynced before `append` returns. A cursor file (replaced atomically) says how far the drain has got (a drain
thread may write it less often, `defer_cursor`: a crash then re-delivers what it drained since). On open, a
torn or corrupt tail (a crash mid-append) is cut off; records before it are kept and drain in order.
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import struct
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from core.fsio import fsync_dir

log = logging.getLogger(__name__)

# magic, payload length, CRC32 of (append time + payload), append time (UTC ns).
_HEADER = struct.Struct("<4sIIq")
_MAGIC = b"CWS1"
_SEGMENT_SUFFIX = ".seg"
_CURSOR = "cursor"


class SpoolLocked(RuntimeError):
    """Another process holds this spool directory (two collectors must not share one spool)."""


class SpoolFull(Exception):
    """The spool would exceed its size bound: the caller must not ack, so the broker keeps the messages."""


@dataclass(frozen=True)
class SpoolRecord:
    """One spooled batch: its location (segment number, byte offset), payload and append time (UTC ns)."""

    segment: int
    offset: int
    payload: bytes
    appended_ns: int

    @property
    def size(self) -> int:
        return _HEADER.size + len(self.payload)


@dataclass(frozen=True)
class SpoolStats:
    records: int
    bytes: int
    oldest_ns: int | None
    recovered_bytes_cut: int


class SpoolWriter:
    """A bounded, crash-safe FIFO of byte payloads on disk.

    directory:         where the segment files and the cursor live (created if missing)
    max_bytes:         bound on the bytes of pending records; `append` raises SpoolFull beyond it
    segment_max_bytes: a new segment file is started once the current one reaches this size
    fsync:             fsync every append and cursor update (turn off only in benchmarks of the code itself)

    Thread-safe: one thread may append while another drains. Records are delivered by `drain` in append
    order; a record is removed only after the drain's write function returned for it, so a crash can
    re-deliver the last record (InfluxDB writes are idempotent) but never lose one. With `defer_cursor`, a
    crash re-delivers at most the records drained within its bounds, never fewer than the last one.
    """

    def __init__(self, directory: str | os.PathLike[str], max_bytes: int, segment_max_bytes: int = 16 * 1024 * 1024,
                 fsync: bool = True) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be above 0, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = int(max_bytes)
        self.segment_max_bytes = int(segment_max_bytes)
        self._fsync = fsync
        self._lock = threading.Lock()
        self._drain_lock = threading.Lock()
        self._appended = threading.Event()  # set by each append: wakes a drain thread (wait_appended)
        self._pending: deque[tuple[int, int, int, int]] = deque()  # (segment, offset, size, appended_ns)
        self._pending_bytes = 0
        self._active: int | None = None
        self._active_file: io.BufferedWriter | None = None
        self._active_size = 0
        self.recovered_bytes_cut = 0
        # The cursor on disk may lag the drain (defer_cursor): the records drained since it was written (their
        # bytes, the monotonic time of the oldest such drain) and where it will point once written.
        self._cursor_every_s = 0.0
        self._cursor_every_bytes = 0
        self._cursor_lag_bytes = 0
        self._cursor_lag_since: float | None = None
        self._cursor_next: tuple[int, int] | None = None
        self.cursor_writes = 0
        self.directory.mkdir(parents=True, exist_ok=True)
        # The lock dies with the process (SIGKILL included), so a restarted collector can always take over.
        self._lock_file = open(self.directory / "lock", "a+")
        try:
            fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise SpoolLocked(f"spool directory {self.directory} is in use by another process") from None
        self._recover()

    # ----- public API ------------------------------------------------------------------------------

    def append(self, payload: bytes, now_ns: int | None = None) -> None:
        """Append one record and fsync it. Raises SpoolFull if it would exceed max_bytes (nothing written)."""
        payload = bytes(payload)
        ts = time.time_ns() if now_ns is None else int(now_ns)
        size = _HEADER.size + len(payload)
        with self._lock:
            # One record larger than the whole bound is still accepted into an empty spool, or it could
            # never be made durable while InfluxDB is down.
            if self._pending and self._pending_bytes + size > self.max_bytes:
                raise SpoolFull(f"spool holds {self._pending_bytes} bytes; bound is {self.max_bytes}")
            if self._active_file is None or self._active_size >= self.segment_max_bytes:
                self._roll()
            fh, segment = self._active_file, self._active
            assert fh is not None and segment is not None  # _roll opened a segment
            crc = zlib.crc32(payload, zlib.crc32(struct.pack("<q", ts)))
            offset = self._active_size
            fh.write(_HEADER.pack(_MAGIC, len(payload), crc, ts) + payload)
            fh.flush()
            if self._fsync:
                os.fsync(fh.fileno())
            self._active_size += size
            self._pending.append((segment, offset, size, ts))
            self._pending_bytes += size
        self._appended.set()

    def defer_cursor(self, every_s: float, every_bytes: int) -> None:
        """From now on, a drain writes the cursor (an fsync of its file and one of the directory) only once
        the records drained since it was last written are `every_s` seconds old or `every_bytes` bytes, and
        `sync_cursor` or `close` write it otherwise. A crash (kill -9) re-delivers those records, never loses
        one: segments are deleted only behind the cursor on disk. Raises ValueError for a negative bound."""
        if every_s < 0 or every_bytes < 0:
            raise ValueError(f"cursor bounds must be 0 or above, got {every_s} s and {every_bytes} bytes")
        with self._lock:
            self._cursor_every_s = float(every_s)
            self._cursor_every_bytes = int(every_bytes)

    def sync_cursor(self, min_age_s: float = 0.0) -> bool:
        """Write the cursor if records were drained since it was last written, the oldest of them at least
        `min_age_s` seconds ago (a drain thread calls it while idle). True if it was written."""
        with self._lock:
            if self._cursor_next is None or self._cursor_lag_since is None:
                return False
            if time.monotonic() - self._cursor_lag_since < min_age_s:
                return False
            self._sync_cursor_locked()
            return True

    def wait_appended(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for an append since the last call; True if one came (for a drain thread)."""
        got = self._appended.wait(timeout_s)
        self._appended.clear()
        return got

    def room_for(self, nbytes: int) -> bool:
        """Whether a payload of `nbytes` would fit now."""
        with self._lock:
            return not self._pending or self._pending_bytes + _HEADER.size + nbytes <= self.max_bytes

    def __len__(self) -> int:
        return len(self._pending)

    def empty(self) -> bool:
        return not self._pending

    def stats(self) -> SpoolStats:
        with self._lock:
            oldest = self._pending[0][3] if self._pending else None
            return SpoolStats(len(self._pending), self._pending_bytes, oldest, self.recovered_bytes_cut)

    def peek(self, limit: int = 1) -> list[SpoolRecord]:
        """Up to `limit` oldest pending records, in order, without removing them."""
        with self._lock:
            locs = [self._pending[i] for i in range(min(limit, len(self._pending)))]
        return [self._read(seg, off, size, ts) for seg, off, size, ts in locs]

    def drain(self, write: Callable[[bytes], None], max_records: int | None = None) -> int:
        """Hand pending records to `write` in order; remove each once `write` returned.

        Stops at the first exception, which propagates (the record stays first in line). Returns the number
        of records drained. Only one drain runs at a time.
        """
        done = 0
        with self._drain_lock:
            while max_records is None or done < max_records:
                recs = self.peek(1)
                if not recs:
                    break
                write(recs[0].payload)
                self._consume(recs[0])
                done += 1
        return done

    def drain_merged(self, write: Callable[[bytes], None], max_bytes: int, max_records: int = 1024) -> int:
        """Hand the oldest pending records to `write` as one payload (joined in order, each ending in a
        newline: line protocol), at most `max_records` records and `max_bytes` bytes (always at least one
        record); remove them all once `write` returned, with one cursor update. Many small records (one per
        group commit) thus cost one InfluxDB write and two fsyncs. On an exception nothing is removed and it
        propagates. Returns the number of records drained. Only one drain runs at a time."""
        with self._drain_lock:
            with self._lock:
                locs: list[tuple[int, int, int, int]] = []
                total = 0
                for loc in self._pending:
                    if len(locs) >= max_records or (locs and total + loc[2] > max_bytes):
                        break
                    locs.append(loc)
                    total += loc[2]
            if not locs:
                return 0
            recs = [self._read(seg, off, size, ts) for seg, off, size, ts in locs]
            write(b"".join(r.payload if r.payload.endswith(b"\n") else r.payload + b"\n" for r in recs))
            self._consume_many(recs)
            return len(recs)

    def close(self) -> None:
        """Write a lagging cursor (defer_cursor), close the files and release the directory."""
        with self._lock:
            if self._cursor_next is not None and not self._lock_file.closed:
                self._sync_cursor_locked()
            if self._active_file is not None:
                self._active_file.close()
                self._active_file = None
            if not self._lock_file.closed:
                self._lock_file.close()

    @staticmethod
    def inspect(directory: str | os.PathLike[str]) -> SpoolStats:
        """Read-only statistics of a spool directory that another process may own (for `citywatch status`).
        From the cursor on disk: while its owner defers the cursor (defer_cursor), records it drained since
        still count."""
        directory = Path(directory)
        if not directory.is_dir():
            return SpoolStats(0, 0, None, 0)
        seg, off = _read_cursor(directory)
        records = nbytes = 0
        oldest = None
        for number, path in _segments(directory):
            if number < seg:
                continue
            start = off if number == seg else 0
            for offset, size, ts, _ in _scan(path):
                if offset >= start:
                    records += 1
                    nbytes += size
                    oldest = ts if oldest is None else oldest
        return SpoolStats(records, nbytes, oldest, 0)

    # ----- internals -------------------------------------------------------------------------------

    def _consume(self, rec: SpoolRecord) -> None:
        self._consume_many([rec])

    def _consume_many(self, recs: list[SpoolRecord]) -> None:
        with self._lock:
            for rec in recs:
                head = self._pending[0]
                if (head[0], head[1]) != (rec.segment, rec.offset):  # pragma: no cover - guarded by _drain_lock
                    raise RuntimeError("spool drained out of order")
                self._pending.popleft()
                self._pending_bytes -= head[2]
                self._cursor_lag_bytes += head[2]
            if self._pending:
                self._cursor_next = (self._pending[0][0], self._pending[0][1])
            else:
                self._cursor_next = (rec.segment, rec.offset + head[2])
            now = time.monotonic()
            if self._cursor_lag_since is None:
                self._cursor_lag_since = now
            # Without defer_cursor both bounds are 0: the cursor follows every drain.
            if (self._cursor_lag_bytes >= self._cursor_every_bytes
                    or now - self._cursor_lag_since >= self._cursor_every_s):
                self._sync_cursor_locked()

    def _sync_cursor_locked(self) -> None:
        """Write the pending cursor position (the caller holds self._lock)."""
        cursor = self._cursor_next
        if cursor is None:
            return
        self._write_cursor(*cursor)
        self.cursor_writes += 1
        self._cursor_next = None
        self._cursor_lag_bytes = 0
        self._cursor_lag_since = None
        # Segments before the cursor's are fully drained: delete them (after the cursor is durable; never
        # behind a cursor that is not yet written, or a crash could not re-deliver their records).
        for number, path in _segments(self.directory):
            if number < cursor[0] and number != self._active:
                path.unlink(missing_ok=True)

    def _read(self, seg: int, off: int, size: int, ts: int) -> SpoolRecord:
        with open(self._path(seg), "rb") as f:
            f.seek(off)
            data = f.read(size)
        magic, length, crc, stamp = _HEADER.unpack_from(data)
        payload = data[_HEADER.size:]
        if magic != _MAGIC or len(payload) != length or zlib.crc32(payload, zlib.crc32(struct.pack("<q", stamp))) != crc:
            raise OSError(f"spool record {seg}:{off} changed on disk")  # pragma: no cover - disk fault
        return SpoolRecord(seg, off, payload, stamp)

    def _path(self, number: int) -> Path:
        return self.directory / f"{number:012d}{_SEGMENT_SUFFIX}"

    def _roll(self) -> None:
        if self._active_file is not None:
            self._active_file.close()
        self._active = 0 if self._active is None else self._active + 1
        fh = self._active_file = open(self._path(self._active), "ab")
        self._active_size = fh.tell()
        if self._fsync:
            fsync_dir(self.directory)

    def _write_cursor(self, seg: int, off: int) -> None:
        tmp = self.directory / (_CURSOR + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{seg} {off}\n")
            f.flush()
            if self._fsync:
                os.fsync(f.fileno())
        os.replace(tmp, self.directory / _CURSOR)
        if self._fsync:
            fsync_dir(self.directory)

    def _recover(self) -> None:
        cur_seg, cur_off = _read_cursor(self.directory)
        segments = _segments(self.directory)
        for number, path in segments:
            if number < cur_seg:
                path.unlink(missing_ok=True)  # drained before a crash, not yet deleted
                continue
            good_end = 0
            for offset, size, ts, _ in _scan(path):
                good_end = offset + size
                if number > cur_seg or offset >= cur_off:
                    self._pending.append((number, offset, size, ts))
                    self._pending_bytes += size
            actual = path.stat().st_size
            if actual > good_end:
                # A torn tail: the append that was cut short was never acked, so the broker still has it.
                log.warning("spool %s: cut %d bytes of torn or corrupt tail", path.name, actual - good_end)
                self.recovered_bytes_cut += actual - good_end
                with open(path, "r+b") as f:
                    f.truncate(good_end)
                    os.fsync(f.fileno())
        live = [n for n, _ in segments if n >= cur_seg]
        # Appends always go to a fresh segment after a restart: never write behind a cut tail.
        has_cursor = (self.directory / _CURSOR).exists()
        self._active = max(live) if live else (cur_seg if has_cursor else None)
        self._active_file = None
        self._active_size = 0


def _segments(directory: Path) -> list[tuple[int, Path]]:
    out = []
    for path in directory.glob("*" + _SEGMENT_SUFFIX):
        try:
            out.append((int(path.stem), path))
        except ValueError:
            continue
    return sorted(out)


def _read_cursor(directory: Path) -> tuple[int, int]:
    try:
        seg, off = (directory / _CURSOR).read_text().split()
        return int(seg), int(off)
    except (OSError, ValueError):
        return 0, 0


def _scan(path: Path) -> Iterator[tuple[int, int, int, int]]:
    """Yield (offset, size, appended_ns, payload_len) of each intact record, stopping at the first bad one."""
    try:
        data = path.read_bytes()
    except OSError:
        return
    pos = 0
    n = len(data)
    while pos + _HEADER.size <= n:
        magic, length, crc, ts = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if magic != _MAGIC or end > n:
            return
        payload = data[pos + _HEADER.size:end]
        if zlib.crc32(payload, zlib.crc32(struct.pack("<q", ts))) != crc:
            return
        yield pos, end - pos, ts, length
        pos = end
