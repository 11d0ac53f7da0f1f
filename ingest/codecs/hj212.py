"""HJ 212-2017 frames: CRC16, encoding (for simulators) and parsing (for the collector).

Frame: `##` + 4-digit decimal data-segment length + data segment + 4-hex CRC16 + `\\r\\n`; the data segment
is `QN=..;ST=..;CN=..;PW=..;MN=..;Flag=..;CP=&&DataTime=..;code-Rtd=v,code-Flag=N;..&&` (domain.md §1.5).
HJ 212-2017 is superseded by HJ 212-2025 from 2026-01-01: `PROTOCOL_VERSION` names what this module speaks.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from ingest.codecs.errors import DecodeError

PROTOCOL_VERSION = "HJ212-2017"

# DataTime is Beijing local time with no zone (UTC+8, no daylight saving since 1991).
BEIJING_OFFSET_S = 8 * 3600
BEIJING = timezone(timedelta(seconds=BEIJING_OFFSET_S), "Asia/Shanghai")

# Noise factor codes (HJ 212-2017, unit dB) -> citywatch field names. `B03` is the 2005 code for
# equivalent sound level that field devices still send.
NOISE_CODES: dict[str, str] = {
    "LA": "la", "Leq": "leq", "LMx": "lmax", "LMn": "lmin", "L5": "l5", "L10": "l10", "L50": "l50",
    "L90": "l90", "L95": "l95", "SD": "sd", "B03": "leq",
}
FIELD_CODES: dict[str, str] = {f: c for c, f in NOISE_CODES.items() if c != "B03"}

# CN codes that carry readings, and which value suffix each uses. Aggregated data (minute, hour,
# day) stamp DataTime at the start of the period; readings are stamped at the interval end, so the
# period length is added (`INTERVAL_S`).
DATA_SUFFIX = {2011: "Rtd", 2051: "Avg", 2061: "Avg", 2031: "Avg"}
INTERVAL_S = {2011: 0, 2051: 60, 2061: 3600, 2031: 86400}

DATA_FLAGS = "NFMSDCTB"


def crc16(data: bytes) -> int:
    """CRC16 of HJ 212 (domain.md §1.5), computed over the data segment only.

    crc = 0xFFFF; for each byte: crc = (crc >> 8) ^ b, then 8 times: shift right, xor 0xA001 if the
    bit shifted out was 1. (Not CRC-16/MODBUS: the byte is xored into the *high-shifted* value.)
    """
    crc = 0xFFFF
    for b in data:
        crc = (crc >> 8) ^ b
        for _ in range(8):
            lsb = crc & 1
            crc >>= 1
            if lsb:
                crc ^= 0xA001
    return crc


# A byte-wise table of the 8 shift rounds makes the CRC ~8x faster on the collector's hot path.
_TABLE = []
for _b in range(256):
    _c = _b
    for _ in range(8):
        _c = (_c >> 1) ^ 0xA001 if _c & 1 else _c >> 1
    _TABLE.append(_c)
del _b, _c


def _crc16_fast(data: bytes) -> int:
    # After `crc = (crc >> 8) ^ b` the value fits in 8 bits, so the 8 shift rounds are one table lookup.
    crc = 0xFFFF
    table = _TABLE
    for b in data:
        crc = table[(crc >> 8) ^ b]
    return crc


def encode_frame(segment: str) -> bytes:
    """Wrap a data segment into a frame: `##` + 4-digit length + segment + CRC hex + `\\r\\n`.

    Raises ValueError when the segment is longer than the 4-digit length field allows (9999 bytes).
    """
    body = segment.encode("utf-8")
    if len(body) > 9999:
        raise ValueError(f"HJ 212 data segment is {len(body)} bytes; the length field allows 9999")
    return b"##%04d%s%04X\r\n" % (len(body), body, _crc16_fast(body))


def _fmt_value(v: float) -> str:
    # N3.1 for noise codes: one decimal.
    return f"{float(v):.1f}"


def build_noise_frame(
    mn: str,
    local_dt: datetime,
    values: dict[str, float],
    flags: dict[str, str] | str | None = None,
    qn: str | None = None,
    st: int = 23,
    cn: int = 2011,
    pw: str = "123456",
    flag: int = 4,
) -> bytes:
    """An HJ 212 noise frame, as a field monitor would send it.

    mn:       device MN
    local_dt: DataTime, Beijing local time (naive datetime; a tz-aware one is converted to UTC+8)
    values:   code or citywatch field name -> dB value, e.g. {"LA": 63.4} or {"leq": 61.8}; in order
    flags:    code/field -> data flag letter (N F M S D C T B), or one letter for every value; default N
    qn:       request id YYYYMMDDhhmmsszzz (default: from local_dt)
    st, cn, pw: system code (23 acoustic environment), command (2011 real-time, 2051 minute...), password
    flag:     packet Flag (2017 version bits: 4 = no reply requested)
    """
    if local_dt.tzinfo is not None:
        local_dt = local_dt.astimezone(BEIJING).replace(tzinfo=None)
    suffix = DATA_SUFFIX.get(cn, "Rtd")
    if qn is None:
        qn = local_dt.strftime("%Y%m%d%H%M%S") + f"{local_dt.microsecond // 1000:03d}"
    parts = []
    for key, v in values.items():
        code = FIELD_CODES.get(key, key)
        if isinstance(flags, str):
            fl = flags
        elif flags:
            fl = flags.get(key, flags.get(code, "N"))
        else:
            fl = "N"
        parts.append(f"{code}-{suffix}={_fmt_value(v)},{code}-Flag={fl}")
    cp = f"DataTime={local_dt.strftime('%Y%m%d%H%M%S')};" + ";".join(parts)
    segment = f"QN={qn};ST={st};CN={cn};PW={pw};MN={mn};Flag={flag};CP=&&{cp}&&"
    return encode_frame(segment)


@dataclass
class Hj212Frame:
    """A parsed HJ 212 frame.

    values:  citywatch field name -> value of the CN's data suffix (-Rtd or -Avg), known noise codes only
    flags:   citywatch field name -> data flag letter (N when the frame gives none)
    raw:     every `code-suffix` -> text value of the CP segment, including codes citywatch does not map
    ts_ms:   reading time, UTC milliseconds (DataTime converted from Beijing time; interval end for aggregates)
    """

    qn: str
    st: int
    cn: int
    pw: str
    mn: str
    flag: int
    data_time: datetime
    ts_ms: int
    values: dict[str, float] = field(default_factory=dict)
    flags: dict[str, str] = field(default_factory=dict)
    raw: dict[str, str] = field(default_factory=dict)
    pnum: int | None = None
    pno: int | None = None


def parse_frame(data: bytes) -> Hj212Frame:
    """Parse and check one frame.

    Raises DecodeError with reason:
      hj212_format  not a frame (prefix, length digits, CRC digits, segment or CP syntax, DataTime)
      hj212_length  the length field disagrees with the data segment
      hj212_crc     the CRC does not match the data segment
      hj212_unsupported  a valid frame whose CN carries no readings (status, replies)
    The trailing `\\r\\n` may be missing (some MQTT bridges strip it).
    """
    if data[:2] != b"##":
        raise DecodeError("hj212_format", "frame does not start with '##'")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    if len(data) < 10:
        raise DecodeError("hj212_format", f"frame of {len(data)} bytes is too short")
    length_txt = data[2:6]
    if not length_txt.isdigit():
        raise DecodeError("hj212_format", f"length field {length_txt!r} is not 4 decimal digits")
    declared = int(length_txt)
    segment = data[6:-4]
    crc_txt = data[-4:]
    if declared != len(segment):
        raise DecodeError("hj212_length", f"length field says {declared} bytes, data segment has {len(segment)}")
    try:
        crc_given = int(crc_txt, 16)
    except ValueError:
        raise DecodeError("hj212_format", f"CRC field {crc_txt!r} is not 4 hex digits") from None
    crc = _crc16_fast(segment)
    if crc != crc_given:
        raise DecodeError("hj212_crc", f"CRC is {crc_txt.decode('ascii', 'replace')}, data segment gives {crc:04X}")
    try:
        text = segment.decode("ascii")
    except UnicodeDecodeError:
        raise DecodeError("hj212_format", "data segment is not ASCII") from None
    return _parse_segment(text)


def _parse_segment(text: str) -> Hj212Frame:
    cp_at = text.find("CP=&&")
    if cp_at < 0 or not text.endswith("&&") or len(text) < cp_at + 7:
        raise DecodeError("hj212_format", "data segment has no CP=&&...&& part")
    head: dict[str, str] = {}
    for item in text[:cp_at].split(";"):
        if not item:
            continue
        k, sep, v = item.partition("=")
        if not sep:
            raise DecodeError("hj212_format", f"header item {item!r} is not key=value")
        head[k] = v
    for key in ("ST", "CN", "MN"):
        if key not in head:
            raise DecodeError("hj212_format", f"header has no {key}")
    try:
        st = int(head["ST"])
        cn = int(head["CN"])
        flag = int(head.get("Flag", "0"))
        pnum = int(head["PNUM"]) if "PNUM" in head else None
        pno = int(head["PNO"]) if "PNO" in head else None
    except ValueError:
        raise DecodeError("hj212_format", "ST, CN, Flag, PNUM and PNO must be integers") from None
    mn = head["MN"]
    if not mn:
        raise DecodeError("hj212_format", "MN is empty")
    suffix = DATA_SUFFIX.get(cn)
    if suffix is None:
        raise DecodeError("hj212_unsupported", f"CN={cn} carries no readings (citywatch ingests CN 2011/2051/2061/2031)")
    raw: dict[str, str] = {}
    # CP items are separated by ';' and sub-items of one factor by ','.
    for group in text[cp_at + 5:-2].split(";"):
        for item in group.split(","):
            if not item:
                continue
            k, sep, v = item.partition("=")
            if not sep:
                raise DecodeError("hj212_format", f"CP item {item!r} is not key=value")
            raw[k] = v
    dt_txt = raw.get("DataTime")
    if dt_txt is None:
        raise DecodeError("hj212_format", "CP has no DataTime")
    data_time, ts_ms = _data_time(dt_txt)
    ts_ms += INTERVAL_S[cn] * 1000
    values: dict[str, float] = {}
    flags: dict[str, str] = {}
    for code, name in NOISE_CODES.items():
        text_value = raw.get(f"{code}-{suffix}")
        if text_value is None:
            continue
        try:
            values[name] = float(text_value)
        except ValueError:
            raise DecodeError("hj212_format", f"{code}-{suffix}={text_value!r} is not a number") from None
        flags[name] = raw.get(f"{code}-Flag", "N")
    return Hj212Frame(
        qn=head.get("QN", ""), st=st, cn=cn, pw=head.get("PW", ""), mn=mn, flag=flag, data_time=data_time,
        ts_ms=ts_ms, values=values, flags=flags, raw=raw, pnum=pnum, pno=pno,
    )


def _data_time(txt: str) -> tuple[datetime, int]:
    """DataTime `YYYYMMDDhhmmss` (Beijing time; some loggers append milliseconds `zzz`) -> (naive local
    datetime, UTC ms)."""
    if len(txt) not in (14, 17) or not txt.isdigit():
        raise DecodeError("hj212_format", f"DataTime {txt!r} is not YYYYMMDDhhmmss")
    try:
        dt = datetime(int(txt[0:4]), int(txt[4:6]), int(txt[6:8]), int(txt[8:10]), int(txt[10:12]), int(txt[12:14]),
                      int(txt[14:17] or 0) * 1000)
    except ValueError as exc:
        raise DecodeError("hj212_format", f"DataTime {txt!r}: {exc}") from None
    return dt, (calendar.timegm(dt.timetuple()) - BEIJING_OFFSET_S) * 1000 + dt.microsecond // 1000
