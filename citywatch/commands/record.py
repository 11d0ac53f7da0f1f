"""`citywatch record --out FILE`: capture the data topics (or any topics) to a JSONL file for replay."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from citywatch.cli import output_problem, port_number, positive_count, positive_duration
from citywatch.errors import report_unreachable
from config import ConfigError, load_config


def register(sub) -> None:
    p = sub.add_parser(
        "record",
        help="capture data topics (or the alert topic) to a JSONL file",
        description="Subscribe as the tester and write one JSON line per message: t (receive ms, UTC), "
                    "topic, payload (or payload_b64), qos, retain. `citywatch replay` replays it; "
                    "`citywatch score --alerts` reads a capture of city/xm/alerts/#.",
    )
    p.add_argument("--out", required=True, help="output JSONL file (appended to)")
    p.add_argument("--topics", nargs="+", help="topic filters (default: city/xm/+/+/+/data city/xm/hj212/#)")
    p.add_argument("--duration", type=positive_duration,
                   help="stop after this much wall-clock time, e.g. 10m (default: until Ctrl-C)")
    p.add_argument("--count", type=positive_count, help="stop after this many messages (at least 1)")
    p.add_argument("--config", default=os.environ.get("CITYWATCH_CONFIG"),
                   help="config directory (default: $CITYWATCH_CONFIG, else the shipped config/)")
    p.add_argument("--credentials", help="broker credentials JSON (default: $CITYWATCH_CREDENTIALS or .stack/credentials.json)")
    p.add_argument("--host", help="broker host (default: the config's)")
    p.add_argument("--port", type=port_number, help="broker port (default: the config's)")
    p.set_defaults(func=run)


def run(args) -> int:
    from simulators.publisher import BrokerCredentials, BrokerUnreachable
    from simulators.recorder import DATA_TOPICS, FeedRecorder

    problem = output_problem("--out", args.out)
    if problem:
        print(f"citywatch record: {problem}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    cred_path = args.credentials or os.environ.get("CITYWATCH_CREDENTIALS") or ".stack/credentials.json"
    try:
        creds = BrokerCredentials.load(cred_path)
    except (OSError, ValueError, KeyError) as exc:
        print(f"citywatch record: cannot read credentials {cred_path}: {exc}", file=sys.stderr)
        return 2
    user, pw = creds.tester if creds.tester else (None, None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    with open(args.out, "a", encoding="utf-8") as out:
        rec = FeedRecorder(args.host or cfg.connections.mqtt.host,
                           args.port if args.port is not None else cfg.connections.mqtt.port,
                           user, pw, args.topics or DATA_TOPICS, out)
        try:
            rec.start()
        except BrokerUnreachable as exc:
            return report_unreachable("citywatch record", "the MQTT broker", exc.where, exc.reason)
        except RuntimeError as exc:
            print(f"citywatch record: {exc}", file=sys.stderr)
            return 1
        print(f"recording {' '.join(rec.topics)} to {args.out}", file=sys.stderr)
        deadline = time.monotonic() + args.duration if args.duration else None
        try:
            while not stop.is_set():
                if deadline and time.monotonic() >= deadline:
                    break
                if args.count and rec.count >= args.count:
                    break
                stop.wait(0.05)
        except KeyboardInterrupt:
            pass
        finally:
            rec.stop()
    print(f"recorded {rec.count} messages to {args.out}", file=sys.stderr)
    return 0
