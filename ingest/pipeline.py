"""The ingest pipeline between paho and InfluxDB: decode, micro-batch, make durable, then ack.

Threads: the decode side (a thread, or a worker process fed by a dispatch thread and read by a result
thread) turns messages into rows and dead-letter records and cuts batches on size,
age or idleness; the durability thread writes each batch to InfluxDB (or, when InfluxDB is slow, down or
behind, appends it to the spool), stores its dead letters, and only then acks the batch's messages, in
arrival order. `drain_spool` (a scheduled job) empties the spool in order, with backoff.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from detectors.batch import ReadingBatch
from ingest.batcher import Flush, MicroBatcher
from ingest.collector import Message
from ingest.deadletter import DeadLetterRecord, DeadLetterStore
from ingest.decode_worker import ChunkResult, DecodeProcess, WorkerDied, decode_chunk
from ingest.decoder import Decoder
from ingest.influx_writer import Backoff, InfluxWriter, RejectedWriteError, RetryableWriteError
from ingest.lineproto import encode, escape_key, escape_string_field
from ingest.metrics import IngestMetrics
from ingest.reachability import Reachability
from ingest.spool import SpoolFull, SpoolWriter

if TYPE_CHECKING:
    from config.model import Config

log = logging.getLogger(__name__)

# Reason code of lines InfluxDB refused with HTTP 400 (its message is the record's detail).
INFLUX_REJECTED = "influx_rejected"
# Topic recorded for those lines: they come from a batch, not from one MQTT message.
INFLUX_REJECTED_TOPIC = "influxdb/write"


class _Stop:
    """Inbox and flush-queue marker: finish what came before it, then stop."""


_STOP = _Stop()


class _Reload:
    """Inbox marker: messages after it are decoded with `cfg` (those before it with the old one)."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg


_Control: TypeAlias = "_Reload | _Stop"


# A chunk for the decode worker: at most this many messages or payload bytes (about 5,000 rows of 60-sample
# messages: a chunk should not outgrow a batch), gathered for at most this long.
CHUNK_MAX = 1000
CHUNK_MAX_BYTES = 256 * 1024
CHUNK_WAIT_S = 0.005


class IngestPipeline:
    """Decode -> batch -> durable -> ack, for one configuration.

    cfg:       the loaded Config (ingest settings, inventory for decoding and line protocol)
    writer:    an InfluxWriter (v1 or v2)
    spool:     the SpoolWriter used while InfluxDB is slow, down, or the spool is not yet empty
    deadletters: the DeadLetterStore (fsynced JSONL)
    metrics:   IngestMetrics to count into
    ack:       called with a list of ack tokens once their messages are durable or dead-lettered
    publish:   publish(topic, payload_bytes) for the MQTT dead-letter topic (best effort)
    max_messages: flush once this many messages are held (keep below the broker's in-flight window)
    idle_s:    flush a non-empty batch once no message came for this long (the broker may be waiting for acks)
    decode_processes: 1 = decode in a worker process (loads its config from cfg.base_dir), 0 = in a thread
    """

    def __init__(self, cfg: Config, writer: InfluxWriter, spool: SpoolWriter, deadletters: DeadLetterStore,
                 metrics: IngestMetrics, ack: Callable[[list[Any]], object],
                 publish: Callable[[str, bytes], None] | None = None, max_messages: int | None = None,
                 idle_s: float = 0.02, decoder: Decoder | None = None, decode_processes: int = 1) -> None:
        s = cfg.ingest
        self.cfg = cfg
        self.decoder = decoder or (None if decode_processes else Decoder(cfg))
        self.writer = writer
        self.spool = spool
        self.deadletters = deadletters
        self.metrics = metrics
        self._ack = ack
        self._publish = publish
        self._dl_topic = s.deadletter_topic.rstrip("/")
        self._dl_max = s.deadletter_max_payload_bytes
        self.batcher = MicroBatcher(s.batch_max_rows, s.batch_max_age_ms / 1000.0, max_messages)
        self.idle_s = idle_s
        self.backoff = Backoff(0.5, 30.0)
        self._inbox: queue.SimpleQueue[Message | _Control] = queue.SimpleQueue()
        self._flushes: queue.Queue[Flush | _Stop] = queue.Queue(maxsize=2)
        self._on_batch: list[Callable[[ReadingBatch], None]] = []
        self._on_decoded: list[Callable[[ReadingBatch], None]] = []
        self._on_status: list[Callable[[str, str, int], None]] = []
        self._threads: list[threading.Thread] = []
        self._abort = threading.Event()
        self._influx_ok = True
        # InfluxDB's outages are logged once each (unreachable with the reason, back with how long).
        self.influx = Reachability("InfluxDB", log, down_note="readings go to the spool until it is back")
        self.device_status: dict[str, tuple[str, int]] = {}
        self._status_lines: list[str] = []
        self.decode_processes = 1 if decode_processes else 0
        self._worker: DecodeProcess | None = None
        # Per chunk sent to the worker its ack tokens, per reload sent its marker: in the order the worker answers.
        self._pending: deque[list[Any] | _Reload] = deque()
        self.failed: str | None = None
        # Wall clock: readings refused as ts_too_old vs accepted, since the last time the log said so.
        self._too_old = TooOldWatch()

    # ----- wiring ----------------------------------------------------------------------------------

    def on_batch(self, callback: Callable[[ReadingBatch], None]) -> None:
        """Call `callback(batch)` with each batch once it is durable, in order, from the durability thread.
        An exception in a callback is logged and does not affect ingest."""
        self._on_batch.append(callback)

    def on_decoded(self, callback: Callable[[ReadingBatch], None]) -> None:
        """Call `callback(batch)` with the valid rows of each decoded chunk of messages, in arrival order,
        as soon as they are decoded: before they are durable and acked (the low-latency path to the
        detectors). The same rows still go through batching, durability and ack as ever; a message
        redelivered after a crash is decoded, and handed on, again. Called from the decode side's thread:
        a slow callback holds up decoding (backpressure), an exception is logged and does not affect ingest.

        The batch also holds, in their place, the rows refused only for their data flag (reason
        `hj212_flag`, `ingest.refuse_flags`): sensor, event time and flag as quality, every value NaN. They
        are dead-lettered and never stored (`on_batch` never sees them), but the device did report, and
        N-data must see how long it flags D or M."""
        self._on_decoded.append(callback)

    def on_status(self, callback: Callable[[str, str, int], None]) -> None:
        """Call `callback(device_id, "online"|"offline", recv_ns)` for each device status message."""
        self._on_status.append(callback)

    def reload(self, cfg: Config) -> None:
        """Decode and encode with `cfg` from the next message on (a validated config; process mode loads
        it again from cfg.base_dir). Batching, batch size and age keep their values until a restart."""
        self._inbox.put(_Reload(cfg))

    def submit(self, msg: Message) -> None:
        """Hand one received message to the pipeline (paho's thread: never blocks)."""
        self._inbox.put(msg)

    @property
    def inbox_depth(self) -> int:
        return self._inbox.qsize()

    def start(self) -> None:
        """Start the worker process (if any) and the pipeline threads."""
        loops: tuple[tuple[str, Callable[[], None]], ...]
        if self.decode_processes:
            self._worker = DecodeProcess(str(self.cfg.base_dir), self._dl_max)
            loops = (("cw-dispatch", self._dispatch_loop), ("cw-results", self._result_loop))
        else:
            loops = (("cw-decode", self._decode_loop),)
        for name, target in loops + (("cw-durable", self._durable_loop),):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Flush what is held, make it durable and ack it; True if everything finished within the timeout.
        Messages not acked by then stay with the broker (it redelivers them to the next session)."""
        self._inbox.put(_STOP)
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        done = not any(t.is_alive() for t in self._threads)
        if not done:
            self._abort.set()
            for t in self._threads:
                t.join(2.0)
        if self._worker is not None:
            self._worker.close()
        return done and self.failed is None

    # ----- decode side ------------------------------------------------------------------------------

    def _next_chunk(self, timeout: float) -> tuple[list[Message], _Control | None] | None:
        """Messages from the inbox: wait up to `timeout` for the first; in process mode then let more
        arrive for CHUNK_WAIT_S (up to CHUNK_MAX messages or CHUNK_MAX_BYTES), so that the worker gets
        chunks worth sending. Returns (messages, the control marker that ended the chunk or None); None if
        idle."""
        try:
            first = self._inbox.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(first, (_Reload, _Stop)):
            return [], first
        chunk = [first]
        if self._worker is not None and self._inbox.qsize() < CHUNK_MAX:
            # Sleep rather than wait on the queue: waking per message would hand the GIL back and forth
            # with paho's thread for every message.
            time.sleep(CHUNK_WAIT_S)
        nbytes = len(first.payload)
        while len(chunk) < CHUNK_MAX and nbytes < CHUNK_MAX_BYTES:
            try:
                msg = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(msg, (_Reload, _Stop)):
                return chunk, msg
            chunk.append(msg)
            nbytes += len(msg.payload)
        return chunk, None

    def _timeout(self) -> float:
        left = self.batcher.time_left()
        return 0.5 if left is None else min(left, self.idle_s)

    def _decode_loop(self) -> None:
        """Thread mode: decode in this thread, batch, hand flushes on."""
        while True:
            chunk = self._next_chunk(self._timeout())
            if chunk is None:
                # The inbox was quiet for idle_s (or the age limit passed): cut the batch now. A broker
                # that reached its in-flight window waits for our acks, so waiting longer only adds latency.
                if self.batcher.messages:
                    self._hand_on(self.batcher.take())
                continue
            msgs, control = chunk
            if msgs:
                assert self.decoder is not None  # thread mode always has one (__init__)
                res = decode_chunk(self.decoder, [(m.topic, m.payload, m.recv_ns) for m in msgs], self._dl_max)
                self._consume(res, [m.token for m in msgs])
            if isinstance(control, _Stop):
                self._hand_on(self.batcher.take())
                self._flushes.put(_STOP)
                return
            if control is not None:
                self._hand_on(self.batcher.take())  # rows decoded with the old config leave with it
                self.cfg = control.cfg
                self.decoder = Decoder(control.cfg)
                log.info("ingest now decodes with the reloaded config")
                continue
            if self.batcher.due():
                self._hand_on(self.batcher.take())

    def _dispatch_loop(self) -> None:
        """Process mode: send chunks to the decode worker; their tokens wait in `_pending`, in order."""
        worker = self._worker
        assert worker is not None  # start() creates it before this thread
        try:
            while True:
                chunk = self._next_chunk(0.5)
                if chunk is None:
                    continue
                msgs, control = chunk
                if msgs:
                    self._pending.append([m.token for m in msgs])
                    worker.send([(m.topic, m.payload, m.recv_ns) for m in msgs])
                if isinstance(control, _Stop):
                    worker.send(None)
                    return
                if control is not None:
                    self._pending.append(control)
                    worker.send(("reload", str(control.cfg.base_dir)))
        except WorkerDied as exc:
            self._die(str(exc))

    def _result_loop(self) -> None:
        """Process mode: take decoded chunks back in order, batch them, hand flushes on."""
        worker = self._worker
        assert worker is not None  # start() creates it before this thread
        try:
            while True:
                res = worker.receive(self._timeout())
                if res is None:  # the worker finished after the last chunk
                    self._hand_on(self.batcher.take())
                    self._flushes.put(_STOP)
                    return
                if res is False:
                    if self.batcher.messages:
                        self._hand_on(self.batcher.take())
                    continue
                if isinstance(res, tuple):  # the worker's answer to a reload
                    control = self._pending.popleft()
                    assert isinstance(control, _Reload)  # answers come in the order of what was sent
                    self._hand_on(self.batcher.take())  # rows decoded with the old config leave with it
                    if res[0] == "reloaded":
                        self.cfg = control.cfg
                        self.decoder = None
                        log.info("ingest now decodes with the reloaded config")
                    else:
                        log.error("decode worker could not load the new config (%s); keeping the old one", res[1])
                    continue
                # The worker says "ready" only once, before DecodeProcess() returns.
                assert isinstance(res, ChunkResult), f"unexpected answer from the decode worker: {res!r}"
                tokens = self._pending.popleft()
                assert isinstance(tokens, list)  # answers come in the order of what was sent
                self._consume(res, tokens)
                if self.batcher.due():
                    self._hand_on(self.batcher.take())
        except WorkerDied as exc:
            self._die(str(exc))

    def _die(self, reason: str) -> None:
        log.critical("%s: stopping; unacked messages stay with the broker", reason)
        self.failed = reason
        self._abort.set()
        self._flushes.put(_STOP)

    def _consume(self, res: ChunkResult, tokens: list[Any]) -> None:
        m = self.metrics
        m.add("messages_received", len(tokens))
        if len(res.batch):
            m.add("rows_decoded", len(res.batch))
        if res.ignored:
            m.add("messages_ignored", res.ignored)
        for st in res.statuses:
            self._status(*st)
        self.batcher.add_many(res.batch, tokens, res.deadletters)
        if res.deadletters and self.cfg.ingest.clock == "wall":
            self._too_old.observe(res.deadletters, len(res.batch), self.cfg.ingest.backfill_max_age_s)
        if not self._on_decoded:
            return
        # The valid rows and, in their place, the rows refused only for their flag (not durable data:
        # they never reach the batcher or `on_batch`).
        early = res.with_flagged()
        if len(early):
            for cb in self._on_decoded:
                try:
                    cb(early)
                except Exception:  # noqa: BLE001
                    log.exception("on_decoded callback failed")

    def _status(self, device_id: str, kind: str | None, site_id: str | None, status: str, recv_ns: int) -> None:
        self.device_status[device_id] = (status, recv_ns)
        self._status_lines.append(
            f"device_status,device_id={escape_key(device_id)},kind={escape_key(kind or '-')},"
            f"site_id={escape_key(site_id or '-')} status={escape_string_field(status)},"
            f"online={1 if status == 'online' else 0}i {recv_ns}"
        )
        for cb in self._on_status:
            try:
                cb(device_id, status, recv_ns)
            except Exception:  # noqa: BLE001
                log.exception("on_status callback failed")

    def _hand_on(self, flush: Flush | None) -> None:
        if flush is None:
            return
        flush.status_lines, self._status_lines = self._status_lines, []
        # Encoded here, not in the durability thread: this overlaps with that thread's InfluxDB round trip.
        try:
            lines = encode(flush.batch, self.cfg) if len(flush.batch) else b""
            if flush.status_lines:
                lines += ("\n".join(flush.status_lines) + "\n").encode()
            flush.lines = lines
        except Exception:  # noqa: BLE001 - a bug; the batch's messages stay unacked (redelivered on reconnect)
            log.exception("could not encode a batch of %d rows", len(flush.batch))
            flush.lines = None
        while not self._abort.is_set():
            try:
                self._flushes.put(flush, timeout=0.5)
                return
            except queue.Full:
                continue

    # ----- durability thread -----------------------------------------------------------------------

    def _durable_loop(self) -> None:
        while True:
            flush = self._flushes.get()
            if isinstance(flush, _Stop):
                return
            try:
                if not self._make_durable(flush):
                    return  # aborted while the spool was full: the broker keeps the unacked messages
            except Exception:  # noqa: BLE001 - keep running; the batch stays unacked and will be redelivered
                log.exception("could not make a batch durable; its messages stay unacked")

    def _make_durable(self, flush: Flush) -> bool:
        lines = flush.lines
        if lines is None:
            return True  # not encodable: left unacked, logged where it failed
        if flush.deadletters:
            if not self._store_deadletters(flush.deadletters):
                return False
        rows = len(flush.batch)
        if lines:
            written = False
            if self.spool.empty() and self.backoff.ready():
                written = self._write_direct(lines, rows)
            if not written and not self._spool(lines, rows):
                return False
        self._ack(flush.tokens)
        self.metrics.add("messages_acked", len(flush.tokens))
        if rows:
            for cb in self._on_batch:
                try:
                    cb(flush.batch)
                except Exception:  # noqa: BLE001
                    log.exception("on_batch callback failed")
        return True

    def _write_direct(self, lines: bytes, rows: int) -> bool:
        t0 = time.perf_counter()
        try:
            self.writer.write(lines)
        except RetryableWriteError as exc:
            self._write_failed(exc)
            return False
        except RejectedWriteError as exc:
            self._rejected(exc)
        self.metrics.write_latency(time.perf_counter() - t0)
        self.metrics.add("rows_written", lines.count(b"\n"))
        self.metrics.add("batches_written")
        self._write_ok()
        return True

    def _spool(self, lines: bytes, rows: int) -> bool:
        waited = False
        while True:
            try:
                self.spool.append(lines)
                self.metrics.add("rows_spooled", lines.count(b"\n"))
                self.metrics.add("batches_spooled")
                return True
            except SpoolFull:
                if not waited:
                    self.metrics.add("spool_full_waits")
                    log.warning("spool full (%d bytes): not acking until it drains; the broker keeps the messages",
                                self.spool.max_bytes)
                    waited = True
            except OSError:
                log.exception("spool append failed; retrying (messages stay unacked)")
            if self._abort.wait(0.2):
                return False

    def _store_deadletters(self, records: list[DeadLetterRecord]) -> bool:
        while True:
            try:
                stored = self.deadletters.write(records)
                break
            except OSError:
                log.exception("dead-letter store write failed; retrying (messages stay unacked)")
                if self._abort.wait(1.0):
                    return False
        # Records over their device's budget are counted, not stored or published (the store logs it once).
        if stored.dropped:
            self.metrics.add("deadletter_dropped", stored.dropped)
        for rec in stored.records:
            self.metrics.deadletter_record(rec)
            if self._publish is not None:
                self._publish(f"{self._dl_topic}/{rec.reason}", rec.to_json().encode())
        return True

    def _rejected(self, exc: RejectedWriteError) -> None:
        n = exc.lines.count(b"\n") + 1
        self.metrics.add("rows_rejected", n)
        log.warning("InfluxDB refused %d line(s): %s", n, exc.message)
        rec = DeadLetterRecord.build(INFLUX_REJECTED, exc.message, INFLUX_REJECTED_TOPIC, exc.lines, time.time_ns(),
                                     None, None, self._dl_max)
        self._store_deadletters([rec])

    def _write_failed(self, exc: RetryableWriteError) -> None:
        self.backoff.failed(exc.retry_after_s)
        self.metrics.add("write_errors")
        self.influx.down(str(exc))
        self._influx_ok = False

    def _write_ok(self) -> None:
        self.backoff.succeeded()
        if not self.influx.reachable:
            st = self.spool.stats()
            self.influx.up(f"the spool holds {st.records} batch(es) to drain" if st.records else "")
        self._influx_ok = True

    def influx_write_result(self, exc: RetryableWriteError | None) -> None:
        """Tell the pipeline how another write to the same InfluxDB went (the self-metrics job): None for
        success. Keeps one view of InfluxDB's state (the log line, the backoff of the spool drain)."""
        if exc is None:
            self._write_ok()
        else:
            self._write_failed(exc)

    # ----- spool drain (scheduled job) -------------------------------------------------------------

    def drain_spool(self, max_seconds: float = 2.0) -> int:
        """Write spooled batches to InfluxDB in order until the spool is empty, a write fails (backoff), or
        `max_seconds` passed. Returns the number of batches drained."""
        if self.spool.empty() or not self.backoff.ready():
            return 0
        deadline = time.monotonic() + max_seconds
        drained = 0
        try:
            while not self.spool.empty() and time.monotonic() < deadline:
                n = self.spool.drain(self._write_spooled, max_records=1)
                drained += n
                if n and not self.influx.reachable:
                    self._write_ok()  # "back" is said at the first success, with what is left to drain
        except RetryableWriteError as exc:
            self._write_failed(exc)
        else:
            if drained:
                self._write_ok()
        return drained

    def _write_spooled(self, lines: bytes) -> None:
        t0 = time.perf_counter()
        try:
            self.writer.write(lines)
        except RejectedWriteError as exc:
            self._rejected(exc)  # the refused lines are dead-lettered; the record counts as drained
        self.metrics.write_latency(time.perf_counter() - t0)
        self.metrics.add("rows_written", lines.count(b"\n"))

    # ----- self-metrics ----------------------------------------------------------------------------

    def update_gauges(self) -> None:
        st = self.spool.stats()
        m = self.metrics
        m.set_gauge("spool_records", st.records)
        m.set_gauge("spool_bytes", st.bytes)
        m.set_gauge("spool_age_s", (time.time_ns() - st.oldest_ns) / 1e9 if st.oldest_ns else 0.0)
        m.set_gauge("inbox_depth", self.inbox_depth)
        m.set_gauge("batch_rows_held", self.batcher.rows)
        m.set_gauge("influx_ok", 1 if self._influx_ok else 0)


class TooOldWatch:
    """With the wall clock, says once (then at most every `every_s`) when most readings are refused as
    ts_too_old: the sign of a simulation or replay fed to a wall-clock service, which then raises nothing."""

    def __init__(self, min_refused: int = 100, every_s: float = 3600.0, clock: Callable[[], float] = time.monotonic,
                 logger: logging.Logger | None = None) -> None:
        self.min_refused, self.every_s, self.clock = min_refused, every_s, clock
        self.log = logger or log
        self.refused = self.accepted = 0
        self.devices: dict[str, int] = {}
        self._said_at: float | None = None

    def observe(self, records: list[DeadLetterRecord], accepted: int, max_age_s: float) -> bool:
        """Count a chunk's refused-as-too-old rows (`records`: its DeadLetterRecords) and accepted rows; logs and
        returns True when most readings since the last line were refused so."""
        n = 0
        for rec in records:
            k = (rec.rows_by_reason or {}).get("ts_too_old", 0) if rec.rows_by_reason else int(rec.reason == "ts_too_old")
            if k:
                n += k
                dev = rec.device_id or "?"
                self.devices[dev] = self.devices.get(dev, 0) + k
        if not n:
            return False
        self.refused += n
        self.accepted += accepted
        now = self.clock()
        if self.refused < self.min_refused or self.refused <= self.accepted:
            return False
        if self._said_at is not None and now - self._said_at < self.every_s:
            return False
        worst = sorted(self.devices.items(), key=lambda kv: -kv[1])[:3]
        self.log.warning(
            "most readings are refused as ts_too_old (%d refused, %d accepted; most from %s): their times are more "
            "than ingest.backfill_max_age_s (%g s) before receipt on the wall clock. A simulation or a replay of a "
            "recorded feed needs the event clock: run the service with CITYWATCH_CLOCK=event (ingest.clock: event)",
            self.refused, self.accepted, ", ".join(f"{d} ({c})" for d, c in worst), max_age_s)
        self._said_at = now
        self.refused = self.accepted = 0
        self.devices.clear()
        return True
