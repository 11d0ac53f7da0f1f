"""Self-metrics of the collector: counters and gauges, rendered as InfluxDB points (`citywatch_internal`).

Counters are cumulative since the process started (InfluxQL `non_negative_difference` gives rates);
`citywatch status` reads the latest point back.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

MEASUREMENT = "citywatch_internal"

# Counter names, in the order `citywatch status` shows them.
COUNTERS = (
    "messages_received",   # MQTT messages handed to the collector by paho
    "messages_acked",      # MQTT messages acked (durable or dead-lettered)
    "messages_ignored",    # device command messages (.../cmd) seen on the subscribed subtrees
    "rows_decoded",        # valid rows decoded from payloads
    "rows_written",        # rows (lines) InfluxDB accepted, directly or from the spool
    "rows_spooled",        # rows that went to the spool because InfluxDB was slow, down or behind
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


@dataclass
class IngestMetrics:
    """Thread-safe counters and gauges of one running collector."""

    counters: Counter = field(default_factory=Counter)
    deadletter_by_reason: Counter = field(default_factory=Counter)
    gauges: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _latencies: list = field(default_factory=list, repr=False)

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def deadletter(self, reason: str, n: int = 1) -> None:
        with self._lock:
            self.deadletter_by_reason[reason] += n
            self.counters["deadletter_records"] += n

    def deadletter_record(self, rec) -> None:
        """Count one stored dead-letter record: the record, and its rejects by reason (each refused row, or
        the payload-level reason), so the per-reason counts do not depend on how rows are grouped."""
        by_reason = rec.rows_by_reason or {rec.reason: 1}
        with self._lock:
            self.counters["deadletter_records"] += 1
            self.counters["rows_refused"] += rec.rows_refused
            for reason, n in by_reason.items():
                self.deadletter_by_reason[reason] += n

    def set_gauge(self, name: str, value: float) -> None:
        with self._lock:
            self.gauges[name] = value

    def write_latency(self, seconds: float) -> None:
        with self._lock:
            self._latencies.append(seconds)
            if len(self._latencies) > 10_000:
                del self._latencies[:5_000]

    def snapshot(self) -> dict:
        """Counters, dead letters by reason, gauges, and write latency (ms: last, mean, max since last call)."""
        with self._lock:
            lat, self._latencies = self._latencies, []
            snap = {
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

    def to_lines(self, snap: dict, client_id: str, now_ns: int | None = None, host: str | None = None) -> bytes:
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
