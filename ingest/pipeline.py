"""The ingest pipeline between paho and InfluxDB: decode, micro-batch, make durable, then ack.

Threads: the decode side (a thread, or a worker process fed by a dispatch thread and read by a result
thread) turns messages into rows and dead-letter records and cuts batches on size,
age or idleness; the durability thread stores each batch's dead letters and makes its rows durable, and
only then acks the batch's messages, in arrival order. With `ingest.ack_after: spool` rows are durable once
fsynced into the spool, batches are cut once the durability thread is free and the last cut is
GROUP_COMMIT_MIN_S old (group commit), and a drain thread writes the spool to InfluxDB in order, many records
per write. With `influxdb` (the default) the batch is written to InfluxDB first (to the spool only while
InfluxDB is slow, down or behind) and `drain_spool` runs as a scheduled job. Either way the drain goes in order, with backoff.

With `connections.influx_replicas` every InfluxDB is a target of its own (ingest/influx_target.py: its own
spool, backoff, log line and drain): a batch is acked once every target has written it or has it fsynced in
its spool, so each reading reaches every target exactly once (rewrites of a point are idempotent).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from core import ReadingBatch
from ingest.batcher import Flush, MicroBatcher
from ingest.collector import Message
from ingest.deadletter import DeadLetterRecord, DeadLetterStore
from ingest.decode_worker import ChunkResult, DecodeProcess, WorkerDied, decode_chunk
from ingest.decoder import Decoder
from ingest.influx_target import PRIMARY, InfluxTarget, Replica
from ingest.influx_writer import InfluxWriter, RejectedWriteError, RetryableWriteError
from ingest.lineproto import encode, escape_key, escape_string_field
from ingest.metrics import IngestMetrics
from ingest.spool import SpoolWriter

if TYPE_CHECKING:
    from config.model import Config

log = logging.getLogger(__name__)

# Reason code of lines InfluxDB refused with HTTP 400 (its message is the record's detail).
INFLUX_REJECTED = "influx_rejected"
# Topic recorded for those lines: they come from a batch, not from one MQTT message (a replica's:
# "influxdb/write/<name>").
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
# ... or until no message came for this long (the broker waits for acks: a stock Mosquitto sends 20 at a time).
CHUNK_QUIET_S = 0.001
# ack_after spool (group commit): a batch is cut once the durability thread is free and the last cut is this
# old. Cut whenever the thread was free, the spool is fsynced as often as an fsync returns (every few ms on a
# quiet machine), and each return from fsync takes the GIL from the detector thread (issue 17: alert
# latency). Adds at most this much to an ack; bounds the group commits to about 1 / GROUP_COMMIT_MIN_S a second.
GROUP_COMMIT_MIN_S = 0.015
# ... or, whatever the interval, once it holds this many messages when the session has no Receive Maximum
# (MQTT 3.1.1): below a stock Mosquitto's in-flight window (20), which would stop sending while the batch
# waits out the interval. (An MQTT 5 session's window is the service's Receive Maximum, far above.)
GROUP_COMMIT_MESSAGES = 16


class IngestPipeline:
    """Decode -> batch -> durable -> ack, for one configuration.

    cfg:       the loaded Config (ingest settings, inventory for decoding and line protocol)
    writer:    an InfluxWriter (v1 or v2) of `connections.influx`
    spool:     its SpoolWriter (ack_after spool: every batch; influxdb: while it is slow, down, or the spool is
               not yet empty)
    replicas:  more InfluxDB targets (`connections.influx_replicas`), each with its own writer and spool
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
                 idle_s: float = 0.02, decoder: Decoder | None = None, decode_processes: int = 1,
                 replicas: Sequence[Replica] = ()) -> None:
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
        self._inbox: queue.SimpleQueue[Message | _Control] = queue.SimpleQueue()
        self._flushes: queue.Queue[Flush | _Stop] = queue.Queue(maxsize=2)
        self._on_batch: list[Callable[[ReadingBatch], None]] = []
        self._on_decoded: list[Callable[[ReadingBatch], None]] = []
        self._on_status: list[Callable[[str, str, int], None]] = []
        self._threads: list[threading.Thread] = []
        self._abort = threading.Event()
        # The primary first: its counters are the ingest counters; then the replicas, in config order.
        self.primary = InfluxTarget(PRIMARY, writer, spool, metrics, self._rejected)
        self.targets = [self.primary] + [InfluxTarget(r.name, r.writer, r.spool, metrics, self._rejected, r.label)
                                         for r in replicas]
        # InfluxDB's outages are logged once each (unreachable with the reason, back with how long).
        self.influx = self.primary.reach
        self.backoff = self.primary.backoff
        self.device_status: dict[str, tuple[str, int]] = {}
        self._status_lines: list[str] = []
        self.decode_processes = 1 if decode_processes else 0
        self._worker: DecodeProcess | None = None
        # Per chunk sent to the worker its ack tokens, per reload sent its marker: in the order the worker answers.
        self._pending: deque[list[Any] | _Reload] = deque()
        self.failed: str | None = None
        # ack_after spool: acks wait for the spool's fsync only; the drain thread writes to InfluxDB.
        self.ack_after = s.ack_after
        self._durable_busy = False
        self._last_cut = time.monotonic()  # when the last batch was handed on (group commit interval)
        self._commit_messages = GROUP_COMMIT_MESSAGES if max_messages is None else None
        self._halt = threading.Event()
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
        if self.ack_after == "spool":
            for tgt in self.targets:
                tgt.start_drain(self._halt)

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
        self._halt.set()  # what the spool still holds drains at the next start (or in Service.stop)
        for target in self.targets:
            target.join(10.0)
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
            # with paho's thread for every message. Stop early once the inbox stops growing: the broker
            # is then waiting for acks (its in-flight window is full), and waiting longer only delays them.
            deadline = time.monotonic() + CHUNK_WAIT_S
            seen = self._inbox.qsize()
            while True:
                time.sleep(CHUNK_QUIET_S)
                now = self._inbox.qsize()
                if now == seen or now >= CHUNK_MAX or time.monotonic() >= deadline:
                    break
                seen = now
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

    def _timeout(self, now: float | None = None) -> float:
        """How long the decode side waits for the next message or chunk (`now`: monotonic s, for tests)."""
        now = time.monotonic() if now is None else now
        left = self.batcher.time_left(now)
        if left is None:
            return 0.5
        timeout = min(left, self.idle_s)
        if self.ack_after == "spool":
            # Wake when the group commit interval is over: if nothing came meanwhile, the batch leaves then.
            wait = self._last_cut + GROUP_COMMIT_MIN_S - now
            if wait > 0:
                timeout = min(timeout, wait)
        return timeout

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
            if self.batcher.due() or self._commit_now():
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
                if self.batcher.due() or self._commit_now():
                    self._hand_on(self.batcher.take())
        except WorkerDied as exc:
            self._die(str(exc))

    def _commit_now(self, now: float | None = None) -> bool:
        """ack_after spool: cut the batch once the durability thread is free and the last cut is at least
        GROUP_COMMIT_MIN_S old, or it holds GROUP_COMMIT_MESSAGES messages (MQTT 3.1.1) (group commit). Its
        fsync then takes everything decoded meanwhile, so acks flow back every GROUP_COMMIT_MIN_S or so and
        the broker's in-flight window never waits for a batch age, while fsyncs stay few. `now`: monotonic s (tests)."""
        if self.ack_after != "spool" or not self.batcher.messages or self._durable_busy or not self._flushes.empty():
            return False
        if self._commit_messages is not None and self.batcher.messages >= self._commit_messages:
            return True
        return (time.monotonic() if now is None else now) - self._last_cut >= GROUP_COMMIT_MIN_S

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
        self.batcher.add_many(res.batch, tokens, res.deadletters, res.lines)
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
        self._last_cut = time.monotonic()
        flush.status_lines, self._status_lines = self._status_lines, []
        # Encoded here, not in the durability thread: this overlaps with that thread's InfluxDB round trip.
        try:
            if not len(flush.batch):
                lines = b""
            elif flush.encoded is not None:  # encoded chunk by chunk in the decode worker, rows in order
                lines = b"".join(flush.encoded)
            else:
                lines = encode(flush.batch, self.cfg)
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
            self._durable_busy = True
            try:
                if not self._make_durable(flush):
                    return  # aborted while the spool was full: the broker keeps the unacked messages
            except Exception:  # noqa: BLE001 - keep running; the batch stays unacked and will be redelivered
                log.exception("could not make a batch durable; its messages stay unacked")
            finally:
                self._durable_busy = False

    def _make_durable(self, flush: Flush) -> bool:
        lines = flush.lines
        if lines is None:
            return True  # not encodable: left unacked, logged where it failed
        if flush.deadletters:
            if not self._store_deadletters(flush.deadletters):
                return False
        rows = len(flush.batch)
        if lines:
            # One line per row and per status message (encode, and the status lines _hand_on appends).
            n_lines = rows + len(flush.status_lines)
            # Acked only once every target has the batch: written, or fsynced in its own spool.
            for target in self.targets:
                written = False
                if self.ack_after == "influxdb" and target.spool.empty() and target.backoff.ready():
                    written = target.write_direct(lines, n_lines)
                if not written and not target.append(lines, self._abort, n_lines):
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

    def _rejected(self, exc: RejectedWriteError, topic: str = INFLUX_REJECTED_TOPIC) -> None:
        """Dead-letter the lines one InfluxDB refused (HTTP 400), under `topic` (a replica's names it)."""
        n = exc.lines.count(b"\n") + 1
        log.warning("InfluxDB%s refused %d line(s): %s", "" if topic == INFLUX_REJECTED_TOPIC else f" ({topic})",
                    n, exc.message)
        rec = DeadLetterRecord.build(INFLUX_REJECTED, exc.message, topic, exc.lines, time.time_ns(),
                                     None, None, self._dl_max)
        self._store_deadletters([rec])

    def influx_write_result(self, exc: RetryableWriteError | None) -> None:
        """Tell the pipeline how another write to the primary InfluxDB went (the self-metrics job): None for
        success. Keeps one view of InfluxDB's state (the log line, the backoff of the spool drain)."""
        if exc is None:
            self.primary.write_ok()
        else:
            self.primary.write_failed(exc)

    # ----- spool drain (threads with ack_after spool, else a scheduled job) ----------------------------

    def drain_spool(self, max_seconds: float = 2.0) -> int:
        """Write every target's spooled batches to its InfluxDB in order (InfluxTarget.drain: until its spool is
        empty, a write fails, or `max_seconds` passed; 0: one write each). Returns the records drained."""
        return sum(target.drain(max_seconds) for target in self.targets)

    def spools_empty(self) -> bool:
        """Whether every target's spool is drained."""
        return all(target.spool.empty() for target in self.targets)

    # ----- self-metrics ----------------------------------------------------------------------------

    def update_gauges(self) -> None:
        m = self.metrics
        for target in self.targets:
            for name, value in target.gauges().items():
                m.set_gauge(name, value)
        m.set_gauge("inbox_depth", self.inbox_depth)
        m.set_gauge("batch_rows_held", self.batcher.rows)


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
