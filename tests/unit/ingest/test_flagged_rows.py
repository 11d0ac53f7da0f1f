"""Rows refused only for their data flag (ingest.refuse_flags, reason hj212_flag) are dead-lettered as ever
and also handed to the detectors as flag-only rows (sensor, ts, quality; no values), in arrival order,
never to the batcher; a row with any other problem is not; the rule set judges them by their flag alone."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from config import load_config
from core import FLAG_CODES, ReadingBatch
from ingest.codecs.hj212 import build_noise_frame
from ingest.codecs.json_envelope import encode_batch
from ingest.decode_worker import decode_chunk
from ingest.decoder import Decoder
from ingest.metrics import IngestMetrics
from ingest.pipeline import IngestPipeline

CFG = load_config("config")
NOW_MS = int(time.time() * 1000) // 60_000 * 60_000
RECV = NOW_MS * 1_000_000
GOOD = {"leq": 61.8, "lmax": 78.2, "lmin": 52.0, "l10": 65.1, "l50": 60.2, "l90": 55.3}
D, M = FLAG_CODES.index("D"), FLAG_CODES.index("M")
JSON_DEV = CFG.device("XM0001NOISE")
HJ_DEV = CFG.device("XM0004NOISE")
JSON_TOPIC = f"city/xm/noise/{JSON_DEV.site}/{JSON_DEV.id}/data"


def payload(samples) -> bytes:
    return encode_batch(JSON_DEV.id, JSON_DEV.site, "noise", samples, 1, 60, NOW_MS)


def hj212(flags, ts_ms: int = NOW_MS) -> tuple[str, bytes, int]:
    """An HJ 212 frame (CRC16 included) of the HJ 212 noise monitor, as a (topic, payload, recv_ns) message."""
    local = datetime.fromtimestamp(ts_ms // 1000, tz=UTC).replace(tzinfo=None) + timedelta(hours=8)
    mn = HJ_DEV.mn_or_id
    return f"city/xm/hj212/{mn}", build_noise_frame(mn, local, {"LA": 63.4, "Leq": 61.8, "LMx": 78.2}, flags), RECV


def assert_flag_only(batch: ReadingBatch, sensor: int, ts_ms: list[int], quality: list[int]) -> None:
    assert batch.sensor.tolist() == [sensor] * len(ts_ms)
    assert batch.ts_ns.tolist() == [t * 1_000_000 for t in ts_ms]
    assert batch.quality.tolist() == quality
    for name in ("leq", "la", "lmax", "p", "batt_v"):
        assert np.isnan(batch.column(name)).all(), name


def test_hj212_frame_flagged_d_is_dead_lettered_and_handed_on_flag_only():
    topic, frame, _ = hj212({"LA": "N", "Leq": "D", "LMx": "N"})
    out = Decoder(CFG).decode(topic, frame, RECV)
    assert [r.reason for r in out.rejects] == ["hj212_flag"] and len(out.batch) == 0
    assert_flag_only(out.flagged, CFG.device_index(HJ_DEV.id), [NOW_MS // 1000 * 1000], [D])
    assert out.flagged_pos.tolist() == [0]

    res = decode_chunk(Decoder(CFG), [(topic, frame, RECV)], 4096)
    assert [d.reason for d in res.deadletters] == ["hj212_flag"] and len(res.batch) == 0
    assert_flag_only(res.flagged, CFG.device_index(HJ_DEV.id), [NOW_MS // 1000 * 1000], [D])
    assert_flag_only(res.with_flagged(), CFG.device_index(HJ_DEV.id), [NOW_MS // 1000 * 1000], [D])


@pytest.mark.parametrize("rows", [3, 40], ids=["row_by_row", "numpy"])
def test_json_rows_flagged_d_or_m_among_valid_ones_keep_their_place(rows):
    flags = ["D" if i % 3 == 1 else "M" if i % 3 == 2 and i > 3 else "N" for i in range(rows)]
    samples = [(NOW_MS - 60_000 * (rows - i), {**GOOD, "flag": f}) for i, f in enumerate(flags)]
    out = Decoder(CFG).decode(JSON_TOPIC, payload(samples), RECV)
    refused = [i for i, f in enumerate(flags) if f != "N"]
    assert [r.reason for r in out.rejects] == ["hj212_flag"] * len(refused)
    assert [r.row["ts"] for r in out.rejects] == [samples[i][0] for i in refused]
    assert len(out.batch) == rows - len(refused) and (out.batch.quality == 0).all()
    index = CFG.device_index(JSON_DEV.id)
    assert_flag_only(out.flagged, index, [samples[i][0] for i in refused],
                     [FLAG_CODES.index(flags[i]) for i in refused])

    # After a message with one valid row: the detectors' feed is every row in payload order.
    first = payload([(NOW_MS - 60_000 * (rows + 1), GOOD)])
    res = decode_chunk(Decoder(CFG), [(JSON_TOPIC, first, RECV), (JSON_TOPIC, payload(samples), RECV)], 4096)
    [dead] = res.deadletters  # one record for the message, its refused rows listed
    assert dead.reasons() == ["hj212_flag"] * len(refused) and [r["index"] for r in dead.rows] == refused
    assert len(res.batch) == 1 + rows - len(refused)
    feed = res.with_flagged()
    assert feed.ts_ns.tolist() == [(NOW_MS - 60_000 * (rows + 1)) * 1_000_000] + [t * 1_000_000 for t, _ in samples]
    assert feed.quality.tolist() == [0] + [FLAG_CODES.index(f) for f in flags]
    leq = feed.column("leq")
    assert [math.isnan(x) for x in leq.tolist()] == [False] + [f != "N" for f in flags]


@pytest.mark.parametrize("rows", [1, 40], ids=["row_by_row", "numpy"])
@pytest.mark.parametrize("problem, reason", [
    ({"leq": 200.0}, "out_of_range"),
    ({"lmin": 70.0}, "noise_order"),
    ({"ts": NOW_MS + 3_600_000}, "ts_future"),
    ({"ts": 946_684_800_000}, "ts_too_old"),
])
def test_flag_d_with_another_problem_is_only_dead_lettered(rows, problem, reason):
    samples = [(NOW_MS - 60_000 * (i + 1), GOOD) for i in range(rows - 1)]
    bad = {**GOOD, **{k: v for k, v in problem.items() if k != "ts"}, "flag": "D"}
    samples.append((problem.get("ts", NOW_MS), bad))
    out = Decoder(CFG).decode(JSON_TOPIC, payload(samples), RECV)
    assert [r.reason for r in out.rejects] == [reason]
    assert out.flagged is None
    res = decode_chunk(Decoder(CFG), [(JSON_TOPIC, payload(samples), RECV)], 4096)
    assert len(res.flagged) == 0 and [d.reason for d in res.deadletters] == [reason]


@pytest.mark.parametrize("rows", [3, 40], ids=["row_by_row", "numpy"])
def test_flag_d_duplicating_a_kept_or_earlier_row_is_not_handed_on(rows):
    base = [(NOW_MS - 60_000 * (i + 10), GOOD) for i in range(rows - 3)]
    t = NOW_MS - 60_000
    samples = base + [(t, GOOD), (t, {**GOOD, "flag": "D"}), (NOW_MS, {**GOOD, "flag": "D"})]
    samples.append((NOW_MS, {**GOOD, "flag": "M"}))
    out = Decoder(CFG).decode(JSON_TOPIC, payload(samples), RECV)
    assert [r.reason for r in out.rejects] == ["hj212_flag"] * 3  # dead-lettered exactly as before
    assert_flag_only(out.flagged, CFG.device_index(JSON_DEV.id), [NOW_MS], [D])  # the first at NOW_MS only


def test_unknown_device_or_bad_frame_gives_no_flag_only_rows():
    topic, frame, _ = hj212("D")
    bad_crc = frame[:-6] + (b"0000" if frame[-6:-2] != b"0000" else b"0001") + b"\r\n"
    dec = Decoder(CFG)
    for t, p, reason in [(topic, bad_crc, "hj212_crc"), ("city/xm/hj212/NOSUCHMN", frame, "unknown_device"),
                         (f"city/xm/noise/{JSON_DEV.site}/NOSUCH/data", payload([(NOW_MS, {**GOOD, "flag": "D"})]),
                          "unknown_device")]:
        out = dec.decode(t, p, RECV)
        assert [r.reason for r in out.rejects] == [reason] and out.flagged is None


def test_flag_n_and_unrefused_flags_are_unchanged():
    samples = [(NOW_MS - 60_000 * i, {**GOOD, "flag": f}) for i, f in enumerate("NCNTN")]
    res = decode_chunk(Decoder(CFG), [(JSON_TOPIC, payload(samples), RECV), hj212("N")], 4096)
    assert res.deadletters == [] and len(res.flagged) == 0 and len(res.flagged_at) == 0
    assert res.with_flagged() is res.batch
    assert res.batch.quality.tolist() == [FLAG_CODES.index(f) for f in "NCNTN"] + [0]


def test_decode_many_gives_the_same_flag_only_rows_as_decode():
    msgs = []
    for k in range(6):
        flags = "NDMDNN"[k:] + "NDMDNN"[:k]
        samples = [(NOW_MS - 60_000 * (20 * k + i), {**GOOD, "flag": f}) for i, f in enumerate(flags)]
        if k == 2:
            samples.append(samples[1])  # a duplicate flagged row
        msgs.append((JSON_TOPIC, payload(samples), RECV))
    msgs.append(hj212("D"))
    dec = Decoder(CFG)
    _, many = dec._decode_many(msgs)
    for (t, p, r), m in zip(msgs, many):
        one = dec.decode(t, p, r)
        assert [x.reason for x in m.rejects] == [x.reason for x in one.rejects]
        assert (m.flagged is None) == (one.flagged is None)
        if one.flagged is not None:
            assert m.flagged.ts_ns.tolist() == one.flagged.ts_ns.tolist()
            assert m.flagged.quality.tolist() == one.flagged.quality.tolist()
            assert m.flagged.sensor.tolist() == one.flagged.sensor.tolist()
            assert m.flagged_pos.tolist() == one.flagged_pos.tolist()


def test_pipeline_hands_flag_only_rows_to_on_decoded_but_never_to_the_batch():
    pipe = IngestPipeline(CFG, None, None, None, IngestMetrics(), ack=lambda tokens: None, decode_processes=0)
    seen = []
    pipe.on_decoded(lambda b: seen.append(b))
    samples = [(NOW_MS - 60_000 * (3 - i), {**GOOD, "flag": f}) for i, f in enumerate("NDN")]
    res = decode_chunk(pipe.decoder, [(JSON_TOPIC, payload(samples), RECV), hj212("D")], 4096)
    pipe._consume(res, ["t1", "t2"])
    [feed] = seen
    assert feed.ts_ns.tolist() == [t * 1_000_000 for t, _ in samples] + [NOW_MS // 1000 * 1_000_000_000]
    assert feed.quality.tolist() == [0, D, 0, D]
    flush = pipe.batcher.take()
    assert flush.batch.ts_ns.tolist() == [samples[0][0] * 1_000_000, samples[2][0] * 1_000_000]
    assert [d.reason for d in flush.deadletters] == ["hj212_flag", "hj212_flag"] and flush.tokens == ["t1", "t2"]
    # a chunk of nothing but flagged rows still reaches the detectors
    pipe._consume(decode_chunk(pipe.decoder, [hj212("M", NOW_MS + 60_000)], 4096), ["t3"])
    assert seen[-1].quality.tolist() == [M] and len(pipe.batcher.take().batch) == 0


def test_rule_set_judges_flag_only_rows_by_their_flag_alone():
    """N-data fires after bad_flag_for_s of D; no value rule judges a row without values; the deadman
    counts a device that flags D as reporting (it did report)."""
    from detectors.registry import RuleSet

    rules = RuleSet.from_config(CFG)
    gas = next(d for d in CFG.devices if d.kind == "gas")
    sensors = np.array([CFG.device_index(JSON_DEV.id), CFG.device_index(gas.id)], np.int32)
    bad_s = CFG.noise.data_quality.bad_flag_for_s
    t0 = NOW_MS * 1_000_000
    found = []
    for minute in range(bad_s // 60 + 2):
        ts = t0 + minute * 60 * 1_000_000_000
        batch = ReadingBatch(sensors, np.array([ts, ts]), {}, np.array([D, M], np.uint8))
        found += rules.process(batch).records()
        found += rules.advance(ts).records()
    # Other devices go Offline; ours report (no Offline), and only N-data (noise devices, rules.yaml) judged
    # them: no rule read a value, the gas row raised nothing.
    found = [r for r in found if r["sensor"] in sensors.tolist()]
    assert {(r["rule_id"], r["sensor"]) for r in found} == {("N-data", int(sensors[0]))}
    # The run's first reading counts its own interval: D for bad_flag_for_s by the 14th minute's reading.
    fired = min(r["ts_ns"] for r in found if r["severity"] != "clear")
    assert fired == t0 + (bad_s - JSON_DEV.report_interval_s) * 1_000_000_000
    assert all(r["context"].get("reason") in (None, "flag") for r in found)
