"""`citywatch replay FILE`: publish a recorded feed with its original spacing scaled by --speed."""

from __future__ import annotations

import os
import sys
import zoneinfo

from citywatch.cli import port_number, positive_speed
from citywatch.errors import report_unreachable
from config import ConfigError, load_config


def register(sub) -> None:
    p = sub.add_parser(
        "replay",
        help="publish a recorded feed (capture, simulator feed, mosquitto_sub -v, or detect-format readings)",
        description="Replays a `citywatch record` capture or `simulate --out` feed, `mosquitto_sub -v` output "
                    "(`topic payload` lines), or readings in the detect format (CSV/JSONL with ts, device_id, "
                    "fields) encoded into the JSON envelope. Each message is published as its device "
                    "(the tester account for topics of no known device). Only data-plane topics are replayed "
                    "(device data, status and event, HJ 212); alert notices and states, commands, replies, dead "
                    "letters and internal topics of a capture are skipped and counted.",
    )
    p.add_argument("file", help="the feed file")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=positive_speed, default=1.0,
                      help="event time / N: N simulated seconds per wall-clock second, for every kind of feed (a "
                           "capture's receive times are not used); default 1: real time. The expected wall time "
                           "is printed before a replay longer than 10 s")
    pace.add_argument("--fast", action="store_true", help="as fast as the broker acknowledges")
    p.add_argument("--as-tester", action="store_true", help="publish everything through the tester account")
    p.add_argument("--all-topics", action="store_true",
                   help="also publish the capture's non-data topics (alerts, commands, replies, dead letters, "
                        "internal). The broker still refuses them for device and tester accounts (only the "
                        "service publishes alerts, only an operator its own commands); refusals are counted")
    p.add_argument("--config", default=os.environ.get("CITYWATCH_CONFIG"),
                   help="config directory (default: $CITYWATCH_CONFIG, else the shipped config/)")
    p.add_argument("--credentials", help="broker credentials JSON (default: $CITYWATCH_CREDENTIALS or .stack/credentials.json)")
    p.add_argument("--host", help="broker host (default: the config's)")
    p.add_argument("--port", type=port_number, help="broker port (default: the config's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from simulators.progress import sim_progress
    from simulators.publisher import (
        BrokerCredentials,
        BrokerUnreachable,
        FeedPublisher,
        PublishError,
    )
    from simulators.replay import FeedFormatError, read_feed

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
    from simulators.replay import (
        DATA_PLANE,
        FAMILY_NAMES,
        split_data_plane,
        topic_family,
    )

    if not args.all_topics:
        messages, skipped = split_data_plane(messages, cfg)
        if skipped:
            what = ", ".join(f"{n} {FAMILY_NAMES[f]}" for f, n in sorted(skipped.items()))
            print(f"citywatch replay: skipped {sum(skipped.values())} messages that are not device data ({what}); "
                  "--all-topics publishes them too", file=sys.stderr)
    cred_path = args.credentials or os.environ.get("CITYWATCH_CREDENTIALS") or ".stack/credentials.json"
    try:
        creds = BrokerCredentials.load(cred_path)
    except (OSError, ValueError, KeyError) as exc:
        print(f"citywatch replay: cannot read credentials {cred_path}: {exc}", file=sys.stderr)
        return 2
    if args.as_tester:
        creds = BrokerCredentials({}, creds.tester)
    port = args.port if args.port is not None else cfg.connections.mqtt.port
    publisher = FeedPublisher(args.host or cfg.connections.mqtt.host, port, creds, client_prefix="replay")
    if not messages:
        print(f"citywatch replay: {args.file} holds no messages", file=sys.stderr)
        return 0
    t0, t1 = messages[0].t_ms, max(m.t_ms for m in messages)
    if not args.fast:
        say_expected_wall_time("replay", t1 - t0, args.speed)
    try:
        with sim_progress(os.path.basename(args.file), t0, t1, zoneinfo.ZoneInfo(cfg.time.timezone),
                          enabled=not args.no_progress) as update:
            result = publisher.run(messages, None if args.fast else args.speed, t0_ms=t0, progress=update)
    except BrokerUnreachable as exc:
        return report_unreachable("citywatch replay", "the MQTT broker", exc.where, exc.reason)
    except PublishError as exc:
        print(f"citywatch replay: {exc}", file=sys.stderr)
        return 1
    finally:
        publisher.close()
    print(f"replayed {result['readings']:,} readings in {result['messages']:,} messages in {result['wall_s']:.1f} s",
          file=sys.stderr)
    if result.get("refused"):
        by_family: dict[str, int] = {}
        for topic, n in publisher.refused.items():
            family = topic_family(topic, cfg)
            by_family[family] = by_family.get(family, 0) + n
        what = ", ".join(f"{n} {FAMILY_NAMES[f]}" for f, n in sorted(by_family.items()))
        print(f"citywatch replay: the broker refused {result['refused']} messages (not authorized for the "
              f"publishing account): {what}", file=sys.stderr)
        # Refused device data is a real loss (wrong credentials or topics); refused non-data topics are what
        # --all-topics is expected to meet.
        if any(f in DATA_PLANE for f in by_family):
            return 1
    return 0


def say_expected_wall_time(command: str, span_ms: int, speed: float, threshold_s: float = 10.0) -> float:
    """Print (stderr) how long a paced run of `span_ms` of event time takes at `speed`, when longer than
    `threshold_s`; returns the expected wall seconds."""
    wall_s = span_ms / 1000.0 / speed
    if wall_s > threshold_s:
        print(f"citywatch {command}: {_span(span_ms / 1000.0)} of event time at --speed {speed:g} takes about "
              f"{_span(wall_s)} (--speed is event time / N; --fast goes as fast as the broker acknowledges)",
              file=sys.stderr)
    return wall_s


def _span(seconds: float) -> str:
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    h, rest = divmod(seconds, 3600)
    m = rest // 60
    if h >= 24:
        return f"{h // 24} d {h % 24} h"
    return f"{h} h {m} min" if h else f"{m} min {rest % 60} s"
