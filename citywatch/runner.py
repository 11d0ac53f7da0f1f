"""`run_service`: the one way the service starts, runs and stops (ingest `Service` + `DetectionPipeline`).

`citywatch run` calls it after parsing its arguments, setting up logging and the SIGTERM/SIGINT handlers;
tests and benchmarks start `python -m citywatch run --config DIR` as a process, so they run this path too.
"""

from __future__ import annotations

import logging
import os
import sys
import threading

from citywatch.errors import report_config_error
from config import ConfigError

log = logging.getLogger(__name__)


def run_service(cfg, stop: threading.Event, *, config_dir: str | os.PathLike | None = None,
                partitions: tuple[int, ...] | None = None, worker_id: str | None = None,
                env: dict | None = None) -> int:
    """Run the collector, the detectors and the alert engine until `stop` is set or the service fails.

    cfg:        the loaded, validated Config (for a partitioned worker, already given its worker settings:
                citywatch.partition_lease.worker_config)
    stop:       set it (from a SIGTERM/SIGINT handler) for the graceful stop: no new messages, held batches
                made durable and acked, detector and alert state saved, then disconnect
    config_dir: the directory a reload re-reads (SIGHUP, a changed YAML file); default: the one cfg came from
    partitions: None for the single broker; in partitioned mode the partitions this worker owns, () for
                `--partitions auto` (the live workers divide them through leases, which need `worker_id`)
    worker_id:  this worker's name for the partition leases (`--partitions auto` only; default host-pid)
    env:        environment for secrets (MQTT password, webhook secrets); default os.environ

    Called from the main thread, it also installs the SIGHUP handler (validate the config directory and swap
    it in). Returns the exit code: 0 after a graceful stop; 1 when the service could not start (the spool
    is locked by another process, the decode worker died at start, the partition leases could not start)
    or failed while running (the decode worker died), after stopping what had started. The reason is
    printed on stderr as one line `citywatch run: <reason>`; a rule the detectors refuse is printed as
    `check-config` prints it (exit 1). Raises nothing of its own.
    """
    from citywatch.pipeline import DetectionPipeline
    from citywatch.service import Service
    from ingest.decode_worker import WorkerDied
    from ingest.spool import SpoolLocked

    try:
        service = Service(cfg, env, partitions=partitions)
    except SpoolLocked as exc:
        return _refuse(exc)
    # Detectors and the alert engine evaluate each decoded chunk on a thread of their own as soon as it
    # is decoded (not after the batch age and the InfluxDB write, which only the ack waits for).
    try:
        pipeline = DetectionPipeline(cfg, env, config_dir=config_dir, threaded=True)
    except ConfigError as exc:
        service.stop()
        return report_config_error(exc)
    if partitions is not None:
        # Partitioned: this worker raises alerts only for the devices of the partitions it owns (auto: none
        # until the leases give it some; each partition's open alerts then move with it).
        from citywatch.partition_state import partition_devices

        total = cfg.connections.cluster.partitions
        pipeline.set_owned(set().union(*(partition_devices(cfg, k, total) for k in partitions)))
        if partitions:  # static: ownership follows a reloaded inventory (auto: PartitionState.reconfigure)
            pipeline.reload_hooks.append(lambda new: pipeline.set_owned(
                set().union(*(partition_devices(new, k, total) for k in partitions))))
    service.on_decoded(pipeline.on_batch)
    service.attach_detection(pipeline)  # its backlog and alert latency in the self-metrics
    pipeline.reload_hooks.append(service.reload)
    # One scheduler for the process: the alert tick, config watch and state saves run beside the spool
    # drain and self-metrics, under the same lateness reporting (citywatch.service.JobLag).
    pipeline.start(scheduler=service.scheduler)
    if threading.current_thread() is threading.main_thread():  # Python delivers signals to the main thread only
        pipeline.install_signal_handlers()
    try:
        service.start()
    except WorkerDied as exc:
        service.stop()
        pipeline.stop()
        return _refuse(exc)
    leases = None
    if partitions == ():  # --partitions auto
        from citywatch.partition_lease import default_worker_id, start_leases

        worker_id = worker_id or default_worker_id()
        try:
            leases = start_leases(cfg, service, worker_id, env, pipeline=pipeline)
        except (RuntimeError, ValueError) as exc:
            service.stop()
            pipeline.stop()
            return _refuse(exc)
        pipeline.partition_leases = leases  # per-partition gauges on the Prometheus endpoint
    elif partitions:
        from citywatch.partition_lease import StaticPartitions

        pipeline.partition_leases = StaticPartitions(partitions, cfg.connections.cluster.partitions, worker_id)
    _log_running(cfg, partitions, worker_id, leases)
    service.wait(stop)
    log.info("stopping: flushing and acking held messages")
    if leases is not None:
        leases.stop()  # each partition's held messages acked, then its lease given up: the survivors take over
    clean = service.stop()
    pipeline.stop()  # after the service: the last durable batches are still evaluated
    c = service.metrics.snapshot()["counters"]
    log.info("stopped%s; this run: %d messages received, %d acked, %d rows decoded, %d written, %d spooled, "
             "%d dead letters", "" if clean else " (some messages left unacked; the broker will redeliver them)",
             c["messages_received"], c["messages_acked"], c["rows_decoded"], c["rows_written"], c["rows_spooled"],
             c["deadletter_records"])
    if service.failed:
        return _refuse(service.failed)
    return 0


def _refuse(reason) -> int:
    print(f"citywatch run: {reason}", file=sys.stderr)
    return 1


def _log_running(cfg, partitions: tuple[int, ...] | None, worker_id: str | None, leases) -> None:
    mq = cfg.connections.mqtt
    cluster = cfg.connections.cluster
    if partitions == ():
        log.info("citywatch running: worker %s, partitions by lease (%s now) of %d on the cluster %s as %s-p<k>",
                 worker_id, ",".join(map(str, leases.owned)) or "none", cluster.partitions,
                 ",".join(cluster.nodes), mq.client_id)
    elif partitions:
        log.info("citywatch running: partitions %s of %d on the cluster %s as %s-p<k>, InfluxDB %s (%s)",
                 ",".join(map(str, partitions)), cluster.partitions, ",".join(cluster.nodes), mq.client_id,
                 cfg.connections.influx.url, cfg.connections.influx.api)
    else:
        log.info("citywatch running: MQTT %s:%s as %s, InfluxDB %s (%s)", mq.host, mq.port, mq.client_id,
                 cfg.connections.influx.url, cfg.connections.influx.api)
