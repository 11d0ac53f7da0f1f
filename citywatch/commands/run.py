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
    from citywatch.commands.check_config import warnings
    from citywatch.service import Service
    from ingest.spool import SpoolLocked

    log = logging.getLogger("citywatch.run")
    for line in warnings(cfg):  # the lines `check-config` prints: valid, but unsafe (an unsigned webhook)
        log.warning("%s", line)

    try:
        service = Service(cfg)
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
