"""`citywatch run [--config DIR]`: run the collector service until SIGTERM or SIGINT, then stop gracefully.

This command parses its arguments, sets up logging and the stop signals, then hands over to
`citywatch.runner.run_service`, the one way the service starts (tests and benchmarks start this command).
"""

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
                   "e.g. 0,1,2 or 0-2, or auto: the live workers divide them through leases in the cluster "
                   "(README, Cluster mode)")
    p.add_argument("--worker-id", default=None, metavar="NAME",
                   help="partitioned mode: this worker's name (default host-pid); suffixes alerting.mqtt_client_id")
    p.add_argument("--metrics-port", default=None, type=int, metavar="PORT",
                   help="partitioned mode: the Prometheus port of this worker (default: any free one, logged)")
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
    # APScheduler logs every run of every job at INFO (with ack_after: influxdb the spool drain runs four times
    # a second); its per-run lateness warnings are replaced by citywatch.service.JobLag's one line.
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

    log = logging.getLogger("citywatch.run")
    for line in warnings(cfg):  # the lines `check-config` prints: valid, but unsafe (an unsigned webhook)
        log.warning("%s", line)

    try:
        partitions = _partitions(args.partitions, cfg.connections.cluster)
    except ValueError as exc:
        print(f"citywatch run: {exc}", file=sys.stderr)
        return 2
    worker_id: str | None = None  # partitioned mode: this worker's name (the leases of --partitions auto use it)
    if partitions is not None:  # partitioned: each worker its own alert client id and Prometheus port
        from citywatch.partition_lease import check_worker_options, default_worker_id, worker_config

        try:
            check_worker_options(args.worker_id, args.metrics_port)
        except ValueError as exc:
            print(f"citywatch run: {exc}", file=sys.stderr)
            return 2
        worker_id = args.worker_id or default_worker_id()
        cfg = worker_config(cfg, worker_id, args.metrics_port)
    elif args.worker_id is not None or args.metrics_port is not None:
        print("citywatch run: --worker-id and --metrics-port are for partitioned mode (--partitions); the single "
              "service takes ingest.metrics_http.port and alerting.mqtt_client_id", file=sys.stderr)
        return 2
    from citywatch.runner import run_service

    return run_service(cfg, stop, config_dir=args.config, partitions=partitions, worker_id=worker_id)


def _partitions(text: str | None, cluster) -> tuple[int, ...] | None:
    """The owned partitions of `--partitions` in partitioned mode (() for `auto`); None in single mode. Raises ValueError when
    the flag and connections.cluster.mode disagree or a partition is malformed, repeated or out of range."""
    if cluster.mode != "partitioned":
        if text is not None:
            raise ValueError("--partitions needs connections.cluster.mode: partitioned (config/connections.yaml); "
                             "the single broker has no partitions")
        return None
    if text is None:
        raise ValueError(f"connections.cluster.mode is partitioned: give the partitions this worker owns, e.g. "
                         f"--partitions 0-{cluster.partitions - 1} (partitions are 0 to {cluster.partitions - 1})")
    if text.strip() == "auto":
        if not cluster.nats:
            raise ValueError("--partitions auto needs connections.cluster.nats: the NATS client listeners (host:port) "
                             "of the cluster's nodes (CITYWATCH_CLUSTER_NATS; .stack/cluster.env sets it)")
        return ()
    from citywatch.cluster import parse_partitions

    return parse_partitions(text, cluster.partitions)
