"""The simulated feed: same seed same bytes, payloads the collector's codecs accept, faults shaped as
domain.md section 6 says."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.codecs.errors import DecodeError
from ingest.codecs.hj212 import parse_frame
from ingest.codecs.json_envelope import decode_envelope
from simulators.feed import build_feed, device_messages, simulate_device, write_feed


def _feed_hash(scenario, cfg, feed=None) -> str:
    buf = io.StringIO()
    write_feed(build_feed(scenario, cfg) if feed is None else feed, buf)
    return hashlib.sha256(buf.getvalue().encode()).hexdigest()


@pytest.fixture(scope="module")
def short_day(city_day):
    return city_day.with_duration(2 * 3600)


@pytest.mark.slow
def test_same_seed_same_bytes(city_day, cfg, city_feed):
    assert _feed_hash(city_day, cfg) == _feed_hash(city_day, cfg, city_feed)


def test_another_seed_other_bytes(short_day, cfg):
    other = dataclasses.replace(short_day, seed=short_day.seed + 1)
    assert _feed_hash(short_day, cfg) != _feed_hash(other, cfg)


@pytest.mark.slow
def test_same_bytes_across_processes(short_day, cfg, tmp_path):
    # Python salts str hashes per process; the feed must not depend on them.
    import subprocess
    import sys
    code = (
        "import hashlib, io, sys\n"
        "from config import load_config\n"
        "from simulators.scenario import load_scenario\n"
        "from simulators.feed import build_feed, write_feed\n"
        "cfg = load_config(sys.argv[1]); s = load_scenario(sys.argv[2], cfg).with_duration(2 * 3600)\n"
        "b = io.StringIO(); write_feed(build_feed(s, cfg), b); print(hashlib.sha256(b.getvalue().encode()).hexdigest())\n"
    )
    from tests.unit.simulators.conftest import CITY_DAY, ROOT
    out = {subprocess.run([sys.executable, "-c", code, str(ROOT / "config"), str(CITY_DAY)], capture_output=True,
                          text=True, check=True, env={"PYTHONHASHSEED": str(k), "PATH": ""}).stdout.strip()
           for k in (1, 2)}
    assert out == {_feed_hash(short_day, cfg)}


def test_every_payload_decodes_with_the_collector_codecs(city_day, cfg, city_feed):
    """Except the faults that break payloads on purpose (C4 crc), every message decodes and carries its readings."""
    bad_devices = {f.device for f in city_day.faults if f.type.code == "C4" and f.params.get("mode") in ("crc", "length")}
    readings = 0
    for m in city_feed:
        if m.payload.startswith(b"##"):
            if m.n == 0:
                assert m.device in bad_devices
                with pytest.raises(DecodeError):
                    parse_frame(m.payload)
                continue
            frame = parse_frame(m.payload)
            assert cfg.device_by_mn(frame.mn).id == m.device
            readings += 1
        else:
            env = decode_envelope(m.payload)
            assert env.device_id == m.device
            assert m.topic == f"city/xm/{cfg.device(m.device).kind}/{env.site_id}/{m.device}/data"
            readings += len(env.samples) if m.n else 0
    total = 0
    for d in city_day.devices:
        total += len(simulate_device(cfg.device(d), city_day))
    bad = sum(1 for m in city_feed if m.n == 0 and m.payload.startswith(b"##") and
              m.device in bad_devices)
    assert readings + bad == total


def test_noise_order_statistics_hold(city_day, cfg):
    for d in city_day.devices:
        dev = cfg.device(d)
        if dev.kind != "noise":
            continue
        v = simulate_device(dev, city_day).values
        assert np.all(v["lmin"] <= v["l90"]) and np.all(v["l90"] <= v["l50"]) and np.all(v["l50"] <= v["l10"])
        assert np.all(v["l10"] <= v["lmax"]) and np.all(v["lmin"] <= v["leq"]) and np.all(v["leq"] <= v["lmax"])
        assert np.all((v["leq"] >= 25) & (v["lmax"] <= 140))


def _rolling_leq(leq, n):
    e = np.convolve(10 ** (leq / 10), np.ones(n) / n)[: len(leq)]
    e[: n - 1] = np.nan
    return 10 * np.log10(e)


def test_fault_free_noise_devices_stay_inside_every_limit(city_day, cfg):
    """A plain reference of the noise rules (Leq20 day 70 / night 55, Leq5 pre-warning, night Lmax 70)."""
    faulty = {f.device for f in city_day.faults}
    for d in city_day.devices:
        dev = cfg.device(d)
        if dev.kind != "noise" or d in faulty:
            continue
        s = simulate_device(dev, city_day)
        minute = ((s.ts_ms - 60000) // 1000 + 8 * 3600) % 86400 / 60
        night = (minute < 360) | (minute >= 1320)
        l20, l5 = _rolling_leq(s.values["leq"], 20), _rolling_leq(s.values["leq"], 5)
        assert np.nanmax(np.where(night, l20, 0)) < 55 - 2
        assert np.nanmax(np.where(~night, l20, 0)) < 70 - 3
        assert np.nanmax(np.where(night, l5, 0)) < 52 and np.nanmax(np.where(~night, l5, 0)) < 67
        assert np.max(np.where(night, s.values["lmax"], 0)) < 70


def test_fault_free_gas_devices_stay_inside_every_limit(city_day, cfg):
    faulty = {f.device for f in city_day.faults}
    for d in city_day.devices:
        dev = cfg.device(d)
        if dev.kind != "gas" or d in faulty:
            continue
        s = simulate_device(dev, city_day)
        r = s.values["p"] / dev.set_pressure_kpa
        assert r.min() > 0.90 and r.max() < 1.08
        steps = np.diff(s.values["p"])
        assert np.count_nonzero(steps) > 0.8 * len(steps)    # never flat (G-flatline)
        assert s.values["batt_v"].min() > 3.5


def _fault(city_day, fid):
    return next(f for f in city_day.faults if f.id == fid)


def _during(city_day, cfg, fid):
    f = _fault(city_day, fid)
    s = simulate_device(cfg.device(f.device), city_day)
    m = (s.ts_ms > f.start_ms) & (s.ts_ms <= f.end_ms)
    return f, s, m


def test_piling_raises_leq20_above_75(city_day, cfg):
    f, s, m = _during(city_day, cfg, "F01")
    assert np.nanmax(_rolling_leq(s.values["leq"], 20)[m]) > 75
    assert 75 <= np.median(s.values["leq"][m]) <= 86


def test_illegal_night_pour_breaks_night_limits(city_day, cfg):
    f, s, m = _during(city_day, cfg, "F18")
    assert np.nanmax(_rolling_leq(s.values["leq"], 20)[m]) > 55
    assert 80 <= s.values["lmax"][m].max() < 85


def test_permitted_pour_stays_within_the_night_limit(city_day, cfg):
    f, s, m = _during(city_day, cfg, "F19")
    assert np.nanmax(_rolling_leq(s.values["leq"], 20)[m]) < 55
    assert s.values["lmax"][m].max() < 70


def test_dead_mic_is_flat_at_the_floor_and_flagged(city_day, cfg):
    f, s, m = _during(city_day, cfg, "F06")
    assert set(s.values["leq"][m]) == {26.0}
    assert set(s.flags[m]) == {"D"} and set(s.flags[~m]) == {"N"}


def test_regulator_fails_open_then_slam_shut(city_day, cfg):
    f, s, m = _during(city_day, cfg, "F04")
    p = s.values["p"][m]
    dev = cfg.device(f.device)
    assert p.max() > dev.mop_kpa                   # above MOP: G-highhigh
    assert p[-2] < 0.1                             # OPSO tripped to ~0 (the last sample is the reset)
    after = s.values["p"][s.ts_ms > f.end_ms + 600000]
    assert after.min() > 0.9 * dev.set_pressure_kpa


def test_rupture_drops_40_percent_within_5_minutes(city_day, cfg):
    f, s, m = _during(city_day, cfg, "F09")
    p = s.values["p"]
    i = np.flatnonzero(m)[0]
    assert p[i + 4] < 0.65 * p[i - 1]


def test_battery_fade_ends_below_3_1_v(city_day, cfg):
    f, s, m = _during(city_day, cfg, "F16")
    b = s.values["batt_v"]
    assert b[:12].min() > 3.3 and b[-1] < 3.1


def test_gap_then_backfill_batch(city_day, cfg):
    f = _fault(city_day, "F05")
    msgs = device_messages(cfg.device(f.device), city_day)
    times = [m.t_ms for m in msgs]
    assert not any(f.start_ms <= t < f.end_ms for t in times)
    late = next(m for m in msgs if m.t_ms >= f.end_ms)
    env = decode_envelope(late.payload)
    assert len(env.samples) == 5 * 12   # 4 held hourly reports + its own
    assert min(s["ts"] for s in env.samples) < f.start_ms


def test_duplicates_and_out_of_order(city_day, cfg):
    f = _fault(city_day, "F20")
    msgs = device_messages(cfg.device(f.device), city_day)
    payloads = [m.payload for m in msgs]
    assert len(payloads) > len(set(payloads))                  # duplicates
    seqs = [json.loads(p)["seq"] for p in payloads]
    assert any(b < a for a, b in zip(seqs, seqs[1:]))          # out of order
    assert sum(m.n for m in msgs) == len(simulate_device(cfg.device(f.device), city_day))


def test_clock_skew_shifts_sample_times(city_day, cfg):
    f = _fault(city_day, "F21")
    lags = [(s["ts"] - city_day.start_ms) % 60000
            for m in device_messages(cfg.device(f.device), city_day) for s in decode_envelope(m.payload).samples]
    # Every reading of the 4 h window (240 one-minute readings, duplicates aside) is 90 s late: 30 s off the grid.
    assert len({lag for lag in lags}) == 2
    assert 240 <= sum(1 for lag in lags if lag == 30000) <= 260


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32))
def test_any_seed_keeps_noise_statistics_ordered_and_gas_positive(seed, city_day, cfg):
    s = dataclasses.replace(city_day.with_duration(3 * 3600), seed=seed, faults=())
    for d in ("XM0001NOISE", "XM0004NOISE", "XMG0001", "XMG0040"):
        v = simulate_device(cfg.device(d), s).values
        if "leq" in v:
            assert np.all(v["lmin"] <= v["leq"]) and np.all(v["leq"] <= v["lmax"])
        else:
            assert np.all(v["p"] > 0)


def test_history_is_fault_free_hourly_backfill_before_the_start(city_day, cfg):
    from simulators.feed import build_history
    s = city_day.with_duration(3600).with_history(6 * 3600)
    hist = build_history(s, cfg)
    day = build_feed(s, cfg)
    assert hist and all(m.t_ms <= s.start_ms for m in hist)
    per_device = {}
    for m in hist:
        env = decode_envelope(m.payload)
        assert m.topic == f"city/xm/{cfg.device(m.device).kind}/{env.site_id}/{m.device}/data"
        per_device.setdefault(m.device, []).append(env)
    assert len(per_device) == len(cfg.devices)
    assert all(len(v) == 6 for v in per_device.values())            # one batch per hour
    first_day = next(m for m in day if m.device == "XMG0001" and m.payload.startswith(b"{"))
    assert decode_envelope(first_day.payload).seq == 7               # seq continues after the history
    assert build_history(city_day, cfg) == []                        # city_day has none by default


def _custom(tmp_path, cfg, faults: str, duration="2h"):
    from simulators.scenario import load_scenario
    p = tmp_path / "s.yaml"
    p.write_text(f"""scenario:
  name: custom
  seed: 7
  start: "2025-06-02T06:00"
  duration: {duration}
  devices: [XM0001NOISE, XM0004NOISE, XMG0023]
  faults:
{faults}""")
    return load_scenario(p, cfg)


def test_clock_local_time_sent_as_utc_and_reset_to_2000(tmp_path, cfg):
    s = _custom(tmp_path, cfg, """    - {id: A, type: C3, device: XMG0023, start: "06:30", duration: 30m, params: {mode: local_as_utc}}
    - {id: B, type: C3, device: XM0001NOISE, start: "07:00", duration: 30m, params: {mode: reset}}
""")
    gas = [x["ts"] for m in device_messages(cfg.device("XMG0023"), s) for x in decode_envelope(m.payload).samples]
    a = next(f for f in s.faults if f.id == "A")
    shifted = [t for t in gas if t > s.end_ms]
    assert len(shifted) == 30 and min(shifted) == a.start_ms + 8 * 3600_000   # +8 h: Beijing time labelled UTC
    noise = [x["ts"] for m in device_messages(cfg.device("XM0001NOISE"), s) for x in decode_envelope(m.payload).samples]
    y2k = [t for t in noise if t < 1_000_000_000_000]
    assert len(y2k) == 30 and min(y2k) == 946684800000


def test_bad_frames_crc_and_length_and_truncated_json(tmp_path, cfg):
    s = _custom(tmp_path, cfg, """    - {id: A, type: C4, device: XM0004NOISE, start: "06:10", duration: 5m, params: {mode: crc}}
    - {id: B, type: C4, device: XM0004NOISE, start: "06:20", duration: 5m, params: {mode: length}}
    - {id: C, type: C4, device: XM0001NOISE, start: "06:10", duration: 5m, params: {mode: length}}
""")
    from ingest.codecs.json_envelope import decode_json
    frames = device_messages(cfg.device("XM0004NOISE"), s)
    bad = [m for m in frames if m.n == 0]
    assert len(bad) == 10
    for m in bad:
        with pytest.raises(DecodeError):
            parse_frame(m.payload)
    js = [m for m in device_messages(cfg.device("XM0001NOISE"), s) if m.n == 0]
    assert len(js) == 5
    for m in js:
        with pytest.raises(DecodeError):
            decode_json(m.payload)
