"""Row validation of decoded readings (domain.md §4): types, physical ranges, noise ordering, units,
timestamps (future skew, back-fill age, seconds-vs-milliseconds), data flags and duplicates.

Rows of one payload (or, through `reason_codes`, of many messages) are checked together with numpy: a
60-sample batch is one pass per check. Small payloads take an equivalent row-by-row path. A row that
fails gets the reason of the first check it fails, in the order of `CHECK_ORDER`.
"""

from __future__ import annotations

import math
import reprlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, cast, overload

import numpy as np
import numpy.typing as npt

from core import FLAG_CODES, GAS_FIELDS, NOISE_FIELDS
from core.timefmt import iso_utc_ms

if TYPE_CHECKING:
    from config.ingest_settings import IngestSettings
    from config.inventory import Device

# A column of Rows: a plain list while rows are few, a numpy array once converted (Rows.to_arrays).
IntColumn: TypeAlias = "list[int] | npt.NDArray[np.int64]"
FloatColumn: TypeAlias = "list[float] | npt.NDArray[np.float64]"
FlagColumn: TypeAlias = "list[int] | npt.NDArray[np.uint8]"
# (reason, detail, field) of a row that failed while being extracted.
Failure: TypeAlias = "tuple[str, str, str | None]"

FIELDS = {"noise": NOISE_FIELDS, "gas": GAS_FIELDS}

# Valid ranges of domain.md §4, in the stored unit. Gas `p` is per device: -5 kPa .. 1.1 x full scale.
RANGES: dict[str, tuple[float, float]] = {
    "leq": (25.0, 140.0), "lmax": (25.0, 140.0), "lmin": (25.0, 140.0), "la": (25.0, 140.0),
    "l5": (25.0, 140.0), "l10": (25.0, 140.0), "l50": (25.0, 140.0), "l90": (25.0, 140.0), "l95": (25.0, 140.0),
    "sd": (0.0, 30.0), "wind_ms": (0.0, 60.0), "rain": (0.0, 200.0), "cal_dev": (-3.0, 3.0),
    "t_dev": (-20.0, 70.0), "batt_v": (2.5, 3.7), "rsrp": (-140.0, -44.0), "status_bits": (0.0, 2.0**32 - 1),
}
P_MIN_KPA = -5.0
P_MAX_OF_FULL_SCALE = 1.1
# A pressure outside the valid range but within this wider band is a sensor fault reading (open loop,
# over range): domain.md §4 says it is stored with quality invalid (flag T) for the device-fault rule,
# never raised as a process alarm. Beyond the band it is refused as out_of_range.
FAULT_BAND_BELOW_OF_FULL_SCALE = 0.25
FAULT_BAND_ABOVE_OF_FULL_SCALE = 2.0
FLAG_T = FLAG_CODES.index("T")
# No reading is older than this (UTC 2001-01-01): catches devices whose clock reset to 2000-01-01
# whatever the clock mode.
TS_FLOOR_MS = 978_307_200_000
# With `clock: event` (simulation, replay of recorded feeds) the receive time says nothing about the
# event time: only the floor and the seconds-vs-milliseconds check apply.
EVENT_CLOCK_SPAN_MS = 100 * 365 * 86_400_000

# A row needs at least one of these (noise: the interval Leq or the instantaneous LA).
REQUIRED_ANY = {"noise": ("leq", "la"), "gas": ("p",)}

# Percentile levels in non-decreasing order of value: L95 <= L90 <= L50 <= L10 <= L5 (LN is the level
# exceeded N % of the time), bounded by Lmin and Lmax; Leq lies between Lmin and Lmax.
NOISE_CHAIN = ("lmin", "l95", "l90", "l50", "l10", "l5", "lmax")
# Values are sent to 0.1 dB; a rounding tie must not fail the ordering.
ORDER_TOLERANCE_DB = 1e-6

# Pressure units a payload may name (`units: {"p": "MPa"}`) and the factor to kPa gauge.
PRESSURE_UNITS = {"kPa": 1.0, "kpa": 1.0, "MPa": 1000.0, "mpa": 1000.0, "Pa": 0.001, "pa": 0.001}

# A timestamp below this is not plausible as epoch milliseconds (it would be before 1973-03-03) but is
# as epoch seconds: the device sent seconds.
SECONDS_BELOW = 100_000_000_000
# Largest |ts| in ms that converts to int64 nanoseconds without overflow (year 2262).
TS_MS_LIMIT = 9_000_000_000_000

# A refused cell (a value, ts, values or the sample itself) nesting arrays or objects deeper than this is
# refused as `too_deep` without being shown or copied whole: a 600-deep value once broke the building of its
# dead-letter record (RecursionError) and with it the valid rows of the same payload.
MAX_ROW_DEPTH = 16

CHECK_ORDER = (
    "too_deep", "bad_schema", "missing_field", "not_a_number", "non_finite", "bad_flag", "ts_seconds_not_ms", "ts_too_old",
    "ts_future", "out_of_range", "noise_order", "hj212_flag", "duplicate_row",
)

_NAN = float("nan")


@dataclass
class Limits:
    """Timestamp limits (ms) and refused flag codes, from the `ingest` settings."""

    future_skew_ms: int
    backfill_max_age_ms: int
    refuse_flags: frozenset[int] = frozenset()

    @staticmethod
    def from_settings(settings: IngestSettings) -> Limits:
        if getattr(settings, "clock", "wall") == "event":
            return Limits(EVENT_CLOCK_SPAN_MS, EVENT_CLOCK_SPAN_MS,
                          frozenset(FLAG_CODES.index(f) for f in getattr(settings, "refuse_flags", ())))
        return Limits(
            int(settings.future_skew_s * 1000), int(settings.backfill_max_age_s * 1000),
            frozenset(FLAG_CODES.index(f) for f in getattr(settings, "refuse_flags", ())),
        )


@dataclass
class Rows:
    """Rows of one payload being assembled and checked, column-wise.

    ts_ms:   event time, UTC ms (0 where the row already failed)
    values:  field -> column (NaN = not given); only fields some row gave
    quality: HJ 212 flag code per row
    failed:  row index -> (reason, detail, field) for rows that failed while being extracted
    raw:     the original row objects (for dead-letter records)
    Columns are plain lists until `check_rows` turns them into numpy arrays (int64, float64, uint8):
    single-reading messages are checked on the lists, which is ~30x faster than numpy on 1-element arrays.
    """

    ts_ms: IntColumn
    values: dict[str, FloatColumn]
    quality: FlagColumn
    failed: dict[int, Failure] = field(default_factory=dict)
    raw: list[Any] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ts_ms)

    def to_arrays(self) -> None:
        if type(self.ts_ms) is list:
            self.ts_ms = np.array(self.ts_ms, dtype=np.int64)
            self.values = {k: np.array(c, dtype=np.float64) for k, c in self.values.items()}
            self.quality = np.array(self.quality, dtype=np.uint8)

    def arrays(self) -> tuple[npt.NDArray[np.int64], dict[str, npt.NDArray[np.float64]], npt.NDArray[np.uint8]]:
        """(ts_ms, values, quality) as numpy arrays, converting the lists first (`to_arrays`); the arrays
        are the Rows' own, so writing to them writes to the rows."""
        self.to_arrays()
        # to_arrays converted every column together: none is a list any more.
        return (cast("npt.NDArray[np.int64]", self.ts_ms), cast("dict[str, npt.NDArray[np.float64]]", self.values),
                cast("npt.NDArray[np.uint8]", self.quality))


def extract_rows(samples: list[Any], kind: str, columnar: bool | None = None) -> Rows:
    """Pull `{ts, values}` objects into columns. Cells of the wrong type fail their row here.

    Unknown value names are ignored (devices add telemetry citywatch does not store); `null` means
    "not given". `flag` must be one HJ 212 data-flag letter. Never raises.
    columnar: try the column-at-a-time path (default: for more than SCALAR_MAX_ROWS samples); it
    gives up on anything unusual, and the cell-by-cell path below decides.
    """
    if columnar or (columnar is None and len(samples) > SCALAR_MAX_ROWS):
        rows = _extract_columnar(samples, kind)
        if rows is not None:
            return rows
    known = FIELDS[kind]
    n = len(samples)
    ts = [0] * n
    qual = [0] * n
    cols: dict[str, FloatColumn] = {}
    failed: dict[int, Failure] = {}
    for i, s in enumerate(samples):
        if type(s) is not dict:
            failed[i] = _deep("sample", s) or (
                "bad_schema", f"sample must be an object with ts and values, got {_typename(s)}", "sample")
            continue
        t: Any = s.get("ts")  # a JSON cell of any type: checked by its exact type below
        tt = type(t)
        if tt is int:
            if -TS_MS_LIMIT < t < TS_MS_LIMIT:
                ts[i] = t
            else:
                # Far outside any plausible epoch: leave it to the timestamp checks as "far future/past".
                ts[i] = TS_MS_LIMIT if t > 0 else -TS_MS_LIMIT
        elif tt is float:
            if t - t != 0:
                failed[i] = ("non_finite", f"ts is {t}", "ts")
                continue
            ts[i] = max(-TS_MS_LIMIT, min(TS_MS_LIMIT, round(t)))
        elif t is None:
            failed[i] = ("missing_field", "sample has no ts", "ts")
            continue
        else:
            failed[i] = _deep("ts", t) or ("not_a_number", f"ts must be epoch milliseconds, got {_show(t)}", "ts")
            continue
        vals = s.get("values")
        if type(vals) is not dict:
            if vals is None:
                failed[i] = ("missing_field", "sample has no values", "values")
            else:
                failed[i] = _deep("values", vals) or (
                    "bad_schema", f"values must be an object, got {_typename(vals)}", "values")
            continue
        for k, v in vals.items():
            tv = type(v)
            if tv is float or tv is int:
                if k not in known:
                    if k == "flag":  # a number is no flag letter: never skipped like an unknown value name
                        failed[i] = ("bad_flag", f"flag must be one of {', '.join(FLAG_CODES)}, got {_show(v)}", k)
                        break
                    continue
                if tv is int:
                    if not -1e300 < v < 1e300:
                        failed[i] = ("out_of_range", f"{k}={v} is far outside any valid range", k)
                        break
                    v = float(v)
                elif v - v != 0:
                    failed[i] = ("non_finite", f"{k} is {v}", k)
                    break
                col = cols.get(k)
                if col is None:
                    col = cols[k] = [_NAN] * n
                col[i] = v
            elif v is None:
                continue
            elif k == "flag":
                if tv is str and len(v) == 1 and v in FLAG_CODES:
                    qual[i] = FLAG_CODES.index(v)
                else:
                    failed[i] = _deep(k, v) or (
                        "bad_flag", f"flag must be one of {', '.join(FLAG_CODES)}, got {_show(v)}", k)
                    break
            elif k not in known:
                continue
            else:
                failed[i] = _deep(k, v) or ("not_a_number", f"{k} must be a number, got {_show(v)}", k)
                break
    return Rows(ts, cols, qual, failed, samples)


_NUMBER_TYPES = frozenset((float, int))
FLAG_INDEX = {c: i for i, c in enumerate(FLAG_CODES)}  # flag letter -> quality code


def _extract_columnar(samples: list[Any], kind: str) -> Rows | None:
    """Column-at-a-time extraction for the common case: every sample a well-typed `{ts, values}` with
    the same value names, numbers finite, ts integers. Returns None for anything else, and the caller
    takes the per-cell path, which names each failure; so both paths yield the same Rows."""
    try:
        ts_list = [s["ts"] for s in samples]
        vals = [s["values"] for s in samples]
        first = vals[0]
        names = list(first)
        for v in vals:
            if type(v) is not dict or len(v) != len(names):
                return None
        if set(map(type, ts_list)) != {int}:
            return None
        ts = np.clip(np.array(ts_list, dtype=np.int64), -TS_MS_LIMIT, TS_MS_LIMIT)
        known = FIELDS[kind]
        cols: dict[str, FloatColumn] = {}
        quality: npt.NDArray[np.uint8] | None = None
        for k in names:
            col = [v[k] for v in vals]  # KeyError when a sample lacks a name the first one has
            if k in known:
                if not set(map(type, col)) <= _NUMBER_TYPES:
                    return None
                arr = np.array(col, dtype=np.float64)
                if not np.isfinite(arr).all() or (np.abs(arr) >= 1e300).any():
                    return None
                cols[k] = arr
            elif k == "flag":
                try:
                    quality = np.array([FLAG_INDEX[c] for c in col], dtype=np.uint8)
                except (KeyError, TypeError):
                    return None
    except (KeyError, TypeError, OverflowError, ValueError, IndexError):
        return None
    if quality is None:
        quality = np.zeros(len(samples), np.uint8)
    return Rows(ts, cols, quality, {}, samples)


def rows_from_values(ts_ms: int, values: dict[str, float], quality: int, raw: object) -> Rows:
    """A single row (HJ 212 frames) in the same form as `extract_rows` gives."""
    failed: dict[int, Failure] = {}
    for k, v in values.items():
        if not math.isfinite(v):
            failed[0] = ("non_finite", f"{k} is {v}", k)
            break
    return Rows([ts_ms], {k: [float(v)] for k, v in values.items()}, [quality], failed, [raw])


# Payloads up to this many rows are checked row by row on plain lists; larger ones with numpy. Both
# paths give the same result (tests/unit/ingest/test_validation.py checks that with hypothesis).
SCALAR_MAX_ROWS = 16


def check_rows(
    rows: Rows, kind: str, device: Device, recv_ms: int, limits: Limits, units: dict[str, str] | None = None,
    vectorized: bool | None = None,
) -> tuple[npt.NDArray[np.bool_] | None, list[tuple[int, str, str]]]:
    """Convert units and check every row.

    device:     the inventory Device (gas: full_scale_kpa bounds `p`)
    recv_ms:    receive time, UTC ms (the reference of the timestamp limits)
    units:      field -> unit from the payload; only `p` may name one (PRESSURE_UNITS)
    vectorized: force the numpy (True) or the row-by-row (False) path; default by size
    Returns (keep, rejects): keep is None when every row passed (the columns may still be lists), else
    a bool array (and the columns are numpy arrays); rejects lists (row index, reason, detail) in row
    order. Converts rows.values in place (MPa -> kPa). Never raises: a bad unit rejects every row as
    `bad_unit`.
    """
    n = len(rows)
    if units:
        for name, unit in units.items():
            factor = PRESSURE_UNITS.get(unit) if name == "p" else None
            if factor is None:
                if name in FIELDS[kind] or name == "p":
                    rows.to_arrays()
                    why = f"unit {unit!r} for {name} is not supported (p: kPa, MPa, Pa; others: the schema's unit)"
                    return np.zeros(n, bool), [(i, "bad_unit", why) for i in range(n)]
                continue
            col = rows.values.get("p")
            if factor != 1.0 and col is not None:
                rows.values["p"] = [v * factor for v in col] if isinstance(col, list) else col * factor
    p_hi = p_hi_of(device) if kind == "gas" else 0.0
    if vectorized is None:
        vectorized = n > SCALAR_MAX_ROWS
    found: npt.NDArray[np.int8] | list[int]
    if vectorized:
        rows.to_arrays()
        found = _codes_vectorized(rows, kind, p_hi, recv_ms, limits)
        if not found.any():
            return None, []
    else:
        found = _codes_scalar(rows, kind, p_hi, recv_ms, limits)
        if not any(found):
            return None, []
        rows.to_arrays()
    code = np.array(found, dtype=np.int8)
    keep = code == 0
    rejects = []
    for i in np.flatnonzero(~keep).tolist():
        reason = CHECK_ORDER[code[i] - 1]
        detail = rows.failed[i][1] if i in rows.failed else _explain(reason, i, rows, kind, device, recv_ms, limits)
        rejects.append((i, reason, detail))
    return keep, rejects


def _code(reason: str) -> int:
    return CHECK_ORDER.index(reason) + 1


_C = {r: _code(r) for r in CHECK_ORDER}
HJ212_FLAG = _C["hj212_flag"]


def flag_only(refused: np.ndarray, keep: np.ndarray, ts_ms: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Of the rows refused as `hj212_flag` (ascending indices), those whose only problem is their flag.

    Every check before `hj212_flag` in CHECK_ORDER passed for them; the one after it, `duplicate_row`,
    was never asked: a refused row sharing its (message, ts) with a kept row or with an earlier refused
    row is left out, so one payload never gives the detectors two readings of a device at one time.
    keep: bool per row (kept rows); groups: per-row message number, or None for one message.
    The decoder hands them to the detectors with their flag and no values (`Decoded.flagged`): a device
    flagging D is still reporting, and N-data times how long flags other than N last.
    """
    if len(refused) == 0:
        return refused
    key = np.asarray(ts_ms, np.int64)
    if groups is not None:
        key = (np.asarray(groups, np.int64) << 45) | (key + TS_MS_LIMIT)
    k = key[refused]
    _, first = np.unique(k, return_index=True)
    first.sort()
    cand = refused[first]
    if keep.any():
        cand = cand[~np.isin(key[cand], key[keep])]
    return cand


def _codes_scalar(rows: Rows, kind: str, p_hi: float, recv_ms: int, limits: Limits) -> list[int]:
    """Per-row reason codes (0 = ok), one row at a time: the reference the numpy path must match."""
    n = len(rows)
    code = [0] * n
    for i, failure in rows.failed.items():
        code[i] = _C[failure[0]]
    lo_ms = max(recv_ms - limits.backfill_max_age_ms, TS_FLOOR_MS)
    hi_ms = recv_ms + limits.future_skew_ms
    required = REQUIRED_ANY[kind]
    names = list(rows.values)
    cols = [rows.values[k] for k in names]
    refuse = limits.refuse_flags
    seen: set[int] = set()
    for i in range(n):
        if code[i]:
            continue
        row = {}
        for k, col in zip(names, cols):
            v = col[i]
            if v == v:
                row[k] = v
        ts = rows.ts_ms[i]
        c = 0
        if not any(k in row for k in required):
            c = _C["missing_field"]
        elif ts < SECONDS_BELOW and lo_ms <= ts * 1000 <= hi_ms:
            c = _C["ts_seconds_not_ms"]
        elif ts < lo_ms:
            c = _C["ts_too_old"]
        elif ts > hi_ms:
            c = _C["ts_future"]
        elif any(not (_p_band(p_hi)[0] <= v <= _p_band(p_hi)[1] if k == "p" else RANGES[k][0] <= v <= RANGES[k][1])
                 for k, v in row.items()):
            c = _C["out_of_range"]
        elif kind == "noise" and _row_disorder(row):
            c = _C["noise_order"]
        elif rows.quality[i] in refuse:
            c = _C["hj212_flag"]
        elif ts in seen:
            c = _C["duplicate_row"]
        else:
            seen.add(ts)
            p = row.get("p")
            if p is not None and not (P_MIN_KPA <= p <= p_hi) and rows.quality[i] == 0:
                rows.quality[i] = FLAG_T
        code[i] = c
    return code


def p_hi_of(device: Device) -> float:
    """The top of a gas device's valid pressure range, kPa: P_MAX_OF_FULL_SCALE x its full scale."""
    full_scale = device.full_scale_kpa
    # config.inventory.Device requires full_scale_kpa of every gas device; only gas rows ask for it.
    assert full_scale is not None, f"gas device {device.id} has no full_scale_kpa"
    return P_MAX_OF_FULL_SCALE * full_scale


@overload
def _p_band(p_hi: float) -> tuple[float, float]: ...
@overload
def _p_band(p_hi: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]: ...
def _p_band(
    p_hi: float | npt.NDArray[np.float64],
) -> tuple[float | npt.NDArray[np.float64], float | npt.NDArray[np.float64]]:
    """(low, high) kPa beyond which a pressure is refused; inside it but outside the valid range it is a
    sensor-fault reading kept with flag T. `p_hi` is 1.1 x full scale (a scalar or per-row array)."""
    full_scale = p_hi / P_MAX_OF_FULL_SCALE
    return P_MIN_KPA - FAULT_BAND_BELOW_OF_FULL_SCALE * full_scale, FAULT_BAND_ABOVE_OF_FULL_SCALE * full_scale


def _row_disorder(row: dict[str, float]) -> bool:
    running: float | None = None
    for name in NOISE_CHAIN:
        v = row.get(name)
        if v is None:
            continue
        if running is not None and v < running - ORDER_TOLERANCE_DB:
            return True
        running = v if running is None else max(running, v)
    leq = row.get("leq")
    if leq is not None:
        if "lmin" in row and leq < row["lmin"] - ORDER_TOLERANCE_DB:
            return True
        if "lmax" in row and leq > row["lmax"] + ORDER_TOLERANCE_DB:
            return True
    return False


def _codes_vectorized(rows: Rows, kind: str, p_hi: float | npt.NDArray[np.float64],
                      recv_ms: int | npt.NDArray[np.int64], limits: Limits,
                      groups: npt.NDArray[np.int64] | None = None) -> npt.NDArray[np.int8]:
    """Per-row reason codes (0 = ok), every row at once.

    p_hi, recv_ms: scalars, or per-row arrays when rows of several messages are checked together
    groups:        per-row message number (duplicates count within a message only), or None for one message
    """
    n = len(rows)
    code = np.zeros(n, np.int8)
    for i, failure in rows.failed.items():
        code[i] = _C[failure[0]]
    ts, vals, quality = rows.arrays()

    def mark(reason: str, bad: npt.NDArray[np.bool_]) -> None:
        code[bad & (code == 0)] = _C[reason]

    have = np.zeros(n, bool)
    for name in REQUIRED_ANY[kind]:
        col = vals.get(name)
        if col is not None:
            have |= ~np.isnan(col)
    mark("missing_field", ~have)

    lo_ms = np.maximum(recv_ms - limits.backfill_max_age_ms, TS_FLOOR_MS)
    hi_ms = recv_ms + limits.future_skew_ms
    as_ms = ts * 1000
    mark("ts_seconds_not_ms", (ts < SECONDS_BELOW) & (as_ms >= lo_ms) & (as_ms <= hi_ms))
    mark("ts_too_old", ts < lo_ms)
    mark("ts_future", ts > hi_ms)

    oor = np.zeros(n, bool)
    for name, col in vals.items():
        lo, hi = _p_band(p_hi) if name == "p" else RANGES[name]
        oor |= (col < lo) | (col > hi)
    mark("out_of_range", oor)

    if kind == "noise":
        mark("noise_order", _noise_disorder(vals, n))

    if limits.refuse_flags:
        lut = np.zeros(256, bool)
        lut[list(limits.refuse_flags)] = True
        mark("hj212_flag", lut[quality])

    p = vals.get("p")
    if p is not None:
        fault = (code == 0) & ((p < P_MIN_KPA) | (p > p_hi)) & (quality == 0)
        quality[fault] = FLAG_T

    ok = np.flatnonzero(code == 0)
    if len(ok) > 1:
        key = ts[ok]
        if groups is not None:
            # (message, ts) packed in one int64: ts is clamped to +-TS_MS_LIMIT < 2**44.
            key = (groups[ok].astype(np.int64) << 45) | (key + TS_MS_LIMIT)
        _, first = np.unique(key, return_index=True)
        if len(first) < len(ok):
            dup = np.ones(len(ok), bool)
            dup[first] = False
            code[ok[dup]] = _C["duplicate_row"]
    return code


def reason_codes(rows: Rows, kind: str, p_hi: float | npt.NDArray[np.float64], recv_ms: npt.NDArray[np.int64],
                 limits: Limits, groups: npt.NDArray[np.int64]) -> npt.NDArray[np.int8]:
    """Reason codes (0 = ok, else 1 + index in CHECK_ORDER) of rows from several messages of one kind,
    with per-row full-scale bound `p_hi` (kPa), receive time `recv_ms` and message number `groups`.
    The same checks as `check_rows`, per message; units must already be converted."""
    rows.to_arrays()
    return _codes_vectorized(rows, kind, p_hi, recv_ms, limits, groups)


def explain(reason: str, i: int, rows: Rows, kind: str, device: Device, recv_ms: int, limits: Limits) -> str:
    """The detail text of row i's reject (the extraction detail when it failed there)."""
    if i in rows.failed:
        return rows.failed[i][1]
    return _explain(reason, i, rows, kind, device, recv_ms, limits)


def _noise_disorder(vals: dict[str, npt.NDArray[np.float64]], n: int) -> npt.NDArray[np.bool_]:
    """Rows where the levels present break lmin <= l95 <= .. <= l5 <= lmax or lmin <= leq <= lmax."""
    bad = np.zeros(n, bool)
    running: npt.NDArray[np.float64] | None = None
    for name in NOISE_CHAIN:
        col = vals.get(name)
        if col is None:
            continue
        if running is not None:
            bad |= col < running - ORDER_TOLERANCE_DB
            running = np.fmax(running, col)
        else:
            running = col
    leq = vals.get("leq")
    if leq is not None:
        lmin, lmax = vals.get("lmin"), vals.get("lmax")
        if lmin is not None:
            bad |= leq < lmin - ORDER_TOLERANCE_DB
        if lmax is not None:
            bad |= leq > lmax + ORDER_TOLERANCE_DB
    return bad


def _explain(reason: str, i: int, rows: Rows, kind: str, device: Device, recv_ms: int, limits: Limits) -> str:
    """The detail text of a rejected row (computed only for rejects, so the hot path stays vectorized)."""
    ts = int(rows.ts_ms[i])
    raw = rows.raw[i] if i < len(rows.raw) else None
    sent: Any = raw.get("ts") if type(raw) is dict else None  # the ts cell as sent: any JSON type
    if type(sent) in (int, float) and sent - sent == 0 and sent != ts:
        # Clamped for int64 ns or rounded: name the value as sent, and the date it would be.
        ts = sent if type(sent) is int else int(sent) if abs(sent) < 1e30 else sent
    # Canonical field order, so the text does not depend on the order the payload named them in.
    row = {k: float(rows.values[k][i]) for k in FIELDS[kind] if k in rows.values and not math.isnan(rows.values[k][i])}
    if reason == "missing_field":
        return f"a {kind} row needs {' or '.join(REQUIRED_ANY[kind])}"
    if reason == "ts_seconds_not_ms":
        return f"ts {ts} looks like epoch seconds ({_iso(ts * 1000)}); expected milliseconds"
    if reason == "ts_too_old" and ts < TS_FLOOR_MS:
        return f"ts {ts} ({_iso(ts)}) is before 2001-01-01: the device clock was reset"
    if reason == "ts_too_old":
        return (f"ts {ts} ({_iso(ts)}) is older than the back-fill limit of "
                f"{limits.backfill_max_age_ms // 1000} s before receipt ({_iso(recv_ms)})")
    if reason == "ts_future":
        return (f"ts {ts} ({_iso(ts)}) is more than {limits.future_skew_ms // 1000} s after receipt "
                f"({_iso(recv_ms)})")
    if reason == "out_of_range":
        out = []
        for name, v in row.items():
            lo, hi = _p_band(p_hi_of(device)) if name == "p" else RANGES[name]
            if not lo <= v <= hi:
                unit = " kPa" if name == "p" else ""
                out.append(f"{name}={v:g}{unit} outside [{lo:g}, {hi:g}]")
        return "; ".join(out)
    if reason == "noise_order":
        shown = ", ".join(f"{k}={row[k]:g}" for k in (*NOISE_CHAIN, "leq") if k in row)
        return f"levels must satisfy lmin <= l95 <= l90 <= l50 <= l10 <= l5 <= lmax and lmin <= leq <= lmax: {shown}"
    if reason == "hj212_flag":
        return f"data flag {FLAG_CODES[int(rows.quality[i])]} is refused (ingest.refuse_flags)"
    if reason == "duplicate_row":
        return f"another row of this payload has the same ts {ts} ({_iso(ts)})"
    return reason


def _iso(ms: int) -> str:
    try:
        return iso_utc_ms(ms, trim=False)
    except (OverflowError, OSError, ValueError):
        return "out of calendar range"


def _typename(v: object) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(v), "a number"
    )


# Bounded in depth and breadth: a refused cell is shown in its detail, whatever it holds.
_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 4, 4, 40, 40


def _show(v: object) -> str:
    text = _REPR.repr(v)
    return text if len(text) <= 40 else text[:37] + "..."


_CONTAINERS = (list, dict)


def _deep(name: str, v: object) -> tuple[str, str, str] | None:
    """A `too_deep` failure for cell `name` when `v` nests containers more than MAX_ROW_DEPTH levels, else None.

    Iterative, so that no depth can raise RecursionError; it stops at the first path that is too deep."""
    if type(v) not in _CONTAINERS:
        return None
    stack: list[tuple[Any, int]] = [(v, 1)]
    while stack:
        x, depth = stack.pop()
        if depth > MAX_ROW_DEPTH:
            return ("too_deep", f"{name} nests arrays or objects more than {MAX_ROW_DEPTH} levels deep", name)
        children = x.values() if type(x) is dict else x
        stack.extend((c, depth + 1) for c in children if type(c) in _CONTAINERS)
    return None


def field_of(reason: str, i: int, rows: Rows, kind: str, device: Device) -> str | None:
    """The field a refused row is refused for (the cell that failed extraction, else from the check), for
    the dead-letter record's list of refused rows. Computed only for rejects."""
    if i in rows.failed:
        return rows.failed[i][2]
    if reason in ("ts_seconds_not_ms", "ts_too_old", "ts_future", "duplicate_row"):
        return "ts"
    if reason == "missing_field":
        return "|".join(REQUIRED_ANY[kind])
    if reason == "hj212_flag":
        return "flag"
    if reason == "noise_order":
        return "levels"
    if reason == "bad_unit":
        return "units"
    if reason == "out_of_range":
        out = []
        for name in FIELDS[kind]:  # the detail's order: a chunk's columns are in first-seen order
            col = rows.values.get(name)
            if col is None:
                continue
            v = float(col[i])
            if v != v:
                continue
            lo, hi = _p_band(p_hi_of(device)) if name == "p" else RANGES[name]
            if not lo <= v <= hi:
                out.append(name)
        return ",".join(out) or None
    return None
