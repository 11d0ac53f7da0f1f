"""`citywatch score --truth TRUTH --alerts SOURCE`: match the alerts a pipeline raised to a scenario's
ground truth and print the scorecard; `--min-recall` / `--max-false` turn it into a CI gate."""

from __future__ import annotations

import json
import sys


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
    p.add_argument("--tolerance", default="60m",
                   help="slack around each fault for a matching alert start (default 60m: hourly rules such as "
                        "the N-data valid-data rate judge an hour after it ends)")
    p.add_argument("--min-recall", type=float, help="exit 1 when recall (share of faults caught) is below this, 0-1")
    p.add_argument("--max-false", type=float, help="exit 1 when false alerts per device-day exceed this")
    p.add_argument("--json", action="store_true", help="print the scorecard as JSON instead of tables")
    p.set_defaults(func=run)


def run(args) -> int:
    from simulators.alert_sources import AlertSourceError, load_alerts
    from simulators.scenario import parse_duration
    from simulators.scoring import TruthFault, parse_time_ms, score

    try:
        tolerance_s = parse_duration(args.tolerance)
    except ValueError as exc:
        print(f"citywatch score: --tolerance: {exc}", file=sys.stderr)
        return 2
    try:
        records = _read_truth(args.truth)
        faults = [TruthFault.from_record(r) for r in records]
    except (OSError, ValueError, KeyError) as exc:
        print(f"citywatch score: {args.truth}: {exc}", file=sys.stderr)
        return 2
    try:
        alerts = load_alerts(args.alerts)
    except AlertSourceError as exc:
        print(f"citywatch score: {exc}", file=sys.stderr)
        return 2

    window, device_days = None, None
    meta = next((r["scenario"] for r in records if isinstance(r.get("scenario"), dict)), None)
    if meta:
        window = (parse_time_ms(meta["start"]), parse_time_ms(meta["end"]))
        device_days = int(meta["devices"]) * (window[1] - window[0]) / 86_400_000
    card = score(faults, alerts, tolerance_s, device_days, window)

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


def _read_truth(path: str) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ValueError(f"line {lineno}: {exc}") from None
    return out


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
