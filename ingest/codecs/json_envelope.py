"""The JSON batch envelope of domain.md §3, and the ThingsBoard `{ts, values}` bodies it builds on.

Accepted shapes (all decode to an `Envelope` whose `samples` are the raw `{ts, values}` objects):
  envelope          {"schema": "xm.noise.v1", "device_id": .., "site_id": .., "seq": .., "sent_at": ..,
                     "interval_s": 60, "units": {"p": "MPa"}, "samples": [{"ts": <ms>, "values": {..}}, ..]}
  ThingsBoard       {"ts": <ms>, "values": {..}}
  ThingsBoard array [{"ts": <ms>, "values": {..}}, ..]
Samples are checked row by row later (`ingest.validation`); here only the outer shape is checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from core.timefmt import iso_utc_ms
from ingest.codecs.errors import DecodeError

SCHEMAS = {"noise": "xm.noise.v1", "gas": "xm.gas.v1"}
KIND_OF_SCHEMA = {s: k for k, s in SCHEMAS.items()}

_fast_loads: Callable[[bytes], Any] | None
try:  # orjson parses 4-6x faster than the standard library; the collector's hot path is JSON parsing.
    import orjson

    _fast_loads = orjson.loads
except ImportError:  # pragma: no cover - orjson is a declared dependency; stay correct without it
    _fast_loads = None

_loads = json.loads
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=True).encode


class Envelope:
    """A decoded payload. Optional envelope fields are None when the payload did not give them.

    form:    "envelope" | "thingsboard" | "thingsboard_array"
    samples: the raw sample objects, unchecked (validation reports a bad one as a row reject)
    units:   field -> unit name as sent (e.g. {"p": "MPa"}); empty means the schema's units (kPa, dB)
    """

    # A plain slotted class: one is built per message on the collector's hot path.
    __slots__ = ("form", "samples", "schema", "device_id", "site_id", "seq", "interval_s", "sent_at", "units")

    def __init__(self, form: str, samples: list[Any], schema: str | None = None, device_id: str | None = None,
                 site_id: str | None = None, seq: int | None = None, interval_s: float | None = None,
                 sent_at: str | None = None, units: dict[str, str] | None = None) -> None:
        self.form = form
        self.samples = samples
        self.schema = schema
        self.device_id = device_id
        self.site_id = site_id
        self.seq = seq
        self.interval_s = interval_s
        self.sent_at = sent_at
        self.units = units if units is not None else {}

    @property
    def kind(self) -> str | None:
        """noise | gas from the schema name, None for ThingsBoard bodies (the topic says)."""
        return KIND_OF_SCHEMA.get(self.schema) if self.schema else None

    def __repr__(self) -> str:
        return f"Envelope({self.form!r}, {len(self.samples)} samples, schema={self.schema!r}, device_id={self.device_id!r})"


def encode_batch(
    device_id: str,
    site_id: str,
    kind: str,
    samples: Sequence[tuple[float, Any]],
    seq: int,
    interval_s: float,
    sent_at_ms: int,
    units: dict[str, str] | None = None,
) -> bytes:
    """The domain.md §3 envelope as compact UTF-8 JSON.

    samples:    [(ts_ms, values), ...]; values: field -> number, plus optional "flag": "N".."B"
    kind:       noise | gas (sets `schema` to xm.noise.v1 / xm.gas.v1)
    sent_at_ms: device send time, UTC ms (written as ISO 8601)
    units:      optional field -> unit, e.g. {"p": "MPa"} for a device that reports MPa
    Raises KeyError for an unknown kind.
    """
    doc: dict[str, Any] = {
        "schema": SCHEMAS[kind], "device_id": device_id, "site_id": site_id, "seq": seq,
        "sent_at": iso_utc_ms(int(sent_at_ms)), "interval_s": interval_s,
    }
    if units:
        doc["units"] = units
    doc["samples"] = [{"ts": int(ts), "values": values} for ts, values in samples]
    return _dumps(doc).encode("utf-8")


def decode_json(payload: bytes) -> Any:
    """Parse JSON bytes. Raises DecodeError binary_garbage (not UTF-8 text) or invalid_json.

    NaN and Infinity literals are accepted here on purpose, so that validation can name them
    (`non_finite`) instead of calling the whole payload invalid.
    """
    if _fast_loads is not None:
        try:
            return _fast_loads(payload)
        except ValueError:
            # orjson refuses what the standard parser names more precisely (NaN literals, integers beyond
            # 64 bits, bad UTF-8): decide on the slow path, which is taken only by bad payloads.
            pass
    try:
        # utf-8-sig: some gateways prefix a byte-order mark, which JSON parsers refuse.
        text = payload.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DecodeError("binary_garbage", f"payload is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        return _loads(text)
    except ValueError as exc:
        raise DecodeError("invalid_json", str(exc)) from None
    except RecursionError:
        raise DecodeError("invalid_json", "JSON nested too deeply") from None


def decode_envelope(payload: bytes) -> Envelope:
    """Decode a payload into an Envelope. Raises DecodeError: binary_garbage, invalid_json, bad_schema."""
    return envelope_of(decode_json(payload))


def envelope_of(doc: Any) -> Envelope:
    """Classify an already parsed JSON document. Raises DecodeError("bad_schema", ...)."""
    if type(doc) is dict:
        samples = doc.get("samples")
        if samples is not None:
            return _envelope(doc, samples)
        if "ts" in doc or "values" in doc:
            return Envelope("thingsboard", [doc])
        raise DecodeError("bad_schema", f"object has neither 'samples' nor 'ts'/'values' (keys: {_keys(doc)})")
    if type(doc) is list:
        if not doc:
            raise DecodeError("bad_schema", "empty array: no samples")
        return Envelope("thingsboard_array", doc)
    raise DecodeError("bad_schema", f"payload is a JSON {type(doc).__name__}, expected an object or an array")


def _envelope(doc: dict[str, Any], samples: Any) -> Envelope:
    if type(samples) is not list:
        raise DecodeError("bad_schema", f"'samples' must be an array, got {type(samples).__name__}")
    if not samples:
        raise DecodeError("bad_schema", "'samples' is empty")
    get = doc.get
    schema = get("schema")
    if schema is not None and (type(schema) is not str or schema not in KIND_OF_SCHEMA):
        raise DecodeError("bad_schema", f"unknown schema {schema!r} (known: {', '.join(KIND_OF_SCHEMA)})")
    device_id, site_id, sent_at = get("device_id"), get("site_id"), get("sent_at")
    for key, v in (("device_id", device_id), ("site_id", site_id), ("sent_at", sent_at)):
        if v is not None and type(v) is not str:
            raise DecodeError("bad_schema", f"'{key}' must be a string, got {type(v).__name__}")
    seq = get("seq")
    if seq is not None and type(seq) is not int:
        raise DecodeError("bad_schema", f"'seq' must be an integer, got {type(seq).__name__}")
    interval_s = doc.get("interval_s")
    if interval_s is not None and (type(interval_s) not in (int, float) or not 0 < interval_s <= 86400):
        raise DecodeError("bad_schema", f"'interval_s' must be a number of seconds in (0, 86400], got {interval_s!r}")
    units = get("units") or {}
    if units and (type(units) is not dict or any(type(u) is not str for u in units.values())):
        raise DecodeError("bad_schema", "'units' must map field names to unit names")
    return Envelope("envelope", samples, schema, device_id, site_id, seq, interval_s, sent_at, units)


def _keys(doc: dict[Any, Any]) -> str:
    keys = list(doc)[:8]
    return ", ".join(map(str, keys)) + (", ..." if len(doc) > 8 else "") if keys else "none"
