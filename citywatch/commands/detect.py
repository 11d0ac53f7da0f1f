"""`citywatch detect`: run the rules of a config over a recorded feed (CSV/JSONL file, stdin or InfluxDB
history) and write the detections; `--flags` writes one 0/1 per input row; `--compare OTHER_CONFIG`
prints what another config would add or remove (the dry run before a threshold change)."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections import Counter

import numpy as np

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
    p.add_argument("--flags", action="store_true", help="write one 0/1 per input row to standard output (1: the row "
                   "raised a detection of severity blue or above)")
    p.add_argument("--compare", metavar="OTHER_CONFIG", default=None,
                   help="also run OTHER_CONFIG and print the detections it would add (+) or remove (-)")
    p.add_argument("--include-clear", action="store_true", help="also write severity-0 clear rows")
    p.add_argument("--watermark-s", type=int, default=300,
                   help="advance the deadman every this many seconds of event time (default 300)")
    p.add_argument("--no-deadman", action="store_true", help="do not advance time-driven rules (deadman)")
    p.add_argument("--influx", action="store_true", help="read history from the config's InfluxDB (v1 /query)")
    p.add_argument("--since", help="with --influx: start time, ISO 8601 (inclusive)")
    p.add_argument("--until", help="with --influx: end time, ISO 8601 (exclusive)")
    p.add_argument("--measurement", action="append", choices=["noise", "gas_pressure"],
                   help="with --influx: measurement(s) to read (default both)")
    p.add_argument("--chunk-rows", type=int, default=50_000, help="rows per batch (default 50000)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run)


def _load(directory):
    from detectors.registry import RuleSet

    cfg = load_config(directory)
    return cfg, RuleSet.from_config(cfg)


class _Run:
    """One config's rule set over the feed, collecting detections keyed by device id."""

    def __init__(self, cfg, rules, deadman: bool) -> None:
        self.cfg, self.rules, self.deadman = cfg, rules, deadman
        self.ids = np.array(cfg.device_ids, dtype=object)
        self.parts = []

    def feed(self, batch, step_s: int) -> None:
        """Process a chunk; with the deadman on, in slices of `step_s` event time, each followed by an
        advance to its watermark (so silence is judged as it would have been live)."""
        if not self.deadman or len(batch) == 0:
            self.parts.append(self.rules.process(batch))
            return
        order = np.argsort(batch.ts_ns, kind="stable")
        ts = batch.ts_ns[order]
        step = step_s * 1_000_000_000
        marks = np.arange((ts[0] // step + 1) * step, ts[-1] + step, step)
        cuts = np.searchsorted(ts, marks, side="right")
        start = 0
        for mark, cut in zip(marks, cuts):
            if cut > start:
                self.parts.append(self.rules.process(batch.take(order[start:cut])))
            self.parts.append(self.rules.advance(int(min(mark, ts[-1]))))
            start = cut

    def detections(self):
        from detectors.batch import Detections

        return Detections.concat(self.parts)


def _stream_chunks(args, cfg, progress):
    from detectors.feed import FeedReader, influx_records, sniff_format

    reader = FeedReader(cfg, args.chunk_rows)
    if args.influx:
        if not (args.since and args.until):
            raise SystemExit("citywatch detect: --influx needs --since and --until")
        ix = cfg.connections.influx
        auth = None
        if ix.username_env and ix.password_env:
            auth = (os.environ.get(ix.username_env, ""), os.environ.get(ix.password_env, ""))
        recs = influx_records(ix.url, ix.database or "citywatch", args.since, args.until,
                              tuple(args.measurement or ("noise", "gas_pressure")), ix.timeout_s, auth)
        yield from reader.rows(recs)
        return reader
    if args.input is None:
        raise SystemExit("citywatch detect: give a feed file, - for standard input, or --influx")
    if args.input == "-":
        text = sys.stdin
        name, size = "-", 0
    else:
        try:
            text = open(args.input, encoding="utf-8", newline="")
        except OSError as exc:
            raise SystemExit(f"citywatch detect: cannot read {args.input}: {exc.strerror}")
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
    """A rich progress bar on standard error for large inputs."""

    def __init__(self) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("detect"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                            TimeRemainingColumn(), transient=True, console=_stderr_console())
        self.task = None

    def start(self, total: int):
        if total < PROGRESS_MIN_BYTES:
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
    try:
        cfg, rules = _load(args.config)
        other = _load(args.compare) if args.compare else None
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    deadman = not args.no_deadman
    main = _Run(cfg, rules, deadman)
    alt = _Run(other[0], other[1], deadman) if other else None
    alt_index = {d: i for i, d in enumerate(other[0].device_ids)} if other else {}
    progress = None if args.no_progress or not sys.stderr.isatty() else _Progress()
    flags_parts = []
    from detectors.feed import FeedError

    reader = None
    try:
        gen = _stream_chunks(args, cfg, progress)
        while True:
            try:
                chunk = next(gen)
            except StopIteration as stop:
                reader = stop.value
                break
            main.feed(chunk.batch, args.watermark_s)
            if alt is not None:
                alt.feed(_reindex(chunk.batch, main.ids, alt_index), args.watermark_s)
            flags_parts.append((chunk.input_sensor, chunk.input_ts))
    except FeedError as exc:
        print(f"citywatch detect: {args.input or 'influx'}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"citywatch detect: {exc}", file=sys.stderr)
        return 1
    finally:
        if progress:
            progress.stop()
    if reader is not None:
        for dev, n in sorted(reader.stats.unknown_devices.items()):
            print(f"citywatch detect: skipped {n} row(s) of device {dev!r}: not in the inventory", file=sys.stderr)
    dets = main.detections()
    if not args.include_clear:
        dets = _active(dets)
    dets = dets.sorted()
    if args.flags:
        _write_flags(dets, flags_parts, sys.stdout)
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
        other_dets = alt.detections()
        if not args.include_clear:
            other_dets = _active(other_dets)
        _write_compare(dets, main.ids, other_dets.sorted(), alt.ids, args, sys.stderr if args.flags else sys.stdout)
    return 0


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


def _flag_keys(sensor, ts_ns):
    return sensor.astype(np.int64) * (1 << 42) + (ts_ns // 1_000_000)


def _write_flags(dets, parts, out) -> None:
    active = dets.severity > 0
    hit = _flag_keys(dets.sensor[active], dets.ts_ns[active])
    for sensor, ts in parts:
        keys = _flag_keys(np.maximum(sensor, 0), ts)
        flags = np.isin(keys, hit) & (sensor >= 0)
        out.write("".join("1\n" if f else "0\n" for f in flags))


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
