"""Typed decoding (msgspec) of well-formed JSON data payloads: the decode worker's fast path (issue 17).

A payload decodes here only when it is one of json_envelope's shapes (envelope, ThingsBoard `{ts, values}` or an
array of them) with only known keys and every cell of a type and range that json_envelope and
`validation.extract_rows` take unchanged: ts an integer within +-TS_MS_LIMIT, values numbers of magnitude below
1e300 or null, `flag` one HJ 212 letter or null. Anything else (an unknown key, a string number, a float ts, a NaN
literal, a duplicate key holding a bad value, ...) gives None: the orjson path decides, and names the failure.
So both paths give the same rows; tests/unit/ingest/test_json_typed.py and test_decode_many.py check it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import numpy as np

from core import FLAG_CODES
from ingest.codecs.json_envelope import SCHEMAS, Envelope
from ingest.validation import FIELDS, FLAG_INDEX, TS_MS_LIMIT, Rows

# Only what the orjson path takes as it is: a ts at +-TS_MS_LIMIT or beyond is clamped there (and named as sent), a
# number of magnitude 1e300 or more is refused there as out of range (an integer) or range-checked (a float).
_Ts = Annotated[int, msgspec.Meta(gt=-TS_MS_LIMIT, lt=TS_MS_LIMIT)]
_Number = Annotated[float, msgspec.Meta(gt=-1e300, lt=1e300)]  # a JSON integer decodes to float(it), as stored there
_Flag = Literal[tuple(FLAG_CODES)]  # type: ignore[valid-type]
# orjson gives a float for an integer beyond 64 bits, which the envelope check refuses as a seq; msgspec's bounds
# stop at int64, so a seq from 2**63 up takes the orjson path too.
_Seq = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
_Interval = Annotated[int, msgspec.Meta(gt=0, le=86400)] | Annotated[float, msgspec.Meta(gt=0, le=86400)]
# forbid_unknown_fields: a payload holding anything these types do not name (which could nest arbitrarily deep)
# takes the orjson path. gc=False: the structs hold scalars, strings, a dict of strings and lists of structs, never a
# cycle, so the garbage collector need not track the ~120 structs of a 60-sample payload.
_STRICT: dict[str, Any] = {"forbid_unknown_fields": True, "gc": False}


def _decoder(kind: str) -> msgspec.json.Decoder[Any]:
    """The decoder of one kind's payloads: value names are that kind's FIELDS, then `flag`."""
    name = kind.title()
    values = msgspec.defstruct(f"{name}Values", [(k, _Number | None, None) for k in FIELDS[kind]]
                               + [("flag", _Flag | None, None)], **_STRICT)
    sample = msgspec.defstruct(f"{name}Sample", [("ts", _Ts), ("values", values)], **_STRICT)
    body = msgspec.defstruct(f"{name}Body", [
        ("schema", Literal[tuple(SCHEMAS.values())] | None, None), ("device_id", str | None, None),
        ("site_id", str | None, None), ("seq", _Seq | None, None), ("sent_at", str | None, None),
        ("interval_s", _Interval | None, None), ("units", dict[str, str] | None, None),
        ("samples", list[sample] | None, None),  # type: ignore[valid-type]
        ("ts", _Ts | None, None), ("values", values | None, None),
    ], **_STRICT)
    return msgspec.json.Decoder(body | list[sample])  # type: ignore[valid-type]


_DECODERS = {kind: _decoder(kind) for kind in FIELDS}


def decode_typed(payload: bytes, kind: str) -> Envelope | None:
    """The payload as an Envelope whose samples are typed structs (`ts`, `values`), or None when it is not
    well-formed in the sense above. Does not look for control bytes (msgspec refuses all but DEL in a string).
    kind: noise | gas (the topic's)"""
    try:
        body = _DECODERS[kind].decode(payload)
    except msgspec.DecodeError:  # ValidationError included
        return None
    if type(body) is list:
        return Envelope("thingsboard_array", body) if body else None
    if body.samples is not None:  # an envelope: json_envelope ignores ts and values beside samples
        if not body.samples:
            return None
        return Envelope("envelope", body.samples, body.schema, body.device_id, body.site_id, body.seq,
                        body.interval_s, body.sent_at, body.units)
    if body.ts is None or body.values is None:
        return None
    return Envelope("thingsboard", [body])  # the envelope keys of a `{ts, values}` body are ignored, as there


def typed_rows(samples: list[Any], kind: str) -> Rows:
    """Rows of typed samples (of any number of messages of one kind): what `extract_rows` gives for the same
    samples as orjson parses them, except `raw`, which is left empty (no row failed extraction)."""
    n = len(samples)
    ts = np.array([s.ts for s in samples], np.int64)
    *cells, flags = zip(*map(msgspec.structs.astuple, [s.values for s in samples]))
    # A column only for a value some row gives: `any` stops at the first nonzero, `count` sees null by identity.
    given = [(k, c) for k, c in zip(FIELDS[kind], cells) if any(c) or c.count(None) != n]
    values = dict(zip([k for k, _ in given], np.array([c for _, c in given], np.float64))) if given else {}
    if flags.count(None) + flags.count("N") == n:
        quality = np.zeros(n, np.uint8)
    else:
        quality = np.array([_FLAG_CODE[f] for f in flags], np.uint8)
    return Rows(ts, values, quality)


_FLAG_CODE: dict[str | None, int] = {None: 0}
_FLAG_CODE.update(FLAG_INDEX)
