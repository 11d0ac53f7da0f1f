"""The catalogue of bad inputs: each case is a topic, a payload and the reason codes it must produce.

Shared by the unit table test (Decoder alone) and the integration test (published to a real broker,
checked in the collector's dead-letter store). Cases are built for a receive time `now_ms`, against
the example inventory in config/ (devices named below).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from ingest.codecs.hj212 import build_noise_frame, encode_frame
from ingest.codecs.json_envelope import encode_batch

NOISE_ID, NOISE_SITE = "XM0001NOISE", "SM-2025-101"
OTHER_SITE = "HL-2025-102"
HJ_ID, HJ_SITE = "XM0004NOISE", "HC-2025-104"
GAS_ID, GAS_SITE = "XMG0017", "GS-SM-07"  # medium_b, full scale 250 kPa

NOISE_TOPIC = f"city/xm/noise/{NOISE_SITE}/{NOISE_ID}/data"
GAS_TOPIC = f"city/xm/gas/{GAS_SITE}/{GAS_ID}/data"
HJ_TOPIC = f"city/xm/hj212/{HJ_ID}"

GOOD_NOISE = {"leq": 61.8, "lmax": 78.2, "lmin": 52.0, "l10": 65.1, "l50": 60.2, "l90": 55.3, "flag": "N"}


@dataclass
class Case:
    """name: test id; reasons: the reject reason codes expected, sorted; landed: rows that must land."""

    name: str
    topic: str
    payload: bytes
    reasons: list[str]
    landed: int = 0


def _noise(samples, **env) -> bytes:
    doc = {"schema": "xm.noise.v1", "device_id": NOISE_ID, "site_id": NOISE_SITE, "seq": 1, "interval_s": 60}
    doc.update(env)
    doc["samples"] = samples
    return json.dumps(doc).encode()


def _bj(now_ms: int, offset_s: int = 0) -> datetime:
    """Beijing local time (naive) of now + offset."""
    return datetime.fromtimestamp(now_ms // 1000 + offset_s, tz=UTC).replace(tzinfo=None) + timedelta(hours=8)


def _frame(now_ms: int, flags=None, mn: str = HJ_ID, offset_s: int = 0, **kw) -> bytes:
    return build_noise_frame(mn, _bj(now_ms, offset_s), {"LA": 63.4, "Leq": 61.8, "LMx": 78.2}, flags or {}, **kw)


def catalogue(now_ms: int, max_payload_bytes: int = 1_048_576) -> list[Case]:
    """Every bad input, built for receive time `now_ms` (UTC ms)."""
    t = now_ms - 60_000  # a good, recent sample time
    good = {"ts": t, "values": GOOD_NOISE}

    def one(values, ts=t) -> bytes:
        return _noise([{"ts": ts, "values": values}])

    def with_(**changes) -> dict:
        v = dict(GOOD_NOISE)
        v.update(changes)
        return v

    good_frame = _frame(now_ms)
    bad_crc = good_frame[:-6] + (b"0000" if not good_frame[-6:-2] == b"0000" else b"1111") + b"\r\n"
    bad_len = b"##0999" + good_frame[6:]
    seg_9011 = f"QN=20250601223000000;ST=91;CN=9011;PW=123456;MN={HJ_ID};Flag=4;CP=&&QnRtn=1&&"
    cases = [
        # --- payload level: not decodable -------------------------------------------------------------
        Case("invalid_json_truncated", NOISE_TOPIC, b'{"schema": "xm.noise.v1", "samples": [', ["invalid_json"]),
        Case("invalid_json_text", NOISE_TOPIC, "噪声 61.8 dB".encode(), ["invalid_json"]),
        Case("json_scalar", NOISE_TOPIC, b"61.8", ["bad_schema"]),
        Case("json_object_without_samples", NOISE_TOPIC, b'{"leq": 61.8}', ["bad_schema"]),
        Case("empty_samples", NOISE_TOPIC, _noise([]), ["bad_schema"]),
        Case("empty_payload", NOISE_TOPIC, b"", ["empty_payload"]),
        Case("oversize_payload", NOISE_TOPIC, _noise([good] * (max_payload_bytes // 100 + 10)), ["oversize"]),
        Case("binary_garbage", NOISE_TOPIC, bytes(range(256)) * 4, ["binary_garbage"]),
        Case("binary_nul_bytes", NOISE_TOPIC, b"\x00\x01\x02{\x00}", ["binary_garbage"]),
        # --- topic and inventory ----------------------------------------------------------------------
        Case("unknown_device", f"city/xm/noise/{NOISE_SITE}/XM9999NOISE/data", one(GOOD_NOISE), ["unknown_device"]),
        Case("device_under_other_site", f"city/xm/noise/{OTHER_SITE}/{NOISE_ID}/data", one(GOOD_NOISE),
             ["topic_site_mismatch"]),
        Case("noise_device_on_gas_topic", f"city/xm/gas/{NOISE_SITE}/{NOISE_ID}/data", one(GOOD_NOISE), ["wrong_kind"]),
        Case("gas_schema_on_noise_topic", NOISE_TOPIC, _noise([good], schema="xm.gas.v1"), ["wrong_kind"]),
        Case("envelope_names_other_device", NOISE_TOPIC, _noise([good], device_id="XM0002NOISE"),
             ["envelope_mismatch"]),
        Case("unknown_topic", "city/xm/noise/data", one(GOOD_NOISE), ["unknown_topic"]),
        Case("device_event", f"city/xm/noise/{NOISE_SITE}/{NOISE_ID}/event", b'{"alarm": "tamper"}', ["device_event"]),
        Case("bad_status", f"city/xm/noise/{NOISE_SITE}/{NOISE_ID}/status", b"maybe", ["bad_status"]),
        # --- row level: types -------------------------------------------------------------------------
        Case("string_for_number", NOISE_TOPIC, one(with_(leq="61.8")), ["not_a_number"]),
        Case("array_for_number", NOISE_TOPIC, one(with_(lmax=[78.2])), ["not_a_number"]),
        Case("boolean_for_number", NOISE_TOPIC, one(with_(lmin=True)), ["not_a_number"]),
        Case("ts_as_iso_string", NOISE_TOPIC, _noise([{"ts": "2025-06-01T14:30:00Z", "values": GOOD_NOISE}]),
             ["not_a_number"]),
        Case("nan_value", NOISE_TOPIC, one(with_(leq=float("nan"))), ["non_finite"]),
        Case("infinite_value", NOISE_TOPIC, one(with_(lmax=float("inf"))), ["non_finite"]),
        Case("missing_ts", NOISE_TOPIC, _noise([{"values": GOOD_NOISE}]), ["missing_field"]),
        Case("missing_values", NOISE_TOPIC, _noise([{"ts": t}]), ["missing_field"]),
        Case("missing_leq_and_la", NOISE_TOPIC, one({"lmax": 78.2, "lmin": 52.0}), ["missing_field"]),
        Case("gas_missing_p", GAS_TOPIC, encode_batch(GAS_ID, GAS_SITE, "gas", [(t, {"batt_v": 3.5})], 1, 300, now_ms),
             ["missing_field"]),
        Case("bad_flag_letter", NOISE_TOPIC, one(with_(flag="X")), ["bad_flag"]),
        # A flag sent as a number (HJ 212 codes are letters) used to be skipped like an unknown value name and
        # the row stored as N (valid) while the device reported a fault.
        Case("flag_as_integer", NOISE_TOPIC, one(with_(flag=4)), ["bad_flag"]),
        Case("flag_as_float", GAS_TOPIC, encode_batch(GAS_ID, GAS_SITE, "gas", [(t, {"p": 2.5, "flag": 3.0})], 1, 300,
                                                      now_ms), ["bad_flag"]),
        # --- row level: physics ------------------------------------------------------------------------
        Case("absurd_noise_level", NOISE_TOPIC, one(with_(leq=500.0, lmax=600.0)), ["out_of_range"]),
        Case("negative_decibels", NOISE_TOPIC, one(with_(lmin=-10.0)), ["out_of_range"]),
        Case("absurd_gas_pressure", GAS_TOPIC, encode_batch(GAS_ID, GAS_SITE, "gas", [(t, {"p": 1e6})], 1, 300, now_ms),
             ["out_of_range"]),
        Case("gas_mpa_beyond_full_scale", GAS_TOPIC,
             encode_batch(GAS_ID, GAS_SITE, "gas", [(t, {"p": 0.6})], 1, 300, now_ms, units={"p": "MPa"}),
             ["out_of_range"]),
        Case("unsupported_unit", GAS_TOPIC,
             encode_batch(GAS_ID, GAS_SITE, "gas", [(t, {"p": 1.0})], 1, 300, now_ms, units={"p": "bar"}), ["bad_unit"]),
        Case("lmax_below_leq", NOISE_TOPIC, one(with_(leq=80.0, lmax=78.2)), ["noise_order"]),
        Case("l90_above_l10", NOISE_TOPIC, one(with_(l90=66.0)), ["noise_order"]),
        # --- row level: time ---------------------------------------------------------------------------
        Case("ts_in_2000", NOISE_TOPIC, one(GOOD_NOISE, ts=946684800000), ["ts_too_old"]),
        Case("ts_far_future", NOISE_TOPIC, one(GOOD_NOISE, ts=now_ms + 365 * 86400_000), ["ts_future"]),
        Case("ts_in_seconds", NOISE_TOPIC, one(GOOD_NOISE, ts=t // 1000), ["ts_seconds_not_ms"]),
        Case("ts_local_time_as_utc", NOISE_TOPIC, one(GOOD_NOISE, ts=now_ms + 8 * 3600_000), ["ts_future"]),
        # --- HJ 212 ---------------------------------------------------------------------------------------
        Case("hj212_bad_crc", HJ_TOPIC, bad_crc, ["hj212_crc"]),
        Case("hj212_bad_length", HJ_TOPIC, bad_len, ["hj212_length"]),
        Case("hj212_not_a_frame", HJ_TOPIC, b"QN=1;ST=23;CN=2011", ["hj212_format"]),
        Case("hj212_binary", HJ_TOPIC, b"\x00\xff\xfe garbage \x01", ["binary_garbage"]),
        Case("hj212_flag_d", HJ_TOPIC, _frame(now_ms, flags={"Leq": "D"}), ["hj212_flag"]),
        Case("hj212_flag_m", HJ_TOPIC, _frame(now_ms, flags="M"), ["hj212_flag"]),
        Case("hj212_mn_mismatch", HJ_TOPIC, _frame(now_ms, mn="XM0008NOISE"), ["topic_mn_mismatch"]),
        Case("hj212_unknown_mn", "city/xm/hj212/NOPE0001", _frame(now_ms, mn="NOPE0001"), ["unknown_device"]),
        Case("hj212_reply_frame", HJ_TOPIC, encode_frame(seg_9011), ["hj212_unsupported"]),
        Case("hj212_bad_datatime", HJ_TOPIC, encode_frame(
            f"QN=1;ST=23;CN=2011;PW=123456;MN={HJ_ID};Flag=4;CP=&&DataTime=20251341250000;Leq-Rtd=61.8,Leq-Flag=N&&"),
            ["hj212_format"]),
        # --- mixed payloads: the valid rows land -------------------------------------------------------------
        Case("duplicated_rows", NOISE_TOPIC, _noise([good, good, {"ts": t - 60_000, "values": GOOD_NOISE}]),
             ["duplicate_row"], landed=2),
        Case("mixed_payload", NOISE_TOPIC, _noise([
            {"ts": t - 120_000, "values": GOOD_NOISE},
            {"ts": t - 60_000, "values": with_(leq="loud")},
            {"ts": t, "values": GOOD_NOISE},
            {"ts": t + 60_000 * 60, "values": GOOD_NOISE},
            {"ts": t - 180_000, "values": with_(lmax=50.0)},
        ]), sorted(["not_a_number", "ts_future", "noise_order"]), landed=2),
    ]
    return cases
