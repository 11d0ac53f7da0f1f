"""`citywatch warmup`: teach the detectors from the readings already in InfluxDB and write their state
snapshot, so a first deployment (or one that lost its snapshot) starts with a learned gas profile instead
of waiting `gas.profile.min_weeks` weeks. It is `citywatch detect --influx --save-state --no-detections`."""

from __future__ import annotations

import argparse
import sys

from citywatch.commands.detect import add_influx_options, execute
from config import ConfigError, load_config


def register(sub) -> None:
    p = sub.add_parser(
        "warmup",
        help="learn the detectors' state (gas profile, windows, CUSUM) from InfluxDB history for `run` to start from",
        description="Run every enabled rule over the InfluxDB history from --since to --until in time order, "
        "without writing detections, and write the detectors' state snapshot (alerting.detector_state_path) that "
        "`citywatch run` loads at start. Stop the service first: it overwrites the snapshot at its next save. "
        "Exit codes: 0 written, 1 nothing written (config, no readings, an existing snapshot without --force), "
        "2 InfluxDB unreachable or answering an error.",
    )
    p.add_argument("--since", default=None,
                   help="start of the history: a duration before now (28d, 36h, 2w) or ISO 8601 with a zone "
                   "(default: gas.profile.min_weeks weeks and a day, enough to learn the profile)")
    p.add_argument("--until", default="now", help="end of the history (exclusive): now (default), a duration "
                   "before now or ISO 8601")
    p.add_argument("--config", default=None, metavar="DIR", help="config directory (default: the shipped config/); "
                   "use the service's: the snapshot is only restored for rules and devices configured the same")
    p.add_argument("--state", default=None, metavar="PATH",
                   help="snapshot file to write (default: the config's alerting.detector_state_path)")
    p.add_argument("--force", action="store_true", help="replace an existing snapshot (stop the service first)")
    p.add_argument("--watermark-s", type=int, default=300,
                   help="advance the deadman every this many seconds of event time (default 300)")
    add_influx_options(p, when="")
    p.set_defaults(func=_run)


def _run(args) -> int:
    since = args.since
    if since is None:
        try:
            since = f"{load_config(args.config).gas.profile.min_weeks * 7 + 1}d"
        except ConfigError:
            since = "1d"  # execute() loads the config again and lists its problems
    detect_args = argparse.Namespace(
        input=None, config=args.config, input_format=None, format="csv", output=None, flags=False, compare=None,
        include_clear=False, watermark_s=args.watermark_s, no_deadman=False, influx=True, since=since,
        until=args.until, measurement=args.measurement, query_window_s=args.query_window_s,
        chunk_rows=args.chunk_rows, no_progress=args.no_progress, save_state=args.state or "", force=args.force,
        no_detections=True, rows=False, plot=None, device=None, site=None, rule=None,
    )
    return execute(detect_args, "citywatch warmup", unreachable_rc=2, summary=sys.stdout)
