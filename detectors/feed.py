"""Recorded feeds for offline detection: CSV or JSONL rows (`ts`, `device_id`, reading fields, optional
`flag`) and InfluxDB v1 history, turned into ReadingBatch chunks in the inventory's sensor indexes.

`ts` is ISO 8601 (a zone is required unless it ends in Z; naive times are rejected rather than guessed)
or epoch milliseconds. Empty cells are missing values (NaN), never zero.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import IO, Iterator

import numpy as np

from config.connections import basic_auth
from detectors.batch import FLAG_CODES, ReadingBatch

RESERVED = {"ts", "device_id", "flag"}


class FeedError(ValueError):
    """A feed row that cannot be read; the message names the line."""


def parse_ts_ns(text) -> int:
    """UTC ns from epoch milliseconds (int or digits) or ISO 8601 with a zone; raises ValueError."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        return int(round(float(text) * 1_000_000))
    s = str(text).strip()
    if s.lstrip("-").isdigit():
        return int(s) * 1_000_000
    t = dt.datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    if t.tzinfo is None:
        raise ValueError(f"timestamp {s!r} has no time zone (add Z or +08:00)")
    delta = t - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def format_ts(ts_ns: int) -> str:
    """ISO 8601 UTC with milliseconds, e.g. 2025-06-01T14:30:00.000Z."""
    t = dt.datetime.fromtimestamp(ts_ns // 1_000_000_000, dt.timezone.utc)
    ms = (ts_ns // 1_000_000) % 1000
    return t.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms:03d}Z"


@dataclass
class FeedStats:
    rows: int = 0
    unknown_devices: dict = field(default_factory=dict)  # device_id -> rows skipped


@dataclass
class Chunk:
    """A batch of feed rows and, per row of the input, its sensor index (-1: unknown device)."""

    batch: ReadingBatch
    input_sensor: np.ndarray
    input_ts: np.ndarray


class FeedReader:
    """Reads a feed in chunks of `chunk_rows` rows for a Config's inventory."""

    def __init__(self, cfg, chunk_rows: int = 50_000) -> None:
        self.index = {d.id: i for i, d in enumerate(cfg.devices)}
        self.chunk_rows = chunk_rows
        self.stats = FeedStats()

    def _chunk(self, sensors: list, ts: list, cols: dict, flags: list, n: int) -> Chunk:
        s = np.array(sensors, np.int32)
        t = np.array(ts, np.int64)
        q = np.array(flags, np.uint8)
        values = {k: np.array(v, np.float64) for k, v in cols.items()}
        keep = s >= 0
        batch = ReadingBatch(s[keep], t[keep], {k: v[keep] for k, v in values.items()}, q[keep])
        return Chunk(batch, s, t)

    def rows(self, records: Iterator[tuple[int, dict]]) -> Iterator[Chunk]:
        """Chunks from (line number, record) pairs."""
        sensors, ts, flags = [], [], []
        cols: dict[str, list] = {}
        ts_cache: dict[str, int] = {}
        n = 0
        for line, rec in records:
            dev = rec.get("device_id")
            if dev is None or dev == "":
                raise FeedError(f"line {line}: device_id is missing")
            raw_ts = rec.get("ts")
            if raw_ts is None or raw_ts == "":
                raise FeedError(f"line {line}: ts is missing")
            # Feeds repeat each timestamp for every device: parse each distinct text once.
            t = ts_cache.get(raw_ts) if isinstance(raw_ts, str) else None
            if t is None:
                try:
                    t = parse_ts_ns(raw_ts)
                except ValueError as exc:
                    raise FeedError(f"line {line}: ts: {exc}") from None
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
                raise FeedError(f"line {line}: flag must be one of {', '.join(FLAG_CODES)} (got {flag!r})")
            for k, v in rec.items():
                if k in RESERVED or k in cols:
                    continue
                cols[k] = [np.nan] * n
            for k, col in cols.items():
                v = rec.get(k)
                if v is None or v == "":
                    col.append(np.nan)
                    continue
                try:
                    col.append(float(v))
                except (TypeError, ValueError):
                    raise FeedError(f"line {line}: {k} must be a number (got {v!r})") from None
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
        """Chunks of a CSV (with header) or JSONL text stream."""
        if fmt == "csv":
            reader = csv.DictReader(stream)
            if reader.fieldnames is None or "ts" not in reader.fieldnames or "device_id" not in reader.fieldnames:
                raise FeedError("line 1: the CSV header must name ts and device_id")
            return self.rows((reader.line_num, rec) for rec in reader)
        return self.rows(_jsonl(stream))


def _jsonl(stream: IO[str]) -> Iterator[tuple[int, dict]]:
    for i, line in enumerate(stream, 1):
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
