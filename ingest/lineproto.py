"""InfluxDB line protocol for a ReadingBatch: measurements `noise` and `gas_pressure`, inventory tags,
the row's values as float fields plus `flag` as a string field, UTC ns timestamps.

A point's identity is (measurement, tag set, timestamp), so a redelivered reading overwrites itself
instead of adding a point: that is what makes writes idempotent. Tags come only from the inventory
(never seq or hashes: cardinality).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from core import FLAG_CODES, GAS_FIELDS, NOISE_FIELDS, ReadingBatch

if TYPE_CHECKING:
    from config.model import Config

MEASUREMENTS = {"noise": "noise", "gas": "gas_pressure"}
FIELD_ORDER = tuple(dict.fromkeys((*NOISE_FIELDS, *GAS_FIELDS)))


# In measurements, tag keys and values and field keys InfluxDB 1.x reads `\` as "skip the next byte"
# but unescapes only `\,` `\=` `\ `, so a backslash cannot round-trip: it becomes `/` (ids in the
# inventory cannot hold one; only free text such as a district name might).


def escape_measurement(s: str) -> str:
    return _no_newline(s).replace("\\", "/").replace(",", "\\,").replace(" ", "\\ ")


def escape_key(s: str) -> str:
    """Tag keys, tag values and field keys: commas, equals signs and spaces are escaped."""
    return _no_newline(s).replace("\\", "/").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def escape_string_field(s: str) -> str:
    """A string field value, quotes included."""
    return '"' + _no_newline(s).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _no_newline(s: str) -> str:
    # Line protocol has no escape for a newline: it would end the point.
    return str(s).replace("\r", " ").replace("\n", " ")


class LineProtocolEncoder:
    """Encodes batches for one configuration; per-sensor `measurement,tags ` prefixes are built once.

    A batch is joined from one list of pieces, row by row: the sensor's prefix, one `key=value,` piece per
    field column (empty where the row's value is NaN) and a `flag="X" <ts>\\n` tail. Field pieces are the
    texts of each column's distinct values, taken by index; tails are built as one numpy byte array.
    """

    CACHE_MAX = 50_000  # cached pieces and field dicts, all fields together: ~10 MB at most

    def __init__(self, cfg: Config) -> None:
        prefixes = []
        for d in cfg.devices:
            # Every noise and gas device has a site (config.inventory); `citywatch run` refuses generic ones.
            site = cfg.site(d.site) if d.site is not None else None
            tags = {"device_id": d.id, "site_id": d.site or ""}
            if site is not None and site.district:
                tags["district"] = site.district
            if d.kind == "gas" and d.pressure_class:
                tags["pressure_class"] = d.pressure_class
            # Tags sorted by key: InfluxDB's recommended order (it sorts them anyway; saves it the work).
            tag_text = ",".join(f"{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v != "")
            prefixes.append(f"{escape_measurement(MEASUREMENTS[d.kind])},{tag_text} ".encode())
        self._prefix = np.array(prefixes, dtype=object)
        flags = [f"flag={escape_string_field(c)} ".encode() for c in FLAG_CODES]
        if len({len(f) for f in flags}) != 1:
            raise ValueError(f"flag codes must be single characters, got {FLAG_CODES!r}")
        # Row i of the table: the bytes of `flag="X" ` for quality code i.
        self._flag = np.frombuffer(b"".join(flags), np.uint8).reshape(len(flags), -1)
        # field name -> float64 bit pattern -> `key=text,` (shortest round-trip text). Readings repeat a few
        # thousand values (0.1 dB steps), and formatting a float costs ~5x a dict lookup. Keyed by bits, not by
        # float: -0.0 == 0.0 as dict keys, but their texts differ.
        self._text: dict[str, dict[int, bytes]] = {}
        self._cached = 0

    def _pieces(self, name: str, col: npt.NDArray[np.float64]) -> list[bytes] | None:
        """The `name=value,` piece of every row of `col` (b"" where NaN); None when every row is NaN."""
        valid = len(col) - int(np.count_nonzero(np.isnan(col)))
        if valid == 0:
            return None
        # Values by their float64 bit patterns: -0.0 and 0.0 are one dict key as floats but have two texts.
        bits = col.view(np.int64)
        if len(col) < _FEW_ROWS_DISTINCT:
            return self._texts(name, bits, valid)
        # Texts of the distinct values only, spread to the rows by index: ~20 ns a value in a batch of 4,000
        # where a dict lookup per value costs ~50.
        distinct, where = np.unique(bits, return_inverse=True)
        return np.array(self._texts(name, distinct, valid), dtype=object)[where].tolist()  # type: ignore[no-any-return]

    def _texts(self, name: str, bits: npt.NDArray[np.int64], valid: int) -> list[bytes]:
        """The `name=value,` pieces of the values whose bit patterns are `bits`, from a column of `valid` values
        that are not NaN."""
        keys = bits.tolist()
        cache = self._text.get(name)
        if cache is not None:
            try:
                return list(map(cache.__getitem__, keys))
            except KeyError:
                pass
        key = escape_key(name) + "="
        new = set(keys).difference(cache or ())
        if len(new) * 2 > valid:
            # Mostly new values (a continuous quantity): caching them would only churn the cache.
            return _format(key, bits)
        # A field's own dict counts as one entry (~200 bytes), so that many names with few values stay bounded too.
        if self._cached + len(new) + 1 > self.CACHE_MAX:
            # Full: start again, so that memory stays bounded whatever the input.
            self._text.clear()
            self._cached = 0
            cache = None
            new = set(keys)
            if len(new) + 1 > self.CACHE_MAX:
                return _format(key, bits)
        if cache is None:
            cache = self._text[name] = {}
            self._cached += 1
        new_bits = np.array(list(new), np.int64)
        cache.update(zip(new_bits.tolist(), _format(key, new_bits)))
        self._cached += len(new)
        return list(map(cache.__getitem__, keys))

    def encode(self, batch: ReadingBatch) -> bytes:
        """One line per row, newline-terminated, in row order. NaN values are left out of a row's fields.

        Raises IndexError when a row's sensor index is not in the inventory or its quality code not in FLAG_CODES.
        """
        n = len(batch)
        if n == 0:
            return b""
        names = [f for f in FIELD_ORDER if f in batch.values] + sorted(set(batch.values) - set(FIELD_ORDER))
        columns = [p for p in (self._pieces(f, batch.values[f]) for f in names) if p is not None]
        k = len(columns) + 2
        out: list[bytes] = [b""] * (n * k)
        out[0::k] = self._prefix[batch.sensor].tolist()
        for j, pieces in enumerate(columns, 1):
            out[j::k] = pieces
        out[k - 1::k] = self._tails(batch.quality, batch.ts_ns)
        return b"".join(out)

    def _tails(self, quality: npt.NDArray[np.uint8], ts: npt.NDArray[np.int64]) -> list[bytes]:
        """`flag="X" <ts>\\n` of every row."""
        flag = self._flag[quality]
        lo, hi = int(ts.min()), int(ts.max())
        width = len(str(hi))
        if len(ts) < _FEW_ROWS_TAILS or lo < 10 ** (width - 1) or lo < 0:
            # Few rows, or timestamps of different lengths (or negative): not the one-width array below.
            return [b"%s%d\n" % (f, t) for f, t in zip(flag.view(f"S{flag.shape[1]}").ravel().tolist(), ts.tolist())]
        # The digits of every timestamp, 4 at a time from a table: str() of a 19-digit int alone costs ~75 ns,
        # this whole tail ~40 ns a row in a batch of 4,000.
        digits = np.empty((len(ts), 5), np.uint32)
        rest = ts
        for i in range(4, -1, -1):
            rest, low = np.divmod(rest, 10_000)
            digits[:, i] = _DIGITS4[low]
        line = np.empty((len(ts), flag.shape[1] + width + 1), np.uint8)
        line[:, :flag.shape[1]] = flag
        line[:, flag.shape[1]:-1] = digits.view(np.uint8)[:, 20 - width:]
        line[:, -1] = ord("\n")
        return line.view(f"S{line.shape[1]}").ravel().tolist()


# Below these many rows the numpy paths' fixed costs (~10 us a column, ~10 us the tails) outweigh what they save
# per row (measured: equal at ~350 rows for a column of cached values, at ~100 rows for the tails).
_FEW_ROWS_DISTINCT = 256
_FEW_ROWS_TAILS = 128


def _format(key: str, bits: npt.NDArray[np.int64]) -> list[bytes]:
    """`key` + the shortest round-trip text + `,` of each float64 whose bit pattern is in `bits` (b"" for NaN)."""
    # One join, encode and split: ~15 % cheaper than an f-string and an encode per value. A newline is in no
    # escaped key and in no float's text.
    texts = (key + f",\n{key}".join(map(repr, bits.view(np.float64).tolist())) + ",").encode().split(b"\n")
    nan = f"{key}nan,".encode()
    return [b"" if t == nan else t for t in texts] if nan in texts else texts


# Entry i: the 4 ASCII digits of i, zero-padded, as one uint32 (byte order kept: it is only viewed as bytes).
_DIGITS4 = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), np.uint32)


_ENCODERS: dict[int, tuple[object, LineProtocolEncoder]] = {}


def encode(batch: ReadingBatch, cfg: Config) -> bytes:
    """Line protocol for `batch` (see LineProtocolEncoder.encode); the encoder of `cfg` is cached."""
    hit = _ENCODERS.get(id(cfg))
    if hit is None or hit[0] is not cfg:
        if len(_ENCODERS) >= 8:
            _ENCODERS.clear()
        hit = _ENCODERS[id(cfg)] = (cfg, LineProtocolEncoder(cfg))
    return hit[1].encode(batch)
