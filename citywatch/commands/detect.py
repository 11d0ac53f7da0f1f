"""`citywatch detect`: run the rules of a config over a recorded feed (CSV/JSONL file, stdin or InfluxDB
history) and write the detections; `--flags` writes one 0/1 per input row (`--scores`: with each rule's
score); `--compare OTHER_CONFIG` prints what another config would add or remove (the dry run before a
threshold change); `--save-state` writes the detectors' state afterwards, so a service starts with what
the history taught them. Anyone's CSV: `--time-column`, `--device` for one series, `--tz`,
`--kind generic` for devices outside the inventory, `--rules FILE` with the shipped config for the rest.
The run itself (reading the feed, the rules in event-time steps, filters, scores, the comparison) is
detectors/offline.py; this module parses the arguments, prints and chooses the exit code."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from citywatch.cli import output_problem
from citywatch.errors import EXIT_UNREACHABLE, report_unreachable
from config import ConfigError, load_config
from core.timefmt import iso_utc

if TYPE_CHECKING:
    from detectors.episodes import FlagMode
    from detectors.offline import OfflineRun, Only

PROGRESS_MIN_BYTES = 2_000_000  # show a progress bar for inputs at least this large


def register(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="offline detection over a recorded feed; dry-run a config change with --compare",
        description="Run every enabled rule of a config over a recorded feed: CSV with a header (ts as ISO 8601 "
        "or epoch ms, device_id, then fields such as leq,lmax or p; optional flag) or JSONL with the same keys, "
        "from FILE or - for standard input, or InfluxDB history with --influx. Deadman rules run on the feed's "
        "event-time watermark. Anyone's CSV: --time-column names the time column, --device ID the device of a "
        "file without device_id (one series), --tz the zone of times written without one, --epoch-unit the unit "
        "of numeric times; --kind generic reads devices outside the inventory as generic devices (only the "
        "generic detector types judge them); --rules FILE takes the rules from one YAML file and the rest from "
        "the config. A rule field the feed has no column for is warned about on standard error.",
    )
    p.add_argument("input", nargs="?", help="feed file, or - for standard input (omit with --influx)")
    p.add_argument("--config", default=None, help="config directory (default: the shipped config/)")
    p.add_argument("--rules", default=None, metavar="FILE",
                   help="take the rules from this YAML file (a 'rules:' list, as config/rules.yaml) and everything "
                   "else from --config (default: the shipped config/); alert settings that name a rule the file "
                   "does not define (inhibit entries, route matches) are ignored, not errors")
    p.add_argument("--time-column", default="ts", metavar="NAME",
                   help="the column (JSONL: key) holding each row's time (default ts), e.g. timestamp")
    p.add_argument("--tz", default=None, metavar="ZONE",
                   help="read times written without a zone as local times of ZONE: an IANA name (Asia/Shanghai), "
                   "UTC, or an offset (+08:00); default: such times are an error (a repeated DST hour is read as its "
                   "first occurrence)")
    p.add_argument("--epoch-unit", choices=["s", "ms", "us", "ns"], default="ms",
                   help="unit of times written as numbers (default ms; a warning says when the times look like "
                   "seconds)")
    p.add_argument("--kind", choices=["generic"], default=None,
                   help="read devices that are not in the inventory as devices of this kind instead of skipping "
                   "them: generic (no site, no noise or gas meaning; only the generic detector types such as "
                   "threshold, robust_z, ewma, cusum, hotelling_t2, knn_cad judge them; the deadman does not, as "
                   "their report interval is unknown)")
    p.add_argument("--input-format", choices=["csv", "jsonl"], default=None, help="default: from the file name or content")
    p.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="detections output format (default csv)")
    p.add_argument("--output", "-o", default=None, help="write detections to this file (default: standard output)")
    p.add_argument("--flags", nargs="?", action=_FlagsAction, default=None, metavar="row|onset|span",
                   help="write one 0/1 per input row to standard output; row (default): the row raised a detection "
                   "of severity blue or above; onset: the row starts an episode of a rule (where the alert engine "
                   "opens an alert); span: the row lies inside an episode, from its onset to its clear")
    p.add_argument("--scores", action="store_true",
                   help="with --flags (implied): write CSV instead, a header `flag,RULE,...` and per input row its "
                   "flag and each rule's score, the statistic the rule thresholds (robust_z |z|, ewma and cusum in "
                   "sigma, hotelling_t2 T^2/limit, knn_cad non-conformity/quantile, rate_of_change |rate|, "
                   "threshold the value, domain rules the margin to their limit); empty where the rule did not "
                   "judge the row (another kind of device, warm-up, missing value); deadman and gas_flatline: the "
                   "score of their detection rows only")
    p.add_argument("--compare", metavar="OTHER_CONFIG", default=None,
                   help="also run OTHER_CONFIG and report, per rule and site, the alerts it would open (+), no "
                   "longer open (-) or change (~ severity or times), as the alert engine opens them (for_s, "
                   "clear_for_s)")
    p.add_argument("--rows", action="store_true", help="with --compare: also print every detection row OTHER_CONFIG "
                   "adds (+) or removes (-)")
    p.add_argument("--plot", metavar="DIR", default=None, help="with --compare: write one PNG per device whose "
                   "alerts change to DIR (the readings of the fields its changed rules read, old and new limit, alerts "
                   "before and after)")
    p.add_argument("--device", action="append", metavar="ID",
                   help="only this device (repeat for more); for a feed without a device_id column (one device's "
                   "series), the device its rows belong to (give it once; with --kind generic it need not be in "
                   "the inventory)")
    p.add_argument("--site", action="append", metavar="ID", help="only the devices of this site, by id or name "
                   "(repeat for more)")
    p.add_argument("--rule", action="append", metavar="ID", help="only this rule (repeat for more)")
    p.add_argument("--include-clear", action="store_true", help="also write severity-0 clear rows")
    p.add_argument("--watermark-s", type=int, default=300,
                   help="advance the deadman every this many seconds of event time (default 300)")
    p.add_argument("--no-deadman", action="store_true", help="do not advance time-driven rules (deadman)")
    p.add_argument("--influx", action="store_true", help="read history from the config's InfluxDB (v1 /query)")
    p.add_argument("--since", help="with --influx: start time, ISO 8601 or a duration before now such as 28d, "
                   "36h (inclusive)")
    p.add_argument("--until", help="with --influx: end time, ISO 8601, a duration before now, or now (exclusive)")
    add_influx_options(p)
    p.add_argument("--save-state", nargs="?", const="", default=None, metavar="PATH",
                   help="after the feed, write the detectors' state (gas profile, windows, CUSUM) to PATH for "
                   "`citywatch run` to start from (default PATH: the config's alerting.detector_state_path)")
    p.add_argument("--force", action="store_true", help="with --save-state: replace an existing snapshot "
                   "(stop the service first: it overwrites the file at its next save)")
    p.add_argument("--no-detections", action="store_true",
                   help="write no detections (with --save-state: only warm up the detectors' state)")
    p.set_defaults(func=_run)


class _FlagsAction(argparse.Action):
    """--flags with an optional mode: a value that is no mode is the input file (`--flags feed.csv`)."""

    def __call__(self, parser, namespace, value, option_string=None):
        from detectors.episodes import FLAG_MODES

        if value is not None and value not in FLAG_MODES:
            namespace._flags_input = value  # the positional input was already taken as absent
            value = None
        setattr(namespace, self.dest, value or "row")


def add_influx_options(p, when: str = "with --influx: ") -> None:
    """Options shared with `citywatch warmup`."""
    p.add_argument("--measurement", action="append", choices=["noise", "gas_pressure"],
                   help=f"{when}measurement(s) to read (default both)")
    p.add_argument("--query-window-s", type=float, default=None, metavar="S",
                   help=f"{when}seconds of history per InfluxDB query (default 21600: 6 h)")
    p.add_argument("--chunk-rows", type=int, default=50_000, help="rows per batch (default 50000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def parse_when(text: str, now_ns: int) -> int:
    """UTC ns of an ISO 8601 time (with a zone), epoch ms, `now`, or a duration before now (`28d`,
    `36h`, `90m`, `2w`). Raises ValueError."""
    from config.durations import parse_duration
    from detectors.feed import parse_ts_ns

    t = text.strip()
    if t.lower() == "now":
        return now_ns
    if t[-1:] in ("s", "m", "h", "d", "w"):  # a duration (an ISO time ends in a digit or Z)
        return now_ns - int(parse_duration(t) * 1_000_000_000)
    return parse_ts_ns(t)


def _load(directory):
    from detectors.registry import RuleSet

    cfg = load_config(directory)
    return cfg, RuleSet.from_config(cfg)


def influx_span(args, prog: str) -> tuple[int, int]:
    """(since, until) UTC ns of the --since/--until arguments; raises SystemExit with the reason."""
    if not (args.since and args.until):
        raise SystemExit(f"{prog}: --influx needs --since and --until")
    now = time.time_ns()
    try:
        since, until = parse_when(args.since, now), parse_when(args.until, now)
    except ValueError as exc:
        raise SystemExit(f"{prog}: --since/--until: {exc} (ISO 8601 with a zone, or a duration such as 28d)") from None
    if since >= until:
        raise SystemExit(f"{prog}: --since must be before --until")
    return since, until


def _open_feed(args, prog: str):
    """The feed of the arguments, opened; raises SystemExit with the reason."""
    from detectors.offline import FeedInput, FeedOpenError

    if args.input is None:
        raise SystemExit(f"{prog}: give a feed file, - for standard input, or --influx")
    try:
        return FeedInput.open(args.input, args.input_format, spool_stdin=bool(getattr(args, "kind", None)))
    except FeedOpenError as exc:
        raise SystemExit(f"{prog}: {exc}") from None
    except UnicodeError:  # standard input spooled for --kind generic (its undecodable bytes kept as surrogates)
        raise SystemExit(f"{prog}: {args.input}: not UTF-8 text") from None


def _chunks(args, cfg, progress, span, feed):
    from detectors.offline import file_chunks, influx_chunks

    if args.influx:
        return influx_chunks(cfg, span[0], span[1], tuple(args.measurement or ()) or None, args.query_window_s,
                             args.chunk_rows, progress)
    return file_chunks(cfg, feed, args.chunk_rows, progress)


class _Progress:
    """A rich progress bar on standard error for large inputs (bytes of a file, seconds of history)."""

    def __init__(self, label: str = "detect") -> None:
        from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn(label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                            TimeRemainingColumn(), transient=True, console=_stderr_console())
        self.task: TaskID | None = None

    def start(self, total: int, always: bool = False):
        if total <= 0 or (total < PROGRESS_MIN_BYTES and not always):
            return None
        self.bar.start()
        self.task = self.bar.add_task("detect", total=total)
        return self.task

    def update(self, done: int) -> None:
        if self.task is not None:
            self.bar.update(self.task, completed=done)

    def stop(self) -> None:
        if self.task is not None:
            self.bar.stop()


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


def _run(args) -> int:
    if args.force and args.save_state is None:
        print("citywatch detect: --force only goes with --save-state", file=sys.stderr)
        return 1
    if (args.rows or args.plot) and not args.compare:
        print("citywatch detect: --rows and --plot go with --compare", file=sys.stderr)
        return 1
    if args.no_detections and (args.flags or args.scores or args.compare or args.output):
        print("citywatch detect: --no-detections writes nothing, so it goes with none of --flags, --scores, --compare,"
              " --output", file=sys.stderr)
        return 1
    problem = ((output_problem("--output", args.output) if args.output else None)
               or (output_problem("--save-state", args.save_state) if args.save_state else None))
    if problem:  # before the feed is read: a mistyped path costs no run and no traceback
        print(f"citywatch detect: {problem}", file=sys.stderr)
        return 2
    return execute(args)


def execute(args, prog: str = "citywatch detect", unreachable_rc: int = EXIT_UNREACHABLE, summary=None) -> int:
    """The detect run behind `citywatch detect` and `citywatch warmup` (the run itself: detectors.offline).

    InfluxDB unreachable: the one line of citywatch.errors and exit EXIT_UNREACHABLE (2), as every command.
    unreachable_rc: exit code when InfluxDB answers an error; summary: where the --save-state report goes
    (default standard error: standard output may hold detections)."""
    from detectors.feed import FeedError, InfluxUnreachable
    from detectors.offline import (
        OfflineRun,
        active,
        feed_devices,
        feed_warnings,
        filters,
        keep_only,
        kinds_read,
        run_feed,
        state_summary,
        with_generic,
    )
    from detectors.registry import RuleSet, check_rules

    if getattr(args, "_flags_input", None) is not None:  # `--flags feed.csv`: the value was the input
        if args.input is not None:
            print(f"{prog}: --flags takes row, onset or span, got {args._flags_input!r}", file=sys.stderr)
            return 1
        args.input = args._flags_input
        args._flags_input = None
    scores = getattr(args, "scores", False)
    if scores and not args.flags:
        args.flags = "row"
    if args.influx and (getattr(args, "kind", None) or getattr(args, "tz", None)):
        print(f"{prog}: --kind and --tz go with a feed file, not --influx", file=sys.stderr)
        return 1
    try:
        cfg = load_config(args.config, rules_file=getattr(args, "rules", None))
        other = _load(args.compare) if args.compare else None
        problems = check_rules(cfg)  # before the feed is opened, as a config's problems always were
        if problems:
            raise ConfigError(problems)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    state_path = None
    if args.save_state is not None:
        state_path = Path(args.save_state) if args.save_state else cfg.resolve_path(cfg.alerting.detector_state_path)
        refusal = overwrite_refusal(state_path, cfg, args.force)
        if refusal:
            print(f"{prog}: {refusal}", file=sys.stderr)
            return 1
    feed, added = None, []
    if not args.influx:
        feed = _open_feed(args, prog)
        try:
            added = feed_devices(cfg, feed, time_column=getattr(args, "time_column", "ts"),
                                 epoch_unit=getattr(args, "epoch_unit", "ms"), tz=getattr(args, "tz", None),
                                 generic=getattr(args, "kind", None) == "generic", devices=args.device)
            cfg = with_generic(cfg, added)
        except ValueError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return _closing(feed, 1)
    try:
        rules = RuleSet.from_config(cfg)
        if other is not None and added:  # --kind generic: the other config reads those devices too
            ocfg = with_generic(other[0], added)
            other = (ocfg, RuleSet.from_config(ocfg))
        only = filters(cfg, other[0] if other else None, getattr(args, "device", None), getattr(args, "site", None),
                       getattr(args, "rule", None))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return _closing(feed, 1)
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return _closing(feed, 1)
    existed = _mtime(state_path) if state_path is not None else None
    span = influx_span(args, prog) if args.influx else None
    deadman = not args.no_deadman
    kinds = kinds_read(args.measurement) if args.influx else None
    main = OfflineRun(cfg, rules, deadman, keep=not args.no_detections, kinds=kinds, hold=set(added))
    if scores:
        rules.trace_scores()
    alt = OfflineRun(other[0], other[1], deadman, kinds=kinds) if other else None
    readings: list[Any] | None = [] if getattr(args, "plot", None) else None
    progress = None if args.no_progress or not sys.stderr.isatty() else _Progress(prog.split()[-1])
    flags_parts: list[Any] | None = [] if args.flags else None

    try:
        reader = run_feed(_chunks(args, cfg, progress, span, feed), main, args.watermark_s, alt, flags_parts, readings)
    except InfluxUnreachable as exc:
        return report_unreachable(prog, "InfluxDB", cfg.connections.influx.url, exc)
    except FeedError as exc:
        if args.influx:
            print(f"{prog}: {exc}", file=sys.stderr)
            return unreachable_rc
        print(f"{prog}: {args.input}: {exc}", file=sys.stderr)
        return 1
    except UnicodeDecodeError as exc:  # the reader names the line; this is for a stream it does not read
        print(f"{prog}: {args.input}: not UTF-8 text ({exc.reason})", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    finally:
        if progress:
            progress.stop()
    if reader is not None:
        hint = "" if args.influx else " (--kind generic reads such devices as generic devices)"
        for dev, n in sorted(reader.stats.unknown_devices.items()):
            print(f"{prog}: skipped {n} row(s) of device {dev!r}: not in the inventory{hint}", file=sys.stderr)
        for line in feed_warnings(main, reader.stats, only):
            print(f"{prog}: warning: {line}", file=sys.stderr)
    if state_path is not None:
        if main.rows == 0:
            where = (f"InfluxDB {cfg.connections.influx.url} ({cfg.connections.influx.database}) from "
                     f"{iso_utc(span[0])} to {iso_utc(span[1])}" if span else args.input)
            print(f"{prog}: no readings of inventory devices in {where}; no state written", file=sys.stderr)
            return 1
        if _mtime(state_path) != existed:
            # Written while we read: a service is running and would overwrite ours at its next save.
            print(f"{prog}: {state_path} was written while the history was read: is `citywatch run` running? "
                  "Stop the service, then run again with --force", file=sys.stderr)
            return 1
        from detectors import snapshot

        try:
            size = snapshot.save(main.rules, state_path)
        except OSError as exc:
            print(f"{prog}: cannot write {state_path}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        out = summary or sys.stderr
        for line in state_summary(main, state_path, size):
            print(line, file=out)
    from detectors.autolimit import resolved_lines

    for line in resolved_lines(main.rules):  # rules with `limit: auto`: the limits they resolved to
        print(f"{prog}: {line}", file=sys.stderr)
    if args.no_detections:
        return 0
    all_dets = main.detections()
    dets = all_dets if args.include_clear else active(all_dets)
    dets = keep_only(dets, main.ids, only).sorted()
    if args.flags and flags_parts is not None:
        from detectors.episodes import row_flags

        every = keep_only(all_dets, main.ids, only)  # clear rows tell one rule's episodes apart
        if scores:
            write_scores(main, every, only, flags_parts, args.flags, sys.stdout)
        else:
            for sensor, ts in flags_parts:
                sys.stdout.write("".join("1\n" if f else "0\n" for f in row_flags(every, sensor, ts, args.flags)))
        if args.output:
            with open(args.output, "w", encoding="utf-8", newline="") as out:
                write_detections(dets, main.ids, args.format, out)
    elif args.compare is None or args.output:
        out = open(args.output, "w", encoding="utf-8", newline="") if args.output else sys.stdout
        try:
            write_detections(dets, main.ids, args.format, out)
        finally:
            if args.output:
                out.close()
    if alt is not None and other is not None:  # alt is the run of `other`
        out = sys.stderr if args.flags else sys.stdout
        other_all = alt.detections()
        other_dets = other_all if args.include_clear else active(other_all)
        other_dets = keep_only(other_dets, alt.ids, only).sorted()
        if args.rows:
            _write_compare(dets, main.ids, other_dets, alt.ids, args, out)
            out.write("\n")
        return _write_alerts(args, (cfg, main, all_dets), (other[0], alt, other_all), only, readings, out, prog)
    return 0


def _closing(feed, rc: int) -> int:
    if feed is not None:
        feed.close()
    return rc


# ----- output: per-row scores, --compare as alerts and plots ----------------------------------------

def write_scores(run: OfflineRun, every, only: Only, flags_parts: list, mode: FlagMode, out) -> None:
    """`--scores`: CSV with a header `flag,RULE,...` and per input row its flag (as --flags MODE) and each
    kept rule's score (empty: not judged; see detectors.offline.RowScores)."""
    from detectors.episodes import row_flags
    from detectors.offline import RowScores

    table = RowScores(run, every, only)
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["flag", *table.rule_ids])
    for sensor, ts in flags_parts:
        flags = row_flags(every, sensor, ts, mode)
        cols = table.columns(sensor, ts)
        for j in range(len(ts)):
            w.writerow(["1" if flags[j] else "0", *[_score_cell(c[j]) for c in cols]])


def _score_cell(x: float) -> str:
    return "" if x != x else f"{x:.6g}"


def _write_alerts(args, base, other, only: Only, readings, out, prog: str) -> int:
    """The --compare report as alerts (citywatch.whatif), and the plots of --plot."""
    from citywatch import whatif

    (cfg, run, _), (ocfg, orun, _) = base, other
    end = max(x for x in (run.last_ns, orun.last_ns, 0) if x is not None) or None
    spans = [[s for s in whatif.alert_spans(c, r.parts, end) if only.keeps(s.device_id, s.rule_id)]
             for c, r in ((cfg, run), (ocfg, orun))]
    changes = whatif.compare_spans(*spans)
    names = (args.config or "config", args.compare)
    whatif.write_report(changes, names, cfg.time.timezone, end, out)
    if args.plot:
        written = _plots(args, base, other, changes, readings, names, only)
        if written:
            out.write(f"plots: {len(written)} device(s) in {args.plot}: {', '.join(p.name for p in written)}\n")
        else:
            out.write(f"plots: no device's alerts change; nothing written to {args.plot}\n")
    return 0


def _plots(args, base, other, changes, readings, names, only: Only) -> list[Path]:
    """One PNG per device whose alerts change: the fields its changed rules read (either config's
    version of each rule), their limits and the alerts before and after."""
    from citywatch import whatif
    from detectors.offline import rule_fields

    (cfg, run, dets), (ocfg, orun, odets) = base, other
    changed = [c for c in changes if c.kind != "same"]
    devices = sorted({c.device_id for c in changed})
    if readings:
        sensor = np.concatenate([r[0] for r in readings])
        ts = np.concatenate([r[1] for r in readings])
        cols = {f: np.concatenate([r[2].get(f, np.full(len(r[0]), np.nan)) for r in readings])
                for f in dict.fromkeys(f for r in readings for f in r[2])}
    else:
        sensor, ts, cols = np.empty(0, np.int32), np.empty(0, np.int64), {}
    out = []
    for dev in devices:
        mine = [c for c in changes if c.device_id == dev]
        rules = {c.rule_id for c in mine}
        limits = {}
        for side, (r, d) in enumerate(((run, dets), (orun, odets))):
            ids = r.ids
            for rule in rules:
                sel = (np.flatnonzero((ids[d.sensor].astype(str) == dev) & (d.rule_id.astype(str) == rule)) if len(d)
                       else np.zeros(0, np.intp))
                if len(sel):
                    o = sel[np.argsort(d.ts_ns[sel], kind="stable")]
                    limits[(rule, side)] = (d.ts_ns[o], d.limit[o])
        i = cfg.device_index(dev) if dev in cfg.device_ids else ocfg.device_index(dev)
        device = (cfg if dev in cfg.device_ids else ocfg).devices[i]
        rows = np.flatnonzero(sensor == cfg.device_index(dev)) if dev in cfg.device_ids else np.empty(0, np.intp)
        order = rows[np.argsort(ts[rows], kind="stable")]
        # The fields the device's changed rules read, as either config defines them (a change of field too).
        ruled = {c.rule_id for c in mine if c.kind != "same"} or rules
        defs = [r for c in (cfg, ocfg) for r in c.rules if r.id in ruled]
        fields = list(dict.fromkeys(f for r in defs for f in rule_fields(r, [device.kind])))
        if not fields:  # rules that read no field (the deadman): the device's main value shows its gaps
            fields = ["p"] if device.kind == "gas" else ["leq"] if device.kind == "noise" else list(cols)[:1]
        drawn = [f for f in fields if f in cols and np.isfinite(cols[f][order]).any()] or fields[:1]
        values = np.stack([cols[f][order] if f in cols else np.full(len(order), np.nan) for f in drawn]
                          or [np.full(len(order), np.nan)], axis=1)
        series = whatif.DeviceSeries(dev, device.kind, ", ".join(drawn) or "-", ts[order],
                                     values[:, 0] if len(drawn) == 1 else values, limits)
        out.append(whatif.plot_device(series, mine, names, cfg.time.timezone, Path(args.plot) / f"{dev}.png",
                                      _plot_unit(drawn, defs)))
    return out


NOISE_LEVELS = {"leq", "lmax", "lmin", "l5", "l10", "l50", "l90", "l95", "la"}  # dB(A) fields (core.NOISE_FIELDS)


def _plot_unit(fields: list[str], rules: list) -> str:
    """The y axis unit of a plot of `fields`: dB(A), kPa or V for the domain fields, else the unit the
    rules give (`unit:`) when they agree on one, else none."""
    if fields and set(fields) <= NOISE_LEVELS:
        return "dB(A)"
    if fields in (["p"], ["batt_v"]):
        return "kPa" if fields == ["p"] else "V"
    units = {str(r.params.get("unit")) for r in rules if r.params.get("unit")}
    return units.pop() if len(units) == 1 else ""


# ----- the state snapshot ---------------------------------------------------------------------------

def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _is_snapshot(path: Path) -> bool:
    """A zip holding a `manifest` member: what detectors/snapshot.py writes (cheap: no arrays read)."""
    try:
        with zipfile.ZipFile(path) as z:
            return "manifest.npy" in z.namelist()
    except (OSError, zipfile.BadZipFile):
        return False


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def overwrite_refusal(path: Path, cfg, force: bool) -> str | None:
    """Why `path` must not be written (None: it may be). A file that is not a snapshot is never
    replaced, even with --force (the PATH of --save-state may have swallowed the feed's file name)."""
    if not path.exists():
        return None
    if path.is_dir():
        return f"{path} is a directory; give the snapshot file's path"
    if not _is_snapshot(path):
        return f"{path} exists and is not a detector snapshot; not replacing it (give another PATH)"
    if force:
        return None
    st = path.stat()
    return (f"{path} already holds a detector snapshot ({st.st_size / 2**20:.1f} MiB, written "
            f"{_ago(time.time() - st.st_mtime)} ago). A running `citywatch run` writes it every "
            f"{cfg.alerting.detector_state_save_s:g} s and at stop, so it would overwrite the state learned here: "
            "stop the service first, then give --force to replace the snapshot")


CSV_COLUMNS = ["ts", "device_id", "rule_id", "category", "severity", "value", "limit", "score", "metric", "window",
               "unit", "period", "permit_id", "exam_mode", "context"]


def _records(dets, ids):
    from core import SEVERITY_NAMES

    for i in range(len(dets)):
        ctx = dets.context[i] if i < len(dets.context) else {}
        # JSON has no NaN: a missing number in the context is null.
        ctx = {k: (None if isinstance(v, float) and v != v else v) for k, v in ctx.items()}
        yield {
            "ts": iso_utc(int(dets.ts_ns[i])), "device_id": str(ids[dets.sensor[i]]), "rule_id": str(dets.rule_id[i]),
            "category": str(dets.category[i]), "severity": SEVERITY_NAMES[int(dets.severity[i])],
            "value": _num(dets.value[i]), "limit": _num(dets.limit[i]), "score": _num(dets.score[i]), "context": ctx,
        }


def _num(x) -> float | None:
    x = float(x)
    return None if x != x else round(x, 4)


def write_detections(dets, ids, fmt: str, out) -> None:
    """Detections as CSV (one column per context key of the contract, the rest as JSON) or JSONL."""
    if fmt == "jsonl":
        for rec in _records(dets, ids):
            out.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
        return
    w = csv.writer(out, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for rec in _records(dets, ids):
        ctx = dict(rec["context"])
        fixed = [ctx.pop(k, None) for k in ("metric", "window", "unit", "period", "permit_id", "exam_mode")]
        w.writerow([rec["ts"], rec["device_id"], rec["rule_id"], rec["category"], rec["severity"],
                    _cell(rec["value"]), _cell(rec["limit"]), _cell(rec["score"]), *[_cell(v) for v in fixed],
                    json.dumps(ctx, ensure_ascii=False, default=str) if ctx else ""])


def _cell(v) -> str:
    return "" if v is None else str(v)



def _write_compare(base, base_ids, other, other_ids, args, out) -> None:
    """Rows only in OTHER_CONFIG's detections (+) and only in the base config's (-), keyed by
    (device, time, rule, severity), then a per-rule summary."""
    from core import SEVERITY_NAMES
    from detectors.offline import compare_rows

    rows = compare_rows(base, base_ids, other, other_ids)
    for sign, keys, d in (("+", rows.added, other), ("-", rows.removed, base)):
        src = rows.other_index if sign == "+" else rows.base_index
        for k in keys:
            i = src[k]
            out.write(f"{sign} {iso_utc(k[1])} {k[0]} {k[2]} {SEVERITY_NAMES[k[3]]} value={_num(d.value[i])} "
                      f"limit={_num(d.limit[i])}\n")
    per_rule = Counter((k[2], "+") for k in rows.added) + Counter((k[2], "-") for k in rows.removed)
    rules = sorted({r for r, _ in per_rule})
    out.write(f"compare {args.config or 'config'} -> {args.compare}: {len(rows.added)} added, {len(rows.removed)} "
              f"removed, {rows.unchanged} unchanged\n")
    for r in rules:
        out.write(f"  {r}: +{per_rule[(r, '+')]} -{per_rule[(r, '-')]}\n")
