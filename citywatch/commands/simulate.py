"""`citywatch simulate SCENARIO`: run a scenario's devices against the broker (or into a feed file) and
write its ground truth."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from citywatch.cli import output_problem, port_number, positive_duration, positive_speed
from citywatch.errors import report_unreachable
from config import ConfigError, load_config


def register(sub) -> None:
    p = sub.add_parser(
        "simulate",
        help="run a scenario's simulated devices against the broker and write its ground truth",
        description="Publish a scenario's readings as its devices would, N times faster than real time, "
                    "and write one ground-truth JSONL record per injected fault.",
    )
    p.add_argument("scenario", help="scenario YAML (e.g. simulators/scenarios/city_day.yaml)")
    p.add_argument("--config", default=os.environ.get("CITYWATCH_CONFIG"),
                   help="config directory (default: $CITYWATCH_CONFIG, else the shipped config/)")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=positive_speed, default=1.0,
                      help="event time / N: N simulated seconds per wall-clock second (default 1: real time); the "
                           "expected wall time is printed before a run longer than 10 s")
    pace.add_argument("--fast", action="store_true", help="as fast as the broker acknowledges")
    p.add_argument("--duration", type=positive_duration,
                   help="simulated length, e.g. 90m or 24h (default: the scenario's)")
    p.add_argument("--history", help="fault-free history published first, as fast as possible, e.g. 14d "
                                     "(default: the scenario's `history`)")
    p.add_argument("--out", help="also write the feed as JSONL to this file (the replay format)")
    p.add_argument("--dry-run", action="store_true", help="do not publish; write the feed (to --out, or stdout)")
    p.add_argument("--truth", help="ground-truth JSONL path (default: <scenario name>-truth.jsonl)")
    p.add_argument("--credentials", default=None,
                   help="broker credentials JSON (default: $CITYWATCH_CREDENTIALS or .stack/credentials.json)")
    p.add_argument("--host", help="broker host (default: the config's connections.mqtt.host)")
    p.add_argument("--port", type=port_number, help="broker port (default: the config's connections.mqtt.port)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from simulators.feed import (
        build_feed,
        build_history,
        status_topic,
        write_feed,
        write_truth,
    )
    from simulators.progress import sim_progress
    from simulators.publisher import (
        BrokerCredentials,
        BrokerUnreachable,
        FeedPublisher,
        PublishError,
        service_announcements,
    )
    from simulators.scenario import load_scenario, parse_duration

    try:
        cfg = load_config(args.config)
        scenario = load_scenario(args.scenario, cfg)
        if args.duration is not None:
            scenario = scenario.with_duration(args.duration)
        if args.history:
            scenario = scenario.with_history(parse_duration(args.history))
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"citywatch simulate: {exc}", file=sys.stderr)
        return 2

    truth = Path(args.truth or f"{scenario.name}-truth.jsonl")
    for option, path in (("--out", args.out), ("--truth", str(truth))):
        problem = output_problem(option, path) if path else None
        if problem:  # before the feed is built: a mistyped path costs no run and no traceback
            print(f"citywatch simulate: {problem}", file=sys.stderr)
            return 2
    history = build_history(scenario, cfg)
    messages = build_feed(scenario, cfg)
    n_truth = write_truth(scenario, truth)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            write_feed(history + messages, fh)
    if args.dry_run:
        if not args.out:
            write_feed(history + messages, sys.stdout)
        print(f"{scenario.name}: {len(messages)} messages, {sum(m.n for m in messages)} readings; "
              f"{n_truth} faults in {truth}", file=sys.stderr)
        return 0

    cred_path = args.credentials or os.environ.get("CITYWATCH_CREDENTIALS") or ".stack/credentials.json"
    try:
        creds = BrokerCredentials.load(cred_path)
    except (OSError, ValueError, KeyError) as exc:
        print(f"citywatch simulate: cannot read credentials {cred_path}: {exc}", file=sys.stderr)
        return 2
    mqtt_cfg = cfg.connections.mqtt
    host = args.host or mqtt_cfg.host
    port = args.port if args.port is not None else mqtt_cfg.port
    try:
        services = service_announcements(host, port, creds)
    except BrokerUnreachable as exc:
        return report_unreachable("citywatch simulate", "the MQTT broker", exc.where, exc.reason)
    for client_id, info in sorted(services.items()):
        if info.get("clock") == "wall":
            # Simulated readings carry simulated times: a wall-clock service refuses them as ts_too_old (or
            # ts_future) and raises nothing (README "Clock").
            print(f"citywatch simulate: WARNING: the service {client_id} (started {info.get('started_at', '?')}) runs "
                  "on the wall clock and will refuse simulated readings as ts_too_old; restart it with "
                  "CITYWATCH_CLOCK=event for simulations and replays", file=sys.stderr)
    # load_scenario keeps only devices of the inventory, so each has an index.
    status = {d: status_topic(cfg.devices[cfg.device_index(d)]) for d in scenario.devices}
    publisher = FeedPublisher(host, port, creds, status)
    speed = None if args.fast else args.speed
    if speed:
        from citywatch.commands.replay import say_expected_wall_time
        say_expected_wall_time("simulate", scenario.end_ms - scenario.start_ms, speed)
    try:
        if history:
            # History is a back-fill: as fast as the broker takes it, whatever the speed of the day itself.
            with sim_progress("history", scenario.start_ms - scenario.history_ms, scenario.start_ms, scenario.tz,
                              enabled=not args.no_progress) as update:
                publisher.run(history, None, progress=update)
        with sim_progress(scenario.name, scenario.start_ms, scenario.end_ms, scenario.tz,
                          enabled=not args.no_progress) as update:
            result = publisher.run(messages, speed, t0_ms=scenario.start_ms, progress=update)
    except BrokerUnreachable as exc:
        return report_unreachable("citywatch simulate", "the MQTT broker", exc.where, exc.reason)
    except PublishError as exc:
        print(f"citywatch simulate: {exc}", file=sys.stderr)
        return 1
    finally:
        publisher.close()
    print(f"{scenario.name}: published {result['messages']} messages, {result['readings']} readings "
          f"in {result['wall_s']:.1f} s; {n_truth} faults in {truth}", file=sys.stderr)
    return 0
