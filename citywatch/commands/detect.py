"""`citywatch detect`: run the rules of a config over a recorded feed (CSV/JSONL file, stdin or InfluxDB
history) and write the detections; `--flags` writes one 0/1 per input row; `--compare OTHER_CONFIG`
prints what another config would add or remove (the dry run before a threshold change); `--save-state`
writes the detectors' state afterwards, so a service starts with what the history taught them."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
import time
import zipfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from citywatch.errors import EXIT_UNREACHABLE, report_unreachable
from config import ConfigError, load_config

PROGRESS_MIN_BYTES = 2_000_000  # show a progress bar for inputs at least this large


def register(sub) -> None:
    p = sub.add_parser(
        "detect",
        help="offline detection over a recorded feed; dry-run a config change with --compare",
        description="Run every enabled rule of a config over a recorded feed: CSV with a header (ts as ISO 8601 "
        "or epoch ms, device_id, then fields such as leq,lmax or p; optional flag) or JSONL with the same keys, "
        "from FILE or - for standard input, or InfluxDB history with --influx. Deadman rules run on the feed's "
        "event-time watermark.",
    )
    p.add_argument("input", nargs="?", help="feed file, or - for standard input (omit with --influx)")
    p.add_argument("--config", default=None, help="config directory (default: the shipped config/)")
    p.add_argument("--input-format", choices=["csv", "jsonl"], default=None, help="default: from the file name or content")
    p.add_argument("--format", choices=["csv", "jsonl"], default="csv", help="detections output format (default csv)")
    p.add_argument("--output", "-o", default=None, help="write detections to this file (default: standard output)")
    p.add_argument("--flags", nargs="?", action=_FlagsAction, default=None, metavar="row|onset|span",
                   help="write one 0/1 per input row to standard output; row (default): the row raised a detection "
                   "of severity blue or above; onset: the row starts an episode of a rule (where the alert engine "
                   "opens an alert); span: the row lies inside an episode, from its onset to its clear")
    p.add_argument("--compare", metavar="OTHER_CONFIG", default=None,
                   help="also run OTHER_CONFIG and report, per rule and site, the alerts it would open (+), no "
                   "longer open (-) or change (~ severity or times), as the alert engine opens them (for_s, "
                   "clear_for_s)")
    p.add_argument("--rows", action="store_true", help="with --compare: also print every detection row OTHER_CONFIG "
                   "adds (+) or removes (-)")
    p.add_argument("--plot", metavar="DIR", default=None, help="with --compare: write one PNG per device whose "
                   "alerts change to DIR (readings, old and new limit, alerts before and after)")
    p.add_argument("--device", action="append", metavar="ID", help="only this device (repeat for more)")
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


class _Run:
    """One config's rule set over the feed, collecting detections keyed by device id."""

    def __init__(self, cfg, rules, deadman: bool, keep: bool = True, kinds: set[str] | None = None) -> None:
        self.cfg, self.rules, self.deadman, self.keep = cfg, rules, deadman, keep
        self.ids = np.array(cfg.device_ids, dtype=object)
        # Devices outside the kinds read (`--influx --measurement noise`): the deadman does not judge
        # them, since their readings were never asked for (their silence here is ours, not theirs).
        self.unjudged = None
        if kinds is not None:
            self.unjudged = np.array([d.kind not in kinds for d in cfg.devices], bool)
            if not self.unjudged.any():
                self.unjudged = None
        self.parts = []
        self.rows = 0
        self.seen = np.zeros(len(self.ids), bool)
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    def feed(self, batch, step_s: int) -> None:
        """Process a chunk; with the deadman on, in slices of `step_s` event time, each followed by an
        advance to its watermark (so silence is judged as it would have been live)."""
        if len(batch):
            self.rows += len(batch)
            self.seen[batch.sensor] = True
            lo, hi = int(batch.ts_ns.min()), int(batch.ts_ns.max())
            self.first_ns = lo if self.first_ns is None else min(self.first_ns, lo)
            self.last_ns = hi if self.last_ns is None else max(self.last_ns, hi)
        if not self.deadman or len(batch) == 0:
            self._keep(self.rules.process(batch))
            return
        order = np.argsort(batch.ts_ns, kind="stable")
        ts = batch.ts_ns[order]
        step = step_s * 1_000_000_000
        marks = np.arange((ts[0] // step + 1) * step, ts[-1] + step, step)
        cuts = np.searchsorted(ts, marks, side="right")
        start = 0
        for mark, cut in zip(marks, cuts):
            if cut > start:
                self._keep(self.rules.process(batch.take(order[start:cut])))
            self._keep(self.rules.advance(int(min(mark, ts[-1])), hold=self.unjudged))
            start = cut

    def _keep(self, dets) -> None:
        # Warming up over weeks: the detections are not wanted, and holding them would cost memory.
        if self.keep:
            self.parts.append(dets)

    def detections(self):
        from detectors.batch import Detections

        return Detections.concat(self.parts)


def influx_span(args, prog: str) -> tuple[int, int]:
    """(since, until) UTC ns of the --since/--until arguments; raises SystemExit with the reason."""
    if not (args.since and args.until):
        raise SystemExit(f"{prog}: --influx needs --since and --until")
    now = time.time_ns()
    try:
        since, until = parse_when(args.since, now), parse_when(args.until, now)
    except ValueError as exc:
        raise SystemExit(f"{prog}: --since/--until: {exc} (ISO 8601 with a zone, or a duration such as 28d)")
    if since >= until:
        raise SystemExit(f"{prog}: --since must be before --until")
    return since, until


def _stream_chunks(args, cfg, progress, prog="citywatch detect", span=None):
    from detectors.feed import INFLUX_WINDOW_S, FeedReader, format_ts, influx_records, sniff_format

    reader = FeedReader(cfg, args.chunk_rows)
    if args.influx:
        since, until = span or influx_span(args, prog)
        ix = cfg.connections.influx
        recs = influx_records(ix.url, ix.database or "citywatch", format_ts(since), format_ts(until),
                              tuple(args.measurement or ("noise", "gas_pressure")), ix.timeout_s, ix.credentials(),
                              args.query_window_s or INFLUX_WINDOW_S)
        # The bar follows event time: the records come in time order.
        task = progress.start((until - since) // 1_000_000_000, always=True) if progress else None
        for chunk in reader.rows(recs):
            if task is not None and len(chunk.input_ts):
                progress.update((int(chunk.input_ts.max()) - since) // 1_000_000_000)
            yield chunk
        return reader
    if args.input is None:
        raise SystemExit(f"{prog}: give a feed file, - for standard input, or --influx")
    if args.input == "-":
        text = sys.stdin
        name, size = "-", 0
    else:
        try:
            text = open(args.input, encoding="utf-8", newline="")
        except OSError as exc:
            raise SystemExit(f"{prog}: cannot read {args.input}: {exc.strerror}")
        name, size = args.input, os.path.getsize(args.input)
    head = text.read(1) if args.input_format is None else ""
    fmt = args.input_format or sniff_format(name, head)
    stream = _Prefixed(head, text)
    task = progress.start(size) if progress else None
    for chunk in reader.read(stream, fmt):
        if task is not None:
            try:
                progress.update(text.tell())
            except OSError:  # a position is not always available on text streams; the bar just stalls
                pass
        yield chunk
    if name != "-":
        text.close()
    return reader


class _Prefixed(io.TextIOBase):
    """A text stream with a few characters pushed back in front (used to sniff the format)."""

    def __init__(self, head: str, rest) -> None:
        self.head, self.rest = head, rest

    def readable(self) -> bool:
        return True

    def read(self, n=-1):
        out = self.head + self.rest.read() if n is None or n < 0 else self.head + self.rest.read(max(0, n - len(self.head)))
        self.head = ""
        return out

    def readline(self, limit=-1):
        line = self.head + self.rest.readline()
        self.head = ""
        return line

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class _Progress:
    """A rich progress bar on standard error for large inputs (bytes of a file, seconds of history)."""

    def __init__(self, label: str = "detect") -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn(label), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                            TimeRemainingColumn(), transient=True, console=_stderr_console())
        self.task = None

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
    if args.no_detections and (args.flags or args.compare or args.output):
        print("citywatch detect: --no-detections writes nothing, so it goes with none of --flags, --compare,"
              " --output", file=sys.stderr)
        return 1
    return execute(args)


def execute(args, prog: str = "citywatch detect", unreachable_rc: int = EXIT_UNREACHABLE, summary=None) -> int:
    """The detect run behind `citywatch detect` and `citywatch warmup`.

    InfluxDB unreachable: the one line of citywatch.errors and exit EXIT_UNREACHABLE (2), as every command.
    unreachable_rc: exit code when InfluxDB answers an error; summary: where the --save-state report goes
    (default standard error: standard output may hold detections)."""
    from detectors.feed import FeedError, InfluxUnreachable, format_ts

    try:
        cfg, rules = _load(args.config)
        other = _load(args.compare) if args.compare else None
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    try:
        only = _filters(args, cfg, other[0] if other else None)
    except ValueError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    state_path = None
    if args.save_state is not None:
        state_path = Path(args.save_state) if args.save_state else cfg.resolve_path(cfg.alerting.detector_state_path)
        refusal = overwrite_refusal(state_path, cfg, args.force)
        if refusal:
            print(f"{prog}: {refusal}", file=sys.stderr)
            return 1
    existed = _mtime(state_path) if state_path is not None else None
    span = influx_span(args, prog) if args.influx else None
    deadman = not args.no_deadman
    kinds = _kinds_read(args)
    main = _Run(cfg, rules, deadman, keep=not args.no_detections, kinds=kinds)
    alt = _Run(other[0], other[1], deadman, kinds=kinds) if other else None
    readings = [] if getattr(args, "plot", None) else None
    alt_index = {d: i for i, d in enumerate(other[0].device_ids)} if other else {}
    progress = None if args.no_progress or not sys.stderr.isatty() else _Progress(prog.split()[-1])
    flags_parts = []
    if getattr(args, "_flags_input", None) is not None:  # `--flags feed.csv`: the value was the input
        if args.input is not None:
            print(f"{prog}: --flags takes row, onset or span, got {args._flags_input!r}", file=sys.stderr)
            return 1
        args.input = args._flags_input
    if args.flags:
        from detectors.episodes import DistinctTimes

        distinct = DistinctTimes(len(cfg.devices))

    reader = None
    try:
        gen = _stream_chunks(args, cfg, progress, prog, span)
        while True:
            try:
                chunk = next(gen)
            except StopIteration as stop:
                reader = stop.value
                break
            if args.flags:
                chunk = distinct.chunk(chunk)  # rows of a device at one time: one flag each
                flags_parts.append((chunk.input_sensor, chunk.input_ts))
            main.feed(chunk.batch, args.watermark_s)
            if alt is not None:
                alt.feed(_reindex(chunk.batch, main.ids, alt_index), args.watermark_s)
            if readings is not None and len(chunk.batch):
                readings.append(_plotted_readings(cfg, chunk.batch))
    except InfluxUnreachable as exc:
        return report_unreachable(prog, "InfluxDB", cfg.connections.influx.url, exc)
    except FeedError as exc:
        if args.influx:
            print(f"{prog}: {exc}", file=sys.stderr)
            return unreachable_rc
        print(f"{prog}: {args.input}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 1
    finally:
        if progress:
            progress.stop()
    if reader is not None:
        for dev, n in sorted(reader.stats.unknown_devices.items()):
            print(f"{prog}: skipped {n} row(s) of device {dev!r}: not in the inventory", file=sys.stderr)
    if state_path is not None:
        if main.rows == 0:
            where = (f"InfluxDB {cfg.connections.influx.url} ({cfg.connections.influx.database}) from "
                     f"{format_ts(span[0])} to {format_ts(span[1])}" if span else args.input)
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
    if args.no_detections:
        return 0
    all_dets = main.detections()
    dets = all_dets if args.include_clear else _active(all_dets)
    dets = _only(dets, main.ids, only).sorted()
    if args.flags:
        from detectors.episodes import row_flags

        every = _only(all_dets, main.ids, only)  # clear rows tell one rule's episodes apart
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
    if alt is not None:
        out = sys.stderr if args.flags else sys.stdout
        other_all = alt.detections()
        other_dets = other_all if args.include_clear else _active(other_all)
        other_dets = _only(other_dets, alt.ids, only).sorted()
        if args.rows:
            _write_compare(dets, main.ids, other_dets, alt.ids, args, out)
            out.write("\n")
        return _write_alerts(args, (cfg, main, all_dets), (other[0], alt, other_all), only, readings, out, prog)
    return 0


# ----- --compare as alerts, filters, plots ----------------------------------------------------------

def _kinds_read(args) -> set[str] | None:
    """The device kinds whose readings this run reads (None: all of them)."""
    if not args.influx or not args.measurement:
        return None
    from detectors.feed import MEASUREMENT_KINDS

    return {MEASUREMENT_KINDS[m] for m in args.measurement}


@dataclass
class _Only:
    """--device/--site/--rule: the device ids and rule ids kept (None: all)."""

    devices: set[str] | None
    rules: set[str] | None

    def keeps(self, device_id: str, rule_id: str) -> bool:
        return (self.devices is None or device_id in self.devices) and (self.rules is None or rule_id in self.rules)


def _filters(args, cfg, other_cfg) -> _Only:
    """The filters of the arguments, checked against both configs; raises ValueError naming a value that
    matches nothing (with a "did you mean")."""
    from config.errors import did_you_mean

    cfgs = [c for c in (cfg, other_cfg) if c is not None]
    device_ids = {d.id for c in cfgs for d in c.devices}
    sites = {s.id: s for c in cfgs for s in c.sites}
    rule_ids = {r.id for c in cfgs for r in c.rules}
    devices: set[str] | None = None
    for d in getattr(args, "device", None) or []:
        if d not in device_ids:
            raise ValueError(f"--device {d!r}: no such device{did_you_mean(d, device_ids)}")
        devices = (devices or set()) | {d}
    for text in getattr(args, "site", None) or []:
        by_name = {s.name.casefold(): s.id for s in sites.values()}
        site = text if text in sites else by_name.get(text.casefold())
        if site is None:
            raise ValueError(f"--site {text!r}: no site has this id or name{did_you_mean(text, list(sites))}")
        on_site = {d.id for c in cfgs for d in c.devices if d.site == site}
        devices = (devices or set()) | on_site  # --device and --site add up
    for r in getattr(args, "rule", None) or []:
        if r not in rule_ids:
            raise ValueError(f"--rule {r!r}: no such rule{did_you_mean(r, rule_ids)}")
    rules = set(args.rule) if getattr(args, "rule", None) else None
    return _Only(devices, rules)


def _only(dets, ids, only: _Only):
    """The detections of the kept devices and rules."""
    if only.devices is None and only.rules is None:
        return dets
    keep = np.ones(len(dets), bool)
    if only.devices is not None:
        keep &= np.isin(ids[dets.sensor].astype(str), list(only.devices)) if len(dets) else keep
    if only.rules is not None:
        keep &= np.isin(dets.rule_id.astype(str), list(only.rules)) if len(dets) else keep
    return _take(dets, np.flatnonzero(keep))


def _take(d, keep):
    from detectors.batch import Detections

    return Detections(d.sensor[keep], d.ts_ns[keep], d.rule_id[keep], d.category[keep], d.severity[keep],
                      d.value[keep], d.limit[keep], d.score[keep], [d.context[i] for i in keep] if d.context else [])


def _plotted_readings(cfg, batch):
    """(sensor, ts, value) of a chunk: the value a plot shows, leq for noise and p for gas."""
    kinds = np.array([d.kind == "gas" for d in cfg.devices], bool)
    gas = kinds[batch.sensor]
    value = np.where(gas, batch.column("p"), batch.column("leq"))
    return batch.sensor.copy(), batch.ts_ns.copy(), value


def _write_alerts(args, base, other, only: _Only, readings, out, prog: str) -> int:
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


def _plots(args, base, other, changes, readings, names, only: _Only) -> list[Path]:
    from citywatch import whatif

    (cfg, run, dets), (ocfg, orun, odets) = base, other
    changed = [c for c in changes if c.kind != "same"]
    devices = sorted({c.device_id for c in changed})
    if readings:
        sensor = np.concatenate([r[0] for r in readings])
        ts = np.concatenate([r[1] for r in readings])
        val = np.concatenate([r[2] for r in readings])
    else:
        sensor, ts, val = np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0)
    out = []
    for dev in devices:
        mine = [c for c in changes if c.device_id == dev]
        rules = {c.rule_id for c in mine}
        limits = {}
        for side, (c, r, d) in enumerate(((cfg, run, dets), (ocfg, orun, odets))):
            ids = r.ids
            for rule in rules:
                sel = np.flatnonzero((ids[d.sensor].astype(str) == dev) & (d.rule_id.astype(str) == rule)) if len(d) else []
                if len(sel):
                    o = sel[np.argsort(d.ts_ns[sel], kind="stable")]
                    limits[(rule, side)] = (d.ts_ns[o], d.limit[o])
        i = cfg.device_index(dev) if dev in cfg.device_ids else ocfg.device_index(dev)
        device = (cfg if dev in cfg.device_ids else ocfg).devices[i]
        rows = np.flatnonzero(sensor == cfg.device_index(dev)) if dev in cfg.device_ids else np.empty(0, np.intp)
        order = rows[np.argsort(ts[rows], kind="stable")]
        series = whatif.DeviceSeries(dev, device.kind, "p" if device.kind == "gas" else "leq", ts[order], val[order], limits)
        unit = "kPa" if device.kind == "gas" else "dB(A)"
        out.append(whatif.plot_device(series, mine, names, cfg.time.timezone, Path(args.plot) / f"{dev}.png", unit))
    return out


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


def state_summary(run: _Run, path: Path, size: int) -> list[str]:
    """What the saved state learned: readings, devices, span, and the gas profile per device."""
    from detectors.feed import format_ts

    cfg = run.cfg
    kinds = np.array([d.kind for d in cfg.devices], dtype=object)
    seen = run.seen
    n_noise, n_gas = int((seen & (kinds == "noise")).sum()), int((seen & (kinds == "gas")).sum())
    days = (run.last_ns - run.first_ns) / 86400e9
    out = [f"detector state saved to {path} ({size / 2**20:.2f} MiB)",
           f"  learned from {run.rows:,} readings of {int(seen.sum())} device(s) ({n_noise} noise, {n_gas} gas), "
           f"{format_ts(run.first_ns)} to {format_ts(run.last_ns)} ({days:.1f} days)"]
    return out + _profile_lines(run.rules, run.last_ns)


def _profile_lines(rules, at_ns: int) -> list[str]:
    """Per gas device: hours of the week learned (of 168), and whether G-leak/G-rupture can judge it
    at `at_ns` (all six hours around it learned, the curve they compare against)."""
    from detectors.gas import WEEK_HOURS, GasProfile, week_position

    prof = next((c for c in rules.components if isinstance(c, GasProfile)), None)
    if prof is None:
        return ["  gas profile: no enabled rule uses it (G-leak, G-rupture)"]
    cfg = rules.inv.cfg
    ids = [rules.inv.ids[i] for i in prof.group.global_index]
    learned = prof.count_ >= prof.need[:, None]
    hours = learned.sum(axis=1)
    h0, _ = week_position(rules.inv.calendar.local_seconds(np.array([at_ns], np.int64)))
    around = (int(h0[0]) + np.arange(-2, 4)) % WEEK_HOURS
    ready = learned[:, around].all(axis=1)
    weeks = cfg.gas.profile.min_weeks
    out = [f"  gas profile (an hour of the week is learned after gas.profile.min_weeks = {weeks} week(s) of its "
           f"readings): G-leak and G-rupture can judge {int(ready.sum())} of {len(ids)} gas device(s) at "
           f"{_local(cfg, at_ns)} (the six hours around it learned)"]
    for n in sorted(set(hours.tolist()), reverse=True):
        devs = [d for d, h in zip(ids, hours) if h == n]
        names = ", ".join(devs) if len(devs) <= 6 else f"{', '.join(devs[:5])} and {len(devs) - 5} more"
        out.append(f"    {n:3d}/{WEEK_HOURS} hours learned: {len(devs)} device(s): {names}")
    return out


def _local(cfg, ts_ns: int) -> str:
    import datetime as dt
    from zoneinfo import ZoneInfo

    t = dt.datetime.fromtimestamp(ts_ns / 1e9, ZoneInfo(cfg.time.timezone))
    return t.strftime("%Y-%m-%d %H:%M %Z")


def _active(d):
    keep = np.flatnonzero(d.severity > 0)
    from detectors.batch import Detections

    return Detections(d.sensor[keep], d.ts_ns[keep], d.rule_id[keep], d.category[keep], d.severity[keep],
                      d.value[keep], d.limit[keep], d.score[keep], [d.context[i] for i in keep])


def _reindex(batch, ids, index):
    """The batch in another config's sensor indexes (rows of devices it does not have are dropped)."""
    from detectors.batch import ReadingBatch

    target = np.array([index.get(i, -1) for i in ids], np.int32)
    s = target[batch.sensor]
    keep = s >= 0
    return ReadingBatch(s[keep], batch.ts_ns[keep], {k: v[keep] for k, v in batch.values.items()}, batch.quality[keep])


CSV_COLUMNS = ["ts", "device_id", "rule_id", "category", "severity", "value", "limit", "score", "metric", "window",
               "unit", "period", "permit_id", "exam_mode", "context"]


def _records(dets, ids):
    from detectors.batch import SEVERITY_NAMES
    from detectors.feed import format_ts

    for i in range(len(dets)):
        ctx = dets.context[i] if i < len(dets.context) else {}
        # JSON has no NaN: a missing number in the context is null.
        ctx = {k: (None if isinstance(v, float) and v != v else v) for k, v in ctx.items()}
        yield {
            "ts": format_ts(int(dets.ts_ns[i])), "device_id": str(ids[dets.sensor[i]]), "rule_id": str(dets.rule_id[i]),
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

    def keyed(d, ids):
        return {(str(ids[d.sensor[i]]), int(d.ts_ns[i]), str(d.rule_id[i]), int(d.severity[i])): i for i in range(len(d))}

    a, b = keyed(base, base_ids), keyed(other, other_ids)
    added = sorted(set(b) - set(a), key=lambda k: (k[1], k[0], k[2]))
    removed = sorted(set(a) - set(b), key=lambda k: (k[1], k[0], k[2]))
    from detectors.batch import SEVERITY_NAMES
    from detectors.feed import format_ts

    for sign, keys, d in (("+", added, other), ("-", removed, base)):
        src = b if sign == "+" else a
        for k in keys:
            i = src[k]
            out.write(f"{sign} {format_ts(k[1])} {k[0]} {k[2]} {SEVERITY_NAMES[k[3]]} value={_num(d.value[i])} "
                      f"limit={_num(d.limit[i])}\n")
    per_rule = Counter((k[2], "+") for k in added) + Counter((k[2], "-") for k in removed)
    rules = sorted({r for r, _ in per_rule})
    out.write(f"compare {args.config or 'config'} -> {args.compare}: {len(added)} added, {len(removed)} removed, "
              f"{len(set(a) & set(b))} unchanged\n")
    for r in rules:
        out.write(f"  {r}: +{per_rule[(r, '+')]} -{per_rule[(r, '-')]}\n")
