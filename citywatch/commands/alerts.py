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
import math
import os
import sqlite3
import sys
import time
import zoneinfo

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from alerts import commands as command_rules
from alerts.model import iso
from alerts.muting import MATCHER_KEYS
from alerts.store import AlertStore
from alerts.terminal import (
    SEVERITY_STYLE,
    Freshness,
    alert_peak,
    alert_value,
    freshness,
    short_id,
    words,
)
from citywatch.cli import positive_duration
from core.severity import SEVERITY_NAMES

# 1: the command ran and refused (unknown alert, invalid command); 2: it could not run as asked (no such
# store, an ambiguous alert).
EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2
DISPLAY_TZ = "Asia/Shanghai"
WIDE_MIN_COLUMNS = 120  # below this the board drops to five columns that stay readable at 80
OPEN = ("pending", "firing")
WAIT_HELP = "seconds to wait for the service to apply it (default 3; then it stays queued for the service)"


def register(sub) -> None:
    p = sub.add_parser("alerts", help="list, show, acknowledge and silence alerts; a live board",
                       description="Read the alert store (alerting.store_path of --config, or --store).")
    common = p.add_argument_group("store")
    common.add_argument("--config", default=None, help="config directory (default: the shipped config/)")
    common.add_argument("--store", default=None, help="SQLite alert store (default: alerting.store_path)")
    common.add_argument("--cluster", action="store_true",
                        help="list and show: every partition's open alerts from the cluster (the default in "
                             "partitioned mode without --store)")
    asub = p.add_subparsers(dest="alerts_command", metavar="ACTION")
    asub.required = True
    # The same options after the action (`alerts list --store X`); SUPPRESS keeps a value given before it.
    store_opts = argparse.ArgumentParser(add_help=False)
    store_opts.add_argument("--config", default=argparse.SUPPRESS, help="config directory")
    store_opts.add_argument("--store", default=argparse.SUPPRESS, help="SQLite alert store")
    store_opts.add_argument("--cluster", action="store_true", default=argparse.SUPPRESS,
                            help="every partition's open alerts from the cluster")

    def action(name: str, **kw):
        return asub.add_parser(name, parents=[store_opts], **kw)

    q = action("list", help="active alerts (pending, firing), red first; --all adds resolved ones")
    q.add_argument("--all", action="store_true", help="include resolved alerts (newest first)")
    q.add_argument("--silences", action="store_true", help="list the active silences instead")
    q.add_argument("--json", action="store_true", help="one JSON object per line")
    q.set_defaults(func=_returns_code(_list))

    q = action("show", help="one alert with its notices and their deliveries")
    q.add_argument("alert_id", help="alert id, unique prefix, or short id RULE.DEVICE (an open alert)")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=_returns_code(_show))

    author_note = ("The author recorded is your login, local:<login>: the store file's permissions are what "
                   "authenticate it (operators elsewhere use their own broker account).")
    q = action("ack", help="acknowledge an alert (stops its escalation and reminders)",
               description=author_note + " The alert is named by its id, a unique prefix of it, the short id "
               "RULE.DEVICE that `list` shows (e.g. G-rupture.XMG0003), or --site/--rule/--device selecting "
               "exactly one open alert.")
    q.add_argument("alert_id", nargs="?", help="alert id, unique prefix, or short id RULE.DEVICE")
    q.add_argument("--site", default=None, help="site id or name")
    q.add_argument("--rule", default=None, help="rule id")
    q.add_argument("--device", default=None, help="device id or HJ 212 MN")
    q.add_argument("--by", default=None, help=argparse.SUPPRESS)
    q.add_argument("--note", default="", help="free text, e.g. who was dispatched")
    q.add_argument("--wait", type=float, default=3.0, help=WAIT_HELP)
    q.set_defaults(func=_returns_code(_ack))

    q = action("silence", help="mute matching alerts until an expiry", description=author_note)
    q.add_argument("--match", action="append", required=True, metavar="KEY=VALUE",
                   help=f"label to match (repeatable, at most {command_rules.MAX_MATCHERS}; values known to the "
                        f"config; site_id also takes the site's name, device_id its HJ 212 MN): "
                        f"{', '.join(MATCHER_KEYS)}")
    q.add_argument("--by", default=None, help=argparse.SUPPRESS)
    q.add_argument("--comment", required=True, help=f"why (recorded, at most {command_rules.MAX_TEXT} characters)")
    q.add_argument("--expires", required=True, help="duration: 90s, 15m, 2h, 1d (at most alerting.silence_max_s)")
    q.add_argument("--id", default=None, help="silence id (default: generated)")
    q.add_argument("--wait", type=float, default=3.0, help=WAIT_HELP)
    q.set_defaults(func=_returns_code(_silence))

    q = action("unsilence", help="end a silence now", description=author_note + " An id the store knows no "
               "silence by is refused (exit 2), with the active silences' ids.")
    q.add_argument("silence_id", help="the silence's id, as `list --silences` shows it")
    q.add_argument("--by", default=None, help=argparse.SUPPRESS)
    q.add_argument("--wait", type=float, default=3.0, help=WAIT_HELP)
    q.set_defaults(func=_returns_code(_unsilence))

    q = action("watch", help="live board of active alerts, by severity and age")
    q.add_argument("--interval", type=positive_duration, default=1.0, help="refresh period: seconds, or a duration such as 2s (above 0)")
    q.add_argument("--once", action="store_true", help="print the board once and exit")
    q.set_defaults(func=_returns_code(_watch))


def _returns_code(func):
    """`func(args)` with a SystemExit raised inside it (no store, a config error) returned as its code:
    `citywatch.cli.main` returns codes, it does not exit."""
    def run(args) -> int:
        try:
            return func(args)
        except SystemExit as exc:
            return exc.code if isinstance(exc.code, int) else EXIT_ERROR
    return run


def _config(args):
    from config import ConfigError, load_config

    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(EXIT_ERROR) from None


def _store(args, cfg=None) -> AlertStore:
    """The existing store of --store or of the config; never creates one (an empty new store would show
    an all-clear): a missing file is one line on stderr and exit 2."""
    if args.store:
        path = args.store
    else:
        cfg = cfg or _config(args)
        path = cfg.resolve_path(cfg.alerting.store_path)
    where = "--store" if args.store else "alerting.store_path of the config"
    try:
        return AlertStore(path, create=False)
    except FileNotFoundError:
        print(f"error: no alert store at {path} ({where}); check the path: `citywatch run` creates the store",
              file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None
    except sqlite3.DatabaseError as exc:  # another file given as the store (a CSV, a feed)
        print(f"error: {path} ({where}) is not a citywatch alert store: {exc}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _console() -> Console:
    """A console as wide as the terminal; piped output (no terminal) is not cut to 80 columns: the board
    is as wide as its content, one alert per line (for grep), unless COLUMNS says otherwise."""
    if sys.stdout.isatty():
        return Console(highlight=False)
    columns = os.environ.get("COLUMNS", "")
    return Console(highlight=False, width=int(columns) if columns.isdigit() and int(columns) > 0 else 1000)


def _local(ts_ns: int | None) -> str:
    if ts_ns is None:
        return "-"
    t = dt.datetime.fromtimestamp(ts_ns / 1e9, zoneinfo.ZoneInfo(DISPLAY_TZ))
    return t.strftime("%Y-%m-%d %H:%M:%S")


def _state(a) -> str:
    return a.state + (" (flapping)" if a.flapping else "") + (f" [{a.muted}]" if a.muted else "")


def board(alerts, as_of_ns: int | None = None, title: str = "citywatch: active alerts",
          width: int = 200, where: dict[str, str] | None = None) -> Table:
    """The alert table, red first. Durations run to `as_of_ns`, the store's clock (its watermark or the
    engine's clock at its last heartbeat, never the wall clock against event times); open alerts show
    their short id RULE.DEVICE (what `ack` takes), resolved ones their full id.

    width >= WIDE_MIN_COLUMNS: severity, state, site, device, rule, value, peak, started, for, ack, id.
    Narrower: five columns (severity and state; site and device; alert; value and peak; for and ack)
    that wrap within their cells instead of cutting every column to two letters.
    where: alert id -> its partition and worker (the cluster's board): a last column (narrow: under the alert)."""
    now = as_of_ns or time.time_ns()
    wide = width >= WIDE_MIN_COLUMNS
    # Narrow: no vertical rules (they cost 6 columns) and a rule between alerts, whose cells take lines.
    t = Table(title=title, expand=False) if wide else Table(title=title, expand=False, box=box.SIMPLE_HEAD,
                                                             show_lines=True, pad_edge=False)
    cols: tuple[str, ...] = (("severity", "state", "site", "device", "rule", "value", "peak", "started (CST)",
                              "for", "ack / level", "alert id") if wide else ("severity", "site", "alert", "value", "for"))
    if wide and where is not None:
        cols += ("partition",)
    for col in cols:
        t.add_column(col, overflow="fold", no_wrap=col in ("rule", "alert"), min_width=6 if col == "severity" else None)
    for a in sorted(alerts, key=lambda a: (a.state == "resolved", -a.severity, a.started_ns)):
        sev = SEVERITY_NAMES.get(a.severity, "?")
        style = SEVERITY_STYLE.get(sev, "")
        sev_cell = Text(sev, style=style)
        if a.peak_severity > a.severity:
            sev_cell.append(f" (peak {a.peak_severity_name})" if wide else f"\npeak {a.peak_severity_name}",
                            style=SEVERITY_STYLE.get(a.peak_severity_name, ""))
        end = a.resolved_ns or now
        dur = words((end - a.started_ns) / 1e9)
        ack = f"acked by {a.acked_by}" if a.acked_by else f"L{a.escalation_level}"
        ident = a.alert_id if a.state == "resolved" else short_id(a)
        site = a.site.get("name") or a.site.get("id", "")
        place = [] if where is None else [where.get(a.alert_id, "?")]
        if wide:
            t.add_row(sev_cell, _state(a), site, a.device_id, a.rule_id, alert_value(a), alert_peak(a),
                      _local(a.started_ns), dur, ack, ident, *place)
        else:
            value = alert_value(a)
            if a.peak_severity > a.severity or (not math.isnan(a.peak_value) and a.peak_value != a.value):
                value += f"\npeak {alert_peak(a)}"
            sev_cell.append(f"\n{_state(a)}")
            ident += "".join(f"\n{p}" for p in place)
            t.add_row(sev_cell, site, ident, value, f"{dur}\n{ack}")  # the short id names the device
    return t


def header(fresh: Freshness) -> Text:
    """`as of <store clock> CST (event clock) · service alive (heartbeat 3 s ago)`; red when the service
    is not known to be alive, since then the board may show alerts that ended, or miss new ones."""
    clock = f" ({fresh.clock} clock)" if fresh.clock else ""
    as_of = f"as of {_local(fresh.as_of_ns)} CST{clock}" if fresh.as_of_ns else "as of: never (no event seen)"
    return Text(f"{as_of} · {fresh.service_text()}", style="" if fresh.alive else "bold red")


def _alert_board(store: AlertStore, alerts, title: str, width: int) -> Group:
    fresh = freshness(store)
    parts: list[RenderableType] = [header(fresh)]
    if alerts:
        parts.append(board(alerts, fresh.as_of_ns, title, width))
    elif fresh.alive:
        parts.append(Text(f"{title}: none", style="green"))
    else:
        # A stale empty board is the most dangerous view of all: it reads as an all-clear.
        parts.append(Text(f"{title}: none in the store, but this is NOT an all-clear: the service is not known "
                          "to be running, so new alerts would not be here", style="bold red"))
    return Group(*parts)


# ----- the one board across a cluster's workers ----------------------------------------------------------

def _cluster(args):
    """(the cluster's partitions (citywatch.partition_state.cluster_alerts), the workers' clock: ingest.clock) when
    the board comes from the cluster: with --cluster, or a config in partitioned mode and no --store (each worker's
    store holds its own partitions' alerts only); else None. An unreachable cluster is one line on stderr and
    exit 2."""
    wanted = getattr(args, "cluster", False)
    if args.store and not wanted:
        return None
    cfg = _config(args)
    if not wanted and cfg.connections.cluster.mode != "partitioned":
        return None
    if args.store:
        print("error: --cluster reads the cluster, --store one worker's store: give one of them", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)
    from citywatch.partition_state import ClusterUnreachable, cluster_alerts

    try:
        return cluster_alerts(cfg, dict(os.environ)), cfg.ingest.clock
    except ClusterUnreachable as exc:
        print(f"citywatch alerts: {exc}; is the cluster up? (scripts/stack.sh up --cluster; source "
              ".stack/cluster.env)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE) from None


def _places(parts) -> dict[str, str]:
    """alert id -> `p<k> <worker>` (`p<k> NOT SERVED` while no worker holds the partition's lease)."""
    return {a.alert_id: f"p{p.partition} {p.owner or 'NOT SERVED'}" for p in parts for a in p.alerts}


def cluster_as_of(parts, clock: str, now_ns: int) -> int | None:
    """The time the board's durations run to, as the workers' engines reckon it: on the wall clock now, on the
    event clock the newest watermark any partition's alerts were saved at (None: none saved)."""
    newest = max((p.watermark_ns for p in parts), default=0)
    return max(newest, now_ns) if clock == "wall" else newest or None


def cluster_header(parts, clock: str = "wall", now_ns: int | None = None) -> Text:
    """`as of <engine clock> CST (wall clock) · cluster: 4 partitions served by wa (0, 1), wb (2, 3)`; red, with
    how old their alerts are, when a partition has no worker (a takeover under way, or none running): its alerts
    are the last its owner saved, and new ones would not be raised."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    as_of = cluster_as_of(parts, clock, now_ns)
    served: dict[str, list[int]] = {}
    for p in parts:
        if p.owner:
            served.setdefault(p.owner, []).append(p.partition)
    text = (f"as of {_local(as_of)} CST ({clock} clock)" if as_of else "as of: never (no alerts saved)") + \
        f" · cluster: {len(parts)} partitions"
    if served:
        text += " served by " + ", ".join(f"{w} ({', '.join(map(str, ks))})" for w, ks in sorted(served.items()))
    orphans = [p for p in parts if not p.owner]
    for p in orphans:
        saved = f"its alerts as saved {words((now_ns - p.saved_ns) / 1e9)} ago" if p.saved_ns else "no alerts saved"
        text += f" · partition {p.partition} NOT SERVED ({saved})"
    return Text(text, style="bold red" if orphans else "")


def cluster_board(parts, title: str, width: int, clock: str = "wall", now_ns: int | None = None) -> Group:
    """The header and every partition's open alerts in one table (`board` with the partition column); an empty
    board while a partition has no worker says it is not an all-clear. clock: the workers' ingest.clock."""
    now_ns = time.time_ns() if now_ns is None else now_ns
    alerts = [a for p in parts for a in p.alerts]
    out: list[RenderableType] = [cluster_header(parts, clock, now_ns)]
    if alerts:
        out.append(board(alerts, cluster_as_of(parts, clock, now_ns), title, width, where=_places(parts)))
    elif all(p.owner for p in parts):
        out.append(Text(f"{title}: none", style="green"))
    else:
        out.append(Text(f"{title}: none in the cluster, but this is NOT an all-clear: a partition has no worker, so "
                        "its new alerts would not be here", style="bold red"))
    return Group(*out)


def _cluster_list(args, parts, clock: str) -> int:
    if args.all or args.silences:
        print("error: the cluster holds the open alerts only; resolved alerts and silences are in each worker's "
              "store: give --store", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        for p in parts:
            for a in p.alerts:
                print(json.dumps({**_clean(a.to_dict()), "partition": p.partition, "worker": p.owner}, sort_keys=True))
        return EXIT_OK
    console = _console()
    console.print(cluster_board(parts, "citywatch: active alerts", console.width, clock))
    return EXIT_OK


def _list(args) -> int:
    cluster = _cluster(args)
    if cluster is not None:
        return _cluster_list(args, *cluster)
    store = _store(args)
    console = _console()
    fresh = freshness(store)
    if args.silences:
        rows = store.silences()
        now = fresh.as_of_ns or time.time_ns()  # the engine's clock: an event-clock silence is judged in event time
        if args.json:
            for s in rows:
                print(json.dumps(s.to_dict(), sort_keys=True))
            return EXIT_OK
        t = Table(title="silences")
        for col in ("id", "matchers", "by", "comment", "starts (CST)", "expires (CST)", "active now"):
            t.add_column(col, overflow="fold")
        for s in rows:
            t.add_row(s.id, ", ".join(f"{k}={v}" for k, v in s.matchers.items()), s.by, s.comment,
                      _local(s.starts_ns), _local(s.expires_ns), "yes" if s.active(now) else "no")
        console.print(header(fresh))
        console.print(t)
        return EXIT_OK
    alerts = store.alerts(None if args.all else OPEN)
    if args.all:
        alerts = [a for a in alerts if a.state != "discarded"]
    if args.json:
        for a in alerts:
            print(json.dumps(_clean(a.to_dict()), sort_keys=True))
        return EXIT_OK
    console.print(_alert_board(store, alerts, "citywatch: alerts" if args.all else "citywatch: active alerts",
                               console.width))
    return EXIT_OK


def _clean(d):
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def _site_ids(cfg, text: str) -> set[str]:
    folded = text.casefold()
    return {s.id for s in cfg.sites if s.id == text or s.name.casefold() == folded}


def _device_ids(cfg, text: str) -> set[str]:
    return {d.id for d in cfg.devices if text in (d.id, d.mn_or_id)}


def resolve_alert(store: AlertStore, text: str | None, site: str | None = None, rule: str | None = None,
                  device: str | None = None, cfg=None, open_only: bool = True):
    """The one alert named by `text` (full id, unique prefix, or short id RULE.DEVICE) and/or the
    selectors (`site`: id or name, `rule`, `device`: id or MN; names and MNs need `cfg`).

    Returns (alert, None) or (None, (exit code, message)). An exact full id matches in any state; a prefix
    or short id and the selectors choose among open alerts only (`open_only`), so an old resolved alert
    never makes `ack G-rupture.XMG0003` ambiguous."""
    if text:
        exact = store.alert(text)
        if exact is not None:
            return exact, None
    return choose_alert(store.alerts(OPEN if open_only else None, limit=100_000), text, site, rule, device, cfg,
                        open_only)


def choose_alert(pool, text: str | None, site: str | None = None, rule: str | None = None,
                 device: str | None = None, cfg=None, open_only: bool = True):
    """resolve_alert among the alerts of `pool`, once no exact id matched."""
    cands = pool
    if text:
        cands = [a for a in cands if a.alert_id.startswith(text) or short_id(a) == text]
        exact_short = [a for a in cands if short_id(a) == text]
        cands = exact_short or cands  # XMG0003 is not made ambiguous by an XMG00031
    if site:
        ids = _site_ids(cfg, site) if cfg is not None else {site}
        cands = [a for a in cands if a.site.get("id") in ids or (a.site.get("name") or "").casefold() == site.casefold()]
    if rule:
        cands = [a for a in cands if a.rule_id == rule]
    if device:
        ids = _device_ids(cfg, device) if cfg is not None else {device}
        cands = [a for a in cands if a.device_id in ids or a.device_id == device]
    named = " ".join(x for x in (repr(text) if text else "", f"--site {site!r}" if site else "",
                                  f"--rule {rule!r}" if rule else "", f"--device {device!r}" if device else "") if x)
    if len(cands) == 1:
        return cands[0], None
    if not cands:
        among = " among the open alerts (pending, firing)" if open_only else ""
        return None, (EXIT_ERROR, f"error: no alert {named}{among}")
    listed = "; ".join(f"{a.alert_id} ({a.severity_name} {a.state}, {a.site.get('name') or a.site.get('id')})"
                       for a in sorted(cands, key=lambda a: a.alert_id)[:10])
    more = f" and {len(cands) - 10} more" if len(cands) > 10 else ""
    return None, (EXIT_USAGE, f"error: {named} matches {len(cands)} alerts, name one: {listed}{more}")


def _show(args) -> int:
    cluster = _cluster(args)
    if cluster is not None:
        return _cluster_show(args, *cluster)
    store = _store(args)
    a, err = resolve_alert(store, args.alert_id)
    if a is None:
        print(err[1], file=sys.stderr)
        return err[0]
    notices = store.notices(a.alert_id)
    if args.json:
        print(json.dumps({"alert": _clean(a.to_dict()),
                          "notices": [{"key": n.key, "transition": n.transition, "ts": iso(n.ts_ns),
                                       "deliveries": d} for n, d in notices]}, sort_keys=True))
        return EXIT_OK
    console = _console()
    fresh = freshness(store)
    console.print(header(fresh))
    console.print(board([a], fresh.as_of_ns, title=a.alert_id, width=console.width))
    _details(console, a)
    t = Table(title="notices")
    for col in ("key", "transition", "event time (CST)", "deliveries"):
        t.add_column(col, overflow="fold")
    for n, d in notices:
        t.add_row(n.key, n.transition, _local(n.ts_ns),
                  ", ".join(f"{s}: {st} ({k})" + (f" -> {who}" if who else "") for s, st, k, who in d))
    console.print(t)
    return EXIT_OK


def _cluster_show(args, parts, clock: str) -> int:
    """One open alert of the cluster; its notices and their deliveries are in its owner's store."""
    pool = [a for p in parts for a in p.alerts]
    exact = [a for a in pool if a.alert_id == args.alert_id]
    if exact:
        a = exact[0]
    else:
        a, err = choose_alert(pool, args.alert_id)
        if a is None:
            print(err[1], file=sys.stderr)
            return err[0]
    part = next(p for p in parts if a in p.alerts)
    if args.json:
        print(json.dumps({"alert": _clean(a.to_dict()), "partition": part.partition, "worker": part.owner},
                         sort_keys=True))
        return EXIT_OK
    console = _console()
    now_ns = time.time_ns()
    console.print(cluster_header(parts, clock, now_ns))
    console.print(board([a], cluster_as_of(parts, clock, now_ns), title=a.alert_id, width=console.width,
                        where=_places(parts)))
    _details(console, a)
    console.print(f"partition {part.partition}, served by {part.owner or 'no worker now'}: its notices and their "
                  "deliveries are in that worker's store (`citywatch alerts show ID --store PATH`)")
    return EXIT_OK


def _details(console: Console, a) -> None:
    """The lines under an alert's row: where, values, times, ack, context."""
    console.print(f"category {a.category}; site {a.site.get('id')} {a.site.get('name')}, {a.site.get('address')}, "
                  f"district {a.site.get('district')} ({a.site.get('lat')}, {a.site.get('lon')} {a.site.get('crs')})")
    console.print(f"now {alert_value(a)}; peak {alert_peak(a)}; firing {_local(a.firing_ns)}; "
                  f"resolved {_local(a.resolved_ns)}")
    if a.acked_by:
        who = f"{a.acked_by} ({a.acked_by_name})" if a.acked_by_name and a.acked_by_name != a.acked_by else a.acked_by
        console.print(f"acknowledged by {who} at {_local(a.acked_ns)}: {a.ack_note or ''}")
    if a.context:
        console.print(f"context {json.dumps(a.context, sort_keys=True)}")


def _queue(args, cmd: dict, store: AlertStore | None = None, cfg=None, on_valid=None) -> int:
    """Validate `cmd`, store it in the command inbox and wait up to --wait for the service's result.
    on_valid(validated command) runs once it is stored (e.g. to say what a silence mutes)."""
    if getattr(args, "by", None) is not None:
        print(f"error: --by is gone: the author is your login, local:{getpass.getuser()} (the store file's "
              "permissions authenticate it)", file=sys.stderr)
        return EXIT_ERROR
    cfg = cfg or _config(args)
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
    if on_valid is not None:
        on_valid(cmd)
    deadline = time.monotonic() + max(0.0, args.wait)
    while True:
        row = store.command(cid)
        if row and row[1] is not None:
            result = row[2] or ""
            print(result, file=sys.stderr if result.startswith("error") else sys.stdout)
            return EXIT_ERROR if result.startswith("error") else EXIT_OK
        if time.monotonic() >= deadline:
            fresh = freshness(store)
            late = "" if fresh.alive else f" ({fresh.service_text()}: it is applied when the service runs again)"
            print(f"queued as command {cid}: the running service applies it on its next tick{late}")
            return EXIT_OK
        time.sleep(0.1)


def _ack(args) -> int:
    if args.by is not None:
        return _queue(args, {})
    if not (args.alert_id or args.site or args.rule or args.device):
        print("error: name the alert: its id, a unique prefix, the short id RULE.DEVICE shown by `list`, or "
              "--site/--rule/--device", file=sys.stderr)
        return EXIT_USAGE
    cfg = _config(args)
    store = _store(args, cfg)
    a, err = resolve_alert(store, args.alert_id, args.site, args.rule, args.device, cfg)
    if a is None:
        print(err[1], file=sys.stderr)
        return err[0]
    if args.alert_id != a.alert_id:
        print(f"acknowledging {a.alert_id} ({a.severity_name} {a.state}, {a.site.get('name') or a.site.get('id')})")
    return _queue(args, {"action": "ack", "alert_id": a.alert_id, "note": args.note}, store, cfg)


def muted_now(store: AlertStore, matchers: dict[str, str]) -> list:
    """The open alerts (pending, firing) whose labels equal every matcher: what a silence mutes now."""
    return [a for a in store.alerts(OPEN, limit=100_000)
            if all(a.labels().get(k) == v for k, v in matchers.items())]


def _silence(args) -> int:
    cmd = {"action": "silence", "matchers": args.match, "comment": args.comment, "expires": args.expires}
    if args.id:
        cmd["id"] = args.id
    cfg = _config(args)
    store = _store(args, cfg)

    def say_muted(valid: dict) -> None:
        hit = muted_now(store, valid["matchers"])
        names = ", ".join(short_id(a) for a in hit[:10]) + (f" and {len(hit) - 10} more" if len(hit) > 10 else "")
        what = " ".join(f"{k}={v}" for k, v in valid["matchers"].items())
        if hit:
            print(f"{what}: mutes {len(hit)} active alert{'s' if len(hit) != 1 else ''} now: {names}")
        else:
            print(f"{what}: mutes no active alert now (it mutes matching alerts until it expires)")

    return _queue(args, cmd, store, cfg, on_valid=say_muted)


def _unsilence(args) -> int:
    """Queue the end of a silence the store knows. A mistyped id is refused here, not queued: the service
    would refuse it a tick later, after `queued as command N` had told the operator the silence ended while
    the real one still mutes."""
    if args.by is not None:
        return _queue(args, {})
    cfg = _config(args)
    store = _store(args, cfg)
    sid = args.silence_id
    now = freshness(store).as_of_ns or time.time_ns()  # the engine's clock, as `list --silences` judges
    known = [s for s in store.silences(include_ended=True) if s.id == sid]
    if not known and not _silence_queued(store, sid):
        active = sorted(s.id for s in store.silences() if s.active(now))
        listed = (f"active silences: {', '.join(active[:5])}" + (f" and {len(active) - 5} more" if len(active) > 5
                  else "") if active else "no silence is active")
        print(f"error: no silence {sid!r} in the store {store.path}; {listed} (`citywatch alerts list --silences`)",
              file=sys.stderr)
        return EXIT_USAGE
    if known and (known[0].ended_by is not None or known[0].expires_ns <= now):
        s = known[0]
        how = f"ended by {s.ended_by}" if s.ended_by else "expired"
        print(f"silence {sid} already {how} at {_local(s.expires_ns)} CST; nothing to end")
        return EXIT_OK
    return _queue(args, {"action": "unsilence", "silence_id": sid}, store, cfg)


def _silence_queued(store: AlertStore, sid: str) -> bool:
    """A `silence --id sid` still waiting in the command inbox (the service is not running, or not yet
    ticked): its unsilence is queued behind it and applied in order."""
    return any(isinstance(c.command, dict) and c.command.get("action") == "silence" and c.command.get("id") == sid
               for c in store.unapplied_commands())


def _watch(args) -> int:
    store = _store(args)
    console = _console()

    def view():
        return _alert_board(store, store.alerts(OPEN), "citywatch: active alerts", console.width)

    if args.once:
        console.print(view())
        return EXIT_OK
    with Live(view(), console=console, refresh_per_second=4, screen=False) as live:
        while True:
            time.sleep(args.interval)
            live.update(view())
