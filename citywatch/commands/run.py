"""`citywatch run [--config DIR]`: run the collector service until SIGTERM or SIGINT, then stop gracefully."""

from __future__ import annotations

import logging
import signal
import sys
import threading

from citywatch.errors import report_config_error
from config import ConfigError, load_config


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="run the service: MQTT collector -> spool -> InfluxDB, detectors, alerts",
        description="Run the citywatch service. SIGTERM or SIGINT stops it gracefully: no new messages, "
        "held batches are made durable and acked, then it disconnects.",
    )
    p.add_argument("--config", default=None, metavar="DIR", help="config directory (default: the shipped config/)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument("--partitions", default=None, metavar="LIST",
                   help="partitioned mode (connections.cluster.mode: partitioned): the partitions this worker owns, "
                   "e.g. 0,1,2 or 0-2 (README, Cluster mode)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    # First of all: a Ctrl-C (SIGINT to the whole foreground process group) or SIGTERM from here on asks
    # for the graceful stop, never a KeyboardInterrupt traceback. The decode worker ignores both; this
    # process stops it once it has drained what it sent.
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # APScheduler logs every run of every job at INFO (the spool drain runs four times a second); its
    # per-run lateness warnings are replaced by citywatch.service.JobLag's one line.
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLevelName(args.log_level)))
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        return report_config_error(exc)
    generic = [d.id for d in cfg.devices if d.kind == "generic"]
    if generic:
        # Ingest knows noise monitors and gas sensors (their topics, fields, ranges); a generic device is for
        # offline `citywatch detect` (config/inventory.py).
        print(f"citywatch run: device(s) of kind generic are for `citywatch detect` only, not the service: "
              f"{', '.join(generic[:5])}{' ...' if len(generic) > 5 else ''}", file=sys.stderr)
        return 1
    from citywatch.commands.check_config import warnings
    from citywatch.service import Service
    from ingest.spool import SpoolLocked

    log = logging.getLogger("citywatch.run")
    for line in warnings(cfg):  # the lines `check-config` prints: valid, but unsafe (an unsigned webhook)
        log.warning("%s", line)

    try:
        partitions = _partitions(args.partitions, cfg.connections.cluster)
    except ValueError as exc:
        print(f"citywatch run: {exc}", file=sys.stderr)
        return 2
    try:
        service = Service(cfg, partitions=partitions)
    except SpoolLocked as exc:
        print(f"citywatch run: {exc}", file=sys.stderr)
        return 1
    from citywatch.pipeline import DetectionPipeline
    from ingest.decode_worker import WorkerDied

    # Detectors and the alert engine evaluate each decoded chunk on a thread of their own as soon as it
    # is decoded (not after the batch age and the InfluxDB write, which only the ack waits for).
    try:
        pipeline = DetectionPipeline(cfg, config_dir=args.config, threaded=True)
    except ConfigError as exc:
        service.stop()
        return report_config_error(exc)
    service.on_decoded(pipeline.on_batch)
    service.attach_detection(pipeline)  # its backlog and alert latency in the self-metrics
    pipeline.reload_hooks.append(service.reload)
    # One scheduler for the process: the alert tick, config watch and state saves run beside the spool
    # drain and self-metrics, under the same lateness reporting (citywatch.service.JobLag).
    pipeline.start(scheduler=service.scheduler)
    pipeline.install_signal_handlers()  # SIGHUP: validate the config directory and swap it in
    try:
        service.start()
    except WorkerDied as exc:
        print(f"citywatch run: {exc}", file=sys.stderr)
        service.stop()
        pipeline.stop()
        return 1
    mq = cfg.connections.mqtt
    if partitions:
        log.info("citywatch running: partitions %s of %d on the cluster %s as %s-p<k>, InfluxDB %s (%s)",
                 ",".join(map(str, partitions)), cfg.connections.cluster.partitions,
                 ",".join(cfg.connections.cluster.nodes), mq.client_id, cfg.connections.influx.url,
                 cfg.connections.influx.api)
    else:
        log.info("citywatch running: MQTT %s:%s as %s, InfluxDB %s (%s)", mq.host, mq.port, mq.client_id,
                 cfg.connections.influx.url, cfg.connections.influx.api)
    service.wait(stop)
    log.info("stopping: flushing and acking held messages")
    clean = service.stop()
    pipeline.stop()  # after the service: the last durable batches are still evaluated
    c = service.metrics.snapshot()["counters"]
    log.info("stopped%s; this run: %d messages received, %d acked, %d rows decoded, %d written, %d spooled, "
             "%d dead letters", "" if clean else " (some messages left unacked; the broker will redeliver them)",
             c["messages_received"], c["messages_acked"], c["rows_decoded"], c["rows_written"], c["rows_spooled"],
             c["deadletter_records"])
    if service.failed:
        print(f"citywatch run: {service.failed}", file=sys.stderr)
        return 1
    return 0


def _partitions(text: str | None, cluster) -> tuple[int, ...] | None:
    """The owned partitions of `--partitions` in partitioned mode; None in single mode. Raises ValueError when
    the flag and connections.cluster.mode disagree or a partition is malformed, repeated or out of range."""
    if cluster.mode != "partitioned":
        if text is not None:
            raise ValueError("--partitions needs connections.cluster.mode: partitioned (config/connections.yaml); "
                             "the single broker has no partitions")
        return None
    if text is None:
        raise ValueError(f"connections.cluster.mode is partitioned: give the partitions this worker owns, e.g. "
                         f"--partitions 0-{cluster.partitions - 1} (partitions are 0 to {cluster.partitions - 1})")
    from citywatch.cluster import parse_partitions

    return parse_partitions(text, cluster.partitions)
