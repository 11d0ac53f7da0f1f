"""Truth and alert files `citywatch score` cannot score (audit of hostile inputs): each is refused in one line
naming the file, the line and what is wrong, with exit 2; never a traceback, never a silently wrong scorecard."""

from __future__ import annotations

import json

import pytest

from citywatch.cli import main

META = {"name": "t", "seed": 1, "start": "2025-06-01T22:00:00Z", "end": "2025-06-02T00:00:00Z", "devices": 2}
FAULT = {"id": "F1", "type": "S3", "device": "XM0002NOISE", "site": "HL-2025-102", "start": "2025-06-01T23:00:00Z",
         "end": "2025-06-01T23:10:00Z", "rules": ["N-day"], "allowed": ["N-pre"], "severity": "orange", "scenario": META}
NOTICE = {"alert_id": "N-day.XM0002NOISE.20250601T230500000Z", "rule_id": "N-day", "transition": "firing",
          "severity": "orange", "start_ts": "2025-06-01T23:05:00.000Z", "device": {"id": "XM0002NOISE"}}


def _score(tmp_path, capsys, truth: bytes, alerts: bytes) -> tuple[int, str]:
    (tmp_path / "truth.jsonl").write_bytes(truth)
    (tmp_path / "alerts.jsonl").write_bytes(alerts)
    rc = main(["score", "--truth", str(tmp_path / "truth.jsonl"), "--alerts", str(tmp_path / "alerts.jsonl"), "--json"])
    return rc, capsys.readouterr().err


def _lines(*docs) -> bytes:
    return "".join(d if isinstance(d, str) else json.dumps(d) + "\n" for d in docs).encode()


def test_good_files_score(tmp_path, capsys):
    assert _score(tmp_path, capsys, _lines(FAULT), _lines(NOTICE)) == (0, "")


@pytest.mark.parametrize("truth,expected", [
    (_lines(FAULT, [1, 2]), "line 2: a fault must be a JSON object, got [1, 2]"),
    (_lines(FAULT, 5), "line 2: a fault must be a JSON object, got 5"),
    (_lines(FAULT, None), "line 2: a fault must be a JSON object, got None"),
    (_lines(FAULT) + b'{"id": "\xff"}\n', "line 2: not UTF-8 text (invalid start byte at column 9)"),
    (_lines({**FAULT, "scenario": {**META, "devices": "two"}}),
     "line 1: scenario.devices must be a positive whole number, got 'two'"),
    (_lines({**FAULT, "scenario": {**META, "start": "yesterday"}}),
     "line 1: scenario: not an ISO 8601 time or epoch ms: 'yesterday'"),
    (_lines({**FAULT, "scenario": {"name": "x"}}), "line 1: scenario.start is missing"),
    (_lines({**FAULT, "scenario": {**META, "start": float("inf")}}), "line 1: scenario: not a time: inf"),
    (_lines({**FAULT, "start": float("inf")}), "line 1: start: not a time: inf"),
    (_lines({**FAULT, "start": 1e300}), "line 1: start: time out of range (years 1685 to 2255): 1e+300"),
    (_lines({"id": "F1"}), "line 1: type is missing"),
    # Read as letters before: rules N, -, d, a, y.
    (_lines({**FAULT, "rules": "N-day"}), 'line 1: rules must be a list of rule ids, e.g. ["N-day"], got \'N-day\''),
    (_lines({**FAULT, "allowed": "N-pre"}), 'line 1: allowed must be a list of rule ids, e.g. ["N-day"], got \'N-pre\''),
    (_lines({**FAULT, "start": "2025-06-01T23:10:00Z", "end": "2025-06-01T23:00:00Z"}),
     "line 1: fault F1: end before start (2025-06-01T23:00:00Z < 2025-06-01T23:10:00Z)"),
    (_lines(FAULT, {**FAULT, "device": "XM0001NOISE"}), "line 2: fault id F1 repeats the fault of line 1"),
])
def test_a_bad_truth_file_exits_2_naming_the_line(tmp_path, capsys, truth, expected):
    assert _score(tmp_path, capsys, truth, _lines(NOTICE)) == (2, f"citywatch score: {tmp_path}/truth.jsonl: {expected}\n")


@pytest.mark.parametrize("alerts,expected", [
    (_lines(NOTICE, {"alert_id": 5, "rule_id": None}), "2: alert_id must be a string, got 5"),
    (_lines(NOTICE, {"alert_id": ["x"], "rule_id": "N-day"}), "2: alert_id must be a string, got ['x']"),
    (_lines(NOTICE, {**NOTICE, "alert_id": "x", "rule_id": None}), "2: rule_id must be a string, got None"),
    (_lines({**NOTICE, "start_ts": "yesterday"}), "1: start_ts: not an ISO 8601 time or epoch ms: 'yesterday'"),
    (_lines(NOTICE) + b"\xe0b\xf9\x1b\xea\n", "2: not UTF-8 text (invalid continuation byte at column 1)"),
])
def test_a_bad_alerts_file_exits_2_naming_the_line(tmp_path, capsys, alerts, expected):
    assert _score(tmp_path, capsys, _lines(FAULT), alerts) == (2, f"citywatch score: {tmp_path}/alerts.jsonl:{expected}\n")
