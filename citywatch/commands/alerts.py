"""`citywatch alerts list|show|ack|silence|unsilence|watch`: the duty officer's terminal view of the alert store.

Commands that change state (ack, silence, unsilence) are validated against the config, then written to
the store's command inbox with who and when; the running service applies them within a second (its
tick), as it does MQTT commands. Their author is the local login, `local:<login>`: whoever may write the
store file (its permissions) may act, and is recorded as such. A command that does not validate is
recorded as refused and never applied.
"""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import json
import sys
import time
import zoneinfo

from rich.console import Console
from rich.live import Live
from rich.table import Table

from alerts import commands as command_rules
from alerts.model import SEVERITY_NAMES, iso
from alerts.muting import MATCHER_KEYS
from alerts.store import AlertStore
from alerts.terminal import SEVERITY_STYLE

EXIT_OK, EXIT_ERROR = 0, 1
DISPLAY_TZ = "Asia/Shanghai"


def register(sub) -> None:
    p = sub.add_parser("alerts", help="list, show, acknowledge and silence alerts; a live board",
                       description="Read the alert store (alerting.store_path of --config, or --store).")
    common = p.add_argument_group("store")
    common.add_argument("--config", default=None, help="config directory (default: the shipped config/)")
    common.add_argument("--store", default=None, help="SQLite alert store (default: alerting.store_path)")
    asub = p.add_subparsers(dest="alerts_command", metavar="ACTION")
    asub.required = True
    # The same options after the action (`alerts list --store X`); SUPPRESS keeps a value given before it.
    store_opts = argparse.ArgumentParser(add_help=False)
    store_opts.add_argument("--config", default=argparse.SUPPRESS, help="config directory")
    store_opts.add_argument("--store", default=argparse.SUPPRESS, help="SQLite alert store")

    def action(name: str, **kw):
        return asub.add_parser(name, parents=[store_opts], **kw)

    q = action("list", help="active alerts (pending, firing), red first; --all adds resolved ones")
    q.add_argument("--all", action="store_true", help="include resolved alerts (newest first)")
    q.add_argument("--silences", action="store_true", help="list the active silences instead")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=_list)

    q = action("show", help="one alert with its notices and their deliveries")
    q.add_argument("alert_id")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_show)

    author_note = ("The author recorded is your login, local:<login>: the store file's permissions are what "
                   "authenticate it (operators elsewhere use their own broker account).")
    q = action("ack", help="acknowledge an alert (stops its escalation and reminders)", description=author_note)
    q.add_argument("alert_id")
    q.add_argument("--by", default=None, help=argparse.SUPPRESS)
    q.add_argument("--note", default="", help="free text, e.g. who was dispatched")
    q.add_argument("--wait", type=float, default=3.0, help="seconds to wait for the service to apply it")
    q.set_defaults(func=_ack)

    q = action("silence", help="mute matching alerts until an expiry", description=author_note)
    q.add_argument("--match", action="append", required=True, metavar="KEY=VALUE",
                   help=f"label to match (repeatable, at most {command_rules.MAX_MATCHERS}; values known to the "
                        f"config): {', '.join(MATCHER_KEYS)}")
    q.add_argument("--by", default=None, help=argparse.SUPPRESS)
    q.add_argument("--comment", required=True, help=f"why (recorded, at most {command_rules.MAX_TEXT} characters)")
    q.add_argument("--expires", required=True, help="duration: 90s, 15m, 2h, 1d (at most alerting.silence_max_s)")
    q.add_argument("--id", default=None, help="silence id (default: generated)")
    q.add_argument("--wait", type=float, default=3.0)
    q.set_defaults(func=_silence)

    q = action("unsilence", help="end a silence now", description=author_note)
    q.add_argument("silence_id")
    q.add_argument("--by", default=None, help=argparse.SUPPRESS)
    q.add_argument("--wait", type=float, default=3.0)
    q.set_defaults(func=_unsilence)

    q = action("watch", help="live board of active alerts, by severity and age")
    q.add_argument("--interval", type=float, default=1.0, help="refresh period, seconds")
    q.add_argument("--once", action="store_true", help="print the board once and exit")
    q.set_defaults(func=_watch)


def _config(args):
    from config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(EXIT_ERROR)


def _store(args, cfg=None) -> AlertStore:
    if args.store:
        return AlertStore(args.store)
    cfg = cfg or _config(args)
    return AlertStore(cfg.resolve_path(cfg.alerting.store_path))


def _local(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    t = dt.datetime.fromtimestamp(ts_ns / 1e9, zoneinfo.ZoneInfo(DISPLAY_TZ))
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


def _fmt(v) -> str:
    return "-" if v is None or v != v else f"{v:g}"


def board(alerts, now_ns: int | None = None, title: str = "citywatch: active alerts") -> Table:
    """The alert table: severity, state, site and address, device, rule, value vs limit, start, duration."""
    now_ns = now_ns or time.time_ns()
    t = Table(title=title, expand=True)
    for col in ("severity", "state", "site", "address", "device", "rule", "value / limit", "started (CST)",
                "duration", "ack / level", "alert id"):
        t.add_column(col, overflow="fold")
    for a in sorted(alerts, key=lambda a: (a.state == "resolved", -a.severity, a.started_ns)):
        sev = SEVERITY_NAMES.get(a.severity, "?")
        style = SEVERITY_STYLE.get(sev, "")
        end = a.resolved_ns or now_ns
        state = a.state + (" (flapping)" if a.flapping else "") + (f" [{a.muted}]" if a.muted else "")
        ack = f"acked by {a.acked_by}" if a.acked_by else f"L{a.escalation_level}"
        t.add_row(f"[{style}]{sev}[/]", state, a.site.get("name", ""), a.site.get("address", ""), a.device_id,
                  a.rule_id, f"{_fmt(a.value)} / {_fmt(a.limit)}", _local(a.started_ns),
                  _duration((end - a.started_ns) / 1e9), ack, a.alert_id)
    return t


def _list(args) -> int:
    store = _store(args)
    console = Console(highlight=False)
    if args.silences:
        rows = store.silences()
        now = time.time_ns()
        if args.json:
            for s in rows:
                print(json.dumps(s.to_dict(), sort_keys=True))
            return EXIT_OK
        t = Table(title="silences")
        for col in ("id", "matchers", "by", "comment", "starts", "expires", "active now"):
            t.add_column(col)
        for s in rows:
            t.add_row(s.id, ", ".join(f"{k}={v}" for k, v in s.matchers.items()), s.by, s.comment,
                      _local(s.starts_ns), _local(s.expires_ns), "yes" if s.active(now) else "no")
        console.print(t)
        return EXIT_OK
    alerts = store.alerts(None if args.all else ("pending", "firing"))
    if args.all:
        alerts = [a for a in alerts if a.state != "discarded"]
    if args.json:
        for a in alerts:
            print(json.dumps(_clean(a.to_dict()), sort_keys=True))
        return EXIT_OK
    console.print(board(alerts, title="citywatch: alerts" if args.all else "citywatch: active alerts"))
    return EXIT_OK


def _clean(d):
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in d.items()}


def _show(args) -> int:
    store = _store(args)
    a = store.alert(args.alert_id)
    if a is None:
        print(f"no alert {args.alert_id!r}", file=sys.stderr)
        return EXIT_ERROR
    notices = store.notices(a.alert_id)
    if args.json:
        print(json.dumps({"alert": _clean(a.to_dict()),
                          "notices": [{"key": n.key, "transition": n.transition, "ts": iso(n.ts_ns),
                                       "deliveries": d} for n, d in notices]}, sort_keys=True))
        return EXIT_OK
    console = Console(highlight=False)
    console.print(board([a], title=a.alert_id))
    console.print(f"category {a.category}; site {a.site.get('id')} {a.site.get('name')}, {a.site.get('address')}, "
                  f"district {a.site.get('district')} ({a.site.get('lat')}, {a.site.get('lon')} {a.site.get('crs')})")
    console.print(f"peak {SEVERITY_NAMES.get(a.peak_severity, '?')} {_fmt(a.peak_value)}; firing {_local(a.firing_ns)}; resolved {_local(a.resolved_ns)}")
    if a.acked_by:
        who = f"{a.acked_by} ({a.acked_by_name})" if a.acked_by_name and a.acked_by_name != a.acked_by else a.acked_by
        console.print(f"acknowledged by {who} at {_local(a.acked_ns)}: {a.ack_note or ''}")
    if a.context:
        console.print(f"context {json.dumps(a.context, sort_keys=True)}")
    t = Table(title="notices")
    for col in ("key", "transition", "event time (CST)", "deliveries"):
        t.add_column(col)
    for n, d in notices:
        t.add_row(n.key, n.transition, _local(n.ts_ns), ", ".join(f"{s}: {st} ({k})" for s, st, k in d))
    console.print(t)
    return EXIT_OK


def _queue(args, cmd: dict, store: AlertStore | None = None) -> int:
    if getattr(args, "by", None) is not None:
        print(f"error: --by is gone: the author is your login, local:{getpass.getuser()} (the store file's "
              "permissions authenticate it)", file=sys.stderr)
        return EXIT_ERROR
    cfg = _config(args)
    store = store or _store(args, cfg)
    login = getpass.getuser()
    author = command_rules.local_author(login)
    try:
        cmd = command_rules.validate(cmd, cfg, author)
    except ValueError as exc:
        # Recorded too (refused, never applied): nothing an operator tried is silent.
        store.add_command(f"cli:{login}", command_rules.record_form(cmd), author.account, author.name,
                          status="refused", result=f"error: {exc}")
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    cid = store.add_command(f"cli:{login}", cmd, author.account, author.name)
    deadline = time.monotonic() + max(0.0, args.wait)
    while True:
        row = store.command(cid)
        if row and row[1] is not None:
            result = row[2] or ""
            print(result, file=sys.stderr if result.startswith("error") else sys.stdout)
            return EXIT_ERROR if result.startswith("error") else EXIT_OK
        if time.monotonic() >= deadline:
            print(f"queued as command {cid}: the running service applies it on its next tick")
            return EXIT_OK
        time.sleep(0.1)


def _ack(args) -> int:
    store = _store(args)
    if args.by is None and store.alert(args.alert_id) is None:
        print(f"error: no alert {args.alert_id!r}", file=sys.stderr)
        return EXIT_ERROR
    return _queue(args, {"action": "ack", "alert_id": args.alert_id, "note": args.note}, store)


def _silence(args) -> int:
    cmd = {"action": "silence", "matchers": args.match, "comment": args.comment, "expires": args.expires}
    if args.id:
        cmd["id"] = args.id
    return _queue(args, cmd)


def _unsilence(args) -> int:
    return _queue(args, {"action": "unsilence", "silence_id": args.silence_id})


def _watch(args) -> int:
    store = _store(args)
    console = Console(highlight=False)
    if args.once:
        console.print(board(store.alerts(("pending", "firing"))))
        return EXIT_OK
    with Live(board(store.alerts(("pending", "firing"))), console=console, refresh_per_second=4, screen=False) as live:
        while True:
            time.sleep(args.interval)
            live.update(board(store.alerts(("pending", "firing"))))
