"""The running citywatch service: collector, ingest pipeline, spool, InfluxDB writer and scheduled jobs.

Build it from a loaded config, register `on_decoded` (detectors, alerts) or `on_batch` hooks, `start()`, and `stop()` on
SIGTERM: stop taking messages, flush, make durable, ack, disconnect.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_SUBMITTED
from apscheduler.schedulers.background import BackgroundScheduler

from core import ReadingBatch
from ingest.collector import MqttCollector
from ingest.deadletter import DeadLetterStore
from ingest.influx_target import Replica
from ingest.influx_writer import InfluxWriter, RetryableWriteError, WriteError, make_writer
from ingest.metrics import IngestMetrics
from ingest.partitioned_collector import PartitionedCollector
from ingest.pipeline import IngestPipeline
from ingest.spool import SpoolWriter

if TYPE_CHECKING:
    from citywatch.prometheus import PrometheusEndpoint

log = logging.getLogger(__name__)

# Retained, one per collector client id: {"clock": "wall"|"event", "run_id", "started_at", "pid"} (see _announce).
SERVICE_TOPIC = "city/xm/internal/service"

# MQTT 5 Receive Maximum: unacked messages the broker may have in flight to us. Acks wait for a durable
# batch (up to batch_max_age_ms plus one InfluxDB write), so the window must hold several batches'
# messages; it also bounds what sits in our memory while the spool is full and we stop acking.
RECEIVE_MAXIMUM = 20_000
# Spool drain job period: short, so the spool empties quickly once InfluxDB is back (backoff still applies).
DRAIN_INTERVAL_S = 0.25
SWITCH_INTERVAL_S = 0.0005
# Jobs that run longer than their interval by design (a drain goes on for up to 2 s per run): their runs
# skipped meanwhile are not lateness.
OVERRUN_OK = frozenset({"spool_drain"})
# A job is "behind" once it starts this many intervals (and at least LATE_MIN_S) after it was due; then
# at most one line per LATE_LOG_EVERY_S says so, with how late.
LATE_INTERVALS = 2.0
LATE_MIN_S = 1.0
LATE_LOG_EVERY_S = 60.0
# What the lateness line calls the jobs (the alert jobs are added by citywatch.pipeline).
JOB_NAMES = {"alerts_tick": "alert tick", "config_watch": "config watch", "detector_state": "detector state save",
             "self_metrics": "self-metrics", "spool_drain": "spool drain", "detection_lag": "detection lag check"}

# APScheduler's own warnings for a late or overlapping run, one per skipped run (four a second for a
# 0.25 s job): `JobLag` says it once, with by how much, instead.
_APSCHEDULER_NOISE = ("was missed by", "maximum number of running instances reached")


class _QuietScheduler(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.msg if isinstance(record.msg, str) else ""
        return not any(part in msg for part in _APSCHEDULER_NOISE)


_quiet = _QuietScheduler()


def make_scheduler() -> BackgroundScheduler:
    """The service's one scheduler (spool drain, self-metrics and, from `citywatch run`, the alert tick,
    config watch and state saves): a run that is late still runs (no misfire limit), overdue runs of a job
    are coalesced into one, a job never overlaps itself, and lateness is logged by `JobLag`, not by
    APScheduler per run. The JobLag, which also counts each job's runs, late and skipped runs, is
    `scheduler.job_lag`."""
    for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
        if _quiet not in logging.getLogger(name).filters:
            logging.getLogger(name).addFilter(_quiet)
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={
        "coalesce": True, "max_instances": 1, "misfire_grace_time": None})
    scheduler.job_lag = JobLag(scheduler)
    scheduler.add_listener(scheduler.job_lag, EVENT_JOB_SUBMITTED | EVENT_JOB_MAX_INSTANCES)
    return scheduler


class JobLag:
    """Logs, at most once per `every_s`, that a scheduled interval job started late: how late the worst
    run was and how many runs were late since the last line.

    A run is late when it starts more than max(`intervals` x its interval, `min_s`) after it was due;
    "due" is one interval after the previous run's slot, so runs skipped while the job was still running
    (or while the process was too busy to start it) count as lateness. `clock`: epoch seconds.

    It also counts, per job, `runs`, `late` runs and `skipped` runs (`counts()`): a slot that passed
    without a run of its own (coalesced into a later one, or refused because the previous run was still
    going), so that no run is ever skipped without a count (issue 17).
    """

    def __init__(self, scheduler, intervals: float = LATE_INTERVALS, min_s: float = LATE_MIN_S,
                 every_s: float = LATE_LOG_EVERY_S, skip=OVERRUN_OK, clock=time.time, logger=None):
        self.scheduler = scheduler
        self.intervals, self.min_s, self.every_s = intervals, min_s, every_s
        self.skip = skip
        self.clock = clock
        self.log = logger or log
        self._last_slot: dict[str, float] = {}
        self._late: dict[str, tuple[int, float]] = {}  # job id -> (late runs, worst lateness) not yet logged
        self._logged_at: dict[str, float] = {}
        self._counts: dict[str, Counter] = {}
        self._counted_slot: dict[str, float] = {}  # the latest slot counted as run or skipped, per job

    def __call__(self, event) -> None:
        if event.job_id in self.skip or not event.scheduled_run_times:
            return
        job = self.scheduler.get_job(event.job_id)
        interval = getattr(getattr(job, "trigger", None), "interval", None)
        if interval is None:
            return
        if event.code == EVENT_JOB_MAX_INSTANCES:
            self.refused(event.job_id, interval.total_seconds(), event.scheduled_run_times[-1].timestamp())
            return
        self.observe(event.job_id, JOB_NAMES.get(event.job_id, getattr(job, "name", event.job_id)),
                     interval.total_seconds(), event.scheduled_run_times[-1].timestamp())

    def observe(self, job_id: str, name: str, interval_s: float, slot: float) -> float:
        """One run of `job_id` submitted now for its `slot` (epoch s). Returns how late it started (s)."""
        now = self.clock()
        c = self._count_slot(job_id, interval_s, slot)
        c["runs"] += 1
        prev = self._last_slot.get(job_id)
        self._last_slot[job_id] = slot
        due = slot if prev is None else min(slot, prev + interval_s)
        late = max(0.0, now - due)
        if late <= max(self.intervals * interval_s, self.min_s):
            return late
        c["late"] += 1
        n, worst = self._late.get(job_id, (0, 0.0))
        n, worst = n + 1, max(worst, late)
        if now - self._logged_at.get(job_id, float("-inf")) < self.every_s:
            self._late[job_id] = (n, worst)
            return late
        self._late.pop(job_id, None)
        self._logged_at[job_id] = now
        more = f"; {n - 1} more late run(s) since the last such line, the worst {worst:.1f} s late" if n > 1 else ""
        self.log.warning("%s is falling behind: a run started %.1f s late (it runs every %g s)%s", name, late,
                         interval_s, more)
        return late

    def refused(self, job_id: str, interval_s: float, slot: float) -> None:
        """The run of `job_id` due at `slot` was not started: its previous run was still going."""
        self._count_slot(job_id, interval_s, slot)["skipped"] += 1

    def _count_slot(self, job_id: str, interval_s: float, slot: float) -> Counter:
        # Slots between the last one counted and this one had no run of their own: APScheduler coalesced
        # them into this run (or the process was too busy to submit them).
        c = self._counts.setdefault(job_id, Counter())
        seen = self._counted_slot.get(job_id)
        if seen is not None and slot > seen and interval_s > 0:
            c["skipped"] += max(0, round((slot - seen) / interval_s) - 1)
        self._counted_slot[job_id] = slot if seen is None else max(seen, slot)
        return c

    def counts(self) -> dict[str, dict[str, int]]:
        """{job id: {"runs", "late", "skipped"}} since the start."""
        return {job: {k: int(c.get(k, 0)) for k in ("runs", "late", "skipped")} for job, c in list(self._counts.items())}


class Service:
    """One collector process.

    cfg: loaded Config; env: environment for secrets (default os.environ); decode_processes: 1 decodes in a
    worker process (it loads the config again from cfg.base_dir), 0 in a thread of this process; partitions:
    the partitions this worker owns in partitioned mode (connections.cluster; () for `--partitions auto`, whose
    leases add them), None for the single broker.
    """

    def __init__(self, cfg, env: dict | None = None, writer: InfluxWriter | None = None, decode_processes: int = 1,
                 partitions: tuple[int, ...] | None = None):
        self.cfg = cfg
        env = dict(os.environ) if env is None else env
        s = cfg.ingest
        self.metrics = IngestMetrics()
        self.writer = writer or make_writer(cfg.connections.influx, env)
        self.spool = SpoolWriter(cfg.resolve_path(s.spool_dir), int(s.spool_max_mb * 2**20))
        # connections.influx_replicas: each its own writer and spool (README "Several InfluxDB targets").
        self.replicas = [
            Replica(r.name, f"InfluxDB replica {r.name} ({r.url})", make_writer(r, env),
                    SpoolWriter(replica_spool_dir(cfg, r.name), int(s.spool_max_mb * 2**20)))
            for r in cfg.connections.influx_replicas]
        self.deadletters = DeadLetterStore.from_config(cfg)
        mq = cfg.connections.mqtt
        password = env.get(mq.password_env) if mq.password_env else None
        # MQTT 3.1.1 has no Receive Maximum: the broker's max_inflight_messages (README) bounds the window and
        # the pipeline's idle flush keeps batches moving whatever its value.
        max_messages = RECEIVE_MAXIMUM // 4 if mq.protocol == "mqtt5" else None
        # The pipeline first, so that the collector hands each message straight to its submit (paho's thread,
        # once per message); acks and dead-letter publishes, once per batch or record, go through _ack/_publish.
        self.pipeline = IngestPipeline(cfg, self.writer, self.spool, self.deadletters, self.metrics,
                                       ack=self._ack, publish=self._publish,
                                       max_messages=max_messages, decode_processes=decode_processes,
                                       replicas=self.replicas)
        self.collector: MqttCollector | PartitionedCollector
        if partitions is not None:  # partitioned mode (README "Cluster mode"): one session per owned partition;
            # () is `--partitions auto`: the partition leases add and remove them (citywatch/partition_lease.py)
            self.collector = PartitionedCollector(mq, cfg.connections.cluster, partitions, password,
                                                  self.pipeline.submit, metrics=self.metrics, dynamic=not partitions)
        else:
            self.collector = MqttCollector(mq, password, self.pipeline.submit, receive_maximum=RECEIVE_MAXIMUM,
                                           metrics=self.metrics)
        self.scheduler = make_scheduler()
        # The detection pipeline whose backlog and alert latency the self-metrics report (attach_detection).
        self.detection = None
        self.prometheus: PrometheusEndpoint | None = None
        self._stopped = threading.Event()
        self._started = False

    def _ack(self, tokens: list) -> int:
        return self.collector.ack(tokens)

    def _publish(self, topic: str, payload: bytes) -> None:
        self.collector.publish(topic, payload)

    def on_batch(self, callback: Callable[[ReadingBatch], None]) -> None:
        """Call `callback(batch)` with each durable ReadingBatch, in order (from the durability thread)."""
        self.pipeline.on_batch(callback)

    def on_decoded(self, callback: Callable[[ReadingBatch], None]) -> None:
        """Call `callback(batch)` with each decoded chunk's valid rows (and, without values, the rows refused
        for their flag alone) as soon as they are decoded, in arrival order, before they are durable (the
        detectors' low-latency feed; see IngestPipeline.on_decoded)."""
        self.pipeline.on_decoded(callback)

    def reload(self, cfg) -> None:
        """Decode and encode with a new validated config from the next message on (inventory changes:
        new devices, sites, tags). Connections, spool and batching settings need a restart."""
        self.cfg = cfg
        self.pipeline.reload(cfg)

    def attach_detection(self, detection) -> None:
        """Report `detection`'s backlog, alert notices and latency (citywatch.pipeline.DetectionPipeline:
        `backlog()`, `alert_latency`) in the self-metrics, `citywatch status` and the Prometheus endpoint."""
        self.detection = detection

    def on_status(self, callback: Callable[[str, str, int], None]) -> None:
        """Call `callback(device_id, status, recv_ns)` for each device online/offline message."""
        self.pipeline.on_status(callback)

    def start(self) -> None:
        """Start the pipeline threads, the scheduled jobs (spool drain, self-metrics) and the MQTT client."""
        # paho's network thread gives up the GIL at every socket read; with the default 5 ms switch interval
        # it then waits behind the decode thread (the convoy effect) and the broker's delivery stalls.
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        st = self.spool.stats()
        if st.records:
            log.info("spool holds %d batch(es), %d bytes from before: draining them first", st.records, st.bytes)
        if self.replicas:
            log.info("every reading also goes to %s; acked once every InfluxDB has it or has it spooled",
                     ", ".join(r.label for r in self.replicas))
        for r in self.replicas:
            st = r.spool.stats()
            if st.records:
                log.info("spool of InfluxDB replica %s holds %d batch(es), %d bytes from before: draining them first",
                         r.name, st.records, st.bytes)
        self.pipeline.start()
        if self.pipeline.ack_after == "influxdb":  # with ack_after spool the pipeline's drain thread does it
            self.scheduler.add_job(self.pipeline.drain_spool, "interval", seconds=DRAIN_INTERVAL_S, id="spool_drain")
        self.scheduler.add_job(self.write_metrics, "interval", seconds=self.cfg.ingest.metrics_interval_s,
                               id="self_metrics")
        self.scheduler.start()
        http = self.cfg.ingest.metrics_http
        if http.enabled:
            from citywatch.prometheus import PrometheusEndpoint

            self.prometheus = PrometheusEndpoint(self, http.host, http.port)
            self.prometheus.start()  # a port in use is logged, never fatal: ingest goes on without /metrics
        self.collector.start()
        self._announce()
        self._started = True

    def _announce(self, clear: bool = False) -> None:
        """Publish (retained) what simulators need to know about this service: its clock mode and run id, on
        SERVICE_TOPIC/<client id> (`citywatch simulate` warns when it feeds a wall-clock service); cleared on
        a graceful stop. paho queues it until the connection is up."""
        topic = f"{SERVICE_TOPIC}/{self.cfg.connections.mqtt.client_id}"
        body = b"" if clear else json.dumps({
            "clock": self.cfg.ingest.clock, "run_id": os.environ.get("CITYWATCH_RUN_ID", ""),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "pid": os.getpid()}).encode()
        client = self.collector.client
        if client is None:  # a `--partitions auto` worker that owns no partition yet has no session to publish on
            return
        try:
            client.publish(topic, body, qos=1, retain=True)
        except Exception as exc:  # noqa: BLE001 - an announcement must never stop the service
            log.debug("service announcement on %s not published: %s", topic, exc)

    def write_metrics(self) -> None:
        """Write one self-metrics snapshot to InfluxDB (`citywatch_internal`); skipped while it is down."""
        self.update_gauges()
        snap = self.metrics.snapshot()
        try:
            self.writer.write(self.metrics.to_lines(snap, self.cfg.connections.mqtt.client_id))
        except RetryableWriteError as exc:
            # An idle service learns here that InfluxDB went away (or came back): one log line per change.
            self.pipeline.influx_write_result(exc)
            return
        except WriteError as exc:
            log.debug("self-metrics not written: %s", exc)
        self.pipeline.influx_write_result(None)

    def update_gauges(self) -> None:
        """Refresh the gauges: spool, inbox, MQTT, the alert tick's runs and, with a detection pipeline
        attached, its backlog and alerts (field types never change: InfluxDB refuses a point that changes one)."""
        self.pipeline.update_gauges()
        m = self.metrics
        m.set_gauge("mqtt_connected", 1 if self.collector.connected else 0)
        tick = self.scheduler.job_lag.counts().get("alerts_tick")
        if tick is not None:
            for k, v in tick.items():
                m.set_gauge(f"tick_{k}", int(v))
        if self.detection is not None:
            b = self.detection.backlog()
            for k in ("rows_queued", "oldest_age_s", "event_lag_s", "steps", "deferred_steps", "errors",
                      "rows_held_ahead", "rows_ahead_dropped"):
                m.set_gauge(f"detect_{k}", b[k])
            m.set_gauge("alert_notices", b["notices"])
            hist = self.detection.alert_latency
            _, _, n = hist.snapshot()
            m.set_gauge("alert_latency_count", int(n))
            p99 = hist.quantile(0.99)
            # An upper bound read from the histogram's buckets; beyond the last bucket it is left out.
            m.set_gauge("alert_latency_p99_le_s", float(p99) if p99 is not None and p99 != float("inf") else None)

    def stop(self, timeout_s: float = 30.0) -> bool:
        """Graceful stop: no new messages, flush and ack what is held, last metrics, disconnect.
        Returns True if every held message was made durable and acked within the timeout."""
        if self._stopped.is_set():
            return True
        self._stopped.set()
        if not self._started:
            self._close()
            return True
        self.collector.pause()
        done = self.pipeline.stop(timeout_s)
        self.scheduler.shutdown(wait=True)
        self.pipeline.drain_spool(max_seconds=min(5.0, timeout_s))
        self.write_metrics()
        if self.prometheus is not None:
            self.prometheus.stop()
        self._announce(clear=True)
        self.collector.stop()
        self._close()
        return done

    def _close(self) -> None:
        self.writer.close()
        self.spool.close()
        for r in self.replicas:
            r.writer.close()
            r.spool.close()
        self.deadletters.close()

    @property
    def failed(self) -> str | None:
        """Why the service cannot go on (the decode worker died), or None."""
        return self.pipeline.failed

    def wait(self, stop_event: threading.Event, poll_s: float = 0.5) -> None:
        """Block until `stop_event` is set (signal handlers set it) or the service failed."""
        while not stop_event.wait(poll_s):
            if self.failed:
                return


def replica_spool_dir(cfg, name: str) -> Path:
    """The spool directory of InfluxDB replica `name`: `<ingest.spool_dir>/replicas/<name>` (a Path)."""
    return cfg.resolve_path(cfg.ingest.spool_dir) / "replicas" / name


def wait_until(predicate: Callable[[], bool], timeout_s: float, poll_s: float = 0.05) -> bool:
    """Poll `predicate` until true or `timeout_s` passed; bounded in time."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return predicate()
