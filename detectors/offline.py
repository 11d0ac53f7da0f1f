"""The offline run behind `citywatch detect` and `citywatch warmup`: a recorded feed (a CSV/JSONL file,
standard input or InfluxDB history) read in chunks, a config's rule set run over it in event-time steps,
and the detections collected, filtered, scored per row and compared between two configs. The commands
keep argument parsing, printing and exit codes."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol, cast

import numpy as np

from core import Detections, ReadingBatch
from core.timefmt import iso_utc
from detectors.base import Detector
from detectors.feed import INFLUX_WINDOW_S, MEASUREMENT_KINDS, Chunk, FeedReader, FeedStats, influx_records
from detectors.registry import RuleSet


class Progress(Protocol):
    """What the offline run reports its progress to (the commands draw a bar on standard error)."""

    def start(self, total: int, always: bool = False) -> Any: ...

    def update(self, done: int) -> None: ...


class OfflineRun:
    """One config's rule set over the feed, collecting detections keyed by device id.

    keep: hold the detections (False when warming up over weeks: they are not wanted and would cost
    memory). kinds: the device kinds whose readings are read (None: all). hold: ids of devices added
    as generic devices (the deadman does not judge them)."""

    def __init__(self, cfg, rules: RuleSet, deadman: bool, keep: bool = True, kinds: set[str] | None = None,
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
        self.quiet_horizon_ns = _quiet_horizon_ns(rules)
        self.parts: list[Detections] = []  # Detections of each chunk
        self.rows = 0
        self.seen = np.zeros(len(self.ids), bool)
        self.first_ns: int | None = None
        self.last_ns: int | None = None

    def feed(self, batch: ReadingBatch, step_s: int) -> None:
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
        if self.quiet_horizon_ns is not None and len(marks) > 2:
            # Across a gap in the feed, the clock stops at the marks where a silence can still change a level
            # (up to the time-driven rules' longest horizon after the last reading) and at the next readings:
            # two readings a year apart stepped 105,000 marks and kept 5.5 million repeated Offline rows (3.6 GB).
            rows = np.diff(cuts, prepend=0) > 0
            last_ts = ts[np.maximum(cuts - 1, 0)]
            keep = rows | (marks <= last_ts + self.quiet_horizon_ns + step)
            keep[-1] = True
            marks, cuts = marks[keep], cuts[keep]
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

    def _keep(self, dets: Detections) -> None:
        if self.keep:
            self.parts.append(dets)

    def detections(self) -> Detections:
        return Detections.concat(self.parts)


def _quiet_horizon_ns(rules: RuleSet) -> int | None:
    """How long after a device's last reading the time-driven rules can still change its level (the deadman:
    its longest offline limit, then orange after orange_after_s), or None when a time-driven rule does not say."""
    horizon = 0.0
    for r in rules.rules:
        if type(r).advance is Detector.advance:
            continue
        after, orange = getattr(r, "after_s", None), getattr(r, "orange_s", None)
        if after is None or orange is None:
            return None
        horizon = max(horizon, float(np.max(after, initial=0.0)) + float(orange))
    return int(horizon * 1e9)


def run_feed(chunks: Iterator[Chunk], main: OfflineRun, step_s: int, alt: OfflineRun | None = None,
             flags_parts: list | None = None, readings: list | None = None) -> FeedReader | None:
    """Feed every chunk to `main` (and, in its own sensor indexes, to `alt`: the other config of a
    comparison) and return the reader the chunk generator returns (its stats), None if it returns none.

    flags_parts: when given, the chunks' rows are made distinct per device and time (one flag each)
    and their (input_sensor, input_ts) appended. readings: when given, the plotted readings of each
    chunk are appended (see `plotted_readings`: the fields the rules of either config read). Raises what the chunks raise (FeedError,
    InfluxUnreachable, OSError)."""
    distinct = None
    fields = plot_fields(main.cfg, alt.cfg if alt is not None else None) if readings is not None else []
    if flags_parts is not None:
        from detectors.episodes import DistinctTimes

        distinct = DistinctTimes(len(main.cfg.devices))
    alt_index = {d: i for i, d in enumerate(alt.cfg.device_ids)} if alt is not None else {}
    while True:
        try:
            chunk = next(chunks)
        except StopIteration as stop:
            return stop.value
        if distinct is not None and flags_parts is not None:
            chunk = distinct.chunk(chunk)  # rows of a device at one time: one flag each
            flags_parts.append((chunk.input_sensor, chunk.input_ts))
        main.feed(chunk.batch, step_s)
        if alt is not None:
            alt.feed(reindex(chunk.batch, main.ids, alt_index), step_s)
        if readings is not None and len(chunk.batch):
            readings.append(plotted_readings(chunk.batch, fields))


# ----- reading the feed ----------------------------------------------------------------------------

def influx_chunks(cfg, since: int, until: int, measurements: tuple[str, ...] | None = None,
                  query_window_s: float | None = None, chunk_rows: int = 50_000,
                  progress: Progress | None = None):
    """Chunks of the config's InfluxDB history from `since` to `until` (UTC ns); the generator returns
    its FeedReader (for the stats). Raises InfluxUnreachable or FeedError from the queries."""
    reader = FeedReader(cfg, chunk_rows)
    ix = cfg.connections.influx
    recs = influx_records(ix.url, ix.database or "citywatch", iso_utc(since), iso_utc(until),
                          tuple(measurements or ("noise", "gas_pressure")), ix.timeout_s, ix.credentials(),
                          query_window_s or INFLUX_WINDOW_S)
    # The bar follows event time: the records come in time order.
    task = progress.start((until - since) // 1_000_000_000, always=True) if progress else None
    for chunk in reader.rows(recs):
        if task is not None and progress is not None and len(chunk.input_ts):
            progress.update((int(chunk.input_ts.max()) - since) // 1_000_000_000)
        yield chunk
    return reader


def file_chunks(cfg, feed: FeedInput, chunk_rows: int = 50_000, progress: Progress | None = None):
    """Chunks of an opened feed (closed at the end); the generator returns its FeedReader. Raises
    FeedError naming the line of a row that cannot be read."""
    reader = FeedReader(cfg, chunk_rows, **feed.reader_options)
    task = progress.start(feed.size) if progress else None
    try:
        for chunk in reader.read(feed.stream, feed.fmt):
            if task is not None and progress is not None:
                try:
                    progress.update(feed.raw.tell())
                except OSError:  # a position is not always available on text streams; the bar just stalls
                    pass
            yield chunk
    finally:
        feed.close()
    return reader


class FeedOpenError(ValueError):
    """The feed cannot be opened or read as text; the message names it."""


class FeedInput:
    """The feed file or standard input, opened once before the rules are built: its format, whether it
    names devices (a `device_id` column or key) and, for --kind generic, the device ids it holds."""

    def __init__(self, raw, name: str, size: int, fmt: str, head: str, spool=None) -> None:
        self.raw, self.name, self.size, self.fmt = raw, name, size, fmt
        # A TextIOBase is a text stream, though typeshed does not declare it an IO[str].
        self.stream = cast(IO[str], Prefixed(head, raw))
        self.spool = spool
        self.has_device = True
        self.header: list[str] | None = None  # a CSV feed's first line, as cells
        self.reader_options: dict = {}

    @classmethod
    def open(cls, path: str, input_format: str | None = None, spool_stdin: bool = False) -> FeedInput:
        """Open `path` (- for standard input, spooled when `spool_stdin`: it is then read twice) and read
        its first line. input_format: csv or jsonl (None: from the name or the first line). Raises
        FeedOpenError with the reason."""
        from detectors.feed import sniff_format

        if path == "-":
            raw, name, size = sys.stdin, "-", 0
        else:
            try:
                # utf-8-sig: a byte-order mark (spreadsheets write one) is not part of the first column's name.
                raw = open(path, encoding="utf-8-sig", newline="")
            except OSError as exc:
                raise FeedOpenError(f"cannot read {path}: {exc.strerror}") from None
            name, size = path, os.path.getsize(path)
        spool = None
        if name == "-" and spool_stdin:
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
            raise FeedOpenError(f"{name}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        head = head.lstrip("\ufeff") if name == "-" or spool is not None else head
        fmt = input_format or sniff_format(name, head)
        feed = cls(raw, name, size, fmt, head, spool)
        feed.has_device = names_devices(head, fmt)
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


def names_devices(head: str, fmt: str) -> bool:
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


class Prefixed(io.TextIOBase):
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


def feed_devices(cfg, feed: FeedInput, time_column: str = "ts", epoch_unit: str = "ms", tz: str | None = None,
                 generic: bool = False, devices: list[str] | None = None) -> list[str]:
    """Set the feed's reader options (time column, zone, epoch unit, the device of a single series) and
    return the ids of devices to add as generic devices (`generic`: --kind generic). Raises ValueError
    with the reason when the options do not fit the feed."""
    from config.errors import did_you_mean
    from detectors.feed import parse_tz

    opts: dict = {"time_column": time_column or "ts", "epoch_unit": epoch_unit or "ms"}
    if tz:
        try:
            opts["tz"] = parse_tz(tz)
        except ValueError as exc:
            raise ValueError(f"--tz: {exc}") from None
    if feed.header is not None:  # a missing time column is the first thing to say about a header
        from detectors.feed import FeedError

        try:
            FeedReader(cfg, time_column=opts["time_column"], device="-").header(feed.header)
        except FeedError as exc:
            raise ValueError(f"{feed.name}: {exc}") from None
    known = set(cfg.device_ids)
    added: list[str] = []
    if not feed.has_device:
        devs = devices or []
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


def with_generic(cfg, ids: list[str]):
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


def kinds_read(measurements: Iterable[str] | None) -> set[str] | None:
    """The device kinds whose readings InfluxDB `measurements` hold (None: all of them)."""
    if not measurements:
        return None
    return {MEASUREMENT_KINDS[m] for m in measurements}


def rule_fields(rule, kinds: Iterable[str] | None = None) -> list[str]:
    """The reading fields a rule reads on devices of `kinds` (None: every kind it runs on): its own
    `field` / `fields` keys, else what its detector type declares it reads (`Detector.reads`: leq for the
    noise limits, p for the gas rules, batt_v for the battery, ...). An unknown type or bad params: none."""
    from pydantic import ValidationError

    from detectors.registry import REGISTRY, rule_kinds

    cls = REGISTRY.get(rule.type)
    if cls is None:
        return []
    try:
        params = cls.Params.model_validate(rule.params)
    except ValidationError:
        return []  # check_rules reports it
    out: dict[str, None] = {}
    for kind in rule_kinds(rule, cls) if kinds is None else kinds:
        out.update(dict.fromkeys(cls.fields_read(params, kind)))
    return list(out)


def feed_warnings(run: OfflineRun, stats: FeedStats, only: Only) -> list[str]:
    """Warnings about a feed that ran but cannot have been judged as meant: a rule's field the feed has no
    column for (a `Value` column and a rule on `value` would otherwise flag nothing, silently), and epoch
    numbers that look like seconds read as milliseconds."""
    from config.errors import did_you_mean
    from detectors.feed import did_you_mean_any
    from detectors.registry import REGISTRY, rule_kinds

    out: list[str] = []
    cfg = run.cfg
    seen_kinds = {cfg.devices[i].kind for i in np.flatnonzero(run.seen)}
    cols = sorted(stats.columns)
    shown = ", ".join(cols[:12]) + (", ..." if len(cols) > 12 else "") if cols else "none"
    for rule in cfg.rules:
        if not rule.enabled or (only.rules is not None and rule.id not in only.rules):
            continue
        cls = REGISTRY.get(rule.type)
        kinds = [k for k in rule_kinds(rule, cls) if k in seen_kinds] if cls is not None else []
        if cls is None or not kinds:
            continue  # none of the feed's devices is of a kind the rule runs on
        for f in rule_fields(rule, kinds):
            if f in stats.columns:
                continue
            same = did_you_mean_any(f, cols)
            if same is not None:
                hint = (f"; did you mean {same!r}? Rule fields are lower case: rename the column to {f}")
            else:
                hint = did_you_mean(f, cols)
            out.append(f"rule {rule.id!r} reads field {f!r}, which the feed has no column for (columns: {shown})"
                       f"{hint}; {cls.without_field}")
    if stats.small_epoch is not None:
        line, text = stats.small_epoch
        t = iso_utc(int(float(text) * 1_000_000))
        out.append(f"line {line}: time {text} read as epoch milliseconds is {t}; if the times are epoch seconds, "
                   "give --epoch-unit s")
    return out


# ----- filters, per-row scores, the comparison ------------------------------------------------------

@dataclass
class Only:
    """--device/--site/--rule: the device ids and rule ids kept (None: all)."""

    devices: set[str] | None
    rules: set[str] | None

    def keeps(self, device_id: str, rule_id: str) -> bool:
        return (self.devices is None or device_id in self.devices) and (self.rules is None or rule_id in self.rules)


def filters(cfg, other_cfg, devices: list[str] | None = None, sites: list[str] | None = None,
            rules: list[str] | None = None) -> Only:
    """The device, site and rule filters, checked against both configs (`other_cfg` may be None); raises
    ValueError naming a value that matches nothing (with a "did you mean")."""
    from config.errors import did_you_mean

    cfgs = [c for c in (cfg, other_cfg) if c is not None]
    device_ids = {d.id for c in cfgs for d in c.devices}
    by_id = {s.id: s for c in cfgs for s in c.sites}
    rule_ids = {r.id for c in cfgs for r in c.rules}
    kept: set[str] | None = None
    for d in devices or []:
        if d not in device_ids:
            raise ValueError(f"--device {d!r}: no such device{did_you_mean(d, device_ids)}")
        kept = (kept or set()) | {d}
    for text in sites or []:
        by_name = {s.name.casefold(): s.id for s in by_id.values()}
        site = text if text in by_id else by_name.get(text.casefold())
        if site is None:
            raise ValueError(f"--site {text!r}: no site has this id or name{did_you_mean(text, list(by_id))}")
        on_site = {d.id for c in cfgs for d in c.devices if d.site == site}
        kept = (kept or set()) | on_site  # --device and --site add up
    for r in rules or []:
        if r not in rule_ids:
            raise ValueError(f"--rule {r!r}: no such rule{did_you_mean(r, rule_ids)}")
    return Only(kept, set(rules) if rules else None)


def keep_only(dets: Detections, ids: np.ndarray, only: Only) -> Detections:
    """The detections of the kept devices and rules."""
    if only.devices is None and only.rules is None:
        return dets
    keep = np.ones(len(dets), bool)
    if only.devices is not None:
        keep &= np.isin(ids[dets.sensor].astype(str), list(only.devices)) if len(dets) else keep
    if only.rules is not None:
        keep &= np.isin(dets.rule_id.astype(str), list(only.rules)) if len(dets) else keep
    return dets.take(np.flatnonzero(keep))


def active(dets: Detections) -> Detections:
    """The detections of severity above 0 (without the clear rows)."""
    return dets.take(np.flatnonzero(dets.severity > 0))


def reindex(batch: ReadingBatch, ids: np.ndarray, index: dict[str, int]) -> ReadingBatch:
    """The batch in another config's sensor indexes (rows of devices it does not have are dropped)."""
    target = np.array([index.get(i, -1) for i in ids], np.int32)
    s = target[batch.sensor]
    keep = s >= 0
    return ReadingBatch(s[keep], batch.ts_ns[keep], {k: v[keep] for k, v in batch.values.items()}, batch.quality[keep])


def plot_fields(*cfgs) -> list[str]:
    """The reading fields the enabled rules of the configs read (`rule_fields`), and the main values leq
    and p (drawn for a rule that reads no field: the deadman): what `--plot` may draw."""
    out: dict[str, None] = {}
    for cfg in cfgs:
        for rule in cfg.rules if cfg is not None else ():
            if rule.enabled:
                out.update(dict.fromkeys(rule_fields(rule)))
    return list(out) + [f for f in ("leq", "p") if f not in out]


def plotted_readings(batch: ReadingBatch, fields: Iterable[str]) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """(sensor, ts, {field: values}) of a chunk for a plot: the columns of `fields` the chunk has."""
    values = {f: batch.values[f].copy() for f in fields if f in batch.values}
    return batch.sensor.copy(), batch.ts_ns.copy(), values


class RowScores:
    """`--scores`: per input row, each kept rule's score (NaN: the rule did not judge the row). Rules that
    record no per-row scores (deadman, gas_flatline) show the score of their own detection rows.

    run: the run with its rule set's scores traced; every: all its detections (clear rows too)."""

    def __init__(self, run: OfflineRun, every: Detections, only: Only) -> None:
        from detectors.episodes import _keys

        traced = run.rules.traced_scores()
        self.rule_ids = [r for r in traced if only.rules is None or r in only.rules]
        # Per rule: its (sensor, time) keys sorted, with the scores in that order.
        self.tables = {}
        for r in self.rule_ids:
            t = traced[r]
            if t is None:
                sel = np.flatnonzero(every.rule_id.astype(str) == r) if len(every) else np.zeros(0, np.intp)
                t = (every.sensor[sel], every.ts_ns[sel], every.score[sel])
            keys = _keys(t[0], t[1])
            order = np.argsort(keys, kind="stable")
            self.tables[r] = (keys[order], np.asarray(t[2], np.float64)[order])
        self.kept = None
        if only.devices is not None:
            self.kept = np.array([d in only.devices for d in run.ids], bool)

    def columns(self, sensor: np.ndarray, ts: np.ndarray) -> list[np.ndarray]:
        """One column of scores per rule of `rule_ids` for the input rows (sensor -1: unknown device)."""
        from detectors.episodes import _keys

        keys = _keys(np.maximum(sensor, 0), ts)
        ok = sensor >= 0
        if self.kept is not None:
            ok &= self.kept[np.maximum(sensor, 0)]
        cols = []
        for r in self.rule_ids:
            k, v = self.tables[r]
            col = np.full(len(ts), np.nan)
            if len(k):
                i = np.minimum(np.searchsorted(k, keys), len(k) - 1)
                hit = (k[i] == keys) & ok
                col[hit] = v[i[hit]]
            cols.append(col)
        return cols


RowKey = tuple[str, int, str, int]  # (device id, ts ns, rule id, severity)


@dataclass
class RowComparison:
    """Detection rows of two runs keyed by (device, time, rule, severity): `added` only in the other
    run's, `removed` only in the base run's (each sorted by time, device, rule), and the row index of
    each key in its run's detections."""

    added: list[RowKey]
    removed: list[RowKey]
    unchanged: int
    base_index: dict[RowKey, int]
    other_index: dict[RowKey, int]


def compare_rows(base: Detections, base_ids: np.ndarray, other: Detections, other_ids: np.ndarray) -> RowComparison:
    """The rows `other` adds to and removes from `base` (see RowComparison)."""

    def keyed(d: Detections, ids: np.ndarray) -> dict[RowKey, int]:
        return {(str(ids[d.sensor[i]]), int(d.ts_ns[i]), str(d.rule_id[i]), int(d.severity[i])): i for i in range(len(d))}

    a, b = keyed(base, base_ids), keyed(other, other_ids)
    added = sorted(set(b) - set(a), key=lambda k: (k[1], k[0], k[2]))
    removed = sorted(set(a) - set(b), key=lambda k: (k[1], k[0], k[2]))
    return RowComparison(added, removed, len(set(a) & set(b)), a, b)


# ----- what a saved state learned -------------------------------------------------------------------

def state_summary(run: OfflineRun, path: Any, size: int) -> list[str]:
    """What the saved state at `path` (`size` bytes) learned: readings, devices, span, and the gas profile
    per device."""
    cfg = run.cfg
    if run.first_ns is None or run.last_ns is None:  # no readings: the caller writes no state then
        return [f"detector state saved to {path} ({size / 2**20:.2f} MiB), learned from no readings"]
    kinds = np.array([d.kind for d in cfg.devices], dtype=object)
    seen = run.seen
    n_noise, n_gas = int((seen & (kinds == "noise")).sum()), int((seen & (kinds == "gas")).sum())
    days = (run.last_ns - run.first_ns) / 86400e9
    out = [f"detector state saved to {path} ({size / 2**20:.2f} MiB)",
           f"  learned from {run.rows:,} readings of {int(seen.sum())} device(s) ({n_noise} noise, {n_gas} gas), "
           f"{iso_utc(run.first_ns)} to {iso_utc(run.last_ns)} ({days:.1f} days)"]
    return out + profile_lines(run.rules, run.last_ns)


def profile_lines(rules: RuleSet, at_ns: int) -> list[str]:
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

