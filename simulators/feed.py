"""Turn the scenario's device readings into the feed the field would publish: one message per report,
in the payload format of each device (JSON envelope or HJ 212 frame), with the communication faults
(C1 gap and back-fill, C2 duplicates and out-of-order, C3 clock faults, C4 bad frames) applied.

The feed is a pure function of (scenario, config): the same seed gives the same bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from core.timefmt import iso_utc_ms
from ingest.codecs.hj212 import build_noise_frame
from ingest.codecs.json_envelope import encode_batch
from simulators.faults import param
from simulators.gas_sensor import simulate_gas
from simulators.noise_monitor import simulate_noise
from simulators.series import DeviceSeries, device_rng

if TYPE_CHECKING:
    from config.inventory import Device
    from config.model import Config
    from simulators.scenario import Fault, Scenario

_Y2K_MS = 946684800000  # 2000-01-01T00:00Z: where a device clock lands after a reset (C3)


@dataclass(frozen=True)
class Message:
    """One MQTT publish of the feed.

    t_ms:    simulated publish time, UTC ms (the feed is ordered by it)
    device:  publishing device id (it authenticates as itself)
    topic, payload: what is published (QoS 1, not retained)
    n:       new readings carried (0 for a duplicate, or a payload no decoder will accept)
    """

    t_ms: int
    device: str
    topic: str
    payload: bytes
    n: int

    def to_json(self) -> dict[str, Any]:
        try:
            body = {"payload": self.payload.decode("utf-8")}
        except UnicodeDecodeError:
            body = {"payload_b64": base64.b64encode(self.payload).decode("ascii")}
        return {"t": self.t_ms, "device": self.device, "topic": self.topic, "n": self.n, **body}


def data_topic(device: Device) -> str:
    """The topic a device publishes readings on (domain.md section 3)."""
    if device.protocol == "hj212":
        return f"city/xm/hj212/{device.mn_or_id}"
    return f"city/xm/{device.kind}/{device.site}/{device.id}/data"


def status_topic(device: Device) -> str:
    return f"city/xm/{device.kind}/{device.site}/{device.id}/status"


def _utc_offset_s(scenario: Scenario) -> int:
    # One offset for the whole scenario: Asia/Shanghai has had no daylight saving since 1991.
    offset = dt.datetime.fromtimestamp(scenario.start_ms / 1000, scenario.tz).utcoffset()
    assert offset is not None  # an aware datetime (scenario.tz is a ZoneInfo) has one
    return int(offset.total_seconds())


def site_of(device: Device) -> str:
    """The site of a device the simulators publish for. Raises ValueError for a device without one (a
    generic device: it has no topic, and only `citywatch detect` reads it)."""
    if device.site is None:
        raise ValueError(f"device {device.id} is of kind {device.kind} and has no site: only noise and gas "
                         "devices can be simulated or replayed")
    return device.site


def simulate_device(device: Device, scenario: Scenario) -> DeviceSeries:
    """The readings of one device over the scenario, its faults applied."""
    offset_s = _utc_offset_s(scenario)
    if device.kind == "noise":
        return simulate_noise(device, scenario, offset_s)
    return simulate_gas(device, scenario, offset_s)


def build_feed(scenario: Scenario, cfg: Config) -> list[Message]:
    """Every message of the scenario day (history excluded), ordered by (simulated publish time, inventory order)."""
    out: list[tuple[int, int, int, Message]] = []
    for index, device_id in enumerate(scenario.devices):
        device = cfg.devices[cfg.device_index(device_id)]  # the scenario's devices are the config's
        for k, msg in enumerate(device_messages(device, scenario, _history_seq(device, scenario))):
            out.append((msg.t_ms, index, k, msg))
    out.sort(key=lambda r: r[:3])
    return [r[3] for r in out]


HISTORY_BATCH_S = 3600


def build_history(scenario: Scenario, cfg: Config) -> list[Message]:
    """The fault-free history before the scenario's start: one JSON envelope per device and hour (a
    back-fill, as a data migration would send it; HJ 212 devices too), ordered like build_feed."""
    hist = scenario.history()
    if hist is None:
        return []
    out: list[tuple[int, int, Message]] = []
    for index, device_id in enumerate(scenario.devices):
        device = cfg.devices[cfg.device_index(device_id)]  # the scenario's devices are the config's
        series = simulate_device(device, hist)
        hour = (series.ts_ms - hist.start_ms - 1) // (HISTORY_BATCH_S * 1000)
        bounds = np.flatnonzero(np.r_[True, hour[1:] != hour[:-1], True])
        topic = f"city/xm/{device.kind}/{device.site}/{device.id}/data"
        for seq, (a, b) in enumerate(zip(bounds[:-1], bounds[1:]), 1):
            samples = [(int(series.ts_ms[r]), _values(series, r)) for r in range(a, b)]
            t = samples[-1][0]
            payload = encode_batch(device.id, site_of(device), device.kind, samples, seq, device.sample_s, t)
            out.append((t, index, Message(t, device.id, topic, payload, len(samples))))
    out.sort(key=lambda r: r[:2])
    return [r[2] for r in out]


def _history_seq(device: Device, scenario: Scenario) -> int:
    """Envelope seq numbers of the scenario day continue after the history's (one per hour)."""
    if scenario.history_ms <= 0:
        return 0
    return -(-scenario.history_ms // (HISTORY_BATCH_S * 1000))


def device_messages(device: Device, scenario: Scenario, seq0: int = 0) -> list[Message]:
    """The messages of one device, in its own publish order; envelope seq numbers start after `seq0`."""
    series = simulate_device(device, scenario)
    rng = device_rng(scenario.seed, device.id, "comms")
    offset_s = _utc_offset_s(scenario)
    faults = scenario.faults_of(device.id)
    ts = series.ts_ms.copy()

    # C3: the device stamps its readings with a wrong clock.
    for f in faults:
        if f.type.code != "C3":
            continue
        m = (ts >= f.start_ms) & (ts < f.end_ms)
        mode = param(f, "mode")
        if mode == "local_as_utc":
            ts[m] += offset_s * 1000
        elif mode == "reset":
            ts[m] = _Y2K_MS + (ts[m] - f.start_ms)
        else:
            ts[m] += int(float(param(f, "skew_s")) * 1000)

    # Reports: report j at start + j * report interval carries the samples since the previous one.
    rep = device.report_interval_s * 1000
    report_of = (series.ts_ms - scenario.start_ms + rep - 1) // rep  # 1-based report number per sample
    n_reports = int(report_of[-1]) if len(report_of) else 0
    latency = rng.integers(200, 3000, n_reports + 1)          # ms from report time to publish
    bounds = np.searchsorted(report_of, np.arange(1, n_reports + 2), side="left")
    groups = [(scenario.start_ms + j * rep, list(range(bounds[j - 1], bounds[j]))) for j in range(1, n_reports + 1)]

    # C1: reports inside the gap are held back and sent in one late batch when the link returns.
    for f in faults:
        if f.type.code != "C1":
            continue
        held: list[tuple[int, list[int]]] = []
        kept: list[tuple[int, list[int]]] = []
        for t, rows in groups:
            (held if f.start_ms <= t < f.end_ms else kept).append((t, rows))
        if held:
            back = [r for _, rows in held for r in rows]
            later = [i for i, (t, _) in enumerate(kept) if t >= f.end_ms]
            if later and device.protocol != "hj212":
                t0, rows = kept[later[0]]
                kept[later[0]] = (t0, back + rows)
            else:
                kept.append((f.end_ms, back))
            kept.sort(key=lambda g: g[0])
        groups = kept

    msgs: list[Message] = []
    seq = seq0
    for j, (t, rows) in enumerate(groups):
        t_pub = int(t + latency[min(j, n_reports)])
        if device.protocol == "hj212":
            # One frame per reading: HJ 212 minute data carries one DataTime per frame.
            for k, r in enumerate(rows):
                msgs.append(Message(t_pub + k, device.id, data_topic(device), _frame(device, series, ts, r, offset_s), 1))
        else:
            samples = [(int(ts[r]), _values(series, r)) for r in rows]
            if not samples:
                continue
            seq += 1
            payload = encode_batch(device.id, site_of(device), device.kind, samples, seq, device.sample_s, t_pub)
            msgs.append(Message(t_pub, device.id, data_topic(device), payload, len(samples)))

    for f in faults:
        code = f.type.code
        if code == "C2":
            msgs = _dup_and_reorder(msgs, f, rng)
        elif code == "C4" and param(f, "mode") in ("crc", "length"):
            msgs = _corrupt(msgs, f, rng, device.protocol)
    return msgs


def _values(series: DeviceSeries, r: int) -> dict[str, float | str]:
    out: dict[str, float | str] = {}
    for k, col in series.values.items():
        v = col[r]
        if not np.isnan(v):
            out[k] = float(v)
    if series.flags is not None:
        out["flag"] = str(series.flags[r])
    return out


def _frame(device: Device, series: DeviceSeries, ts: npt.NDArray[np.int64], r: int, offset_s: int) -> bytes:
    # Minute data (CN 2051) is stamped with the start of its minute in Beijing time.
    start_local = dt.datetime(1970, 1, 1) + dt.timedelta(milliseconds=int(ts[r]) - device.sample_s * 1000 + offset_s * 1000)
    values = {k: float(series.values[k][r]) for k in ("leq", "lmax", "lmin", "l10", "l50", "l90")}
    assert series.flags is not None  # noise series always carry flags (simulate_noise)
    return build_noise_frame(device.mn_or_id, start_local, values, str(series.flags[r]), cn=2051)


def _dup_and_reorder(msgs: list[Message], f: Fault, rng: np.random.Generator) -> list[Message]:
    """C2: a share of messages is sent twice (QoS 1 redelivery), another share swaps order with the next."""
    p_dup, p_ooo = float(param(f, "dup_pct")) / 100.0, float(param(f, "ooo_pct")) / 100.0
    draws = rng.uniform(0, 1, (2, len(msgs)))
    out = list(msgs)
    for i in range(len(out) - 1):
        if f.start_ms <= out[i].t_ms < f.end_ms and draws[1, i] < p_ooo:
            a, b = out[i], out[i + 1]
            out[i], out[i + 1] = (Message(a.t_ms, b.device, b.topic, b.payload, b.n),
                                  Message(b.t_ms, a.device, a.topic, a.payload, a.n))
    result = []
    for i, m in enumerate(out):
        result.append(m)
        if f.start_ms <= m.t_ms < f.end_ms and draws[0, i] < p_dup:
            result.append(Message(m.t_ms + 1000 + int(draws[0, i] * 1e5) % 4000, m.device, m.topic, m.payload, 0))
    result.sort(key=lambda m: m.t_ms)
    return result


def _corrupt(msgs: list[Message], f: Fault, rng: np.random.Generator, protocol: str) -> list[Message]:
    """C4: frames with a wrong CRC or length field (HJ 212), or truncated JSON."""
    share = float(param(f, "pct")) / 100.0
    out = []
    for m in msgs:
        if f.start_ms <= m.t_ms < f.end_ms and rng.uniform() < share:
            p = m.payload
            if protocol == "hj212" and param(f, "mode") == "crc":
                crc = p[-6:-2]
                bad = b"%04X" % (int(crc, 16) ^ 0x5A5A)
                p = p[:-6] + bad + p[-2:]
            elif protocol == "hj212":
                length = int(p[2:6])
                p = p[:2] + b"%04d" % (length + 7) + p[6:]
            else:
                p = p[: len(p) // 2]
            m = Message(m.t_ms, m.device, m.topic, p, 0)
        out.append(m)
    return out


def write_feed(messages: Iterable[Message], out: IO[str]) -> int:
    """Write messages as JSONL (the replay format); returns the count."""
    n = 0
    for m in messages:
        out.write(json.dumps(m.to_json(), separators=(",", ":"), sort_keys=True) + "\n")
        n += 1
    return n


def write_truth(scenario: Scenario, path: Path) -> int:
    """Write the ground truth: one JSON record per injected fault, ordered by start."""
    faults = sorted(scenario.faults, key=lambda f: (f.start_ms, f.id))
    # Each record also names its scenario's span and device count: `score` needs them for false alerts
    # per device-day, and a record stays meaningful on its own.
    meta = {"name": scenario.name, "seed": scenario.seed, "start": iso_utc_ms(scenario.start_ms),
            "end": iso_utc_ms(scenario.end_ms), "devices": len(scenario.devices)}
    with open(path, "w", encoding="utf-8") as fh:
        for f in faults:
            fh.write(json.dumps({**f.truth_record(), "scenario": meta}, sort_keys=True) + "\n")
    return len(faults)


def iter_json_lines(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                yield json.loads(line)
