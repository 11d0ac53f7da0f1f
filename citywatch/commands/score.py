"""`citywatch score --truth TRUTH --alerts SOURCE`: match the alerts a pipeline raised to a scenario's
ground truth and print the scorecard; `--min-recall` / `--max-false` turn it into a CI gate."""

from __future__ import annotations

import json
import sys

from citywatch.errors import report_unreachable


def register(sub) -> None:
    p = sub.add_parser(
        "score",
        help="score raised alerts against a scenario's ground truth",
        description="Event-level precision and recall per rule and per fault type, detection delay, "
                    "false alerts per device-day, and the faults missed.",
    )
    p.add_argument("--truth", required=True, help="ground-truth JSONL written by `citywatch simulate`")
    p.add_argument("--alerts", required=True,
                   help="JSONL capture of the alert topic, sqlite:PATH (alert store) or influx:URL/DB (read as the "
                        "account in CITYWATCH_INFLUX_USERNAME / CITYWATCH_INFLUX_PASSWORD, if set)")
    p.add_argument("--run-id", help="only alerts of this run (the service's CITYWATCH_RUN_ID, tagged on the InfluxDB "
                                    "`alerts` points and in notice payloads)")
    p.add_argument("--since", help="only alerts that started at or after this time (ISO 8601, e.g. 2025-06-02T06:00+08:00)")
    p.add_argument("--until", help="only alerts that started before this time (ISO 8601)")
    p.add_argument("--tolerance", default="60m",
                   help="slack around each fault for a matching alert start (default 60m: hourly rules such as "
                        "the N-data valid-data rate judge an hour after it ends)")
    p.add_argument("--min-recall", type=float, help="exit 1 when recall (share of faults caught) is below this, 0-1")
    p.add_argument("--max-false", type=float, help="exit 1 when false alerts per device-day exceed this")
    p.add_argument("--json", action="store_true", help="print the scorecard as JSON instead of tables")
    p.set_defaults(func=run)


def run(args) -> int:
    from simulators.alert_sources import (
        AlertSourceError,
        AlertSourceUnreachable,
        load_alerts,
    )
    from simulators.scenario import parse_duration
    from simulators.scoring import parse_time_ms, score

    try:
        tolerance_s = parse_duration(args.tolerance)
    except ValueError as exc:
        print(f"citywatch score: --tolerance: {exc}", file=sys.stderr)
        return 2
    try:
        records = _read_truth(args.truth)
        faults = _faults(records)
        window, device_days = _scenario(records)
    except (OSError, ValueError) as exc:
        print(f"citywatch score: {args.truth}: {exc}", file=sys.stderr)
        return 2
    try:
        since = parse_time_ms(args.since) if args.since else None
        until = parse_time_ms(args.until) if args.until else None
    except ValueError as exc:
        print(f"citywatch score: --since/--until: {exc}", file=sys.stderr)
        return 2
    try:
        alerts = load_alerts(args.alerts)
    except AlertSourceUnreachable as exc:
        return report_unreachable("citywatch score", "InfluxDB", exc.url, exc.reason)
    except AlertSourceError as exc:
        print(f"citywatch score: {exc}", file=sys.stderr)
        return 2
    alerts, note = select_alerts(alerts, args.run_id, since, until)
    if note:
        print(f"citywatch score: {note}", file=sys.stderr)

    card = score(faults, alerts, tolerance_s, device_days, window)
    if window is not None and len(card.alerts) < len(alerts):
        print(f"citywatch score: ignored {len(alerts) - len(card.alerts)} alerts that started outside the scenario's "
              f"window (+- --tolerance): another run's? (--run-id, --since/--until select one)", file=sys.stderr)

    if args.json:
        print(json.dumps(card.summary(), indent=1, sort_keys=True))
    else:
        _print_tables(card)
    failed = []
    if args.min_recall is not None and card.recall < args.min_recall:
        failed.append(f"recall {card.recall:.2f} is below --min-recall {args.min_recall:g}")
    if args.max_false is not None and card.false_per_device_day > args.max_false:
        failed.append(f"{card.false_per_device_day:.3f} false alerts per device-day exceed --max-false {args.max_false:g}")
    for f in failed:
        print(f"citywatch score: FAIL: {f}", file=sys.stderr)
    return 1 if failed else 0


def select_alerts(alerts: list, run_id: str | None, since_ms: int | None, until_ms: int | None) -> tuple[list, str]:
    """(the alerts of the run and time window asked for, a line saying what was filtered or warning that the
    source mixes runs; "" when there is nothing to say)."""
    runs = sorted({a.run_id for a in alerts})
    kept = [a for a in alerts if (run_id is None or a.run_id == run_id)
            and (since_ms is None or a.start_ms >= since_ms) and (until_ms is None or a.start_ms < until_ms)]
    if run_id is not None or since_ms is not None or until_ms is not None:
        what = ", ".join(x for x in (f"run id {run_id}" if run_id is not None else "",
                                     f"since {args_time(since_ms)}" if since_ms is not None else "",
                                     f"until {args_time(until_ms)}" if until_ms is not None else "") if x)
        note = f"scoring {len(kept)} of {len(alerts)} alerts ({what}); {len(alerts) - len(kept)} filtered out"
        if run_id is not None and not kept and alerts:
            named = ", ".join(r or "(none)" for r in runs[:10])
            note += f"; the source's run ids: {named}"
        return kept, note
    if len(runs) > 1:
        named = ", ".join(r or "(no run id)" for r in runs[:10])
        return kept, (f"WARNING: the alerts come from {len(runs)} runs ({named}); pass --run-id (or --since/--until) "
                      "to score one of them")
    return kept, ""


def args_time(ms: int) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat().replace("+00:00", "Z")


def _read_truth(path: str) -> list[tuple[int, dict]]:
    """(line number, record) of a ground-truth JSONL file. Raises OSError, or ValueError naming the line of
    one that is not UTF-8, not JSON or not a JSON object."""
    from core.shown import shown

    out = []
    with open(path, "rb") as fh:  # decoded line by line, so an undecodable byte is reported with its line
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ValueError(f"line {lineno}: not UTF-8 text ({exc.reason} at column {exc.start + 1})") from None
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"line {lineno}: {exc}") from None
            if not isinstance(rec, dict):
                raise ValueError(f"line {lineno}: a fault must be a JSON object, got {shown(rec)}")
            out.append((lineno, rec))
    return out


def _faults(records: list[tuple[int, dict]]) -> list:
    """The TruthFaults of the records. Raises ValueError naming the line of a malformed fault or a repeated id."""
    from simulators.scoring import TruthFault

    faults = []
    seen: dict[str, int] = {}  # fault id -> the line it was first on
    for lineno, r in records:
        try:
            f = TruthFault.from_record(r)
        except KeyError as exc:
            raise ValueError(f"line {lineno}: {exc.args[0]} is missing") from None
        except ValueError as exc:
            raise ValueError(f"line {lineno}: {exc}") from None
        if f.id in seen:
            raise ValueError(f"line {lineno}: fault id {f.id} repeats the fault of line {seen[f.id]}")
        seen[f.id] = lineno
        faults.append(f)
    return faults


def _scenario(records: list[tuple[int, dict]]) -> tuple[tuple[int, int] | None, float | None]:
    """(the scenario's (start, end) ms, its device-days) from the first record with a `scenario` object,
    else (None, None). Raises ValueError naming the line of a malformed one."""
    from core.shown import shown
    from simulators.scoring import parse_time_ms

    lineno, meta = next(((n, r["scenario"]) for n, r in records if isinstance(r.get("scenario"), dict)), (0, None))
    if not meta:
        return None, None
    try:
        window = (parse_time_ms(meta["start"]), parse_time_ms(meta["end"]))
    except KeyError as exc:
        raise ValueError(f"line {lineno}: scenario.{exc.args[0]} is missing") from None
    except ValueError as exc:
        raise ValueError(f"line {lineno}: scenario: {exc}") from None
    devices = meta.get("devices")
    if isinstance(devices, bool) or not isinstance(devices, int) or devices < 1:
        raise ValueError(f"line {lineno}: scenario.devices must be a positive whole number, got {shown(devices)}")
    if window[1] < window[0]:
        raise ValueError(f"line {lineno}: scenario: end before start")
    return window, devices * (window[1] - window[0]) / 86_400_000


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.0f}%"


def _dur(v) -> str:
    if v is None:
        return "-"
    return f"{v / 60:.1f} min" if abs(v) >= 60 else f"{v:.0f} s"


def _print_tables(card) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    t = Table(title="Per rule")
    for c in ("rule", "faults", "caught", "recall", "alerts", "true", "false", "precision"):
        t.add_column(c, justify="left" if c == "rule" else "right")
    for r, s in card.per_rule.items():
        t.add_row(r, str(s["faults"]), str(s["caught"]), _pct(s["recall"]), str(s["alerts"]), str(s["true"]),
                  str(s["false"]), _pct(s["precision"]))
    console.print(t)
    t = Table(title="Per fault type")
    for c in ("type", "faults", "expected", "caught", "recall", "true", "false near", "precision", "delay (median)"):
        t.add_column(c, justify="left" if c == "type" else "right")
    for k, s in card.per_type.items():
        t.add_row(k, str(s["faults"]), str(s["expected_to_fire"]), str(s["caught"]), _pct(s["recall"]), str(s["true"]),
                  str(s["false_near"]), _pct(s["precision"]), _dur(s["delay_median_s"]))
    console.print(t)
    d = card.delay_stats()
    console.print(
        f"faults {len(card.faults)} (expected to fire {sum(1 for f in card.faults if f.rules)}), caught {len(card.caught)}, "
        f"recall {_pct(card.recall)}; alerts {len(card.alerts)}, precision {_pct(card.precision)}, "
        f"tolerated {len(card.allowed)}; detection delay median {_dur(d['median_s'])}, p95 {_dur(d['p95_s'])}; "
        f"false alerts {len(card.false_alerts)} = {card.false_per_device_day:.3f} per device-day "
        f"({card.device_days:.1f} device-days)"
    )
    if card.missed:
        console.print("[bold red]missed faults:[/]")
        for f in card.missed:
            console.print(f"  {f.id} {f.type} {f.device} expected {', '.join(f.rules)}  {f.note}")
    for f, seen in card.under_severity():
        console.print(f"  caught below the expected severity: {f.id} {f.type} {f.device} expected {f.severity}, "
                      f"highest {seen or 'unknown'}")
    if card.false_alerts:
        console.print("[bold yellow]false alerts:[/]")
        for a, near in card.false_alerts[:50]:
            where = f" (near fault {near})" if near else ""
            console.print(f"  {a.alert_id} {a.severity}{where}")
        if len(card.false_alerts) > 50:
            console.print(f"  ... and {len(card.false_alerts) - 50} more")
