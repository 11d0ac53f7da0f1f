"""Feeds `citywatch detect` cannot read (audit of hostile inputs): times beyond what int64 nanoseconds hold,
infinity, a byte that is not UTF-8 past the first 8 KB, a huge bad value. Each is one line naming the line of
the feed, never a traceback, never the whole value."""

from __future__ import annotations

import io
import json

import pytest

from citywatch.cli import main
from config import load_config
from detectors.feed import FeedError, FeedReader, parse_ts_ns

GOOD = '{"ts": "2025-06-01T12:%02d:00Z", "device_id": "XM0001NOISE", "leq": 57.3}\n'


@pytest.mark.parametrize("value,expected", [
    ("9999-12-31T00:00:00Z", "time out of range (years 1685 to 2255): '9999-12-31T00:00:00Z'"),
    ("0001-01-01T00:00:00Z", "time out of range (years 1685 to 2255): '0001-01-01T00:00:00Z'"),
    (1e300, "time out of range (years 1685 to 2255): 1e+300"),
    ("1" * 400 + ".5", "time out of range (years 1685 to 2255): '1111"),
    (float("inf"), "not a time: inf"),
    (float("nan"), "not a time: nan"),
    ("x" * 1000, "not an ISO 8601 time or epoch number: 'xxxx"),
])
def test_times_out_of_range_are_refused(value, expected):
    with pytest.raises(ValueError) as exc:
        parse_ts_ns(value)
    assert str(exc.value).startswith(expected) and len(str(exc.value)) < 130


def test_the_range_holds_every_real_time():
    assert parse_ts_ns("2100-01-01T00:00:00Z") == 4_102_444_800 * 10**9
    assert parse_ts_ns(1_748_779_200_000) == 1_748_779_200 * 10**9


def _read(text: str, fmt: str = "jsonl"):
    reader = FeedReader(load_config(None))
    return list(reader.read(io.StringIO(text), fmt))


@pytest.mark.parametrize("ts,expected", [
    ('"9999-12-31T00:00:00Z"', "line 2: ts: time out of range (years 1685 to 2255): '9999-12-31T00:00:00Z'"),
    ("1e300", "line 2: ts: time out of range (years 1685 to 2255): 1e+300"),
    ("Infinity", "line 2: ts: not a time: inf"),
])
def test_the_reader_names_the_line_of_a_time_out_of_range(ts, expected):
    with pytest.raises(FeedError) as exc:
        _read(GOOD % 1 + '{"ts": ' + ts + ', "device_id": "XM0001NOISE", "leq": 1}\n')
    assert str(exc.value) == expected


def test_a_huge_bad_value_is_cut():
    with pytest.raises(FeedError) as exc:
        _read(GOOD % 1 + json.dumps({"ts": "2025-06-01T12:02:00Z", "device_id": "XM0001NOISE", "leq": "x" * 100_000}))
    assert str(exc.value) == "line 2: leq must be a number (got '" + "x" * 37 + "..." + "x" * 38 + "')"


@pytest.mark.parametrize("name,head,row", [
    ("feed.jsonl", "", '{"ts": "2025-06-01T12:%02d:00Z", "device_id": "XM0001NOISE", "leq": 57.3}\n'),
    ("feed.csv", "ts,device_id,leq\n", "2025-06-01T12:%02d:00Z,XM0001NOISE,57.3\n"),
])
def test_a_byte_that_is_not_utf8_past_the_first_8kb_names_its_line(tmp_path, capsys, name, head, row):
    # 16 to 30 KB: the bad byte is in a later chunk the text stream decodes, lines after the one being read.
    rows = [(row % (i % 60)).encode() for i in range(400)]
    rows[300] = rows[300].replace(b"57.3", b"5\xff")
    p = tmp_path / name
    p.write_bytes(head.encode() + b"".join(rows))
    assert main(["detect", str(p), "--no-progress", "--no-deadman"]) == 1
    line = 301 + (1 if head else 0)
    assert capsys.readouterr().err == f"citywatch detect: {p}: line {line}: not UTF-8 text (invalid start byte)\n"


def test_detect_refuses_a_time_out_of_range_in_one_line(tmp_path, capsys):
    p = tmp_path / "feed.jsonl"
    p.write_text(GOOD % 1 + '{"ts": "9999-12-31T00:00:00Z", "device_id": "XM0001NOISE", "leq": 1}\n')
    assert main(["detect", str(p), "--no-progress", "--no-deadman"]) == 1
    assert capsys.readouterr().err == (f"citywatch detect: {p}: line 2: ts: time out of range (years 1685 to 2255): "
                                       "'9999-12-31T00:00:00Z'\n")
