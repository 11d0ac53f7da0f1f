"""One InfluxDB that every reading goes to: its writer, its own spool, backoff, reachability line and drain.

The ingest pipeline holds one target per InfluxDB (`connections.influx`, then each of
`connections.influx_replicas`) and acks a batch only once every target has written it or has it fsynced in its
own spool; each target then drains its spool in order, at its own pace, so one target that is down or slow
never holds up the others' writes (only, once its spool is full, the acks).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from core.backoff import Backoff
from core.reachability import Reachability
from ingest.influx_writer import InfluxWriter, RejectedWriteError, RetryableWriteError
from ingest.metrics import IngestMetrics
from ingest.spool import SpoolFull, SpoolWriter

log = logging.getLogger(__name__)

# At most this many line-protocol bytes per InfluxDB write of the drain (about 20,000 rows), gathered from
# consecutive spool records; and how long a drain thread sleeps when nothing is appended.
DRAIN_WRITE_MAX_BYTES = 4 * 1024 * 1024
DRAIN_IDLE_S = 0.25
# Drain writes start at least this far apart (unless a full write is waiting), so the records of the group
# commits meanwhile leave together: one InfluxDB request per group commit would cost more than the acks they
# follow, and each return from its socket pre-empts the detector thread for the GIL (issue 17).
DRAIN_GATHER_S = 0.05
# The drain thread writes the spool cursor (two fsyncs) only once the records drained since are this old or
# this many bytes (SpoolWriter.defer_cursor), not after every write: a kill -9 then re-sends at most these
# (rewrites of a point are idempotent in InfluxDB), and never loses one.
DRAIN_CURSOR_EVERY_S = 0.5
DRAIN_CURSOR_EVERY_BYTES = 2 * DRAIN_WRITE_MAX_BYTES
# The name of `connections.influx` among the targets (replicas are named in their config).
PRIMARY = "primary"


class Replica(NamedTuple):
    """What the service builds for one `connections.influx_replicas` entry."""

    name: str
    label: str  # how log lines name it, e.g. "InfluxDB replica dr (http://10.0.0.2:8086)"
    writer: InfluxWriter
    spool: SpoolWriter


class InfluxTarget:
    """One InfluxDB with its own spool, backoff and reachability log line.

    name:        PRIMARY for `connections.influx`, else the replica's name
    writer, spool: its InfluxWriter and its own SpoolWriter (never shared with another target)
    metrics:     the primary counts into the ingest counters (rows_written, rows_spooled, write_errors, ...);
                 a replica into `replica_<name>_<counter>`, reported as gauges (`gauges`)
    on_rejected: called with the RejectedWriteError of lines this InfluxDB refused (HTTP 400) and the
                 dead-letter topic to record them under; those lines count as written
    label:       how the log lines name it

    Threads: `store` runs on the pipeline's durability thread, `drain` on this target's drain thread (or
    the scheduled drain job); the writer is only used by one of them at a time per batch path (InfluxWriter
    allows one write at a time per writer: direct writes happen only while the spool is empty, and the
    drain only writes while it is not).
    """

    def __init__(self, name: str, writer: InfluxWriter, spool: SpoolWriter, metrics: IngestMetrics,
                 on_rejected: Callable[[RejectedWriteError, str], None], label: str = "InfluxDB") -> None:
        self.name = name
        self.writer = writer
        self.spool = spool
        self.metrics = metrics
        self._on_rejected = on_rejected
        self.primary = name == PRIMARY
        self.backoff = Backoff(0.5, 30.0)
        # Outages are logged once each (unreachable with the reason, back with how long).
        self.reach = Reachability(label, log, down_note="readings go to the spool until it is back" if self.primary
                                  else "readings go to its own spool until it is back")
        self.ok = True
        self.rejected_topic = "influxdb/write" if self.primary else f"influxdb/write/{name}"
        self._thread: threading.Thread | None = None

    def count(self, counter: str, n: int = 1) -> None:
        self.metrics.add(counter if self.primary else f"replica_{self.name}_{counter}", n)

    # ----- durability (the pipeline's durability thread) ------------------------------------------

    def write_direct(self, lines: bytes, n_lines: int | None = None) -> bool:
        """ack_after influxdb: write `lines` now; False (nothing written, backoff started) if it failed.
        n_lines: how many lines `lines` holds, when the caller knows (counting them costs ~0.16 ms a 5,000-row
        batch, ~1 % of a core at 250,000 readings/s)."""
        t0 = time.perf_counter()
        try:
            self.writer.write(lines)
        except RetryableWriteError as exc:
            self.write_failed(exc)
            return False
        except RejectedWriteError as exc:
            self._on_rejected(exc, self.rejected_topic)
            self.count("rows_rejected", exc.lines.count(b"\n") + 1)
        if self.primary:
            self.metrics.write_latency(time.perf_counter() - t0)
        self.count("rows_written", lines.count(b"\n") if n_lines is None else n_lines)
        self.count("batches_written")
        self.write_ok()
        return True

    def append(self, lines: bytes, abort: threading.Event, n_lines: int | None = None) -> bool:
        """Append `lines` to this target's spool (fsynced). While the spool is full, wait (the caller does not
        ack meanwhile, so the broker keeps the messages); False if `abort` was set before it fitted. n_lines: as
        for write_direct."""
        waited = False
        while True:
            try:
                self.spool.append(lines)
                self.count("rows_spooled", lines.count(b"\n") if n_lines is None else n_lines)
                self.count("batches_spooled")
                return True
            except SpoolFull:
                if not waited:
                    self.count("spool_full_waits")
                    log.warning("spool%s full (%d bytes): not acking until it drains; the broker keeps the messages",
                                "" if self.primary else f" of InfluxDB replica {self.name}", self.spool.max_bytes)
                    waited = True
            except OSError:
                log.exception("spool append failed; retrying (messages stay unacked)")
            if abort.wait(0.2):
                return False

    # ----- reachability --------------------------------------------------------------------------

    def write_failed(self, exc: RetryableWriteError) -> None:
        self.backoff.failed(exc.retry_after_s)
        self.count("write_errors")
        self.reach.down(str(exc))
        self.ok = False

    def write_ok(self, waiting: int | None = None) -> None:
        """A write succeeded. waiting: the spool records there were to drain when this target came back
        (default: what the spool holds now), for the "back" log line."""
        self.backoff.succeeded()
        if not self.reach.reachable:
            if waiting is None:
                waiting = self.spool.stats().records
            self.reach.up(f"the spool holds {waiting} batch(es) to drain" if waiting else "")
        self.ok = True

    # ----- spool drain --------------------------------------------------------------------------------

    def drain(self, max_seconds: float = 2.0) -> int:
        """Write spooled batches to this InfluxDB in order, consecutive records merged into writes of up to
        DRAIN_WRITE_MAX_BYTES, until the spool is empty, a write fails (backoff), or `max_seconds` passed
        (at least one write is tried; 0: exactly one). Returns the number of spool records drained."""
        if self.spool.empty() or not self.backoff.ready():
            return 0
        deadline = time.monotonic() + max_seconds
        drained = 0
        # Said in the "back" line: a merged write may drain the whole spool at once.
        waiting = None if self.reach.reachable else self.spool.stats().records
        try:
            while not self.spool.empty():
                n = self.spool.drain_merged(self._write_spooled, DRAIN_WRITE_MAX_BYTES)
                drained += n
                if n and not self.reach.reachable:
                    self.write_ok(waiting)  # "back" is said at the first success, with what there was to drain
                if time.monotonic() >= deadline:
                    break
        except RetryableWriteError as exc:
            self.write_failed(exc)
        else:
            if drained:
                self.write_ok()
        return drained

    def _write_spooled(self, lines: bytes) -> None:
        t0 = time.perf_counter()
        try:
            self.writer.write(lines)
        except RejectedWriteError as exc:
            self._on_rejected(exc, self.rejected_topic)  # dead-lettered; the record counts as drained
            self.count("rows_rejected", exc.lines.count(b"\n") + 1)
        if self.primary:
            self.metrics.write_latency(time.perf_counter() - t0)
        self.count("rows_written", lines.count(b"\n"))

    def start_drain(self, halt: threading.Event) -> None:
        """ack_after spool: start this target's drain thread (`cw-drain`, `cw-drain-<name>`); it stops on `halt`."""
        name = "cw-drain" if self.primary else f"cw-drain-{self.name}"
        self.spool.defer_cursor(DRAIN_CURSOR_EVERY_S, DRAIN_CURSOR_EVERY_BYTES)
        self._thread = threading.Thread(target=self._drain_loop, args=(halt,), name=name, daemon=True)
        self._thread.start()

    def join(self, timeout_s: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _drain_loop(self, halt: threading.Event) -> None:
        last_write = -DRAIN_GATHER_S
        while not halt.is_set():
            # Let the records of the group commits since the last write gather (DRAIN_GATHER_S).
            gather = last_write + DRAIN_GATHER_S - time.monotonic()
            if gather > 0 and self.spool.stats().bytes < DRAIN_WRITE_MAX_BYTES and halt.wait(gather):
                break
            if not self.spool.empty():
                last_write = time.monotonic()
            try:
                drained = self.drain(max_seconds=0)  # one write; then let the next one gather
            except Exception:  # noqa: BLE001 - a bug; the records stay in the spool for the next round
                log.exception("spool drain of %s failed; retrying", self.reach.what)
                drained = 0
            if self.spool.empty():
                self._sync_cursor()  # idle: the cursor catches up with what was drained
                self.spool.wait_appended(DRAIN_IDLE_S)
            elif not drained:  # InfluxDB failed or backs off: appends must not spin this loop
                halt.wait(DRAIN_IDLE_S)
        self._sync_cursor(0.0)

    def _sync_cursor(self, min_age_s: float = DRAIN_CURSOR_EVERY_S) -> None:
        try:
            self.spool.sync_cursor(min_age_s)
        except OSError:  # the next drain or sync tries again; until then a crash only re-sends more
            log.exception("could not write the spool cursor of %s", self.reach.what)

    # ----- self-metrics ----------------------------------------------------------------------------

    def gauges(self) -> dict[str, float | None]:
        """Spool depth and state: `spool_records`, `spool_bytes`, `spool_age_s`, `influx_ok` for the primary;
        `replica_<name>_` those and its counters (rows_written, write_errors, ...) for a replica."""
        st = self.spool.stats()
        out: dict[str, float | None] = {
            "spool_records": st.records, "spool_bytes": st.bytes,
            "spool_age_s": (time.time_ns() - st.oldest_ns) / 1e9 if st.oldest_ns else 0.0,
            "influx_ok": 1 if self.ok else 0,
        }
        if self.primary:
            return out
        prefix = f"replica_{self.name}_"
        for counter in REPLICA_COUNTERS:
            out[counter] = int(self.metrics.counters.get(prefix + counter, 0))
        return {prefix + k: v for k, v in out.items()}


# The counters a replica reports as gauges (`replica_<name>_<counter>`), in the order `citywatch status` shows them.
REPLICA_COUNTERS = ("rows_written", "rows_spooled", "write_errors", "rows_rejected", "spool_full_waits")
