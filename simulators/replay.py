"""Read a recorded feed into publishable messages: a `citywatch record` capture or a simulator feed
(JSONL with topic and payload), `mosquitto_sub -v` output (`topic payload` lines), or readings in the
`detect` format (CSV or JSONL rows with `ts`, `device_id` and reading fields), which are encoded into
the JSON envelope per device and report interval.

Spacing: always event time, so that `--speed N` means "event time / N" for every kind of feed: a simulator
feed's `t` (the simulated publish time), else each message's own time (the envelope's `sent_at` or newest
sample, an HJ 212 DataTime), never a capture's receive time `t` (that is the pace at which the capture was
made, e.g. while `simulate --speed 1000` ran). Times never step back (a back-fill keeps its place in the file).

Readings: each message's `n` is the readings it carries (samples of an envelope or array, one per valid HJ
212 frame), so a replay's summary counts readings, not messages.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from core.shown import shown
from ingest.codecs.json_envelope import encode_batch
from ingest.validation import TS_MS_LIMIT
from simulators.feed import Message, data_topic, site_of
from simulators.scoring import parse_time_ms

if TYPE_CHECKING:
    from config.model import Config

_Default = TypeVar("_Default", int, None)

_ID_KEYS = {"ts", "device_id", "site_id", "kind", "sensor"}


class FeedFormatError(ValueError):
    """The file is none of the replayable formats, or a line of it is malformed (message names the line)."""


def read_feed(path: str | Path, cfg: Config) -> list[Message]:
    """Messages of a recorded feed in publish order. Raises FeedFormatError (or OSError)."""
    path = Path(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise FeedFormatError(f"{path}:{line}: not UTF-8 text ({exc.reason}){_encoding_hint(data)}") from None
    lines = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
    if not lines:
        return []
    first = lines[0][1].lstrip()
    if first.startswith("{"):
        try:
            doc = json.loads(first)
        except json.JSONDecodeError as exc:
            raise FeedFormatError(f"{path}:{lines[0][0]}: not JSON: {exc}") from None
        if "topic" in doc:
            return _capture(path, lines, cfg)
        return _readings(path, [_json_row(path, i, ln) for i, ln in lines], cfg)
    head = first.split(",")
    if "ts" in [h.strip() for h in head] and "device_id" in [h.strip() for h in head]:
        reader = csv.DictReader(io.StringIO(text))
        rows: list[tuple[int, Any]] = []
        try:
            for r in reader:
                rows.append((reader.line_num, r))
        except csv.Error as exc:
            raise FeedFormatError(f"{path}:{reader.reader.line_num}: not a CSV row: {exc}") from None
        return _readings(path, rows, cfg)
    return _mosquitto_sub(path, lines, cfg)


def _encoding_hint(data: bytes) -> str:
    """What a file that is not UTF-8 probably is, from its first bytes."""
    if data.startswith(b"\x1f\x8b"):
        return ": a gzip file? decompress it first"
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ": UTF-16 text? convert it to UTF-8"
    return ""


def device_of_topic(topic: str, cfg: Config | None) -> str | None:
    """The device a data topic belongs to: `city/xm/{kind}/{site}/{device}/...` or `city/xm/hj212/{mn}`."""
    parts = topic.split("/")
    if len(parts) >= 5 and parts[:2] == ["city", "xm"] and parts[2] in ("noise", "gas"):
        return parts[4]
    if len(parts) == 4 and parts[:3] == ["city", "xm", "hj212"]:
        d = cfg.device_by_mn(parts[3]) if cfg is not None else None
        return d.id if d is not None else parts[3]
    return None


# Families of topics a capture of city/xm/# holds. Only the data plane is replayed unless asked: the rest
# are the service's output (alert notices and states, replies, dead letters, internal) or operators'
# commands, and republishing them would re-send old alerts or re-apply old acks and silences (issue 10).
DATA_PLANE = ("data", "status", "event", "hj212")
FAMILY_NAMES = {"data": "device data", "status": "device status", "event": "device events", "hj212": "HJ 212 frames",
                "command": "alert commands", "reply": "command replies", "alert": "alert notices and states",
                "deadletter": "dead letters", "internal": "internal topics", "device-command": "device commands",
                "other": "other topics"}


def topic_family(topic: str, cfg: Config | None = None) -> str:
    """The family of a topic (a key of FAMILY_NAMES); cfg names the alert, command, reply and dead-letter
    topics (default: the shipped ones)."""
    def under(prefix: str) -> bool:
        prefix = prefix.rstrip("/")
        return topic == prefix or topic.startswith(prefix + "/")

    parts = topic.split("/")
    if len(parts) == 6 and parts[:2] == ["city", "xm"] and parts[2] in ("noise", "gas"):
        if parts[5] in ("data", "status", "event"):
            return parts[5]
        if parts[5] == "cmd":
            return "device-command"
    if len(parts) == 4 and parts[:3] == ["city", "xm", "hj212"]:
        return "hj212"
    a = cfg.alerting if cfg is not None else None
    if under(a.command_topic if a else "city/xm/alerts/cmd"):
        return "command"
    if under(a.command_reply_topic if a else "city/xm/alerts/replies"):
        return "reply"
    prefixes = [sk.topic_prefix for sk in a.sinks.values() if sk.type == "mqtt"] if a else []
    if any(under(p) for p in prefixes or ["city/xm/alerts"]):
        return "alert"
    if under(cfg.ingest.deadletter_topic if cfg is not None else "city/xm/deadletter"):
        return "deadletter"
    if under("city/xm/internal"):
        return "internal"
    return "other"


def split_data_plane(messages: list[Message], cfg: Config | None = None) -> tuple[list[Message], dict[str, int]]:
    """(the messages on data-plane topics, {family: count} of the others), in file order."""
    keep: list[Message] = []
    skipped: dict[str, int] = {}
    for m in messages:
        family = topic_family(m.topic, cfg)
        if family in DATA_PLANE:
            keep.append(m)
        else:
            skipped[family] = skipped.get(family, 0) + 1
    return keep, skipped


def _capture(path: Path, lines: list[tuple[int, str]], cfg: Config) -> list[Message]:
    out: list[tuple[int | None, Any, Message]] = []
    for i, ln in lines:
        try:
            d = json.loads(ln)
            if not isinstance(d, dict):
                raise TypeError(f"a JSON object, got {shown(d)}")
            topic = d["topic"]
            if not isinstance(topic, str):
                raise TypeError(f"topic must be a string, got {shown(topic)}")
            if "payload" in d and not isinstance(d["payload"], str):
                raise TypeError(f"payload must be a string, got {shown(d['payload'])}")
            payload = d["payload"].encode("utf-8") if "payload" in d else base64.b64decode(d["payload_b64"])
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise FeedFormatError(f"{path}:{i}: not a capture line (topic, payload or payload_b64, t): {exc}") from None
        t = d.get("t")
        t_num = t if isinstance(t, (int, float)) and not isinstance(t, bool) else None
        if t_num is not None and not _in_range(t_num):
            raise FeedFormatError(f"{path}:{i}: t must be a time in epoch ms, got {shown(t_num)}")
        # A simulator feed (`simulate --out`: lines carry `n` and `device`) stamps `t` in event time; a
        # `record` capture's `t` is the wall time of receipt: use the message's own event time instead.
        simulated = "n" in d and "device" in d and t_num is not None
        if simulated and (isinstance(d["n"], bool) or not isinstance(d["n"], int) or d["n"] < 0):
            raise FeedFormatError(f"{path}:{i}: n must be a whole number of readings, got {shown(d['n'])}")
        own = int(t_num) if simulated and t_num is not None else _event_time(payload, None)
        n = int(d["n"]) if simulated else readings_in(payload)
        out.append((own, t, Message(0, device_of_topic(topic, cfg) or "", topic, payload, n)))
    known = [own for own, _, _ in out if own is not None]
    if not known:
        # Nothing in the capture says when it happened (garbage, statuses): keep the capture's own pace.
        return _monotonic([Message(int(t) if isinstance(t, (int, float)) else 0, m.device, m.topic, m.payload, m.n)
                           for _, t, m in out])
    # A message without a time of its own goes with the one before it (the first known, at the start).
    msgs: list[Message] = []
    last = known[0]
    for own, _, m in out:
        last = own if own is not None else last
        msgs.append(Message(last, m.device, m.topic, m.payload, m.n))
    return _monotonic(msgs)


def readings_in(payload: bytes) -> int:
    """Readings a data payload carries: samples of an envelope, items of a {ts, values} array, 1 for a bare
    {ts, values} object or a valid HJ 212 frame with readings; 0 for anything else (status, garbage)."""
    try:
        if payload.startswith(b"##"):
            from ingest.codecs.hj212 import parse_frame
            return 1 if parse_frame(payload).values else 0
        doc = json.loads(payload)
    except Exception:  # noqa: BLE001 - a payload the service will refuse carries no readings
        return 0
    if isinstance(doc, list):
        return sum(1 for x in doc if isinstance(x, dict))
    if isinstance(doc, dict):
        samples = doc.get("samples")
        if isinstance(samples, list):
            return len(samples)
        return 1 if "ts" in doc else 0
    return 0


def _mosquitto_sub(path: Path, lines: list[tuple[int, str]], cfg: Config) -> list[Message]:
    out: list[Message] = []
    for i, ln in lines:
        topic, sep, payload = ln.partition(" ")
        if not sep or "/" not in topic:
            raise FeedFormatError(f"{path}:{i}: expected `topic payload` (mosquitto_sub -v) or JSON lines")
        # mosquitto_sub prints the payload as is; an HJ 212 frame's closing \r\n is split off as a line end.
        body = payload.encode("utf-8")
        if body.startswith(b"##") and not body.endswith(b"\r\n"):
            body += b"\r\n"
        t = _event_time(body, out[-1].t_ms if out else 0)
        out.append(Message(t, device_of_topic(topic, cfg) or "", topic, body, readings_in(body)))
    # Event times of a mixed feed can step back (back-fills); publish in file order, never reorder.
    return _monotonic(out)


def _monotonic(msgs: list[Message]) -> list[Message]:
    last: int | None = None
    out: list[Message] = []
    for m in msgs:
        t = m.t_ms if last is None else max(m.t_ms, last)
        out.append(Message(t, m.device, m.topic, m.payload, m.n))
        last = t
    return out


def _event_time(payload: bytes, default: _Default) -> int | _Default:
    """When the message was sent, from its own content: envelope sent_at or last sample ts, HJ 212 DataTime."""
    try:
        if payload.startswith(b"##"):
            from ingest.codecs.hj212 import parse_frame
            return parse_frame(payload).ts_ms
        doc = json.loads(payload)
        if doc.get("sent_at"):
            return parse_time_ms(doc["sent_at"])
        samples = doc.get("samples") or []
        if samples:
            newest = max(s["ts"] for s in samples)
            return int(newest) if _in_range(newest) else default
    except Exception:  # noqa: BLE001 - a malformed payload is replayed as is, at the previous time
        pass
    return default


def _json_row(path: Path, i: int, ln: str) -> tuple[int, Any]:
    try:
        doc = json.loads(ln)
    except json.JSONDecodeError as exc:
        raise FeedFormatError(f"{path}:{i}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise FeedFormatError(f"{path}:{i}: a readings line must be a JSON object, got {shown(doc)}")
    return i, doc


def _readings(path: Path, rows: list[tuple[int, Any]], cfg: Config) -> list[Message]:
    """Readings rows -> one envelope per device and report interval, published at the interval's last reading."""
    per_device: dict[str, list[tuple[int, dict[str, float | str]]]] = {}
    for i, r in rows:
        dev_id = str(r.get("device_id", "")).strip()
        device = cfg.device(dev_id)
        if device is None:
            raise FeedFormatError(f"{path}:{i}: unknown device_id {shown(dev_id)}")
        if device.site is None:
            raise FeedFormatError(f"{path}:{i}: device {dev_id} is of kind {device.kind}: it has no site and so no "
                                  "topic (only noise and gas devices can be replayed)")
        try:
            ts = _ts(r["ts"])
        except (KeyError, ValueError) as exc:
            raise FeedFormatError(f"{path}:{i}: bad ts: {exc}") from None
        values: dict[str, float | str] = {}
        for k, v in r.items():
            if k in _ID_KEYS or v is None or v == "":
                continue
            if k == "flag":
                values[k] = str(v)
                continue
            try:
                values[k] = float(v)
            except (TypeError, ValueError):
                raise FeedFormatError(f"{path}:{i}: {shown(k)}: not a number: {shown(v)}") from None
        if not values:  # a short row: published as `"values": {}` before
            raise FeedFormatError(f"{path}:{i}: no values for {dev_id} (a row shorter than the header?)")
        per_device.setdefault(dev_id, []).append((ts, values))
    out: list[tuple[int, int, Message]] = []
    order = {d: k for k, d in enumerate(cfg.device_ids)}
    for dev_id, samples in per_device.items():
        device = cfg.devices[cfg.device_index(dev_id)]  # known: checked above
        rep = device.report_interval_s * 1000
        samples.sort(key=lambda s: s[0])
        buckets: dict[int, list[tuple[int, dict[str, float | str]]]] = {}
        for ts, v in samples:
            buckets.setdefault(-(-ts // rep), []).append((ts, v))   # ceil: a reading at the report time belongs to it
        for seq, key in enumerate(sorted(buckets), 1):
            batch = buckets[key]
            t = batch[-1][0]
            payload = encode_batch(device.id, site_of(device), device.kind, batch, seq, device.sample_s, t)
            topic = f"city/xm/{device.kind}/{device.site}/{device.id}/data" if device.protocol == "hj212" else data_topic(device)
            out.append((t, order[dev_id], Message(t, device.id, topic, payload, len(batch))))
    out.sort(key=lambda x: x[:2])
    return [m for _, _, m in out]


def _in_range(t: object) -> bool:
    """Whether `t` is a number of epoch ms within ingest's +-TS_MS_LIMIT (beyond: no calendar time, no int64 ns)."""
    return (isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
            and abs(t) < TS_MS_LIMIT)


def _ts(value: object) -> int:
    """Epoch ms of a readings row's ts (epoch ms or ISO 8601). Raises ValueError, showing at most 80
    characters of the value."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"not a time: {shown(value)}")
    text = str(value).strip()
    if isinstance(value, str) and text.lstrip("-").isdigit():
        value = int(text)
    # A time without a zone is refused: read as UTC, it shifted a local-time file by 8 h where `detect` refuses it.
    return parse_time_ms(value, zone_required=True)
