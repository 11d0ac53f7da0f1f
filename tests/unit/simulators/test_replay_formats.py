"""Reading recorded feeds: captures, simulator feeds, mosquitto_sub -v lines and detect-format readings."""

from __future__ import annotations

import json

import pytest

from ingest.codecs.hj212 import parse_frame
from ingest.codecs.json_envelope import decode_envelope
from simulators.feed import build_feed, write_feed
from simulators.recorder import record_line
from simulators.replay import FeedFormatError, read_feed


@pytest.fixture(scope="module")
def hour_feed(city_day, cfg):
    return build_feed(city_day.with_duration(3600), cfg)


def test_simulator_feed_round_trips(hour_feed, cfg, tmp_path):
    p = tmp_path / "feed.jsonl"
    with open(p, "w") as fh:
        write_feed(hour_feed, fh)
    got = read_feed(p, cfg)
    assert [(m.t_ms, m.device, m.topic, m.payload, m.n) for m in got] == \
           [(m.t_ms, m.device, m.topic, m.payload, m.n) for m in hour_feed]


def test_capture_round_trips_binary_payloads(cfg, tmp_path):
    p = tmp_path / "cap.jsonl"
    p.write_text(record_line("city/xm/noise/S/XM0001NOISE/data", b"\xff\x00junk", 1000) + "\n"
                 + record_line("city/xm/hj212/XM0004NOISE", b"##0001x0000\r\n", 1500) + "\n")
    got = read_feed(p, cfg)
    assert [(m.t_ms, m.device, m.payload) for m in got] == [
        (1000, "XM0001NOISE", b"\xff\x00junk"), (1500, "XM0004NOISE", b"##0001x0000\r\n")]


def test_mosquitto_sub_lines_replay_with_event_time_spacing(hour_feed, cfg, tmp_path):
    # What `mosquitto_sub -v -t 'city/xm/#'` prints: topic, space, payload, newline (HJ 212 frames end in \r\n).
    p = tmp_path / "sub.txt"
    with open(p, "wb") as fh:
        for m in hour_feed:
            fh.write(m.topic.encode() + b" " + m.payload + b"\n")
    got = read_feed(p, cfg)
    assert [(m.topic, m.payload, m.device) for m in got] == [(m.topic, m.payload, m.device) for m in hour_feed]
    for g, m in zip(got, hour_feed):
        if m.payload.startswith(b"##"):
            assert g.t_ms == max(parse_frame(m.payload).ts_ms, g.t_ms)
    assert all(b.t_ms >= a.t_ms for a, b in zip(got, got[1:]))
    assert got[-1].t_ms - got[0].t_ms > 50 * 60 * 1000


def test_detect_format_csv_and_jsonl_are_batched_per_report_interval(cfg, tmp_path):
    t0 = 1748815200000
    rows = [{"ts": t0 + k * 60000, "device_id": "XMG0001", "p": 2.5 + k / 1000, "batt_v": 3.6} for k in range(1, 121)]
    rows += [{"ts": t0 + 60000, "device_id": "XM0004NOISE", "leq": 50.1, "lmax": 60.0, "flag": "N"}]
    csv_path = tmp_path / "r.csv"
    csv_path.write_text("ts,device_id,p,batt_v,leq,lmax,flag\n" + "".join(
        f"{r['ts']},{r['device_id']},{r.get('p', '')},{r.get('batt_v', '')},{r.get('leq', '')},{r.get('lmax', '')},{r.get('flag', '')}\n"
        for r in rows))
    jl_path = tmp_path / "r.jsonl"
    jl_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for p in (csv_path, jl_path):
        got = read_feed(p, cfg)
        gas = [m for m in got if m.device == "XMG0001"]
        assert [m.n for m in gas] == [60, 60]               # report interval 3600 s
        env = decode_envelope(gas[0].payload)
        assert env.samples[0] == {"ts": t0 + 60000, "values": {"p": 2.501, "batt_v": 3.6}}
        noise = next(m for m in got if m.device == "XM0004NOISE")
        # An HJ 212 device's readings from a readings file go out as a JSON envelope on its data topic.
        assert noise.topic == "city/xm/noise/HC-2025-104/XM0004NOISE/data"
        assert decode_envelope(noise.payload).samples[0]["values"] == {"leq": 50.1, "lmax": 60.0, "flag": "N"}


def test_bad_lines_are_named(cfg, tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"ts": 1, "device_id": "NOPE", "p": 1}\n')
    with pytest.raises(FeedFormatError, match=r"bad.jsonl:1: unknown device_id 'NOPE'"):
        read_feed(p, cfg)
    p.write_text("no topic here\n")
    with pytest.raises(FeedFormatError, match=r"bad.jsonl:1: expected `topic payload`"):
        read_feed(p, cfg)
