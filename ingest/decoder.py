"""Topic + payload -> validated columnar readings and rejects: the collector's one call per message.

`Decoder.decode` never raises. Every failure becomes a `Reject` with a stable reason code from
`REASONS`; the valid rows of a mixed payload are kept. The collector writes the batch, turns the rejects
into dead-letter records (`ingest.deadletter.records_for`), and only then acks the message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
import numpy.typing as npt

from core import FLAG_CODES, ReadingBatch
from ingest.codecs import hj212
from ingest.codecs.errors import DecodeError
from ingest.codecs.json_envelope import Envelope, decode_json, envelope_of
from ingest.codecs.json_typed import decode_typed, typed_rows
from ingest.validation import (
    CHECK_ORDER,
    FIELDS,
    HJ212_FLAG,
    PRESSURE_UNITS,
    Limits,
    Rows,
    check_rows,
    explain,
    extract_rows,
    field_of,
    flag_only,
    p_hi_of,
    reason_codes,
    rows_from_values,
)

if TYPE_CHECKING:
    from config.inventory import Device
    from config.model import Config

# Row positions in a batch or a payload (np.flatnonzero gives intp, built ones are int64).
Index: TypeAlias = "npt.NDArray[np.integer[Any]]"
# (message number, or per-row message numbers; the rows) of one part of a decode_many batch.
Part: TypeAlias = "tuple[int | npt.NDArray[np.int64], ReadingBatch]"

TOPIC_ROOT = "city/xm"
KINDS = ("noise", "gas")

# Every reason code a Reject can carry: a stable interface (dead-letter records, metrics labels, tests).
REASONS: dict[str, str] = {
    # payload level
    "empty_payload": "the message has no payload",
    "oversize": "the payload is larger than ingest.max_payload_bytes (status: ingest.status_max_payload_bytes)",
    "binary_garbage": "the payload is not text (invalid UTF-8 or control bytes)",
    "invalid_json": "the payload is not valid JSON",
    "bad_schema": "valid JSON of the wrong shape (not an envelope, {ts, values} or an array of them)",
    "unknown_topic": "the topic is outside city/xm/{noise|gas}/{site}/{device}/{data|status|event}, city/xm/hj212/{MN}",
    "unknown_device": "the device (or HJ 212 MN) is not in the inventory",
    "topic_site_mismatch": "the topic's site is not the device's site in the inventory",
    "wrong_kind": "the topic's or payload's kind (noise|gas) is not the device's kind",
    "envelope_mismatch": "the envelope's device_id or site_id disagrees with the topic",
    "topic_mn_mismatch": "the HJ 212 frame's MN is not the MN of its topic",
    "bad_status": "a status payload that is neither online nor offline",
    "bad_unit": "the payload names a unit citywatch cannot convert",
    "hj212_format": "not an HJ 212 frame (prefix, fields, CP syntax, DataTime)",
    "hj212_length": "the HJ 212 length field disagrees with the data segment",
    "hj212_crc": "the HJ 212 CRC16 does not match the data segment",
    "hj212_unsupported": "a valid HJ 212 frame whose CN carries no readings",
    "device_event": "a device-side alarm on .../event: not a reading; kept here until alarms are ingested",
    "internal_error": "the decoder failed unexpectedly (a bug: the payload is kept for replay)",
    "deadletter_capped": "not a payload: the device (or reason) used its dead-letter budget for the period; "
                         "its further dead letters are counted, not stored (ingest.deadletter_device_budget_mb)",
    # row level
    "too_deep": "a refused cell (value, ts, values or the sample) nests arrays or objects too deeply",
    "missing_field": "a row lacks ts, values or its required reading (noise: leq or la; gas: p)",
    "not_a_number": "a value or ts that is not a number (a string, a boolean, ...)",
    "non_finite": "a value that is NaN or infinite",
    "bad_flag": "a data flag that is not one of N F M S D C T B",
    "ts_seconds_not_ms": "ts is epoch seconds where milliseconds are expected",
    "ts_too_old": "ts is before 2001-01-01 (a reset clock) or, with clock: wall, older than ingest.backfill_max_age_s before receipt",
    "ts_future": "with clock: wall, ts is more than ingest.future_skew_s after receipt",
    "out_of_range": "a value outside its physical range (domain.md §4); a pressure just outside the sensor range is kept with flag T",
    "noise_order": "noise levels out of order (lmin <= l90 <= l50 <= l10 <= lmax, lmin <= leq <= lmax)",
    "hj212_flag": "the row's data flag is one that ingest.refuse_flags sends to the dead-letter store",
    "duplicate_row": "another row of the same payload has the same timestamp",
}

STATUS_VALUES = ("online", "offline")


@dataclass
class Reject:
    """Why a payload or one row of it was refused.

    row:   the row as sent (None for payload-level)
    index: the row's position in the payload (None for payload-level)
    field: the field the row is refused for (ts, p, values, ...), when one is to blame
    """

    reason: str
    detail: str
    row: dict[str, Any] | None = None
    index: int | None = None
    field: str | None = None


class Decoded:
    """The outcome of one message.

    batch:     valid rows (sensor = cfg.device_index, UTC ns, gas p in kPa gauge, quality = flag code)
    rows:      len(batch), without building it
    rejects:   payload-level (row None) or row-level rejects; empty when everything landed
    kind:      noise | gas, when the topic or device says
    device_id: when known (topic or HJ 212 MN resolved against the inventory)
    site_id:   the topic's site when the topic resolved
    status:    "online" | "offline" for .../status topics (batch empty); None otherwise
    flagged:   rows refused only for their data flag (`hj212_flag`, also in `rejects`): sensor, ts and
               quality, no value columns (every value reads NaN), for the detectors; never stored.
               None when there are none
    flagged_pos: per flagged row, how many rows of `batch` precede it in the payload (int64)
    From `decode_many`, `batch` is a slice of the combined batch, built only when asked for.
    """

    __slots__ = ("rejects", "kind", "device_id", "site_id", "status", "flagged", "flagged_pos", "_batch", "_src")

    def __init__(self, batch: ReadingBatch | None = None, rejects: list[Reject] | None = None, kind: str | None = None,
                 device_id: str | None = None, site_id: str | None = None, status: str | None = None) -> None:
        self._batch = batch
        self._src: tuple[ReadingBatch, int, int] | None = None
        self.rejects = [] if rejects is None else rejects
        self.kind = kind
        self.device_id = device_id
        self.site_id = site_id
        self.status = status
        self.flagged: ReadingBatch | None = None
        self.flagged_pos: npt.NDArray[np.int64] | None = None

    @property
    def batch(self) -> ReadingBatch:
        if self._batch is None:
            if self._src is not None:
                big, start, stop = self._src
                # ReadingBatch.take indexes with any numpy index (a slice: views, no copy); its annotation
                # (detectors/batch.py) says ndarray only.
                self._batch = big.take(slice(start, stop))  # type: ignore[arg-type]
            else:
                self._batch = _empty_batch()
        return self._batch

    @property
    def rows(self) -> int:
        if self._batch is None and self._src is not None:
            return self._src[2] - self._src[1]
        return len(self.batch)

    def __repr__(self) -> str:
        return (f"Decoded(rows={self.rows}, rejects={self.rejects!r}, kind={self.kind!r}, device_id={self.device_id!r}, "
                f"site_id={self.site_id!r}, status={self.status!r})")


_EMPTY_SENSOR = np.empty(0, np.int32)
_EMPTY_TS = np.empty(0, np.int64)


def _empty_batch() -> ReadingBatch:
    return ReadingBatch(_EMPTY_SENSOR, _EMPTY_TS)


@dataclass
class _Route:
    """What a topic resolves to (cached: devices publish on the same few topics over and over)."""

    channel: str  # data | status | hj212
    kind: str | None = None
    device: Device | None = None
    site_id: str | None = None
    index: int = -1
    error: Reject | None = None
    mn: str | None = None


class Decoder:
    """Decodes and validates messages against one configuration (build a new one on config reload)."""

    ROUTE_CACHE_MAX = 100_000

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        s = cfg.ingest
        self.limits = Limits.from_settings(s)
        self.max_payload_bytes = s.max_payload_bytes
        self.deadletter_rows_listed = s.deadletter_rows_listed  # refused rows listed per dead-letter record
        # A status is one word: a large one is refused unparsed (a 10 MB status was once parsed in full).
        self.status_max_payload_bytes = min(s.status_max_payload_bytes, s.max_payload_bytes)
        self._routes: dict[str, _Route] = {}

    def decode(self, topic: str, payload: bytes, recv_ns: int) -> Decoded:
        """Decode one MQTT message received at `recv_ns` (UTC ns). Never raises."""
        try:
            return self._decode(topic, payload, recv_ns)
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not stop the collector or lose the message
            return Decoded(_empty_batch(), [Reject("internal_error", f"{type(exc).__name__}: {exc}")])

    def decode_many(self, messages: Sequence[tuple[str, bytes, int]]) -> tuple[ReadingBatch, list[Decoded]]:
        """Decode many messages at once: the same outcome as `decode` on each, at a fraction of the cost.

        messages: a sequence of (topic, payload, recv_ns)
        Returns (batch, outcomes): `batch` holds the valid rows of every message in message order;
        `outcomes[i]` is message i's Decoded (its `batch` is its slice of `batch`, built lazily; `rows`
        counts it). JSON data messages are checked together with numpy, so a run of single-reading
        messages costs about what one large payload does; well-formed ones are decoded into typed structs
        (`json_typed`), the others as `decode` decodes them. Never raises.
        """
        try:
            return self._decode_many(messages)
        except Exception:  # noqa: BLE001 - a bug in the combined path: fall back to one message at a time
            outcomes = [self.decode(t, p, r) for t, p, r in messages]
            return ReadingBatch.concat([o.batch for o in outcomes if o.rows]), outcomes

    # -- routing ---------------------------------------------------------------------------------------

    def _route(self, topic: str) -> _Route:
        route = self._routes.get(topic)
        if route is None:
            route = self._resolve(topic)
            # Only topics of inventory devices are cached, so the cache is bounded by the inventory however
            # many stray topics arrive; a stray topic is resolved again (a split and two dict lookups).
            if route.device is not None and len(self._routes) < self.ROUTE_CACHE_MAX:
                self._routes[topic] = route
        return route

    def _resolve(self, topic: str) -> _Route:
        parts = topic.split("/")
        cfg = self.cfg
        if len(parts) == 4 and parts[0] == "city" and parts[1] == "xm" and parts[2] == "hj212":
            mn = parts[3]
            device = cfg.device_by_mn(mn)
            if device is None:
                return _Route("hj212", mn=mn, error=Reject("unknown_device", f"no device with MN {mn!r} in the inventory"))
            if device.kind != "noise":
                return _Route("hj212", device=device, mn=mn, error=Reject(
                    "wrong_kind", f"device {device.id} is a {device.kind} device; HJ 212 frames carry noise readings"))
            return _Route("hj212", kind="noise", device=device, site_id=device.site, index=cfg.device_index(device.id), mn=mn)
        if len(parts) != 6 or parts[0] != "city" or parts[1] != "xm" or parts[2] not in KINDS or parts[5] not in (
            "data", "status", "event"
        ):
            return _Route("unknown", error=Reject(
                "unknown_topic", f"topic {topic!r} is not city/xm/{{noise|gas}}/{{site}}/{{device}}/{{data|status|event}} "
                "or city/xm/hj212/{MN}"))
        kind, site_id, device_id, channel = parts[2], parts[3], parts[4], parts[5]
        device = cfg.device(device_id)
        if device is None:
            return _Route(channel, kind=kind, error=Reject("unknown_device", f"device {device_id!r} is not in the inventory"))
        if device.site != site_id:
            return _Route(channel, kind=kind, device=device, error=Reject(
                "topic_site_mismatch", f"device {device_id} belongs to site {device.site}, topic names site {site_id}"))
        if device.kind != kind:
            return _Route(channel, kind=kind, device=device, error=Reject(
                "wrong_kind", f"device {device_id} is a {device.kind} device, topic says {kind}"))
        return _Route(channel, kind=kind, device=device, site_id=site_id, index=cfg.device_index(device_id))

    # -- decoding --------------------------------------------------------------------------------------

    def _decode(self, topic: str, payload: bytes, recv_ns: int) -> Decoded:
        route = self._route(topic)
        device = route.device
        device_id = device.id if device is not None else None
        if route.error is not None:
            return Decoded(_empty_batch(), [route.error], route.kind, device_id, route.site_id)
        limit = self.status_max_payload_bytes if route.channel == "status" else self.max_payload_bytes
        if len(payload) > limit:
            key = "status_max_payload_bytes" if route.channel == "status" else "max_payload_bytes"
            return Decoded(_empty_batch(), [Reject(
                "oversize", f"payload of {len(payload)} bytes exceeds ingest.{key}={limit}")],
                route.kind, device_id, route.site_id)
        kind, device = _resolved(route)
        if route.channel == "status":
            return self._status(route, device.id, payload)
        if route.channel == "event":
            return Decoded(_empty_batch(), [Reject("device_event", "device events are not ingested as readings")],
                           route.kind, device_id, route.site_id)
        if not payload:
            return Decoded(_empty_batch(), [Reject("empty_payload", "the message has no payload")],
                           route.kind, device_id, route.site_id)
        recv_ms = recv_ns // 1_000_000
        try:
            units: dict[str, str] | None
            if route.channel == "hj212":
                rows, units = self._hj212_rows(route, payload), None
            else:
                rows, units = self._json_rows(route, kind, payload)
        except DecodeError as exc:
            return Decoded(_empty_batch(), [Reject(exc.reason, exc.detail)], route.kind, device_id, route.site_id)
        keep, bad = check_rows(rows, kind, device, recv_ms, self.limits, units)
        if keep is None:
            return Decoded(_batch_of(route.index, rows), [], route.kind, device_id, route.site_id)
        raw = rows.raw
        rejects = [Reject(reason, detail, _row_dict(raw[i]), i, field_of(reason, i, rows, kind, device))
                   for i, reason, detail in bad]
        ts_ms, values, quality = rows.arrays()  # check_rows converted them when it refused a row
        if keep.any():
            idx = np.flatnonzero(keep)
            batch = ReadingBatch(
                np.full(len(idx), route.index, np.int32), ts_ms[idx] * 1_000_000,
                {k: v[idx] for k, v in values.items()}, quality[idx],
            )
        else:
            batch = _empty_batch()
        out = Decoded(batch, rejects, route.kind, device_id, route.site_id)
        refused = [i for i, reason, _ in bad if reason == "hj212_flag"]
        if refused:
            flag_idx = flag_only(np.array(refused, np.int64), keep, ts_ms)
            _set_flagged(out, route.index, ts_ms, quality, keep, flag_idx)
        return out

    def _decode_many(self, messages: Sequence[tuple[str, bytes, int]]) -> tuple[ReadingBatch, list[Decoded]]:
        m = len(messages)
        # Placeholders: the loop below sets every slot before anything reads it.
        outcomes: list[Decoded] = [None] * m  # type: ignore[list-item]
        parts: list[Part] = []
        # Per kind, messages the typed fast path decoded, and the others (_assemble puts rows back in message order).
        groups = {"noise": _Group(), "gas": _Group()}
        typed = {"noise": _Group(typed=True), "gas": _Group(typed=True)}
        max_bytes = self.max_payload_bytes
        for i, (topic, payload, recv_ns) in enumerate(messages):
            route = self._route(topic)
            if route.error is not None or route.channel != "data" or not payload or len(payload) > max_bytes:
                out = outcomes[i] = self.decode(topic, payload, recv_ns)
                if out.rows:
                    parts.append((i, out.batch))
                continue
            kind, device = _resolved(route)
            env = self._typed_envelope(route, payload)
            if env is not None:
                g = typed[kind]
            else:
                g = groups[kind]
                try:
                    env = self._envelope(route, payload)
                except DecodeError as exc:
                    outcomes[i] = Decoded(None, [Reject(exc.reason, exc.detail)], route.kind, device.id, route.site_id)
                    continue
            factor = 1.0
            if env.units:
                unit_factor = _p_factor(env.units, kind)
                if unit_factor is None:  # an unsupported unit: the one-message path words the rejects
                    out = outcomes[i] = self.decode(topic, payload, recv_ns)
                    if out.rows:
                        parts.append((i, out.batch))
                    continue
                factor = unit_factor
            g.add(i, route, payload, env.samples, recv_ns // 1_000_000, factor)
            outcomes[i] = Decoded(None, [], route.kind, device.id, route.site_id)
        for kind, g in [*groups.items(), *typed.items()]:
            if g.msgs:
                parts.append(self._check_group(kind, g, outcomes))
        return _assemble(m, parts, outcomes)

    def _check_group(self, kind: str, g: _Group, outcomes: list[Decoded]) -> tuple[npt.NDArray[np.int64], ReadingBatch]:
        counts = np.array(g.counts, np.int64)
        msg_of_row = np.repeat(np.array(g.msgs, np.int64), counts)
        rows = typed_rows(g.samples, kind) if g.typed else extract_rows(g.samples, kind)
        ts_ms, values, quality = rows.arrays()
        p_hi: float | npt.NDArray[np.float64]
        if kind == "gas":
            p = values.get("p")
            factors = np.array(g.factors)
            if p is not None and (factors != 1.0).any():
                # A p near 1e308 sent in MPa becomes inf: refused as out_of_range, as `decode` refuses it (no warning).
                with np.errstate(over="ignore"):
                    values["p"] = p * np.repeat(factors, counts)
            p_hi = np.repeat(np.array(g.p_hi), counts)
        else:
            p_hi = 0.0
        recv_rows = np.repeat(np.array(g.recv_ms, np.int64), counts)
        code = reason_codes(rows, kind, p_hi, recv_rows, self.limits, msg_of_row)
        bad = np.flatnonzero(code)
        if len(bad):
            where = {msg: j for j, msg in enumerate(g.msgs)}
            starts = (np.cumsum(counts) - counts).tolist()
            if g.typed:  # the rows as sent, for the rejects: the messages with one are parsed again (orjson)
                rows.raw = [None] * len(rows)
                for j in {where[msg] for msg in msg_of_row[bad].tolist()}:
                    sent = envelope_of(decode_json(g.payloads[j])).samples
                    assert len(sent) == g.counts[j], "the typed and the orjson path disagree on a payload's samples"
                    rows.raw[starts[j]:starts[j] + g.counts[j]] = sent
            for r in bad.tolist():
                msg = int(msg_of_row[r])
                j = where[msg]
                reason = CHECK_ORDER[code[r] - 1]
                detail = explain(reason, r, rows, kind, g.devices[j], g.recv_ms[j], self.limits)
                outcomes[msg].rejects.append(Reject(reason, detail, _row_dict(rows.raw[r]), r - starts[j],
                                                    field_of(reason, r, rows, kind, g.devices[j])))
            keep = code == 0
            refused = np.flatnonzero(code == HJ212_FLAG)
            if len(refused):
                self._group_flagged(g, outcomes, rows, keep, msg_of_row, counts,
                                    flag_only(refused, keep, ts_ms, msg_of_row))
            sensor = np.repeat(np.array(g.index, np.int32), counts)[keep]
            batch = ReadingBatch(sensor, ts_ms[keep] * 1_000_000, {k: v[keep] for k, v in values.items()},
                                 quality[keep])
            return msg_of_row[keep], batch
        sensor = np.repeat(np.array(g.index, np.int32), counts)
        return msg_of_row, ReadingBatch(sensor, ts_ms * 1_000_000, dict(values), quality)

    @staticmethod
    def _group_flagged(g: _Group, outcomes: list[Decoded], rows: Rows, keep: npt.NDArray[np.bool_],
                       msg_of_row: npt.NDArray[np.int64], counts: npt.NDArray[np.int64], idx: Index) -> None:
        """Each message's flag-only rows (`idx`, rows of the combined check) onto its outcome, as `decode` does."""
        if len(idx) == 0:
            return
        ts_ms, _, quality = rows.arrays()
        starts = np.cumsum(counts) - counts
        where = {msg: j for j, msg in enumerate(g.msgs)}
        msgs, first = np.unique(msg_of_row[idx], return_index=True)
        for msg, a, b in zip(msgs.tolist(), first.tolist(), [*first[1:].tolist(), len(idx)]):
            j = where[msg]
            s = starts[j]
            own = slice(s, s + counts[j])
            _set_flagged(outcomes[msg], g.index[j], ts_ms[own], quality[own], keep[own], idx[a:b] - s)

    def _json_rows(self, route: _Route, kind: str, payload: bytes) -> tuple[Rows, dict[str, str]]:
        env = self._envelope(route, payload)
        return extract_rows(env.samples, kind), env.units

    def _envelope(self, route: _Route, payload: bytes) -> Envelope:
        if _looks_binary(payload):
            raise DecodeError("binary_garbage", "payload holds control bytes; not a JSON text")
        env = envelope_of(decode_json(payload))
        error = _disagreement(route, env)
        if error is not None:
            raise error
        return env

    @staticmethod
    def _typed_envelope(route: _Route, payload: bytes) -> Envelope | None:
        """The payload decoded by the typed fast path (`json_typed`), when it is well-formed and `_envelope` would
        take it as it is; else None, and `_envelope` decides."""
        # _looks_binary refuses DEL, which msgspec takes inside a string; msgspec refuses the other control bytes.
        if b"\x7f" in payload:
            return None
        kind, _ = _resolved(route)
        env = decode_typed(payload, kind)
        return env if env is not None and _disagreement(route, env) is None else None

    def _hj212_rows(self, route: _Route, payload: bytes) -> Rows:
        if not payload.startswith(b"##") and _looks_binary(payload):
            raise DecodeError("binary_garbage", "payload holds control bytes; not an HJ 212 frame")
        frame = hj212.parse_frame(payload)
        if frame.mn != route.mn:
            raise DecodeError("topic_mn_mismatch", f"frame MN {frame.mn!r} on the topic of MN {route.mn!r}")
        if not frame.values:
            raise DecodeError("missing_field", f"frame CN={frame.cn} carries no noise factor citywatch knows")
        raw_row = {"ts": frame.ts_ms, "data_time_local": frame.data_time.isoformat(), "cn": frame.cn,
                   "values": dict(frame.values), "flags": dict(frame.flags)}
        codes = []
        for name, letter in frame.flags.items():
            code = FLAG_CODES.find(letter) if len(letter) == 1 else -1
            if code < 0:
                rows = rows_from_values(frame.ts_ms, frame.values, 0, raw_row)
                rows.failed[0] = ("bad_flag", f"{name} flag must be one of {', '.join(FLAG_CODES)}, got {letter!r}",
                                  "flag")
                return rows
            codes.append(code)
        # One flag per row: a refused flag wins (the row goes to the dead-letter store), else the first non-N.
        refused = [c for c in codes if c in self.limits.refuse_flags]
        flagged = [c for c in codes if c]
        quality = refused[0] if refused else flagged[0] if flagged else 0
        return rows_from_values(frame.ts_ms, frame.values, quality, raw_row)

    def _status(self, route: _Route, device_id: str, payload: bytes) -> Decoded:
        if not payload:
            # An empty retained publish clears the retained status: nothing to record, nothing lost.
            return Decoded(_empty_batch(), [], route.kind, device_id, route.site_id, status=None)
        status = None
        text = payload.strip()
        if text in (b"online", b"offline"):
            status = text.decode()
        else:
            try:
                doc = decode_json(payload)
            except DecodeError:
                doc = None
            if type(doc) is dict and doc.get("status") in STATUS_VALUES:
                status = doc["status"]
            elif type(doc) is str and doc in STATUS_VALUES:
                status = doc
        if status is None:
            shown = payload[:40].decode("utf-8", "replace")
            return Decoded(_empty_batch(), [Reject("bad_status", f"status must be online or offline, got {shown!r}")],
                           route.kind, device_id, route.site_id)
        return Decoded(_empty_batch(), [], route.kind, device_id, route.site_id, status=status)


class _Group:
    """JSON data messages of one kind collected for a combined check (decode_many).

    typed: the samples are `json_typed` structs (else the raw objects, for `extract_rows`)
    """

    __slots__ = ("typed", "msgs", "payloads", "counts", "samples", "index", "devices", "recv_ms", "factors", "p_hi")

    def __init__(self, typed: bool = False) -> None:
        self.typed = typed
        self.msgs: list[int] = []
        self.payloads: list[bytes] = []
        self.counts: list[int] = []
        self.samples: list[Any] = []
        self.index: list[int] = []
        self.devices: list[Device] = []
        self.recv_ms: list[int] = []
        self.factors: list[float] = []
        self.p_hi: list[float] = []

    def add(self, msg: int, route: _Route, payload: bytes, samples: list[Any], recv_ms: int, factor: float) -> None:
        _, device = _resolved(route)
        self.msgs.append(msg)
        self.payloads.append(payload)
        self.counts.append(len(samples))
        self.samples.extend(samples)
        self.index.append(route.index)
        self.devices.append(device)
        self.recv_ms.append(recv_ms)
        self.factors.append(factor)
        if route.kind == "gas":
            self.p_hi.append(p_hi_of(device))


def _resolved(route: _Route) -> tuple[str, Device]:
    """The kind and device of a route that resolved (no `error`: _resolve sets both then)."""
    assert route.kind is not None and route.device is not None, f"unresolved route {route!r}"
    return route.kind, route.device


def _disagreement(route: _Route, env: Envelope) -> DecodeError | None:
    """Why an envelope does not belong on its (resolved) topic: wrong_kind or envelope_mismatch; None when it does."""
    _, device = _resolved(route)
    if env.kind is not None and env.kind != route.kind:
        return DecodeError("wrong_kind", f"schema {env.schema} on a {route.kind} topic")
    if env.device_id is not None and env.device_id != device.id:
        return DecodeError("envelope_mismatch", f"envelope device_id {env.device_id!r} on the topic of {device.id}")
    if env.site_id is not None and env.site_id != route.site_id:
        return DecodeError("envelope_mismatch",
                           f"envelope site_id {env.site_id!r} on the topic of site {route.site_id}")
    return None


def _p_factor(units: dict[str, str], kind: str) -> float | None:
    """The factor to kPa a payload's `units` asks for; None when it names a unit check_rows refuses."""
    factor = 1.0
    for name, unit in units.items():
        f = PRESSURE_UNITS.get(unit) if name == "p" else None
        if f is None:
            if name == "p" or name in FIELDS[kind]:
                return None
            continue
        factor = f
    return factor


def _assemble(m: int, parts: list[Part], outcomes: list[Decoded]) -> tuple[ReadingBatch, list[Decoded]]:
    """One batch in message order from the parts, and each outcome pointed at its slice."""
    if not parts:
        return _empty_batch(), outcomes
    msg_idx = np.concatenate([np.full(len(b), p, np.int64) if isinstance(p, int) else p for p, b in parts])
    big = parts[0][1] if len(parts) == 1 else ReadingBatch.concat([b for _, b in parts])
    if len(msg_idx) > 1 and (np.diff(msg_idx) < 0).any():
        order = np.argsort(msg_idx, kind="stable")
        big, msg_idx = big.take(order), msg_idx[order]
    counts = np.bincount(msg_idx, minlength=m)
    ends = np.cumsum(counts).tolist()
    start = 0
    for out, end in zip(outcomes, ends):
        if end > start:
            out._batch = None
            out._src = (big, start, end)
        start = end
    return big, outcomes


# Control bytes other than tab, LF, CR never occur in JSON text or HJ 212 frames.
_CONTROL = bytes(b for b in range(32) if b not in (9, 10, 13)) + b"\x7f"
_DELETE_NOTHING = bytes.maketrans(b"", b"")


def _batch_of(index: int, rows: Rows) -> ReadingBatch:
    """All rows as a ReadingBatch. Columns that are still lists (small payloads) are converted here;
    the dtypes are exact, so ReadingBatch's own conversions are skipped on this hot path."""
    ts = rows.ts_ms
    if isinstance(ts, list):
        n = len(ts)
        batch = ReadingBatch.__new__(ReadingBatch)
        batch.sensor = np.full(n, index, np.int32)
        batch.ts_ns = np.array([t * 1_000_000 for t in ts], np.int64)
        batch.values = {k: np.array(c, np.float64) for k, c in rows.values.items()}
        batch.quality = np.array(rows.quality, np.uint8)
        return batch
    ts_ms, values, quality = rows.arrays()
    return ReadingBatch(np.full(len(ts_ms), index, np.int32), ts_ms * 1_000_000, dict(values), quality)


def _set_flagged(out: Decoded, index: int, ts_ms: npt.NDArray[np.int64], quality: npt.NDArray[np.uint8],
                 keep: npt.NDArray[np.bool_], idx: Index) -> None:
    """Give `out` the flag-only rows `idx` of its payload (columns of that payload's rows): sensor, ts,
    quality, and no value columns, so that no value rule can judge them."""
    if len(idx) == 0:
        return
    out.flagged = ReadingBatch(np.full(len(idx), index, np.int32), ts_ms[idx] * 1_000_000, {}, quality[idx])
    out.flagged_pos = np.cumsum(keep)[idx].astype(np.int64)


def _looks_binary(payload: bytes) -> bool:
    return len(payload.translate(_DELETE_NOTHING, _CONTROL)) != len(payload)


def _row_dict(raw: object) -> dict[str, Any] | None:
    if type(raw) is dict:
        return raw
    return {"row": raw}
