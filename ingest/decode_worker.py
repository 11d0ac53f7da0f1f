"""Decoding of message chunks, in the collector's process or in a worker process of its own.

paho's network loop and the decoder both need the GIL; at thousands of messages per second the decoder
would slow delivery itself down. A worker process decodes chunks of messages in parallel and sends back
one columnar batch per chunk with its dead-letter records and device statuses, in order.
"""

from __future__ import annotations

import gc
import logging
import multiprocessing
import signal
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypeAlias

import numpy as np
import numpy.typing as npt

from core import ReadingBatch
from ingest.batcher import _Columns
from ingest.deadletter import DeadLetterRecord, records_for
from ingest.lineproto import encode

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from config.model import Config
    from ingest.decoder import Decoder

# What the parent sends the worker: a chunk of (topic, payload, recv_ns), ("reload", config_dir), or None (finish).
Chunk: TypeAlias = "list[tuple[str, bytes, int]] | tuple[str, str] | None"
# What the worker answers: "ready" once, then per chunk a ChunkResult, per reload ("reloaded", "") or
# ("failed", reason), and None after the finishing None.
WorkerReply: TypeAlias = "ChunkResult | tuple[str, str] | str | None"
# A device status message: (device_id, kind, site_id, "online" | "offline", recv_ns).
StatusRow: TypeAlias = "tuple[str, str | None, str | None, str, int]"

log = logging.getLogger(__name__)

_NO_SENSOR = np.empty(0, np.int32)
_NO_TS = np.empty(0, np.int64)


@dataclass
class ChunkResult:
    """The decoded form of a chunk of messages, in message order.

    batch:       the valid rows of every message
    deadletters: dead-letter records of the chunk's refused payloads and rows
    statuses:    (device_id, kind, site_id, status, recv_ns) of device status messages
    ignored:     messages skipped as not ours (device command topics)
    flagged:     rows refused only for their data flag (dead-lettered as hj212_flag, never stored): sensor,
                 ts, quality and no values, for the detectors (`Decoded.flagged`); numpy columns, as they
                 cross the worker pipe
    flagged_at:  per flagged row, how many `batch` rows precede it in arrival order (int64, ascending)
    lines:       `batch` as line protocol, encoded where it was decoded (the worker process: off the collector's
                 GIL); None when not encoded there (the pipeline then encodes the batch itself)
    """

    batch: ReadingBatch
    deadletters: list[DeadLetterRecord] = field(default_factory=list)
    statuses: list[StatusRow] = field(default_factory=list)
    ignored: int = 0
    flagged: ReadingBatch = field(default_factory=lambda: ReadingBatch(_NO_SENSOR, _NO_TS))
    flagged_at: npt.NDArray[np.int64] = field(default_factory=lambda: _NO_TS)
    lines: bytes | None = None

    def with_flagged(self) -> ReadingBatch:
        """`batch` with the `flagged` rows in their arrival place (message, then row): the detectors' feed."""
        if not len(self.flagged):
            return self.batch
        # A stable sort on 2 x position (+1 for the valid rows) puts each flagged row before the valid
        # row it preceded, and keeps both kinds in their own order.
        key = np.concatenate([2 * np.arange(len(self.batch), dtype=np.int64) + 1, 2 * self.flagged_at])
        return ReadingBatch.concat([self.batch, self.flagged]).take(np.argsort(key, kind="stable"))


def decode_chunk(decoder: Decoder, msgs: list[tuple[str, bytes, int]], dl_max: int,
                 cfg: Config | None = None) -> ChunkResult:
    """Decode (topic, payload, recv_ns) messages with `decoder`; never raises for bad input. With `cfg` (the
    config the decoder was built from) the valid rows are also encoded as line protocol (`lines`).

    The chunk is decoded in one `Decoder.decode_many` call: JSON data messages are checked together with numpy
    (well-formed ones decoded into typed structs), so a single-reading message, line protocol included, costs about
    a quarter of a `decode` call (issue 17: the worker's cost per message; bench/bench_decode.py
    `chunk_single_msgs_s` 348,766 against `single_msgs_s` 85,793 in one run). The outcome is the same, dead letters and their reasons
    included. Should that path fail on a bug, the chunk is decoded again message by message, which isolates the
    failing message as an `internal_error` dead letter."""
    try:
        res = _decode_together(decoder, msgs, dl_max)
    except Exception:  # noqa: BLE001 - a bug in the combined path: the message-by-message path names the message
        log.exception("decoding a chunk of %d messages together failed; decoding them one by one", len(msgs))
        res = _decode_one_by_one(decoder, msgs, dl_max)
    if cfg is not None:
        try:
            res.lines = encode(res.batch, cfg)
        except Exception:  # noqa: BLE001 - left to the pipeline, which encodes again and reports it there
            log.exception("could not encode a decoded chunk of %d rows", len(res.batch))
    return res


def _decode_together(decoder: Decoder, msgs: list[tuple[str, bytes, int]], dl_max: int) -> ChunkResult:
    ignored = 0
    # Commands to devices share the subtrees we subscribe to; they are not ours to store.
    if any(m[0].endswith("/cmd") for m in msgs):
        kept = [m for m in msgs if not m[0].endswith("/cmd")]
        ignored, msgs = len(msgs) - len(kept), kept
    batch, outcomes = decoder.decode_many(msgs)
    dead: list[DeadLetterRecord] = []
    statuses: list[StatusRow] = []
    flagged: list[ReadingBatch] = []
    flagged_at: list[npt.NDArray[np.int64]] = []
    before = 0  # rows of `batch` that precede the message
    rows_listed = decoder.deadletter_rows_listed
    for (topic, payload, recv_ns), decoded in zip(msgs, outcomes):
        if decoded.rejects:
            dead += records_for(decoded, topic, payload, recv_ns, dl_max, rows_listed)
            if decoded.flagged is not None and decoded.flagged_pos is not None:  # set together (_set_flagged)
                flagged.append(decoded.flagged)
                flagged_at.append(decoded.flagged_pos + before)
        if decoded.status is not None and decoded.device_id is not None:
            statuses.append((decoded.device_id, decoded.kind, decoded.site_id, decoded.status, recv_ns))
        before += decoded.rows
    return _result(batch, dead, statuses, ignored, flagged, flagged_at)


def _decode_one_by_one(decoder: Decoder, msgs: list[tuple[str, bytes, int]], dl_max: int) -> ChunkResult:
    cols = _Columns(max(16, len(msgs)))
    dead: list[DeadLetterRecord] = []
    statuses: list[StatusRow] = []
    ignored = 0
    flagged: list[ReadingBatch] = []
    flagged_at: list[npt.NDArray[np.int64]] = []
    for topic, payload, recv_ns in msgs:
        if topic.endswith("/cmd"):
            ignored += 1
            continue
        try:
            decoded = decoder.decode(topic, payload, recv_ns)
            if decoded.rejects:
                dead += records_for(decoded, topic, payload, recv_ns, dl_max, decoder.deadletter_rows_listed)
            if decoded.status is not None and decoded.device_id is not None:
                statuses.append((decoded.device_id, decoded.kind, decoded.site_id, decoded.status, recv_ns))
            before = cols.n
            cols.append(decoded.batch)
            if decoded.flagged is not None and decoded.flagged_pos is not None:  # set together (_set_flagged)
                flagged.append(decoded.flagged)
                flagged_at.append(decoded.flagged_pos + before)
        except Exception as exc:  # noqa: BLE001 - bad input or a bug must never stop the collector
            log.exception("unexpected failure handling a message on %s", topic)
            dead.append(DeadLetterRecord.build("internal_error", f"{type(exc).__name__}: {exc}", topic, payload,
                                               recv_ns, None, None, dl_max))
    return _result(cols.take(), dead, statuses, ignored, flagged, flagged_at)


def _result(batch: ReadingBatch, dead: list[DeadLetterRecord], statuses: list[StatusRow], ignored: int,
            flagged: list[ReadingBatch], flagged_at: list[npt.NDArray[np.int64]]) -> ChunkResult:
    res = ChunkResult(batch, dead, statuses, ignored)
    if flagged:
        res.flagged = flagged[0] if len(flagged) == 1 else ReadingBatch.concat(flagged)
        res.flagged_at = np.concatenate(flagged_at)
    return res


# The worker's young-generation threshold: decoding a chunk builds a dict per sample that lives until the
# chunk is done (12,000 for 100 60-sample messages), and with CPython's default of 700 each collection walks
# the chunk's objects built so far, again and again: a quarter of the worker's CPU per reading
# (bench/bench_decode.py `chunk_batch60_rows_s` with and without). The worker's data holds no reference
# cycles of its own making, so a larger threshold only delays collecting a rare cycle.
WORKER_GC_GEN0 = 50_000


def tune_gc() -> None:
    """The decode worker's collector settings: what exists at start (modules, config) frozen out of
    collections, and the young generation collected every WORKER_GC_GEN0 allocations."""
    gc.freeze()
    gc.set_threshold(WORKER_GC_GEN0, *gc.get_threshold()[1:])


class WorkerDied(RuntimeError):
    """The decode worker process ended unexpectedly; its chunks were never acked (the broker keeps them)."""


# The parent stops the worker (a None chunk, after the chunks before it) when it stops itself. Ctrl-C in a
# terminal sends SIGINT to the whole foreground process group, and a service manager may send SIGTERM to
# every process of the service: the worker ignores both, so that the parent can still drain what it sent.
_PARENT_STOPS = (signal.SIGINT, signal.SIGTERM)


def _worker_main(conn: Connection[WorkerReply, Chunk], config_dir: str, dl_max: int) -> None:
    for sig in _PARENT_STOPS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _PARENT_STOPS)  # blocked by the parent around our start
    try:
        _serve(conn, config_dir, dl_max)
    except (EOFError, OSError):
        # The parent is gone (killed, or it closed the pipe): nothing to answer, and no one to read a
        # traceback. Its unacked messages stay with the broker.
        return


def _serve(conn: Connection[WorkerReply, Chunk], config_dir: str, dl_max: int) -> None:
    from config import load_config
    from ingest.decoder import Decoder

    cfg = load_config(config_dir)
    decoder = Decoder(cfg)
    tune_gc()
    conn.send("ready")
    while True:
        chunk = conn.recv()
        if chunk is None:
            conn.send(None)
            return
        if isinstance(chunk, tuple):  # ("reload", config_dir)
            try:
                new_cfg = load_config(chunk[1])
                decoder, cfg = Decoder(new_cfg), new_cfg
                conn.send(("reloaded", ""))
            except Exception as exc:  # noqa: BLE001 - keep decoding with the old config; the parent logs it
                conn.send(("failed", str(exc)))
            continue
        conn.send(decode_chunk(decoder, chunk, dl_max, cfg))


class DecodeProcess:
    """One worker process that decodes chunks in the order they are sent.

    config_dir: the directory the worker loads its own copy of the configuration from
    dl_max:     raw payload bytes kept per dead-letter record

    `send` is called from one thread and `receive` from another.
    """

    def __init__(self, config_dir: str, dl_max: int, ready_timeout_s: float = 120.0) -> None:
        # spawn, not fork: the collector runs threads (paho, APScheduler) whose locks a fork would copy.
        ctx = multiprocessing.get_context("spawn")
        self._conn: Connection[Chunk, WorkerReply]
        self._conn, child = ctx.Pipe(duplex=True)
        self.process = ctx.Process(target=_worker_main, args=(child, str(config_dir), dl_max),
                                   name="citywatch-decode", daemon=True)
        # Blocked in this thread while the worker starts, so that the worker inherits them blocked: a Ctrl-C
        # during its interpreter's start-up cannot interrupt it before it ignores them. Here a signal that
        # arrives meanwhile stays pending and is delivered when the mask is restored.
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _PARENT_STOPS)
        try:
            self.process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
        child.close()
        # Wait until the worker has its decoder, so that it is ready before the first message arrives.
        ready = self.receive(ready_timeout_s)
        if ready != "ready":
            self.close(1.0)
            raise WorkerDied(f"decode worker did not start within {ready_timeout_s:.0f} s")

    def send(self, msgs: Chunk) -> None:
        """Queue a chunk (None: finish after the chunks before it; ("reload", config_dir): decode the chunks
        after it with that config, answered by ("reloaded", "") or ("failed", reason)). Raises WorkerDied."""
        try:
            self._conn.send(msgs)
        except (OSError, EOFError, BrokenPipeError) as exc:
            raise WorkerDied(f"decode worker is gone: {exc}") from None

    def receive(self, timeout_s: float) -> WorkerReply | Literal[False]:
        """The next result (see WorkerReply); False if none arrived within `timeout_s`; None once the worker
        finished. Raises WorkerDied."""
        try:
            if not self._conn.poll(timeout_s):
                if not self.process.is_alive():
                    raise WorkerDied(f"decode worker exited with code {self.process.exitcode}")
                return False
            return self._conn.recv()
        except (OSError, EOFError) as exc:
            raise WorkerDied(f"decode worker is gone: {exc}") from None

    def close(self, timeout_s: float = 5.0) -> None:
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(2)
        self._conn.close()
