"""Self-metrics of the collector: counters and gauges, rendered as InfluxDB points (`citywatch_internal`).

Counters are cumulative since the process started (InfluxQL `non_negative_difference` gives rates);
`citywatch status` reads the latest point back. Each InfluxDB replica (`connections.influx_replicas`) adds
gauges `replica_<name>_spool_records`, `_spool_bytes`, `_spool_age_s`, `_influx_ok` and its own counts
(`REPLICA_COUNTERS` of ingest/influx_target.py); the counters above are those of `connections.influx`.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

if TYPE_CHECKING:
    # numpy is imported when a histogram is built (see LatencyHistogram), not with this module.
    import numpy.typing as npt

    from ingest.deadletter import DeadLetterRecord

MEASUREMENT = "citywatch_internal"

# Counter names, in the order `citywatch status` shows them.
COUNTERS = (
    "messages_received",   # MQTT messages handed to the collector by paho
    "messages_acked",      # MQTT messages acked (durable or dead-lettered)
    "messages_ignored",    # device command messages (.../cmd) seen on the subscribed subtrees
    "rows_decoded",        # valid rows decoded from payloads
    "rows_written",        # rows (lines) InfluxDB accepted, directly or from the spool
    "rows_spooled",        # rows made durable in the spool (ack_after: spool: every row; influxdb: while it was slow or down)
    "batches_written",     # direct writes that succeeded
    "batches_spooled",     # batches appended to the spool
    "write_errors",        # retryable write failures (InfluxDB down, 5xx, 429)
    "rows_rejected",       # lines InfluxDB refused with 400 (dead-lettered with its message)
    "deadletter_records",  # dead-letter records stored (any reason): one per refused message
    "rows_refused",        # rows refused by validation (listed in, or counted by, their message's record)
    "deadletter_dropped",  # dead-letter records counted but not stored: their device was over its budget
    "retained_duplicates", # retained messages the broker delivered again (resubscribe) after we processed them
    "retained_cleared",    # empty retained publishes (a client clearing a retained message): not bad payloads
    "spool_full_waits",    # times the pipeline stopped acking because the spool was full
)


class MetricsSnapshot(TypedDict):
    """What `IngestMetrics.snapshot` returns: counters by name, dead letters by reason, gauges by name."""

    counters: dict[str, int]
    deadletter_by_reason: dict[str, int]
    gauges: dict[str, float | None]


@dataclass
class IngestMetrics:
    """Thread-safe counters and gauges of one running collector."""

    counters: Counter[str] = field(default_factory=Counter)
    deadletter_by_reason: Counter[str] = field(default_factory=Counter)
    gauges: dict[str, float | None] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _latencies: list[float] = field(default_factory=list, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def deadletter(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.deadletter_by_reason[reason] += n
            self.counters["deadletter_records"] += n

    def deadletter_record(self, rec: DeadLetterRecord) -> None:
        """Count one stored dead-letter record: the record, and its rejects by reason (each refused row, or
        the payload-level reason), so the per-reason counts do not depend on how rows are grouped."""
        by_reason = rec.rows_by_reason or {rec.reason: 1}
        with self._lock:
            self.counters["deadletter_records"] += 1
            self.counters["rows_refused"] += rec.rows_refused
            for reason, n in by_reason.items():
                self.deadletter_by_reason[reason] += n

    def set_gauge(self, name: str, value: float | None) -> None:
        with self._lock:
            self.gauges[name] = value

    def write_latency(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)
            if len(self._latencies) > 10_000:
                del self._latencies[:5_000]

    def snapshot(self) -> MetricsSnapshot:
        """Counters, dead letters by reason, gauges, and write latency (ms: last, mean, max since last call)."""
        with self._lock:
            lat, self._latencies = self._latencies, []
            snap: MetricsSnapshot = {
                "counters": {name: int(self.counters.get(name, 0)) for name in COUNTERS},
                "deadletter_by_reason": dict(self.deadletter_by_reason),
                "gauges": dict(self.gauges),
            }
        if lat:
            snap["gauges"].update(
                write_latency_ms_last=lat[-1] * 1e3,
                write_latency_ms_mean=sum(lat) / len(lat) * 1e3,
                write_latency_ms_max=max(lat) * 1e3,
            )
        return snap

    def snapshot_counts(self) -> MetricsSnapshot:
        """Counters, dead letters by reason and gauges, without taking the write latencies that `snapshot`
        reports since its last call (a Prometheus scrape must not steal them from the InfluxDB points)."""
        with self._lock:
            return {
                "counters": {name: int(self.counters.get(name, 0)) for name in COUNTERS},
                "deadletter_by_reason": dict(self.deadletter_by_reason),
                "gauges": dict(self.gauges),
            }

    def to_lines(self, snap: MetricsSnapshot, client_id: str, now_ns: int | None = None,
                 host: str | None = None) -> bytes:
        """Line protocol for one snapshot: one point of counters and gauges, one per dead-letter reason."""
        ts = time.time_ns() if now_ns is None else now_ns
        tags = f"host={_tag(host or socket.gethostname())},client_id={_tag(client_id)}"
        fields = [f"{k}={v}i" for k, v in snap["counters"].items()]
        for k, v in sorted(snap["gauges"].items()):
            if v is None:
                continue
            fields.append(f"{k}={int(v)}i" if isinstance(v, int) and not isinstance(v, bool) else f"{k}={float(v)!r}")
        lines = [f"{MEASUREMENT},{tags},kind=collector {','.join(fields)} {ts}"]
        for reason, n in sorted(snap["deadletter_by_reason"].items()):
            lines.append(f"{MEASUREMENT},{tags},kind=deadletter,reason={_tag(reason)} records={int(n)}i {ts}")
        return ("\n".join(lines) + "\n").encode()


def _tag(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace(",", r"\,").replace("=", r"\=").replace(" ", r"\ ") or "-"


# Upper bounds (s) of the alert-latency histogram's buckets: Prometheus' `le` convention (cumulative).
LATENCY_BUCKETS_S = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class LatencyHistogram:
    """Thread-safe fixed-bucket histogram of latencies in seconds (cumulative since the process started).

    `observe_many` takes an array (one call per batch of notices, no per-value Python); `snapshot` gives
    the cumulative bucket counts in Prometheus' form; `quantile` an upper bound read from the buckets.
    """

    def __init__(self, bounds_s: Sequence[float] = LATENCY_BUCKETS_S) -> None:
        import numpy as np

        self._np = np
        self.bounds = np.asarray(bounds_s, np.float64)
        self._counts = np.zeros(len(self.bounds) + 1, np.int64)  # the last bucket is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, seconds: npt.ArrayLike) -> None:
        np = self._np
        v = np.asarray(seconds, np.float64)
        v = v[np.isfinite(v)]
        if not len(v):
            return
        # Bucket i holds bounds[i-1] < v <= bounds[i] (side="left" puts v == bound in that bound's bucket).
        idx = np.searchsorted(self.bounds, np.maximum(v, 0.0), side="left")
        add = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            self._counts += add
            self._sum += float(np.maximum(v, 0.0).sum())

    def snapshot(self) -> tuple[list[tuple[str, int]], float, int]:
        """([(le, cumulative count), ..., ("+Inf", count)], sum of seconds, count)."""
        with self._lock:
            counts, total = self._counts.copy(), self._sum
        cum = self._np.cumsum(counts)
        buckets = [(_le(b), int(c)) for b, c in zip(self.bounds, cum[:-1])] + [("+Inf", int(cum[-1]))]
        return buckets, total, int(cum[-1])

    def quantile(self, q: float) -> float | None:
        """The upper bound of the bucket holding quantile `q` (0..1): inf beyond the last bound; None if empty."""
        buckets, _, n = self.snapshot()
        if not n:
            return None
        rank = q * n
        for le, c in buckets:
            if c >= rank:
                return float("inf") if le == "+Inf" else float(le)
        return float("inf")


def _le(bound: float) -> str:
    return repr(float(bound))


class LagWatch:
    """Says once when a lag crosses `warn_s` and once when it is back under `warn_s / 2` (hysteresis), at
    most one "behind" line per `every_s` (a lag that flaps around the threshold is not a log flood).

    `observe(lag_s, detail)` returns the line to log (or None); `clock` is monotonic seconds. `crossings`
    counts the times it went behind (logged or not), `worst_s` the worst lag of the current episode.
    """

    def __init__(self, what: str, warn_s: float, every_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if warn_s <= 0:
            raise ValueError(f"warn_s must be > 0, got {warn_s}")
        self.what, self.warn_s, self.every_s, self.clock = what, warn_s, every_s, clock
        self.behind = False
        self.crossings = 0
        self.worst_s = 0.0
        self._since = 0.0
        self._said_at = float("-inf")
        self._said_behind = False

    def observe(self, lag_s: float, detail: str = "") -> tuple[int, str] | None:
        """(logging level, message) to log now, or None."""
        import logging

        now = self.clock()
        if not self.behind:
            if lag_s <= self.warn_s:
                return None
            self.behind, self._since, self.worst_s = True, now, lag_s
            self.crossings += 1
            if now - self._said_at < self.every_s:
                self._said_behind = False  # within the rate limit: neither this nor its recovery is said
                return None
            self._said_at, self._said_behind = now, True
            return logging.WARNING, (f"{self.what} is falling behind: {lag_s:.1f} s (over {self.warn_s:g} s)"
                                     + (f"; {detail}" if detail else ""))
        self.worst_s = max(self.worst_s, lag_s)
        if lag_s > self.warn_s / 2:
            if not self._said_behind and now - self._said_at >= self.every_s:
                # Went behind again within the rate limit and still is: say it now.
                self._said_at, self._said_behind = now, True
                return logging.WARNING, (f"{self.what} is falling behind: {lag_s:.1f} s (over {self.warn_s:g} s "
                                         f"for {now - self._since:.1f} s)" + (f"; {detail}" if detail else ""))
            return None
        self.behind = False
        if not self._said_behind:
            return None
        return logging.INFO, (f"{self.what} caught up after {now - self._since:.1f} s (worst {self.worst_s:.1f} s)"
                              + (f"; {detail}" if detail else ""))
