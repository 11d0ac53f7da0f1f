"""Files `citywatch replay` cannot replay (audit of hostile inputs): each is refused in one line naming the file,
the line and what is wrong, never with a traceback, and never echoing more than ~80 characters of a bad value."""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys

import pytest

from simulators.replay import FeedFormatError, read_feed

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
GOOD = '{"ts": "2025-06-01T12:01:00Z", "device_id": "XM0001NOISE", "leq": 57.3}\n'
CAPTURE = '{"topic": "city/xm/noise/s/XM0001NOISE/data", "payload": "{}", "t": 1}\n'


def _refused(path, cfg) -> str:
    with pytest.raises(FeedFormatError) as exc:
        read_feed(path, cfg)
    return str(exc.value)


@pytest.mark.parametrize("data,expected", [
    (b"\xe0b\xf9\x1b\xea\xae5_\xdf", ":1: not UTF-8 text (invalid continuation byte)"),
    (gzip.compress(b"ts,device_id,leq\n"), ":1: not UTF-8 text (invalid start byte): a gzip file? decompress it first"),
    ("ts,device_id,leq\n".encode("utf-16"), ":1: not UTF-8 text (invalid start byte): UTF-16 text? convert it to UTF-8"),
    (GOOD.encode() * 3 + b'{"ts": "\xff"}\n', ":4: not UTF-8 text (invalid start byte)"),
])
def test_a_file_that_is_not_utf8_names_its_line(tmp_path, cfg, data, expected):
    p = tmp_path / "feed.jsonl"
    p.write_bytes(data)
    assert _refused(p, cfg) == f"{p}{expected}"


@pytest.mark.parametrize("line,shown", [("[1, 2]", "[1, 2]"), ("42", "42"), ('"hi"', "'hi'"), ("null", "None")])
def test_a_readings_line_that_is_not_an_object(tmp_path, cfg, line, shown):
    p = tmp_path / "feed.jsonl"
    p.write_text(GOOD + line + "\n")
    assert _refused(p, cfg) == f"{p}:2: a readings line must be a JSON object, got {shown}"


@pytest.mark.parametrize("ts,expected", [
    ("Infinity", "not a time: inf"),
    ("NaN", "not a time: nan"),
    ("1e300", "time out of range (years 1685 to 2255): 1e+300"),
    ('"9999-12-31T00:00:00Z"', "time out of range (years 1685 to 2255): '9999-12-31T00:00:00Z'"),
    ("true", "not a time: True"),
])
def test_a_readings_ts_out_of_range(tmp_path, cfg, ts, expected):
    p = tmp_path / "feed.jsonl"
    p.write_text(GOOD + '{"ts": ' + ts + ', "device_id": "XM0001NOISE", "leq": 50}\n')
    assert _refused(p, cfg) == f"{p}:2: bad ts: {expected}"


def test_a_huge_bad_value_is_cut_in_the_message(tmp_path, cfg):
    p = tmp_path / "feed.jsonl"
    p.write_text(GOOD + json.dumps({"ts": "x" * 100_000, "device_id": "XM0001NOISE"}) + "\n"
                 + json.dumps({"ts": "2025-06-01T12:02:00Z", "device_id": "XM0001NOISE", "leq": "y" * 100_000}) + "\n")
    msg = _refused(p, cfg)
    assert msg.startswith(f"{p}:2: bad ts: not an ISO 8601 time or epoch ms: 'xxx") and len(msg) < len(str(p)) + 150
    p.write_text(GOOD + json.dumps({"ts": "2025-06-01T12:02:00Z", "device_id": "XM0001NOISE", "leq": "y" * 100_000}))
    msg = _refused(p, cfg)
    assert msg.startswith(f"{p}:2: 'leq': not a number: 'yyy") and len(msg) < len(str(p)) + 150


@pytest.mark.parametrize("line,expected", [
    ('{"topic": "city/xm/noise/s/XM0001NOISE/data", "payload": 5, "t": 1}',
     "not a capture line (topic, payload or payload_b64, t): payload must be a string, got 5"),
    ('{"topic": 5, "payload": "{}"}', "not a capture line (topic, payload or payload_b64, t): topic must be a string, got 5"),
    ("[1]", "not a capture line (topic, payload or payload_b64, t): a JSON object, got [1]"),
    ('{"topic": "city/xm/noise/s/XM0001NOISE/data", "payload": "{}", "t": 1, "n": "abc", "device": "x"}',
     "n must be a whole number of readings, got 'abc'"),
    ('{"topic": "city/xm/noise/s/XM0001NOISE/data", "payload": "{}", "t": 1, "n": Infinity, "device": "x"}',
     "n must be a whole number of readings, got inf"),
    ('{"topic": "city/xm/noise/s/XM0001NOISE/data", "payload": "{}", "t": Infinity, "n": 1, "device": "x"}',
     "t must be a time in epoch ms, got inf"),
    ('{"topic": "city/xm/noise/s/XM0001NOISE/data", "payload": "{}", "t": 1e300}',
     "t must be a time in epoch ms, got 1e+300"),
])
def test_a_malformed_capture_line(tmp_path, cfg, line, expected):
    p = tmp_path / "cap.jsonl"
    p.write_text(CAPTURE + line + "\n")
    assert _refused(p, cfg) == f"{p}:2: {expected}"


def test_a_csv_field_over_the_limit_names_its_line(tmp_path, cfg):
    # The csv module refuses a field over csv.field_size_limit() (131072 characters): lowered here, so the
    # test file stays small.
    p = tmp_path / "feed.csv"
    p.write_text("ts,device_id,leq\n2025-06-01T12:01:00Z,XM0001NOISE,57.3\n2025-06-01T12:02:00Z,XM0001NOISE," + "9" * 200 + "\n")
    old = csv.field_size_limit(100)
    try:
        assert _refused(p, cfg) == f"{p}:3: not a CSV row: field larger than field limit (100)"
    finally:
        csv.field_size_limit(old)


def test_the_command_exits_2_with_one_line(tmp_path):
    p = tmp_path / "feed.jsonl"
    p.write_text(GOOD + '{"ts": Infinity, "device_id": "XM0001NOISE", "leq": 1}\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}
    env["PYTHONPATH"] = ROOT
    r = subprocess.run([sys.executable, "-m", "citywatch", "replay", str(p), "--fast", "--no-progress", "--port", "1"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert (r.returncode, r.stderr) == (2, f"citywatch replay: {p}:2: bad ts: not a time: inf\n")


def test_a_readings_time_without_a_zone_is_refused_not_read_as_utc(tmp_path):
    """`replay` read `2025-06-01T20:00:00` as UTC: an 8 h shift for a local-time file, where `detect` refuses it."""
    from config import load_config
    from simulators.replay import FeedFormatError, read_feed
    cfg = load_config(None, env={})
    naive = tmp_path / "naive.csv"
    naive.write_text("ts,device_id,leq\n2025-06-01T20:00:00,XM0001NOISE,61.5\n")
    with pytest.raises(FeedFormatError, match="a time without a zone"):
        read_feed(naive, cfg)
    zoned = tmp_path / "zoned.csv"
    zoned.write_text("ts,device_id,leq\n2025-06-01T20:00:00+08:00,XM0001NOISE,61.5\n")
    assert read_feed(zoned, cfg)


def test_a_short_row_is_refused_not_published_without_values(tmp_path):
    from config import load_config
    from simulators.replay import FeedFormatError, read_feed
    cfg = load_config(None, env={})
    short = tmp_path / "short.csv"
    short.write_text("ts,device_id,leq\n2025-06-01T20:00:00Z,XM0001NOISE\n")
    with pytest.raises(FeedFormatError, match="no values for XM0001NOISE"):
        read_feed(short, cfg)
