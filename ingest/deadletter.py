"""The dead-letter store: every payload or row the collector refuses, with its reason, as JSONL.

Records are appended to `deadletter.jsonl` and made durable (flush + fsync) before `write` returns, so
the collector may ack the MQTT message afterwards. Files rotate by size: `deadletter.jsonl` ->
`deadletter.1.jsonl` -> ... -> `deadletter.<files_kept>.jsonl` (the oldest is deleted). The collector
also publishes each record's `to_json()` on the dead-letter topic.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

CURRENT = "deadletter.jsonl"


@dataclass
class DeadLetterRecord:
    """One refused payload or row.

    reason:           stable reason code (ingest.decoder.REASONS)
    detail:           human-readable explanation
    topic:            MQTT topic the payload came on
    payload:          the raw payload, UTF-8 text when it decodes as such, else base64
    payload_encoding: "utf-8" | "base64"
    payload_bytes:    size of the original payload in bytes
    truncated:        True when `payload` holds only the first `max_payload_bytes` bytes
    recv_time:        receive time, ISO 8601 UTC with microseconds and a Z
    recv_ns:          receive time, UTC ns (for exact matching and replay)
    device_id:        the device, when the topic or frame identified one
    row:              the refused row as sent (row-level rejects), else None
    """

    reason: str
    detail: str
    topic: str
    payload: str
    payload_encoding: str
    payload_bytes: int
    truncated: bool
    recv_time: str
    recv_ns: int
    device_id: str | None = None
    row: dict | None = None

    @staticmethod
    def build(
        reason: str, detail: str, topic: str, payload: bytes, recv_ns: int,
        device_id: str | None = None, row: dict | None = None, max_payload_bytes: int = 65536,
    ) -> "DeadLetterRecord":
        """A record for one reject; the payload is cut to `max_payload_bytes` (and says so)."""
        payload = bytes(payload or b"")
        size = len(payload)
        kept = payload[:max_payload_bytes]
        truncated = size > max_payload_bytes
        try:
            text = kept.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError as exc:
            # A cut through a multi-byte character is still text: drop the partial character only.
            if truncated and exc.start >= len(kept) - 3 and exc.reason == "unexpected end of data":
                text, encoding = kept[: exc.start].decode("utf-8"), "utf-8"
            else:
                text, encoding = base64.b64encode(kept).decode("ascii"), "base64"
        return DeadLetterRecord(
            reason=reason, detail=detail, topic=topic, payload=text, payload_encoding=encoding,
            payload_bytes=size, truncated=truncated, recv_time=iso_ns(recv_ns), recv_ns=int(recv_ns),
            device_id=device_id, row=_jsonable(row),
        )

    def raw_payload(self) -> bytes:
        """The stored (possibly truncated) payload bytes."""
        if self.payload_encoding == "base64":
            return base64.b64decode(self.payload)
        return self.payload.encode("utf-8")

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        """One line of JSON (no newline). NaN/Infinity in a refused row are written as strings."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def records_for(decoded, topic: str, payload: bytes, recv_ns: int, max_payload_bytes: int = 65536) -> list[DeadLetterRecord]:
    """The dead-letter records of a `Decoded` (one per reject; empty list when nothing was refused)."""
    return [
        DeadLetterRecord.build(r.reason, r.detail, topic, payload, recv_ns, decoded.device_id, r.row, max_payload_bytes)
        for r in decoded.rejects
    ]


def iso_ns(ns: int) -> str:
    """UTC ns -> 2025-06-01T14:30:05.123456Z."""
    sec, rem = divmod(int(ns), 1_000_000_000)
    return datetime.fromtimestamp(sec, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") + f".{rem // 1000:06d}Z"


def _jsonable(row):
    """The row with non-finite floats as strings, so a record is always strict JSON."""
    if row is None:
        return None
    if isinstance(row, float):
        return row if row - row == 0 else repr(row)
    if isinstance(row, dict):
        return {str(k): _jsonable(v) for k, v in row.items()}
    if isinstance(row, (list, tuple)):
        return [_jsonable(v) for v in row]
    if isinstance(row, (str, int, bool)) or row is None:
        return row
    return repr(row)


class DeadLetterStore:
    """Rotating, fsynced JSONL files of dead-letter records. Safe to call from several threads.

    directory:      created if missing
    file_max_bytes: rotate the current file once it reaches this size
    files_kept:     rotated files kept besides the current one (older ones are deleted)
    """

    def __init__(self, directory: str | os.PathLike, file_max_bytes: int = 64 * 2**20, files_kept: int = 10) -> None:
        if file_max_bytes <= 0 or files_kept < 1:
            raise ValueError("file_max_bytes must be > 0 and files_kept >= 1")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file_max_bytes = int(file_max_bytes)
        self.files_kept = int(files_kept)
        self._lock = threading.Lock()
        self._fh = None

    @classmethod
    def from_config(cls, cfg) -> "DeadLetterStore":
        s = cfg.ingest
        return cls(cfg.resolve_path(s.deadletter_dir), int(s.deadletter_file_max_mb * 2**20), s.deadletter_files_kept)

    @property
    def path(self) -> Path:
        return self.dir / CURRENT

    def write(self, records: list[DeadLetterRecord]) -> None:
        """Append records and fsync before returning. Raises OSError when the disk refuses (do not ack then)."""
        if not records:
            return
        data = "".join(r.to_json() + "\n" for r in records).encode("utf-8")
        with self._lock:
            fh = self._open()
            if fh.tell() > 0 and fh.tell() + len(data) > self.file_max_bytes:
                self._rotate()
                fh = self._open()
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def read_all(self) -> list[dict]:
        """Every record still kept, oldest first. A torn last line (crash mid-write) is skipped."""
        with self._lock:
            out: list[dict] = []
            for path in self.files():
                try:
                    lines = path.read_bytes().split(b"\n")
                except FileNotFoundError:
                    continue
                for line in lines:
                    if not line.strip():
                        continue
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        continue
            return out

    def files(self) -> list[Path]:
        """The store's files, oldest first."""
        rotated = [self.dir / f"deadletter.{i}.jsonl" for i in range(self.files_kept, 0, -1)]
        return [p for p in [*rotated, self.path] if p.exists()]

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None

    def _open(self):
        if self._fh is None:
            self._fh = open(self.path, "ab")
            # A torn tail from a crash would glue the next record onto half a line: start a fresh line.
            if self._fh.tell() > 0:
                with open(self.path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        self._fh.write(b"\n")
        return self._fh

    def _rotate(self) -> None:
        self._fh.close()
        self._fh = None
        oldest = self.dir / f"deadletter.{self.files_kept}.jsonl"
        if oldest.exists():
            oldest.unlink()
        for i in range(self.files_kept - 1, 0, -1):
            src = self.dir / f"deadletter.{i}.jsonl"
            if src.exists():
                os.replace(src, self.dir / f"deadletter.{i + 1}.jsonl")
        os.replace(self.path, self.dir / "deadletter.1.jsonl")
        _fsync_dir(self.dir)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
