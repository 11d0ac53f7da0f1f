"""The service's self-metrics in the Prometheus text format on a local HTTP endpoint (`GET /metrics`).

Read at scrape time from the same counters and gauges that `citywatch status` shows (ingest.metrics,
the scheduler's JobLag, the detection pipeline's backlog and alert latency): one source, no second set
of counters. Served by the maintained client library, `prometheus_client`, on its own thread.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)

from ingest.metrics import COUNTERS

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

log = logging.getLogger(__name__)

PREFIX = "citywatch_"

# Gauges of IngestMetrics (name there -> (Prometheus name, help)); seconds and bytes in base units.
_GAUGES = {
    "spool_records": ("spool_records", "Batches in the local spool waiting for InfluxDB"),
    "spool_bytes": ("spool_bytes", "Bytes in the local spool waiting for InfluxDB"),
    "spool_age_s": ("spool_oldest_age_seconds", "Age of the oldest batch in the spool (0 when empty)"),
    "inbox_depth": ("inbox_messages", "MQTT messages received and not yet decoded"),
    "batch_rows_held": ("batch_rows_held", "Decoded rows held in the micro-batch being filled"),
    "influx_ok": ("influxdb_up", "1 while InfluxDB takes writes, 0 while they fail"),
    "mqtt_connected": ("mqtt_connected", "1 while the collector is connected to the MQTT broker"),
}


# Each InfluxDB replica's figures (connections.influx_replicas; IngestMetrics gauges `replica_<name>_<key>`), as
# families labelled by replica: key -> (Prometheus name, help, counter?).
_REPLICA = {
    "spool_records": ("replica_spool_records", "Batches in the replica's spool waiting for it", False),
    "spool_bytes": ("replica_spool_bytes", "Bytes in the replica's spool waiting for it", False),
    "spool_age_s": ("replica_spool_oldest_age_seconds", "Age of the oldest batch in the replica's spool (0 when "
                    "empty)", False),
    "influx_ok": ("replica_influxdb_up", "1 while the replica takes writes, 0 while they fail", False),
    "rows_written": ("replica_rows_written", "Rows the replica accepted, directly or from its spool", True),
    "rows_spooled": ("replica_rows_spooled", "Rows made durable in the replica's spool", True),
    "write_errors": ("replica_write_errors", "Retryable write failures of the replica", True),
    "rows_rejected": ("replica_rows_rejected", "Lines the replica refused with 400 (dead-lettered)", True),
    "spool_full_waits": ("replica_spool_full_waits", "Times ingest waited for the replica's full spool", True),
}


def replica_families(gauges: dict) -> list:
    """The `replica_<name>_<key>` gauges of IngestMetrics as one family per key, a sample per replica (label
    `replica`); none without replicas. A replica's name may hold underscores: the key is matched at the end."""
    values: dict[str, list[tuple[str, float]]] = {}
    for full, v in sorted(gauges.items()):
        if not full.startswith("replica_") or v is None:
            continue
        for key in _REPLICA:
            if full.endswith("_" + key) and len(full) > len("replica_") + len(key) + 1:
                values.setdefault(key, []).append((full[len("replica_"):-len(key) - 1], float(v)))
                break
    out = []
    for key, samples in values.items():
        name, help_, counter = _REPLICA[key]
        fam = (CounterMetricFamily if counter else GaugeMetricFamily)(PREFIX + name, help_, labels=["replica"])
        for replica, v in samples:
            fam.add_metric([replica], v)
        out.append(fam)
    return out


class ServiceCollector:
    """A prometheus_client custom collector over one running `citywatch.service.Service`."""

    def __init__(self, service):
        self.service = service

    def collect(self):
        svc = self.service
        try:
            svc.update_gauges()
        except Exception:
            log.exception("could not refresh the gauges for a scrape")
        snap = svc.metrics.snapshot_counts()
        for name in COUNTERS:
            yield CounterMetricFamily(PREFIX + name, f"citywatch ingest counter {name}", value=snap["counters"][name])
        dl = CounterMetricFamily(PREFIX + "deadletter_rejects", "Refused messages and rows by dead-letter reason "
                                 "(each refused row, or the message's reason)", labels=["reason"])
        for reason, n in sorted(snap["deadletter_by_reason"].items()):
            dl.add_metric([reason], n)
        yield dl
        gauges = snap["gauges"]
        for key, (name, help_) in _GAUGES.items():
            if gauges.get(key) is not None:
                yield GaugeMetricFamily(PREFIX + name, help_, value=float(gauges[key]))
        yield from replica_families(gauges)
        jobs = svc.scheduler.job_lag.counts()
        for what, help_ in (("runs", "Runs of each scheduled job"),
                            ("late", "Runs that started more than 2 intervals (and 1 s) after they were due"),
                            ("skipped", ("Due runs that did not run on their own: coalesced into a later run or "
                                         "refused while the previous run was still going"))):
            fam = CounterMetricFamily(PREFIX + f"job_{what}", help_, labels=["job"])
            for job, c in sorted(jobs.items()):
                fam.add_metric([job], c[what])
            yield fam
        det = svc.detection
        if det is None:
            return
        yield from _partition_metrics(getattr(det, "partition_leases", None))
        b = det.backlog()
        yield GaugeMetricFamily(PREFIX + "detection_rows_queued", "Readings handed to the detectors and not yet "
                                "evaluated", value=b["rows_queued"])
        yield GaugeMetricFamily(PREFIX + "detection_oldest_age_seconds", "Wall time since the oldest arrival not "
                                "yet evaluated was handed to the detectors (0 when none waits)", value=b["oldest_age_s"])
        yield GaugeMetricFamily(PREFIX + "detection_event_lag_seconds", "Newest event time handed to the detectors "
                                "minus the newest evaluated, while readings wait", value=b["event_lag_s"])
        yield CounterMetricFamily(PREFIX + "detection_readings", "Readings evaluated by the detectors",
                                  value=b["readings"])
        yield CounterMetricFamily(PREFIX + "detection_steps", "Detector steps", value=b["steps"])
        yield CounterMetricFamily(PREFIX + "detection_deferred_steps", "Detector steps that left readings for a "
                                  "later step (alerting.detect_step_rows_per_device)", value=b["deferred_steps"])
        yield CounterMetricFamily(PREFIX + "detection_errors", "Detector steps or ticks that failed",
                                  value=b["errors"])
        yield GaugeMetricFamily(PREFIX + "detection_rows_held_ahead", "Event clock: readings dated more than a day "
                                "ahead of the feed, held until it gets there", value=b["rows_held_ahead"])
        yield CounterMetricFamily(PREFIX + "detection_rows_ahead_dropped", "Event clock: held readings left out of "
                                  "detection (more than the hold keeps; stored all the same)",
                                  value=b["rows_ahead_dropped"])
        yield CounterMetricFamily(PREFIX + "alert_notices", "Alert notices handed to the sinks", value=b["notices"])
        buckets, total, _ = det.alert_latency.snapshot()
        yield HistogramMetricFamily(
            PREFIX + "alert_latency_seconds", "Wall clock only: from the event time at which an alert became due "
            "(the reading that raised it, or the moment its timer ran out) to its firing notice handed to the sinks",
            buckets=buckets, sum_value=total)


def _partition_metrics(leases):
    """Partitioned mode: which partitions this worker owns, how often it took each over, gave it up or lost it,
    and how old each owned partition's last detector-state save in the cluster is (citywatch.partition_lease)."""
    if leases is None:
        return
    m = leases.metrics()
    owned = set(m["owned"])
    fam = GaugeMetricFamily(PREFIX + "partition_owned", "1 for each partition this worker serves now, 0 for the "
                            "others (worker: --worker-id)", labels=["partition", "worker"])
    for k in range(m["total"]):
        fam.add_metric([str(k), m["worker"]], 1.0 if k in owned else 0.0)
    yield fam
    yield GaugeMetricFamily(PREFIX + "partitions_owned", "Partitions this worker serves now", value=len(owned))
    yield GaugeMetricFamily(PREFIX + "partition_workers", "Live workers in the partition leases (0: static "
                            "--partitions)", value=m["members"])
    for what, help_ in (("acquired", "Times this worker took the partition (at start, a dead worker's takeover, "
                                     "a rebalance)"),
                        ("released", "Times this worker gave the partition up (a rebalance, its stop)"),
                        ("lost", "Times this worker lost the partition's lease (not renewed in time)")):
        events = CounterMetricFamily(PREFIX + f"partition_{what}", help_, labels=["partition"])
        for k, n in sorted(m[what].items()):
            events.add_metric([str(k)], n)
        yield events
    fam = GaugeMetricFamily(PREFIX + "partition_state_save_age_seconds", "Seconds since this worker last saved the "
                            "partition's detector state to the cluster (owned partitions it has saved)",
                            labels=["partition"])
    for k, age in sorted(m["snapshot_age_s"].items()):
        if age is not None:
            fam.add_metric([str(k)], age)
    yield fam
    saves = CounterMetricFamily(PREFIX + "partition_state_saves", "Partition state writes to the cluster by kind "
                              "(snapshot: detector state and alerts; alerts: open alerts after a transition; "
                              "skipped: a snapshot with nothing new; error: a failed write)", labels=["kind"])
    for kind, key in (("snapshot", "snapshot_saves"), ("alerts", "alerts_saves"), ("skipped", "skipped_saves"),
                      ("error", "save_errors")):
        if key in m["counts"]:
            saves.add_metric([kind], m["counts"][key])
    yield saves


class PrometheusEndpoint:
    """`GET http://host:port/metrics` for one service, on prometheus_client's own server thread.

    start() never raises for a port in use or an address that cannot be bound: it logs an error and the
    service goes on (ingest matters more than its metrics). `port` is the bound port once started (port 0
    picks a free one).
    """

    def __init__(self, service, host: str = "127.0.0.1", port: int = 9464):
        self.host, self.port = host, port
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(ServiceCollector(service))
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        try:
            self._server, self._thread = start_http_server(self.port, addr=self.host, registry=self.registry)
        except OSError as exc:
            log.error("Prometheus endpoint not started on %s:%s: %s (metrics still go to InfluxDB; see "
                      "ingest.metrics_http)", self.host, self.port, exc)
            return False
        self.port = self._server.server_port
        log.info("Prometheus metrics at http://%s:%d/metrics", self.host, self.port)
        return True

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
