"""`citywatch replay FILE`: publish a recorded feed with its original spacing scaled by --speed."""

from __future__ import annotations

import os
import sys
import zoneinfo

from config import ConfigError, load_config


def register(sub) -> None:
    p = sub.add_parser(
        "replay",
        help="publish a recorded feed (capture, simulator feed, mosquitto_sub -v, or detect-format readings)",
        description="Replays a `citywatch record` capture or `simulate --out` feed, `mosquitto_sub -v` output "
                    "(`topic payload` lines), or readings in the detect format (CSV/JSONL with ts, device_id, "
                    "fields) encoded into the JSON envelope. Each message is published as its device "
                    "(the tester account for topics of no known device).",
    )
    p.add_argument("file", help="the feed file")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="spacing divided by this (default 1: original spacing)")
    pace.add_argument("--fast", action="store_true", help="as fast as the broker acknowledges")
    p.add_argument("--as-tester", action="store_true", help="publish everything through the tester account")
    p.add_argument("--config", default=os.environ.get("CITYWATCH_CONFIG", "config"), help="config directory")
    p.add_argument("--credentials", help="broker credentials JSON (default: $CITYWATCH_CREDENTIALS or .stack/credentials.json)")
    p.add_argument("--host", help="broker host (default: the config's)")
    p.add_argument("--port", type=int, help="broker port (default: the config's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from simulators.progress import sim_progress
    from simulators.publisher import BrokerCredentials, FeedPublisher, PublishError
    from simulators.replay import FeedFormatError, read_feed

    if args.speed <= 0:
        print("citywatch replay: --speed must be positive", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        messages = read_feed(args.file, cfg)
    except (OSError, FeedFormatError) as exc:
        print(f"citywatch replay: {exc}", file=sys.stderr)
        return 2
    cred_path = args.credentials or os.environ.get("CITYWATCH_CREDENTIALS") or ".stack/credentials.json"
    try:
        creds = BrokerCredentials.load(cred_path)
    except (OSError, ValueError, KeyError) as exc:
        print(f"citywatch replay: cannot read credentials {cred_path}: {exc}", file=sys.stderr)
        return 2
    if args.as_tester:
        creds = BrokerCredentials({}, creds.tester)
    publisher = FeedPublisher(args.host or cfg.connections.mqtt.host, args.port or cfg.connections.mqtt.port, creds,
                              client_prefix="replay")
    if not messages:
        print(f"citywatch replay: {args.file} holds no messages", file=sys.stderr)
        return 0
    t0, t1 = messages[0].t_ms, max(m.t_ms for m in messages)
    try:
        with sim_progress(os.path.basename(args.file), t0, t1, zoneinfo.ZoneInfo(cfg.time.timezone),
                          enabled=not args.no_progress) as update:
            result = publisher.run(messages, None if args.fast else args.speed, t0_ms=t0, progress=update)
    except PublishError as exc:
        print(f"citywatch replay: {exc}", file=sys.stderr)
        return 1
    finally:
        publisher.close()
    print(f"replayed {result['messages']} messages ({result['readings']} readings) in {result['wall_s']:.1f} s",
          file=sys.stderr)
    return 0
