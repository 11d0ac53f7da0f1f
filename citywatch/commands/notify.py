"""`citywatch notify preview|test` and `citywatch oncall now`: see a notice as a channel would render it,
send a test notice through a channel, and see who is on duty."""

from __future__ import annotations

import datetime as dt
import sqlite3
import sys
import time
from zoneinfo import ZoneInfo

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


def register(sub) -> None:
    p = sub.add_parser("notify", help="preview a notice as a channel renders it; send a test notice",
                       description="Channels are the sinks of alerting.sinks (wecom, dingtalk, email, sms, a webhook "
                       "with body_template) and the on-call teams (team:<id>).")
    p.add_argument("--config", default=None, help="config directory (default: the shipped config/)")
    nsub = p.add_subparsers(dest="notify_command", metavar="ACTION")
    nsub.required = True
    q = nsub.add_parser("preview", help="render an alert's notice for a channel, without sending")
    q.add_argument("--alert", required=True, help="alert id (or a unique prefix) in the alert store")
    q.add_argument("--channel", required=True, help="sink name, or a channel kind: wecom, dingtalk, email, sms")
    q.add_argument("--language", choices=["zh-CN", "en"], default=None, help="default: the sink's language")
    q.add_argument("--store", default=None, help="SQLite alert store (default: alerting.store_path)")
    q.add_argument("--config", default=None, help="config directory")
    q.set_defaults(func=_preview)
    q = nsub.add_parser("test", help="send one test notice through a channel now (no retry) and say how it went")
    q.add_argument("channel", help="sink name, or team:<id> (the person on duty now)")
    q.add_argument("--config", default=None, help="config directory")
    q.set_defaults(func=_test)

    p = sub.add_parser("oncall", help="who is on duty (config/oncall.yaml)")
    p.add_argument("--config", default=None, help="config directory (default: the shipped config/)")
    osub = p.add_subparsers(dest="oncall_command", metavar="ACTION")
    osub.required = True
    q = osub.add_parser("now", help="the people on duty at each level of each team, now or --at")
    q.add_argument("--team", default=None, help="one team id (default: every team)")
    q.add_argument("--at", default=None, help="ISO 8601 time (default now; without an offset: roster local time)")
    q.add_argument("--config", default=None, help="config directory")
    q.set_defaults(func=_oncall_now)


def _load(args):
    from config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _find_payload(store, alert: str) -> dict | None:
    found = store.alert(alert)
    if found is None:
        matches = [a for a in store.alerts(limit=100000) if a.alert_id.startswith(alert)]
        if len(matches) != 1:
            return None
        found = matches[0]
    notices = store.notices(found.alert_id)
    if not notices:
        return None
    return notices[-1][0].payload


def _preview(args) -> int:
    from alerts.notice_text import Renderer
    from alerts.sinks.channels import renderer_for
    from alerts.store import AlertStore

    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    path = args.store or cfg.resolve_path(cfg.alerting.store_path)
    try:
        store = AlertStore(path, create=False)
    except (FileNotFoundError, sqlite3.DatabaseError) as exc:
        print(f"notify preview: {path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        payload = _find_payload(store, args.alert)
    finally:
        store.close()
    if payload is None:
        print(f"notify preview: no notice of an alert {args.alert!r} in {path} (give its id or a unique prefix)",
              file=sys.stderr)
        return EXIT_ERROR
    spec = cfg.alerting.sinks.get(args.channel)
    if spec is not None and spec.type in ("wecom", "dingtalk", "email", "sms"):
        renderer = renderer_for(cfg, spec, spec.type)
        if args.language and args.language != spec.language:
            renderer = Renderer(spec.type, args.language, None, cfg.alerting.console_url, cfg.oncall.timezone)
    elif args.channel in ("wecom", "dingtalk", "email", "sms"):
        renderer = Renderer(args.channel, args.language or "zh-CN", None, cfg.alerting.console_url,
                            cfg.oncall.timezone)
    else:
        known = [n for n, s in cfg.alerting.sinks.items() if s.type in ("wecom", "dingtalk", "email", "sms")]
        print(f"notify preview: {args.channel!r} is not a channel: give one of the sinks {known} or a channel "
              f"kind wecom, dingtalk, email, sms", file=sys.stderr)
        return EXIT_USAGE
    for part, text in renderer.render(payload).items():
        print(f"--- {part} ({payload.get('transition')}, {payload.get('idempotency_key')})")
        print(text)
    return EXIT_OK


def _test(args) -> int:
    from alerts.model import Notice
    from alerts.sinks import build_sinks
    from alerts.sinks.base import SinkError
    from alerts.sinks.channels import SAMPLE_PAYLOAD

    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    # Build only what this channel needs (a team: its channel sinks), so no other sink connects.
    wanted = {args.channel}
    team = cfg.oncall.team(args.channel[5:]) if args.channel.startswith("team:") else None
    if team is not None:
        wanted |= set(team.sinks.values())
    keep = {n: s for n, s in cfg.alerting.sinks.items() if n in wanted}
    cfg = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"sinks": keep})})
    try:
        sinks = build_sinks(cfg)
    except ValueError as exc:
        print(f"notify test: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sink = sinks.get(args.channel)
    if sink is None:
        print(f"notify test: no sink or team named {args.channel!r} (have: {', '.join(sinks)})", file=sys.stderr)
        return EXIT_USAGE
    now_ns = time.time_ns()
    key = f"TEST.{now_ns}:1"
    payload = {**SAMPLE_PAYLOAD, "idempotency_key": key, "alert_id": f"TEST.{now_ns}",
               "ts": dt.datetime.now(dt.UTC).isoformat(), "start_ts": None}
    notice = Notice(key, payload["alert_id"], 1, "test", now_ns, payload)
    try:
        result = sink.send(notice)
    except SinkError as exc:
        print(f"notify test: {args.channel}: not sent: {exc}" + (" (a retry could succeed)" if exc.retryable else ""),
              file=sys.stderr)
        return EXIT_ERROR
    finally:
        sink.close()
    print(f"sent a test notice through {args.channel}" + (f": {result}" if isinstance(result, str) else ""))
    return EXIT_OK


def _oncall_now(args) -> int:
    from alerts.roster import on_duty_level

    cfg = _load(args)
    if cfg is None:
        return EXIT_USAGE
    tz = ZoneInfo(cfg.oncall.timezone)
    if args.at:
        try:
            at = dt.datetime.fromisoformat(args.at)
        except ValueError:
            print(f"oncall now: --at must be ISO 8601, e.g. 2026-10-01T03:00 (got {args.at!r})", file=sys.stderr)
            return EXIT_USAGE
        at = at if at.tzinfo else at.replace(tzinfo=tz)
    else:
        at = dt.datetime.now(dt.UTC)
    teams = cfg.oncall.teams
    if args.team:
        teams = [t for t in teams if t.id == args.team]
        if not teams:
            print(f"oncall now: unknown team {args.team!r} (teams: {', '.join(t.id for t in cfg.oncall.teams)})",
                  file=sys.stderr)
            return EXIT_USAGE
    print(f"on duty at {at.astimezone(tz).strftime('%Y-%m-%d %H:%M %a')} ({cfg.oncall.timezone})")
    for team in teams:
        print(f"{team.id} ({team.name})")
        for level in range(len(team.levels)):
            people = on_duty_level(cfg.oncall, team, level, at)
            names = ", ".join(f"{p.name} [{_channels(p)}]" for p in people) or "nobody"
            print(f"  level {level}: {names}")
    chief = [p for p in (cfg.oncall.person(i) for i in cfg.oncall.duty_chief) if p]
    print(f"duty chief: {', '.join(f'{p.name} [{_channels(p)}]' for p in chief) or 'nobody'}")
    return EXIT_OK


def _channels(person) -> str:
    return ", ".join(f"{k} {v}" for k, v in person.channels.model_dump().items() if v)
