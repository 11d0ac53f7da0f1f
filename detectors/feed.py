"""Recorded feeds for offline detection: CSV or JSONL rows (`ts`, `device_id`, reading fields, optional
`flag`) and InfluxDB v1 history, turned into ReadingBatch chunks in the inventory's sensor indexes.

`ts` is ISO 8601 (a zone is required unless it ends in Z; naive times are rejected rather than guessed,
unless the caller names the zone they are in) or an epoch number (milliseconds unless told otherwise).
The time column may have another name (`timestamp`), and a file that is one device's series may have
no `device_id` column. Empty cells are missing values (NaN), never zero; a row with more or fewer cells
than its header is an error naming the line.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import IO

import numpy as np

from config.connections import basic_auth
from core import FLAG_CODES, ReadingBatch
from core.shown import shown

RESERVED = {"ts", "device_id", "flag"}


class FeedError(ValueError):
    """A feed row that cannot be read; the message names the line."""


class NaiveTimestamp(ValueError):
    """An ISO 8601 time without a zone, and no zone was given to read it in."""


# Nanoseconds per unit of an epoch number (`--epoch-unit`).
EPOCH_UNITS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}
_EPOCH_NUMBER = re.compile(r"^-?[0-9]+(\.[0-9]*)?$")
_UTC_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
# Times are kept as int64 ns: refuse any at or beyond ingest's +-TS_MS_LIMIT (9e12 ms, years 1685 to 2255)
# rather than overflow the array (ingest.validation clamps there; a feed row names its line instead).
TS_NS_LIMIT = 9_000_000_000_000 * 1_000_000

def parse_tz(text: str) -> dt.tzinfo:
    """A zone for naive times: an IANA name (`Asia/Shanghai`), `UTC`/`Z`, or a fixed offset `+08:00`,
    `-0530`, `+8`. Raises ValueError naming the accepted forms."""
    t = text.strip()
    if t.upper() in ("Z", "UTC"):
        return dt.UTC
    m = re.fullmatch(r"([+-])([0-9]{1,2})(?::?([0-9]{2}))?", t)
    if m:
        hours, minutes = int(m.group(2)), int(m.group(3) or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(f"offset {t!r} is out of range (at most +/-23:59)")
        sign = -1 if m.group(1) == "-" else 1
        return dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(t)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {t!r} (give an IANA name such as Asia/Shanghai, UTC, or an "
                         "offset such as +08:00)") from None


def parse_ts_ns(text, tz: dt.tzinfo | None = None, epoch_unit: str = "ms") -> int:
    """UTC ns of a time: an epoch number (int, float or its text; in `epoch_unit`, default milliseconds)
    or ISO 8601 (`T` or a space between date and time). A time without a zone is read in `tz`; with no
    `tz` it raises NaiveTimestamp. Raises ValueError for anything else.

    In a zone with daylight saving time, a local time that occurs twice is read as its first occurrence
    (Python's fold=0) and one that never occurs as if the clock had not moved.

    A time at or beyond +-TS_NS_LIMIT (years 1685 to 2255), infinity or NaN raises ValueError; errors show
    at most 80 characters of the value."""
    try:
        ns = _ts_ns(text, tz, EPOCH_UNITS[epoch_unit])
    except OverflowError:  # a number text too large for a float
        ns = TS_NS_LIMIT
    if not -TS_NS_LIMIT < ns < TS_NS_LIMIT:
        raise ValueError(f"time out of range (years 1685 to 2255): {shown(text)}")
    return ns


def _ts_ns(text, tz: dt.tzinfo | None, scale: int) -> int:
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if isinstance(text, float) and not math.isfinite(text):
            raise ValueError(f"not a time: {shown(text)}")
        return int(text) * scale if isinstance(text, int) else int(round(float(text) * scale))
    s = str(text).strip()
    if _EPOCH_NUMBER.match(s):
        whole, _, frac = s.partition(".")
        return int(whole) * scale if not frac.strip("0") else int(round(float(s) * scale))
    try:
        t = dt.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time or epoch number: {shown(s)}") from None
    if t.tzinfo is None:
        if tz is None:
            raise NaiveTimestamp(f"timestamp {shown(s)} has no time zone (add Z or +08:00)")
        t = t.replace(tzinfo=tz)
    delta = t - _UTC_EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000




@dataclass
class FeedStats:
    rows: int = 0
    unknown_devices: dict = field(default_factory=dict)  # device_id -> rows skipped
    columns: set = field(default_factory=set)  # reading fields the feed has (a CSV header, JSONL keys)
    # Epoch numbers read as milliseconds that fall before 1973-03-04 (likely seconds): (line, text) of the first.
    small_epoch: tuple | None = None


@dataclass
class Chunk:
    """A batch of feed rows and, per row of the input, its sensor index (-1: unknown device)."""

    batch: ReadingBatch
    input_sensor: np.ndarray
    input_ts: np.ndarray


# An epoch number below this read as milliseconds is before 1973-03-04: likely seconds (or a row index).
SMALL_EPOCH_MS = 100_000_000_000


class FeedReader:
    """Reads a feed in chunks of `chunk_rows` rows for a Config's inventory.

    time_column: the key or column holding the time (default `ts`). device: the device id of every row
    when the feed has no `device_id` (a file that is one device's series); with a `device_id` column it
    is not used. tz: the zone of times written without one (None: such times are an error).
    epoch_unit: s, ms (default), us or ns, for times written as numbers.
    """

    def __init__(self, cfg, chunk_rows: int = 50_000, time_column: str = "ts", device: str | None = None,
                 tz: dt.tzinfo | None = None, epoch_unit: str = "ms") -> None:
        self.index = {d.id: i for i, d in enumerate(cfg.devices)}
        self.chunk_rows = chunk_rows
        self.stats = FeedStats()
        self.time_column, self.device, self.tz, self.epoch_unit = time_column, device, tz, epoch_unit
        self.reserved = RESERVED | {time_column}

    def _chunk(self, sensors: list, ts: list, cols: dict, flags: list, n: int) -> Chunk:
        s = np.array(sensors, np.int32)
        t = np.array(ts, np.int64)
        q = np.array(flags, np.uint8)
        values = {k: np.array(v, np.float64) for k, v in cols.items()}
        keep = s >= 0
        batch = ReadingBatch(s[keep], t[keep], {k: v[keep] for k, v in values.items()}, q[keep])
        return Chunk(batch, s, t)

    def _ts(self, raw, line: int) -> int:
        try:
            t = parse_ts_ns(raw, self.tz, self.epoch_unit)
        except NaiveTimestamp as exc:
            raise FeedError(f"line {line}: {self.time_column}: {exc}; or give --tz with the zone these times "
                            "are in (e.g. --tz Asia/Shanghai or --tz +08:00)") from None
        except ValueError as exc:
            raise FeedError(f"line {line}: {self.time_column}: {exc}") from None
        if (self.epoch_unit == "ms" and self.stats.small_epoch is None and -SMALL_EPOCH_MS < t // 1_000_000
                < SMALL_EPOCH_MS and _EPOCH_NUMBER.match(str(raw).strip())):
            self.stats.small_epoch = (line, str(raw).strip())
        return t

    def rows(self, records: Iterator[tuple[int, dict]]) -> Iterator[Chunk]:
        """Chunks from (line number, record) pairs."""
        sensors, ts, flags = [], [], []
        cols: dict[str, list] = {}
        ts_cache: dict[str, int] = {}
        n = 0
        time_key, reserved, single = self.time_column, self.reserved, self.device
        for line, rec in records:
            dev = rec.get("device_id")
            if dev is None or dev == "":
                if single is None or "device_id" in rec:
                    raise FeedError(f"line {line}: device_id is missing" + (
                        "" if "device_id" in rec else " (give --device ID for a feed that is one device's series)"))
                dev = single
            raw_ts = rec.get(time_key)
            if raw_ts is None or raw_ts == "":
                raise FeedError(f"line {line}: {time_key} is missing")
            # Feeds repeat each timestamp for every device: parse each distinct text once.
            t = ts_cache.get(raw_ts) if isinstance(raw_ts, str) else None
            if t is None:
                t = self._ts(raw_ts, line)
                if isinstance(raw_ts, str):
                    if len(ts_cache) > 100_000:
                        ts_cache.clear()
                    ts_cache[raw_ts] = t
            sensor = self.index.get(str(dev), -1)
            if sensor < 0:
                self.stats.unknown_devices[str(dev)] = self.stats.unknown_devices.get(str(dev), 0) + 1
            flag = rec.get("flag") or "N"
            code = FLAG_CODES.find(str(flag).strip().upper())
            if code < 0 or len(str(flag).strip()) != 1:
                raise FeedError(f"line {line}: flag must be one of {', '.join(FLAG_CODES)} (got {shown(flag)})")
            for k in rec:
                if k in reserved or k in cols:
                    continue
                cols[k] = [np.nan] * n
                self.stats.columns.add(k)
            for k, col in cols.items():
                v = rec.get(k)
                if v is None or v == "":
                    col.append(np.nan)
                    continue
                try:
                    col.append(float(v))
                except (TypeError, ValueError):
                    raise FeedError(f"line {line}: {k} must be a number (got {shown(v)})") from None
            sensors.append(sensor)
            ts.append(t)
            flags.append(code)
            n += 1
            self.stats.rows += 1
            if n >= self.chunk_rows:
                yield self._chunk(sensors, ts, cols, flags, n)
                sensors, ts, flags, cols, n = [], [], [], {k: [] for k in cols}, 0
        if n:
            yield self._chunk(sensors, ts, cols, flags, n)

    def read(self, stream: IO[str], fmt: str) -> Iterator[Chunk]:
        """Chunks of a CSV (with header) or JSONL text stream. A UTF-8 byte-order mark is skipped.
        Raises FeedError (lazily, as the chunks are read) naming the line of a row that cannot be read."""
        if fmt == "csv":
            return self.rows(self._csv(stream))
        return self.rows(_jsonl(stream))

    def header(self, names: list[str]) -> list[str]:
        """The CSV header's column names (trimmed, without a byte-order mark), checked: raises FeedError."""
        names = [c.strip() for c in names]
        if names:
            names[0] = names[0].lstrip("\ufeff").strip()
        seen: set[str] = set()
        for c in names:
            if c in seen:
                raise FeedError(f"line 1: the CSV header names column {c!r} twice")
            seen.add(c)
        shown = ", ".join(names) if len(names) <= 12 else ", ".join(names[:12]) + ", ..."
        if self.time_column not in seen:
            hint = did_you_mean_any(self.time_column, names, ("ts", "timestamp", "time", "datetime", "date"))
            raise FeedError(f"line 1: the CSV header has no time column {self.time_column!r} (columns: {shown})"
                            + (f"; give --time-column {hint}" if hint else "; give --time-column NAME"))
        if "device_id" not in seen and self.device is None:
            raise FeedError(f"line 1: the CSV header has no device_id column (columns: {shown}); give --device ID "
                            "when the file is one device's series")
        return names

    def _csv(self, stream: IO[str]) -> Iterator[tuple[int, dict]]:
        reader = csv.reader(stream)
        try:
            first = next(reader, None)
        except csv.Error as exc:
            raise FeedError(f"line 1: {exc}") from None
        if first is None:
            raise FeedError("line 1: the file is empty (a CSV feed starts with a header line)")
        names = self.header(first)
        width = len(names)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise FeedError(f"line {reader.line_num}: {exc}") from None
            except UnicodeDecodeError as exc:
                raise _undecodable(exc, reader.line_num + 1) from None
            if len(row) != width:
                if not row:  # a blank line
                    continue
                line = reader.line_num
                if len(row) > width:
                    extra = ", ".join(repr(c) for c in row[width:][:3])
                    raise FeedError(f"line {line}: {len(row)} cells, but the header names {width} columns (extra: "
                                    f"{extra}); a value with a comma must be quoted")
                missing = ", ".join(names[len(row):][:5])
                raise FeedError(f"line {line}: {len(row)} cells, but the header names {width} columns (no cell for "
                                f"{missing}); write an empty cell for a missing value")
            yield reader.line_num, dict(zip(names, row))


def did_you_mean_any(wanted: str, names: list[str], usual: tuple[str, ...] = ()) -> str | None:
    """The column among `names` most likely meant for `wanted`: one equal to it ignoring case, else one of
    the `usual` names for it (in that order), else None."""
    folded = {c.casefold(): c for c in names}
    if wanted.casefold() in folded:
        return folded[wanted.casefold()]
    for u in usual:
        if u in folded:
            return folded[u]
    return None


def _undecodable(exc: UnicodeDecodeError, line: int) -> FeedError:
    """The FeedError for bytes that are not UTF-8, met while reading `line` (the first not yet read).

    A text stream decodes a chunk of bytes at a time, and asks for the next chunk only once what it holds
    has no line end left: the chunk starts inside `line`, and the line ends before the bad byte tell which
    line after it holds that byte."""
    chunk = exc.object if isinstance(exc.object, bytes) else b""
    bad = line + chunk.count(b"\n", 0, exc.start)
    return FeedError(f"line {bad}: not UTF-8 text ({exc.reason})")


def _jsonl(stream: IO[str]) -> Iterator[tuple[int, dict]]:
    lines = iter(stream)
    i = 0
    while True:
        try:
            line = next(lines)
        except StopIteration:
            return
        except UnicodeDecodeError as exc:
            raise _undecodable(exc, i + 1) from None
        i += 1
        if i == 1:
            line = line.lstrip("\ufeff")
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise FeedError(f"line {i}: not JSON: {exc.msg}") from None
        if not isinstance(rec, dict):
            raise FeedError(f"line {i}: must be a JSON object")
        yield i, rec


def sniff_format(name: str, head: str) -> str:
    """csv or jsonl, from the file name, else from the first character."""
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith(".csv"):
        return "csv"
    return "jsonl" if head.lstrip().startswith("{") else "csv"


class InfluxUnreachable(OSError):
    """InfluxDB did not answer (refused, timed out, name not resolved); the message is one line."""


INFLUX_WINDOW_S = 6 * 3600  # history is read this much event time per query (see influx_records)


# InfluxDB measurement -> the device kind whose readings it holds (ingest/lineproto.py writes them).
MEASUREMENT_KINDS = {"noise": "noise", "gas_pressure": "gas"}


def influx_records(url: str, database: str, since: str, until: str, measurements=("noise", "gas_pressure"),
                   timeout_s: float = 30.0, auth: tuple[str, str] | None = None,
                   window_s: float = INFLUX_WINDOW_S) -> Iterator[tuple[int, dict]]:
    """Rows of InfluxDB v1 history (`/query`, InfluxQL) as feed records in event-time order.

    The span is read in windows of `window_s` seconds, one query per window and measurement, so weeks
    of a whole inventory never come back in one response (52 devices x 1-min readings are ~75,000 rows a
    day); a window the server truncates (`max-row-limit`, answered as "partial") is read again in halves.
    Within a window the rows of every device and measurement are merged into time order, so deadman
    watermarks and per-sensor order hold across windows.

    since/until: ISO 8601 times (UTC), until exclusive. Raises InfluxUnreachable (an OSError) when
    InfluxDB cannot be reached and FeedError when it answers with an error.
    """
    t0, t1 = parse_ts_ns(since), parse_ts_ns(until)
    step = max(1, int(window_s * 1e9))
    line = 0
    while t0 < t1:
        end = min(t1, t0 + step)
        for rec in _influx_window(url, database, t0, end, measurements, timeout_s, auth):
            line += 1
            yield line, rec
        t0 = end


def _influx_window(url, database, t0: int, t1: int, measurements, timeout_s, auth) -> list[dict]:
    """The records of [t0, t1) ns of every measurement, in time order (ties: measurement, device)."""
    out: list[tuple[int, int, dict]] = []
    for m in measurements:
        # Times in ns: a window edge is never rounded, so no row is read twice or missed.
        q = f'SELECT * FROM "{m}" WHERE time >= {t0} AND time < {t1} GROUP BY "device_id"'
        body = _influx_query(url, database, q, timeout_s, auth)
        for result in body.get("results", []):
            if "error" in result:
                raise FeedError(f"InfluxDB: {result['error']}")
            for series in result.get("series", []) or []:
                if series.get("partial") and t1 - t0 > 1_000_000_000:
                    mid = t0 + (t1 - t0) // 2
                    return (_influx_window(url, database, t0, mid, measurements, timeout_s, auth)
                            + _influx_window(url, database, mid, t1, measurements, timeout_s, auth))
                if series.get("partial"):
                    raise FeedError("InfluxDB truncated one second of history (raise its [http] max-row-limit)")
                dev = (series.get("tags") or {}).get("device_id")
                cols = series["columns"]
                for row in series["values"]:
                    rec = {k: v for k, v in zip(cols, row) if v is not None}
                    rec["ts"] = rec.pop("time")
                    if dev is not None:
                        rec["device_id"] = dev
                    for tag in ("site_id", "district", "pressure_class"):
                        rec.pop(tag, None)
                    out.append((rec["ts"], len(out), rec))
    out.sort(key=lambda r: (r[0], r[1]))
    return [r[2] for r in out]


def _influx_query(url: str, database: str, q: str, timeout_s: float, auth) -> dict:
    params = {"db": database, "q": q, "epoch": "ms"}
    # Basic auth in a header: `u`/`p` in the URL would put the password in logs and error texts.
    req = urllib.request.Request(url.rstrip("/") + "/query?" + urllib.parse.urlencode(params), headers=basic_auth(auth))
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as exc:  # it answered: a bad query, database or credentials
        try:
            detail = json.loads(exc.read() or b"{}").get("error") or exc.reason
        except (ValueError, AttributeError, OSError):
            detail = exc.reason
        raise FeedError(f"InfluxDB at {url} answered HTTP {exc.code}: {detail}") from None
    except urllib.error.URLError as exc:
        reason = getattr(exc.reason, "strerror", None) or str(exc.reason)
        raise InfluxUnreachable(f"cannot reach InfluxDB at {url}: {reason}") from None
    except (TimeoutError, ConnectionError) as exc:
        raise InfluxUnreachable(f"cannot reach InfluxDB at {url}: {exc.strerror or 'timed out'}") from None
    except ValueError as exc:
        raise FeedError(f"InfluxDB at {url} answered something that is not JSON ({exc})") from None
