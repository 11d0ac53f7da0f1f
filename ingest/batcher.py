"""Micro-batcher: decoded rows accumulate in numpy column buffers and leave as one batch on size or age.

Each batch carries the MQTT messages (ack tokens) whose rows it holds, in arrival order, and the dead-letter
records of those messages, so that the messages are acked only once the whole batch is durable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import numpy.typing as npt

from core import ReadingBatch

if TYPE_CHECKING:
    from ingest.deadletter import DeadLetterRecord


@dataclass
class Flush:
    """What one flush hands on: the rows, the messages to ack afterwards and the refused rows to store.

    batch:       the decoded rows of every message in the flush (may be empty)
    tokens:      opaque ack tokens of the messages, in arrival order
    deadletters: dead-letter records produced while decoding those messages
    messages:    number of messages in the flush
    first_mono:  monotonic time (s) the oldest message entered the batcher
    status_lines: line protocol of device status messages in the flush (set by the pipeline)
    lines:       the flush encoded as line protocol (set by the pipeline; None when it could not be encoded)
    encoded:     the rows' line protocol as encoded chunk by chunk where they were decoded, in order; None
                 when some chunk with rows came unencoded (the pipeline then encodes `batch` whole)
    """

    batch: ReadingBatch
    tokens: list[Any] = field(default_factory=list)
    deadletters: list[DeadLetterRecord] = field(default_factory=list)
    messages: int = 0
    first_mono: float = 0.0
    status_lines: list[str] = field(default_factory=list)
    lines: bytes | None = b""
    encoded: list[bytes] | None = None


_Scalar = TypeVar("_Scalar", bound=np.generic)


class _Columns:
    """Growable numpy column buffers for ReadingBatch rows; a field seen late is NaN in earlier rows."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(16, capacity)
        self.n = 0
        self.sensor: npt.NDArray[np.int32] = np.empty(self.capacity, np.int32)
        self.ts_ns: npt.NDArray[np.int64] = np.empty(self.capacity, np.int64)
        self.quality: npt.NDArray[np.uint8] = np.empty(self.capacity, np.uint8)
        self.values: dict[str, npt.NDArray[np.float64]] = {}

    def _grow(self, need: int) -> None:
        cap = self.capacity
        while cap < need:
            cap *= 2
        if cap == self.capacity:
            return

        def grown(a: npt.NDArray[_Scalar], fill: float | None = None) -> npt.NDArray[_Scalar]:
            b = np.empty(cap, a.dtype) if fill is None else np.full(cap, fill, a.dtype)
            b[: self.n] = a[: self.n]
            return b

        self.sensor = grown(self.sensor)
        self.ts_ns = grown(self.ts_ns)
        self.quality = grown(self.quality)
        self.values = {k: grown(v, np.nan) for k, v in self.values.items()}
        self.capacity = cap

    def append(self, b: ReadingBatch) -> None:
        k = len(b)
        if k == 0:
            return
        end = self.n + k
        if end > self.capacity:
            self._grow(end)
        # ReadingBatch.__post_init__ sets quality (typed optional only for its constructor argument).
        assert b.quality is not None
        self.sensor[self.n:end] = b.sensor
        self.ts_ns[self.n:end] = b.ts_ns
        self.quality[self.n:end] = b.quality
        for name, col in b.values.items():
            buf = self.values.get(name)
            if buf is None:
                buf = self.values[name] = np.full(self.capacity, np.nan)
            buf[self.n:end] = col
        # Fields this batch lacks must read NaN in its rows (buffers are reused after a flush).
        for name, buf in self.values.items():
            if name not in b.values:
                buf[self.n:end] = np.nan
        self.n = end

    def take(self) -> ReadingBatch:
        n = self.n
        out = ReadingBatch(
            self.sensor[:n].copy(), self.ts_ns[:n].copy(),
            {k: v[:n].copy() for k, v in self.values.items()}, self.quality[:n].copy(),
        )
        self.n = 0
        self.values = {}
        return out


class MicroBatcher:
    """Collects decoded messages and says when a batch is due.

    max_rows:     flush once this many rows are held
    max_age_s:    flush once the oldest held message is this old (seconds)
    max_messages: flush once this many messages are held (their acks are pending: keep it below the
                  broker's in-flight window, or the broker stops sending before the batch fills)
    clock:        monotonic clock in seconds (injected in tests)

    Not thread-safe: one pipeline thread owns it.
    """

    def __init__(self, max_rows: int, max_age_s: float, max_messages: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        if max_rows <= 0 or max_age_s <= 0:
            raise ValueError("max_rows and max_age_s must be above 0")
        self.max_rows = int(max_rows)
        self.max_age_s = float(max_age_s)
        self.max_messages = int(max_messages) if max_messages else None
        self._clock = clock
        self._cols = _Columns(min(self.max_rows, 65536))
        self._tokens: list[Any] = []
        self._dead: list[DeadLetterRecord] = []
        self._messages = 0
        self._first: float | None = None
        self._encoded: list[bytes] | None = []

    @property
    def rows(self) -> int:
        return self._cols.n

    @property
    def messages(self) -> int:
        return self._messages

    def add(self, batch: ReadingBatch | None, token: Any = None,
            deadletters: list[DeadLetterRecord] | None = None) -> bool:
        """Add one message's rows, its ack token and its dead-letter records; return whether a flush is due."""
        if self._first is None:
            self._first = self._clock()
        if batch is not None and len(batch):
            self._cols.append(batch)
            self._encoded = None  # rows without their line protocol: the flush is encoded whole
        if token is not None:
            self._tokens.append(token)
        if deadletters:
            self._dead.extend(deadletters)
        self._messages += 1
        return self.full()

    def add_many(self, batch: ReadingBatch | None, tokens: list[Any],
                 deadletters: list[DeadLetterRecord] | None = None, lines: bytes | None = None) -> bool:
        """Add the rows of several messages at once (a decoded chunk) with their tokens, in order; `lines`:
        those rows already encoded as line protocol (None: not encoded)."""
        if not tokens and (batch is None or not len(batch)):
            return self.full()
        if self._first is None:
            self._first = self._clock()
        if batch is not None and len(batch):
            self._cols.append(batch)
            if lines is None:
                self._encoded = None
            elif self._encoded is not None:
                self._encoded.append(lines)
        self._tokens.extend(tokens)
        if deadletters:
            self._dead.extend(deadletters)
        self._messages += len(tokens)
        return self.full()

    def full(self) -> bool:
        return self._cols.n >= self.max_rows or (self.max_messages is not None and self._messages >= self.max_messages)

    def due(self, now: float | None = None) -> bool:
        """Whether the batch should leave now: full, or its oldest message has waited max_age_s."""
        if self._first is None:
            return False
        now = self._clock() if now is None else now
        return self.full() or now - self._first >= self.max_age_s

    def time_left(self, now: float | None = None) -> float | None:
        """Seconds until the age limit flushes the held batch; None when empty."""
        if self._first is None:
            return None
        now = self._clock() if now is None else now
        return max(0.0, self.max_age_s - (now - self._first))

    def take(self) -> Flush | None:
        """The held batch (None when nothing is held); the batcher is empty afterwards."""
        if self._first is None:
            return None
        out = Flush(self._cols.take(), self._tokens, self._dead, self._messages, self._first, encoded=self._encoded)
        self._tokens, self._dead, self._messages, self._first = [], [], 0, None
        self._encoded = []
        return out
