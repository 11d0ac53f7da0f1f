"""Sensor-fault pressures are kept with flag T (domain.md §4); `ingest.clock: event` drops wall-clock time checks."""

from __future__ import annotations

from config import load_config
from core import FLAG_CODES
from ingest.codecs.json_envelope import encode_batch
from ingest.decoder import Decoder

CFG = load_config("config")
GAS_ID, GAS_SITE = "XMG0017", "GS-SM-07"  # medium_b, set 100 kPa, full scale 250 kPa
TOPIC = f"city/xm/gas/{GAS_SITE}/{GAS_ID}/data"
NOW_MS = 1_800_000_000_000


def _decode(cfg, samples, now_ms=NOW_MS):
    payload = encode_batch(GAS_ID, GAS_SITE, "gas", samples, 1, 300, now_ms)
    return Decoder(cfg).decode(TOPIC, payload, now_ms * 1_000_000)


def test_open_loop_and_over_range_are_stored_with_flag_t_not_refused():
    t = NOW_MS - 600_000
    d = _decode(CFG, [(t, {"p": 100.0}), (t + 60_000, {"p": -12.5}), (t + 120_000, {"p": 300.0}),
                      (t + 180_000, {"p": 9000.0})])
    assert [r.reason for r in d.rejects] == ["out_of_range"]  # 9000 kPa is beyond any sensor fault
    batch = d.batch
    assert list(batch.values["p"]) == [100.0, -12.5, 300.0]
    assert [FLAG_CODES[q] for q in batch.quality] == ["N", "T", "T"]


def test_scalar_and_vectorized_paths_flag_the_same_rows():
    t = NOW_MS - 600_000
    single = _decode(CFG, [(t, {"p": -12.5})])
    many = _decode(CFG, [(t + i * 60_000, {"p": -12.5 if i == 7 else 100.0}) for i in range(60)])
    assert [FLAG_CODES[q] for q in single.batch.quality] == ["T"]
    assert [FLAG_CODES[q] for q in many.batch.quality].count("T") == 1
    assert FLAG_CODES[many.batch.quality[7]] == "T"


def test_event_clock_accepts_simulated_dates_but_not_a_reset_clock():
    event_cfg = load_config("config", env={"CITYWATCH_CLOCK": "event"})
    assert event_cfg.ingest.clock == "event"
    june_2025 = 1_748_788_200_000
    wall = _decode(CFG, [(june_2025, {"p": 100.0})])
    assert [r.reason for r in wall.rejects] == ["ts_too_old"]
    event = _decode(event_cfg, [(june_2025, {"p": 100.0}), (june_2025 + 86_400_000 * 400, {"p": 100.0})])
    assert event.rejects == [] and len(event.batch) == 2
    reset = _decode(event_cfg, [(946_684_800_000, {"p": 100.0})])  # 2000-01-01
    assert [r.reason for r in reset.rejects] == ["ts_too_old"]
    assert "clock was reset" in reset.rejects[0].detail
    seconds = _decode(event_cfg, [(june_2025 // 1000, {"p": 100.0})])
    assert [r.reason for r in seconds.rejects] == ["ts_seconds_not_ms"]
