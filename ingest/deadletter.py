"""The dead-letter store: every payload or row the collector refuses, with its reason, as JSONL.

One record per refused message: the payload once (cut to `max_payload_bytes`), and for row-level rejects
the refused rows listed (index, field, reason, detail; beyond `rows_listed` counted by reason). Records are
appended to `deadletter.jsonl` and made durable (flush + fsync) before `write` returns, so the collector may
ack the MQTT message afterwards. Files rotate by size, also in the middle of one write: `deadletter.jsonl`
-> `deadletter.1.jsonl` -> ... -> `deadletter.<files_kept>.jsonl` (the oldest is deleted). Each device may
store a budget of bytes per period; the excess is counted and said once (a `deadletter_capped` record), so
one flooding device cannot rotate the others' records away. The collector also publishes each stored
record's `to_json()` on the dead-letter topic.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import threading
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, overload

from core.fsio import fsync_dir
from core.timefmt import iso_utc

if TYPE_CHECKING:
    from config.model import Config
    from ingest.decoder import Decoded, Reject

# A value as strict JSON holds it: what a record's bounded copy of a refused row is made of.
Json: TypeAlias = "None | bool | int | float | str | list[Json] | dict[str, Json]"

log = logging.getLogger(__name__)

CURRENT = "deadletter.jsonl"
CAPPED = "deadletter_capped"

# Bounds of what one record holds besides the payload, so that a record's size is bounded whatever the
# message: the text of a detail, the copy of the first refused row (depth, breadth, string length).
DETAIL_MAX_CHARS = 300
ROW_MAX_DEPTH = 6
ROW_MAX_ITEMS = 64
ROW_MAX_STR = 200


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
    row:              the first refused row as sent (row-level rejects; bounded copy), else None
    rows:             the refused rows, in payload order, as {index, reason, field, detail}: at most
                      `rows_listed` of them; None for a payload-level reject
    rows_refused:     how many rows of the message were refused (listed or not)
    rows_by_reason:   reason -> refused rows, over all of them (listed or not); None for payload-level
    For a row-level record, `reason` and `detail` are those of the first refused row.
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
    row: dict[str, Json] | None = None
    rows: list[dict[str, Any]] | None = None
    rows_refused: int = 0
    rows_by_reason: dict[str, int] | None = None

    @staticmethod
    def build(
        reason: str, detail: str, topic: str, payload: bytes, recv_ns: int,
        device_id: str | None = None, row: dict[str, Any] | None = None, max_payload_bytes: int = 65536,
    ) -> DeadLetterRecord:
        """A record for one reject; the payload is cut to `max_payload_bytes` (and says so), the detail to
        DETAIL_MAX_CHARS, and the row copied within bounds (depth, items, string length)."""
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
            reason=reason, detail=_cut(detail), topic=topic, payload=text, payload_encoding=encoding,
            payload_bytes=size, truncated=truncated, recv_time=iso_utc(recv_ns, 6), recv_ns=int(recv_ns),
            device_id=device_id, row=_safe_row(row),
        )

    def reasons(self) -> list[str]:
        """The reason of every reject this record stands for: one per refused row (listed or counted), or
        the payload-level reason."""
        if self.rows_by_reason:
            return [r for r, n in self.rows_by_reason.items() for _ in range(n)]
        return [self.reason]

    def raw_payload(self) -> bytes:
        """The stored (possibly truncated) payload bytes."""
        if self.payload_encoding == "base64":
            return base64.b64decode(self.payload)
        return self.payload.encode("utf-8")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        """One line of JSON (no newline). NaN/Infinity in a refused row are written as strings."""
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def records_for(decoded: Decoded, topic: str, payload: bytes, recv_ns: int, max_payload_bytes: int = 65536,
                rows_listed: int = 100) -> list[DeadLetterRecord]:
    """The dead-letter record of a `Decoded`: one per refused message (empty list when nothing was refused).

    The payload is stored once; row-level rejects are listed (index, field, reason, detail), at most
    `rows_listed` of them, and all of them counted by reason. Never raises: a row whose entry cannot be
    built is listed with what is known of it, and the message's valid rows are not affected.
    """
    rejects = decoded.rejects
    if not rejects:
        return []
    first = rejects[0]
    try:
        rec = DeadLetterRecord.build(first.reason, first.detail, topic, payload, recv_ns, decoded.device_id,
                                     first.row, max_payload_bytes)
    except Exception as exc:  # noqa: BLE001 - a record is always built, if need be without the payload
        rec = DeadLetterRecord.build(first.reason, f"record built without its payload ({type(exc).__name__})",
                                     topic, b"", recv_ns, decoded.device_id, None, max_payload_bytes)
    rows = [r for r in rejects if getattr(r, "index", None) is not None or r.row is not None]
    if rows:
        rec.rows = [_row_entry(r) for r in rows[:rows_listed]]
        rec.rows_refused = len(rows)
        # Over every reject: a payload-level one beside refused rows does not happen today; if one did, it
        # would still be counted.
        rec.rows_by_reason = dict(Counter(str(r.reason) for r in rejects))
    return [rec]


def _row_entry(r: Reject) -> dict[str, Any]:
    try:
        return {"index": getattr(r, "index", None), "reason": str(r.reason), "field": _cut(getattr(r, "field", None)),
                "detail": _cut(r.detail)}
    except Exception as exc:  # noqa: BLE001 - one row's trouble stays with that row
        return {"index": getattr(r, "index", None), "reason": str(getattr(r, "reason", "internal_error")),
                "field": None, "detail": f"entry could not be built ({type(exc).__name__})"}


@overload
def _cut(text: None, limit: int = ...) -> None: ...
@overload
def _cut(text: str, limit: int = ...) -> str: ...
def _cut(text: str | None, limit: int = DETAIL_MAX_CHARS) -> str | None:
    if text is None:
        return None
    text = str(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _safe_row(row: dict[str, Any] | None) -> dict[str, Json] | None:
    """A bounded, strict-JSON copy of a refused row; never raises (a row that cannot be copied says so)."""
    if row is None:
        return None
    try:
        copied = _jsonable(row, 0)
    except Exception as exc:  # noqa: BLE001
        return {"unprintable": f"{type(exc).__name__}"}
    # A plain dict copies as a dict; a dict subclass (no caller passes one: rows are parsed JSON) as its repr.
    return copied if isinstance(copied, dict) else {"row": copied}


def _jsonable(v: object, depth: int) -> Json:
    """`v` with non-finite floats as strings (strict JSON), containers cut below ROW_MAX_DEPTH levels and
    after ROW_MAX_ITEMS items, strings after ROW_MAX_STR characters (recursion bounded by ROW_MAX_DEPTH)."""
    if type(v) is float:
        return v if v - v == 0 else repr(v)
    if type(v) is bool or v is None:
        return v
    if type(v) is int:
        return v if -(2**63) <= v < 2**63 else _cut(repr(v), ROW_MAX_STR)
    if type(v) is str:
        return _cut(v, ROW_MAX_STR)
    if type(v) is dict or type(v) is list or type(v) is tuple:
        if depth >= ROW_MAX_DEPTH:
            return f"<{len(v)} item(s) nested deeper than {ROW_MAX_DEPTH} levels: not copied>"
        if type(v) is dict:
            items = list(v.items())
            out: dict[str, Json] = {
                _cut(str(k), ROW_MAX_STR): _jsonable(x, depth + 1) for k, x in items[:ROW_MAX_ITEMS]
            }
            if len(items) > ROW_MAX_ITEMS:
                out["..."] = f"{len(items) - ROW_MAX_ITEMS} more key(s) not copied"
            return out
        seq: list[Json] = [_jsonable(x, depth + 1) for x in v[:ROW_MAX_ITEMS]]
        if len(v) > ROW_MAX_ITEMS:
            seq.append(f"... {len(v) - ROW_MAX_ITEMS} more item(s) not copied")
        return seq
    return _cut(repr(v), ROW_MAX_STR)


class Stored(NamedTuple):
    """What `DeadLetterStore.write` did: the records stored (including any `deadletter_capped` notice),
    and how many of the given records were counted but not stored (over their device's budget)."""

    records: list[DeadLetterRecord]
    dropped: int


class _Budget:
    """One device's (or reason's) use of the dead-letter budget in one period."""

    __slots__ = ("window", "used", "dropped", "dropped_bytes")

    def __init__(self, window: int) -> None:
        self.window = window
        self.used = 0
        self.dropped = 0
        self.dropped_bytes = 0


class DeadLetterStore:
    """Rotating, fsynced JSONL files of dead-letter records. Safe to call from several threads.

    directory:      created if missing
    file_max_bytes: rotate the current file before a record would take it past this size (a single record
                    larger than this gets a file of its own)
    files_kept:     rotated files kept besides the current one (older ones are deleted)
    device_budget_bytes: bytes of records one device may store per `budget_period_s` (records without a
                    device: per reason); None = unbounded. Periods are windows of the records' receive time.
    """

    def __init__(self, directory: str | os.PathLike[str], file_max_bytes: int = 64 * 2**20, files_kept: int = 10,
                 device_budget_bytes: int | None = None, budget_period_s: float = 3600.0) -> None:
        if file_max_bytes <= 0 or files_kept < 1:
            raise ValueError("file_max_bytes must be > 0 and files_kept >= 1")
        if (device_budget_bytes is not None and device_budget_bytes <= 0) or budget_period_s <= 0:
            raise ValueError("device_budget_bytes and budget_period_s must be > 0")
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.file_max_bytes = int(file_max_bytes)
        self.files_kept = int(files_kept)
        self.device_budget_bytes = None if device_budget_bytes is None else int(device_budget_bytes)
        self.budget_period_ns = int(budget_period_s * 1e9)
        self._budgets: dict[str, _Budget] = {}
        self.dropped = 0  # records counted but not stored since the store was opened
        self._lock = threading.Lock()
        self._fh: io.BufferedWriter | None = None

    @classmethod
    def from_config(cls, cfg: Config) -> DeadLetterStore:
        s = cfg.ingest
        return cls(cfg.resolve_path(s.deadletter_dir), int(s.deadletter_file_max_mb * 2**20), s.deadletter_files_kept,
                   int(s.deadletter_device_budget_mb * 2**20), s.deadletter_budget_period_s)

    @property
    def path(self) -> Path:
        return self.dir / CURRENT

    def write(self, records: list[DeadLetterRecord]) -> Stored:
        """Append the records within their devices' budgets and fsync before returning; the rest are counted.

        Returns Stored(records stored, in order, with a `deadletter_capped` notice where a device first went
        over its budget in a period; number of given records not stored). Raises OSError when the disk
        refuses (do not ack then); the budgets are then left as they were, so a retry is judged the same.
        """
        if not records:
            return Stored([], 0)
        with self._lock:
            stored, lines, budgets, dropped, notices, closed = self._admit(records)
            if lines:
                self._append(lines)
            self._budgets.update(budgets)
            self.dropped += dropped
        for key, b in notices:
            log.warning("%s went over its dead-letter budget of %d bytes per %g s: its further dead letters "
                        "until %s are counted, not stored", key, self.device_budget_bytes,
                        self.budget_period_ns / 1e9, iso_utc((b.window + 1) * self.budget_period_ns, 6))
        for key, b in closed:
            log.warning("%s: %d dead letter(s) (%d bytes) over budget were counted, not stored, in the period "
                        "that ended %s", key, b.dropped, b.dropped_bytes, iso_utc((b.window + 1) * self.budget_period_ns, 6))
        return Stored(stored, dropped)

    def _admit(self, records: list[DeadLetterRecord]) -> tuple[
        list[DeadLetterRecord], list[bytes], dict[str, _Budget], int, list[tuple[str, _Budget]],
        list[tuple[str, _Budget]],
    ]:
        """Which records fit their budgets: (stored records, their encoded lines, updated budgets, dropped,
        keys that went over budget now, budgets of periods that ended with drops). Budgets are updated on
        copies, applied by the caller once the write succeeded."""
        notices: list[tuple[str, _Budget]] = []
        closed: list[tuple[str, _Budget]] = []
        stored: list[DeadLetterRecord] = []
        lines: list[bytes] = []
        budgets: dict[str, _Budget] = {}
        dropped = 0
        cap = self.device_budget_bytes
        for rec in records:
            line = (rec.to_json() + "\n").encode("utf-8")
            if cap is None:
                stored.append(rec)
                lines.append(line)
                continue
            key = rec.device_id or f"reason {rec.reason}"
            window = int(rec.recv_ns) // self.budget_period_ns
            b = budgets.get(key) or self._budgets.get(key)
            if b is None or b.window != window:
                if b is not None and b.dropped and b.window < window:
                    closed.append((key, b))
                b = _Budget(window)
            else:
                b = _copy(b)
            budgets[key] = b
            if b.used + len(line) <= cap:
                b.used += len(line)
                stored.append(rec)
                lines.append(line)
                continue
            if not b.dropped:
                notice = DeadLetterRecord.build(
                    CAPPED, f"{key} went over its dead-letter budget of {cap} bytes per "
                    f"{self.budget_period_ns / 1e9:g} s (ingest.deadletter_device_budget_mb): its further dead letters "
                    f"until {iso_utc((window + 1) * self.budget_period_ns, 6)} are counted (citywatch status: "
                    "deadletter_dropped), not stored", rec.topic, b"", rec.recv_ns, rec.device_id)
                stored.append(notice)
                lines.append((notice.to_json() + "\n").encode("utf-8"))
                notices.append((key, b))
            b.dropped += 1
            b.dropped_bytes += len(line)
            dropped += 1
        return stored, lines, budgets, dropped, notices, closed

    def _append(self, lines: list[bytes]) -> None:
        """Write lines, rotating before any line that would take the current file past file_max_bytes."""
        fh = self._open()
        pos = fh.tell()
        for line in lines:
            if pos > 0 and pos + len(line) > self.file_max_bytes:
                # What is written so far is made durable before its file is renamed away.
                fh.flush()
                os.fsync(fh.fileno())
                self._rotate()
                fh = self._open()
                pos = fh.tell()
            fh.write(line)
            pos += len(line)
        fh.flush()
        os.fsync(fh.fileno())

    def read_all(self) -> list[dict[str, Any]]:
        """Every record still kept, oldest first. A torn last line (crash mid-write) is skipped."""
        with self._lock:
            out: list[dict[str, Any]] = []
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

    def _open(self) -> io.BufferedWriter:
        if self._fh is None:
            fh = self._fh = open(self.path, "ab")
            # A torn tail from a crash would glue the next record onto half a line: start a fresh line.
            if fh.tell() > 0:
                with open(self.path, "rb") as r:
                    r.seek(-1, os.SEEK_END)
                    if r.read(1) != b"\n":
                        fh.write(b"\n")
        return self._fh

    def _rotate(self) -> None:
        if self._fh is not None:  # always open here: _append rotates a file it wrote to
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
        fsync_dir(self.dir)




def _copy(b: _Budget) -> _Budget:
    c = _Budget(b.window)
    c.used, c.dropped, c.dropped_bytes = b.used, b.dropped, b.dropped_bytes
    return c
