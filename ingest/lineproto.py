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
    """Encodes batches for one configuration; per-sensor `measurement,tags ` prefixes are built once."""

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
            prefixes.append(f"{escape_measurement(MEASUREMENTS[d.kind])},{tag_text} ")
        self._prefix = np.array(prefixes, dtype=object)
        self._flag = np.array([f"flag={escape_string_field(c)}" for c in FLAG_CODES], dtype=object)
        # float -> its shortest round-trip text. Readings repeat a few thousand values (0.1 dB steps), and
        # formatting a float costs ~5x a dict lookup: the cache halves the time of a batch.
        self._text: dict[float, str] = {}

    CACHE_MAX = 50_000  # ~10 MB at most

    def _floats(self, vals: list[float]) -> list[str]:
        cache = self._text
        try:
            return list(map(cache.__getitem__, vals))
        except KeyError:
            pass
        missing = set(vals).difference(cache)
        if len(missing) * 2 > len(vals):
            # Mostly new values (a continuous quantity): caching them would only churn the cache.
            return list(map(repr, vals))
        if len(cache) + len(missing) > self.CACHE_MAX:
            cache.clear()
            missing = set(vals)
        for v in missing:
            cache[v] = repr(v)
        return list(map(cache.__getitem__, vals))

    def encode(self, batch: ReadingBatch) -> bytes:
        """One line per row, newline-terminated, in row order. NaN values are left out of a row's fields.

        Raises IndexError when a row's sensor index is not in the inventory.
        """
        n = len(batch)
        if n == 0:
            return b""
        names = [f for f in FIELD_ORDER if f in batch.values] + sorted(set(batch.values) - set(FIELD_ORDER))
        cols = [batch.values[f] for f in names]
        # Rows are grouped by which fields they carry, so each group is one format string applied with
        # zip over plain lists: no per-cell Python branching.
        if cols:
            present = np.stack([~np.isnan(c) for c in cols])
            weights = (1 << np.arange(len(cols), dtype=np.int64))[:, None]
            pattern = (present * weights).sum(axis=0)
            groups = np.unique(pattern)
        else:
            pattern = np.zeros(n, np.int64)
            groups = np.zeros(1, np.int64)
        prefix = self._prefix[batch.sensor]
        flag = self._flag[batch.quality]
        ts = batch.ts_ns
        if len(groups) == 1:
            return ("\n".join(self._lines(int(groups[0]), names, cols, prefix, flag, ts, None)) + "\n").encode("utf-8")
        out = np.empty(n, dtype=object)  # every row is in exactly one group
        for g in groups.tolist():
            idx = np.flatnonzero(pattern == g)
            out[idx] = self._lines(g, names, cols, prefix, flag, ts, idx)
        return ("\n".join(out.tolist()) + "\n").encode("utf-8")

    def _lines(self, g: int, names: list[str], cols: list[npt.NDArray[np.float64]], prefix: npt.NDArray[np.object_],
               flag: npt.NDArray[np.object_], ts: npt.NDArray[np.int64], idx: npt.NDArray[np.intp] | None) -> list[str]:
        """The lines (without newlines) of the rows `idx` (None: every row), which carry the fields of group `g`."""
        chosen = [j for j in range(len(names)) if g >> j & 1]
        fmt = "%s" + "".join(escape_key(names[j]).replace("%", "%%") + "=%s," for j in chosen) + "%s %d"
        if idx is None:
            parts = [prefix.tolist(), *(self._floats(cols[j].tolist()) for j in chosen), flag.tolist(), ts.tolist()]
        else:
            parts = [prefix[idx].tolist(), *(self._floats(cols[j][idx].tolist()) for j in chosen), flag[idx].tolist(),
                     ts[idx].tolist()]
        return [fmt % row for row in zip(*parts)]


_ENCODERS: dict[int, tuple[object, LineProtocolEncoder]] = {}


def encode(batch: ReadingBatch, cfg: Config) -> bytes:
    """Line protocol for `batch` (see LineProtocolEncoder.encode); the encoder of `cfg` is cached."""
    hit = _ENCODERS.get(id(cfg))
    if hit is None or hit[0] is not cfg:
        if len(_ENCODERS) >= 8:
            _ENCODERS.clear()
        hit = _ENCODERS[id(cfg)] = (cfg, LineProtocolEncoder(cfg))
    return hit[1].encode(batch)
