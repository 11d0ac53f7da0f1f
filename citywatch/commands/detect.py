"""`citywatch detect`: run the rules of a config over a recorded feed (CSV/JSONL file, stdin or InfluxDB
history) and write the detections; `--flags` writes one 0/1 per input row (`--scores`: with each rule's
score); `--compare OTHER_CONFIG` prints what another config would add or remove (the dry run before a
threshold change); `--save-state` writes the detectors' state afterwards, so a service starts with what
the history taught them. Anyone's CSV: `--time-column`, `--device` for one series, `--tz`,
`--kind generic` for devices outside the inventory, `--rules FILE` with the shipped config for the rest."""

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
from typing import TYPE_CHECKING, Any

import numpy as np

from citywatch.errors import EXIT_UNREACHABLE, report_unreachable
from config import ConfigError, load_config

if TYPE_CHECKING:
    from detectors.episodes import FlagMode

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
                   "alerts change to DIR (readings, old and new limit, alerts before and after)")
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


class _Run:
    """One config's rule set over the feed, collecting detections keyed by device id."""

    def __init__(self, cfg, rules, deadman: bool, keep: bool = True, kinds: set[str] | None = None,
                 hold: set[str] | None = None) -> None:
        self.cfg, self.rules, self.deadman, self.keep = cfg, rules, deadman, keep
        self.ids = np.array(cfg.device_ids, dtype=object)
        # Devices outside the kinds read (`--influx --measurement noise`): the deadman does not judge
        # them, since their readings were never asked for (their silence here is ours, not theirs).
        # Nor devices added by --kind generic (`hold`): they declare no report interval to judge by.
        self.unjudged = None
        if kinds is not None or hold:
            self.unjudged = np.array([(kinds is not None and d.kind not in kinds) or d.id in (hold or ())
                                      for d in cfg.devices], bool)
            if not self.unjudged.any():
                self.unjudged = None
        self.parts: list[Any] = []  # Detections of each chunk
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
        judged = self.rules.time_driven()
        if self.unjudged is not None:
            judged &= ~self.unjudged
        whole = not judged[batch.sensor].any()
        if whole:
            # No clock-driven rule judges these devices (a generic series): every other rule gives the same
            # detections for the chunk in one call, and the clock still advances mark by mark for the rest.
            self._keep(self.rules.process(batch))
            cuts = np.zeros_like(cuts)
        start = 0
        for mark, cut in zip(marks, cuts):
            if cut > start:
                self._keep(self.rules.process(batch.take(order[start:cut])))
            self._keep(self.rules.advance(int(min(mark, ts[-1])), hold=self.unjudged))
            start = cut
        if whole and len(marks):
            start = len(ts)  # processed above, and the clock has reached the chunk's last time
        if start < len(ts):
            # No mark: every row of the chunk has one time, on a step boundary (a one-row feed at 00:00:00, a
            # chunk of one instant of a large inventory). These rows were once dropped without a word.
            if not whole:
                self._keep(self.rules.process(batch.take(order[start:])))
            self._keep(self.rules.advance(int(ts[-1]), hold=self.unjudged))

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
        raise SystemExit(f"{prog}: --since/--until: {exc} (ISO 8601 with a zone, or a duration such as 28d)") from None
    if since >= until:
        raise SystemExit(f"{prog}: --since must be before --until")
    return since, until


def _stream_chunks(args, cfg, progress, prog="citywatch detect", span=None, feed=None):
    from detectors.feed import INFLUX_WINDOW_S, FeedReader, format_ts, influx_records

    if args.influx:
        reader = FeedReader(cfg, args.chunk_rows)
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
    feed = feed or _FeedInput.open(args, prog)
    reader = FeedReader(cfg, args.chunk_rows, **feed.reader_options)
    task = progress.start(feed.size) if progress else None
    try:
        for chunk in reader.read(feed.stream, feed.fmt):
            if task is not None:
                try:
                    progress.update(feed.raw.tell())
                except OSError:  # a position is not always available on text streams; the bar just stalls
                    pass
            yield chunk
    finally:
        feed.close()
    return reader


class _FeedInput:
    """The feed file or standard input, opened once before the rules are built: its format, whether it
    names devices (a `device_id` column or key) and, for --kind generic, the device ids it holds.

    Raises SystemExit (via `open`) with the reason when the input cannot be opened or its options
    contradict it."""

    def __init__(self, raw, name: str, size: int, fmt: str, head: str, spool=None) -> None:
        self.raw, self.name, self.size, self.fmt = raw, name, size, fmt
        self.stream = _Prefixed(head, raw)
        self.spool = spool
        self.has_device = True
        self.header: list[str] | None = None  # a CSV feed's first line, as cells
        self.reader_options: dict = {}

    @classmethod
    def open(cls, args, prog: str) -> _FeedInput:
        from detectors.feed import sniff_format

        if args.input is None:
            raise SystemExit(f"{prog}: give a feed file, - for standard input, or --influx")
        if args.input == "-":
            raw, name, size = sys.stdin, "-", 0
        else:
            try:
                # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the first column's name.
                raw = open(args.input, encoding="utf-8-sig", newline="")
            except OSError as exc:
                raise SystemExit(f"{prog}: cannot read {args.input}: {exc.strerror}") from None
            name, size = args.input, os.path.getsize(args.input)
        spool = None
        if name == "-" and getattr(args, "kind", None):
            # Device ids are needed before the rules are built: standard input is read twice, from a spool.
            import shutil
            import tempfile

            spool = tempfile.SpooledTemporaryFile(max_size=64 * 2**20, mode="w+", encoding="utf-8", newline="")
            shutil.copyfileobj(raw, spool)
            spool.seek(0)
            raw = spool
        try:
            head = raw.readline()
        except UnicodeDecodeError as exc:
            raise SystemExit(f"{prog}: {name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        head = head.lstrip("\ufeff") if name == "-" or spool is not None else head
        fmt = args.input_format or sniff_format(name, head)
        feed = cls(raw, name, size, fmt, head, spool)
        feed.has_device = _names_devices(head, fmt)
        if fmt == "csv":
            try:
                feed.header = next(csv.reader([head]), [])
            except csv.Error:
                pass
        return feed

    def device_ids(self) -> list[str]:
        """The distinct device ids of the feed, in order of appearance; the stream is rewound after (a
        file is read again, standard input was spooled)."""
        from detectors.feed import _jsonl

        ids: dict[str, None] = {}
        pos = self.raw.tell()
        try:
            self.raw.seek(0)
            if self.fmt == "csv":
                rows = csv.reader(self.raw)
                header = [c.strip().lstrip("\ufeff") for c in next(rows, [])]
                col = header.index("device_id") if "device_id" in header else -1
                for row in rows:
                    if 0 <= col < len(row) and row[col] != "":
                        ids.setdefault(row[col], None)
            else:
                for _, rec in _jsonl(self.raw):
                    dev = rec.get("device_id")
                    if dev not in (None, ""):
                        ids.setdefault(str(dev), None)
        except (csv.Error, ValueError):
            pass  # the reader reports the line properly when it gets there
        finally:
            self.raw.seek(pos)
        return list(ids)

    def close(self) -> None:
        if self.name != "-" or self.spool is not None:
            self.raw.close()


def _names_devices(head: str, fmt: str) -> bool:
    """Whether a feed's first line (the CSV header or the first JSONL record) has a device_id; a line
    that cannot be read says yes (the reader then reports it with its line number)."""
    line = head.lstrip("\ufeff")
    if fmt == "csv":
        try:
            names = next(csv.reader([line]), [])
        except csv.Error:
            return True
        return "device_id" in [c.strip() for c in names] or not names
    try:
        rec = json.loads(line)
    except ValueError:
        return True
    return not isinstance(rec, dict) or "device_id" in rec


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
        line, self.head = self.head, ""
        if line.endswith("\n"):  # a whole line pushed back
            return line
        return line + self.rest.readline()

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
    return execute(args)


def execute(args, prog: str = "citywatch detect", unreachable_rc: int = EXIT_UNREACHABLE, summary=None) -> int:
    """The detect run behind `citywatch detect` and `citywatch warmup`.

    InfluxDB unreachable: the one line of citywatch.errors and exit EXIT_UNREACHABLE (2), as every command.
    unreachable_rc: exit code when InfluxDB answers an error; summary: where the --save-state report goes
    (default standard error: standard output may hold detections)."""
    from detectors.feed import FeedError, InfluxUnreachable, format_ts
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
        feed = _FeedInput.open(args, prog)
        try:
            added = _feed_devices(args, cfg, feed)
            cfg = _with_generic(cfg, added)
        except ValueError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            return _closing(feed, 1)
    try:
        rules = RuleSet.from_config(cfg)
        only = _filters(args, cfg, other[0] if other else None)
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
    kinds = _kinds_read(args)
    main = _Run(cfg, rules, deadman, keep=not args.no_detections, kinds=kinds, hold=set(added))
    if scores:
        rules.trace_scores()
    alt = _Run(other[0], other[1], deadman, kinds=kinds) if other else None
    readings: list[Any] | None = [] if getattr(args, "plot", None) else None
    alt_index = {d: i for i, d in enumerate(other[0].device_ids)} if other else {}
    progress = None if args.no_progress or not sys.stderr.isatty() else _Progress(prog.split()[-1])
    flags_parts = []
    if args.flags:
        from detectors.episodes import DistinctTimes

        distinct = DistinctTimes(len(cfg.devices))

    reader = None
    try:
        gen = _stream_chunks(args, cfg, progress, prog, span, feed)
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
        hint = "" if args.influx else " (--kind generic reads such devices as generic devices)"
        for dev, n in sorted(reader.stats.unknown_devices.items()):
            print(f"{prog}: skipped {n} row(s) of device {dev!r}: not in the inventory{hint}", file=sys.stderr)
        for line in feed_warnings(main, reader.stats, only, args):
            print(f"{prog}: warning: {line}", file=sys.stderr)
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
    from detectors.autolimit import resolved_lines

    for line in resolved_lines(main.rules):  # rules with `limit: auto`: the limits they resolved to
        print(f"{prog}: {line}", file=sys.stderr)
    if args.no_detections:
        return 0
    all_dets = main.detections()
    dets = all_dets if args.include_clear else _active(all_dets)
    dets = _only(dets, main.ids, only).sorted()
    if args.flags:
        from detectors.episodes import row_flags

        every = _only(all_dets, main.ids, only)  # clear rows tell one rule's episodes apart
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
        other_dets = other_all if args.include_clear else _active(other_all)
        other_dets = _only(other_dets, alt.ids, only).sorted()
        if args.rows:
            _write_compare(dets, main.ids, other_dets, alt.ids, args, out)
            out.write("\n")
        return _write_alerts(args, (cfg, main, all_dets), (other[0], alt, other_all), only, readings, out, prog)
    return 0


# ----- anyone's CSV: devices of a feed, generic devices, warnings, scores ----------------------------

def _closing(feed, rc: int) -> int:
    if feed is not None:
        feed.close()
    return rc


def _feed_devices(args, cfg, feed: _FeedInput) -> list[str]:
    """Set the feed's reader options (time column, zone, epoch unit, the device of a single series) and
    return the ids of devices to add as generic devices (--kind generic). Raises ValueError with the
    reason when the options do not fit the feed."""
    from config.errors import did_you_mean
    from detectors.feed import parse_tz

    opts: dict = {"time_column": getattr(args, "time_column", "ts") or "ts",
                  "epoch_unit": getattr(args, "epoch_unit", "ms") or "ms"}
    if getattr(args, "tz", None):
        try:
            opts["tz"] = parse_tz(args.tz)
        except ValueError as exc:
            raise ValueError(f"--tz: {exc}") from None
    if feed.header is not None:  # a missing time column is the first thing to say about a header
        from detectors.feed import FeedError, FeedReader

        try:
            FeedReader(cfg, time_column=opts["time_column"], device="-").header(feed.header)
        except FeedError as exc:
            raise ValueError(f"{feed.name}: {exc}") from None
    generic = getattr(args, "kind", None) == "generic"
    known = set(cfg.device_ids)
    added: list[str] = []
    if not feed.has_device:
        devs = args.device or []
        if len(devs) != 1:
            raise ValueError(f"{feed.name}: the feed has no device_id column; give --device ID once for a file that "
                             "is one device's series" + (f" (got {len(devs)})" if devs else ""))
        opts["device"] = devs[0]
        if devs[0] not in known:
            if not generic:
                raise ValueError(f"--device {devs[0]!r}: no such device in the inventory{did_you_mean(devs[0], known)}; "
                                 "give --kind generic to read the series as a generic device")
            added = [devs[0]]
    elif generic:
        added = [d for d in feed.device_ids() if d not in known]
    feed.reader_options = opts
    return added


def _with_generic(cfg, ids: list[str]):
    """A copy of the Config with a generic device (no site) for each id appended to the inventory; the
    loaded Config is shared (config.loader's cache) and stays as it was. Raises ValueError for an id that
    cannot be a device id."""
    if not ids:
        return cfg
    from pydantic import ValidationError

    from config.inventory import Device

    devices = list(cfg.devices)
    for d in ids:
        try:
            # 86400 s: the longest interval a device may declare; the deadman does not judge these anyway.
            devices.append(Device(id=d, kind="generic", report_interval_s=86400))
        except ValidationError:
            raise ValueError(f"device {d!r} of the feed cannot be a device id (letters, digits, '_' and '-', "
                             "at most 64, starting with a letter or digit)") from None
    out = cfg.model_copy(update={"devices": devices})
    out.model_post_init(None)  # the id and index lookups, for the new inventory
    return out


def _rule_fields(rule) -> list[str]:
    """The reading fields a rule names in its own keys (`field`, `fields`); domain rules name none."""
    params = rule.params
    out = [params["field"]] if isinstance(params.get("field"), str) else []
    fields = params.get("fields")
    if isinstance(fields, list):
        out += [f for f in fields if isinstance(f, str)]
    return out


def feed_warnings(run: _Run, stats, only: _Only, args) -> list[str]:
    """Warnings about a feed that ran but cannot have been judged as meant: a rule's field the feed has no
    column for (a `Value` column and a rule on `value` would otherwise flag nothing, silently), and epoch
    numbers that look like seconds read as milliseconds."""
    from config.errors import did_you_mean
    from detectors.feed import did_you_mean_any, format_ts
    from detectors.registry import REGISTRY, _rule_kinds

    out: list[str] = []
    cfg = run.cfg
    seen_kinds = {cfg.devices[i].kind for i in np.flatnonzero(run.seen)}
    cols = sorted(stats.columns)
    shown = ", ".join(cols[:12]) + (", ..." if len(cols) > 12 else "") if cols else "none"
    for rule in cfg.rules:
        if not rule.enabled or (only.rules is not None and rule.id not in only.rules):
            continue
        cls = REGISTRY.get(rule.type)
        if cls is None or not seen_kinds & set(_rule_kinds(rule, cls)):
            continue  # none of the feed's devices is of a kind the rule runs on
        for f in _rule_fields(rule):
            if f in stats.columns:
                continue
            same = did_you_mean_any(f, cols)
            if same is not None:
                hint = (f"; did you mean {same!r}? Rule fields are lower case: rename the column to {f}")
            else:
                hint = did_you_mean(f, cols)
            out.append(f"rule {rule.id!r} reads field {f!r}, which the feed has no column for (columns: {shown})"
                       f"{hint}; it judged nothing")
    if stats.small_epoch is not None:
        line, text = stats.small_epoch
        t = format_ts(int(float(text) * 1_000_000))
        out.append(f"line {line}: time {text} read as epoch milliseconds is {t}; if the times are epoch seconds, "
                   "give --epoch-unit s")
    return out


def write_scores(run: _Run, every, only: _Only, flags_parts: list, mode: FlagMode, out) -> None:
    """`--scores`: CSV with a header `flag,RULE,...` and per input row its flag (as --flags MODE) and each
    kept rule's score (empty: not judged). Rules that record no per-row scores (deadman, gas_flatline)
    show the score of their own detection rows."""
    from detectors.episodes import _keys, row_flags

    traced = run.rules.traced_scores()
    rule_ids = [r for r in traced if only.rules is None or r in only.rules]
    # Per rule: its (sensor, time) keys sorted, with the scores in that order.
    tables = {}
    for r in rule_ids:
        t = traced[r]
        if t is None:
            sel = np.flatnonzero(every.rule_id.astype(str) == r) if len(every) else np.zeros(0, np.intp)
            t = (every.sensor[sel], every.ts_ns[sel], every.score[sel])
        keys = _keys(t[0], t[1])
        order = np.argsort(keys, kind="stable")
        tables[r] = (keys[order], np.asarray(t[2], np.float64)[order])
    kept = None
    if only.devices is not None:
        kept = np.array([d in only.devices for d in run.ids], bool)
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["flag", *rule_ids])
    for sensor, ts in flags_parts:
        flags = row_flags(every, sensor, ts, mode)
        keys = _keys(np.maximum(sensor, 0), ts)
        ok = sensor >= 0
        if kept is not None:
            ok &= kept[np.maximum(sensor, 0)]
        cols = []
        for r in rule_ids:
            k, v = tables[r]
            col = np.full(len(ts), np.nan)
            if len(k):
                i = np.minimum(np.searchsorted(k, keys), len(k) - 1)
                hit = (k[i] == keys) & ok
                col[hit] = v[i[hit]]
            cols.append(col)
        for j in range(len(ts)):
            w.writerow(["1" if flags[j] else "0", *[_score_cell(c[j]) for c in cols]])


def _score_cell(x: float) -> str:
    return "" if x != x else f"{x:.6g}"


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
    if run.first_ns is None or run.last_ns is None:  # no readings: the caller writes no state then
        return [f"detector state saved to {path} ({size / 2**20:.2f} MiB), learned from no readings"]
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
