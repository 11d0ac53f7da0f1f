"""`citywatch detect` over the shipped example feed: detections, --flags, --compare, JSONL, stdin, errors."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from citywatch.cli import main
from config import DEFAULT_CONFIG_DIR

ROOT = Path(__file__).resolve().parents[3]
FEED = ROOT / "examples" / "feeds" / "xm_night_2025-06-01.csv"


@pytest.fixture(scope="module")
def shipped_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("detect") / "det.csv"
    assert main(["detect", str(FEED), "--output", str(out), "--no-progress"]) == 0
    return list(csv.DictReader(out.open()))


def kinds(rows):
    return {(r["device_id"], r["rule_id"], r["severity"]) for r in rows}


def test_feed_scenarios_raise_their_rules(shipped_run):
    k = kinds(shipped_run)
    expected = {
        ("XM0001NOISE", "N-night", "orange"), ("XM0002NOISE", "N-prohibited", "orange"),
        ("XM0002NOISE", "N-night-max", "red"), ("XM0003NOISE", "N-day", "orange"), ("XM0005NOISE", "N-data", "yellow"),
        ("XM0007NOISE", "Offline", "yellow"), ("XMG0003", "G-flatline", "yellow"), ("XMG0005", "Batt", "orange"),
        ("XMG0025", "G-rupture", "red"), ("XMG0031", "G-highhigh", "red"),
        ("XMG0035", "G-range", "yellow"),
    }
    assert expected <= k
    # The permitted pour is judged against the night limit, never as illegal work.
    assert not any(r["device_id"] == "XM0001NOISE" and r["rule_id"] == "N-prohibited" for r in shipped_run)
    assert {r["permit_id"] for r in shipped_run if r["device_id"] == "XM0001NOISE" and r["rule_id"] == "N-night"} \
        == {"P-SM-2025-0601"}
    # The out-of-range reading is a device fault only.
    assert {r["rule_id"] for r in shipped_run if r["device_id"] == "XMG0035"} == {"G-range"}
    # One night is no time-of-week profile: G-leak stays silent, even on XMG0027's slow leak.
    assert not any(r["rule_id"] == "G-leak" for r in shipped_run)
    # Quiet devices raise nothing.
    assert not any(r["device_id"] in ("XM0011NOISE", "XMG0010") for r in shipped_run)


def test_flags_one_per_input_row(capsys):
    assert main(["detect", str(FEED), "--flags", "--no-progress"]) == 0
    flags = capsys.readouterr().out.split()
    rows = list(csv.DictReader(FEED.open()))
    assert len(flags) == len(rows) and set(flags) == {"0", "1"}
    by = dict(zip(((r["device_id"], r["ts"]) for r in rows), flags))
    assert by[("XMG0035", "2025-06-01T17:01:00Z")] == "1"    # out of range
    assert by[("XMG0010", "2025-06-01T17:00:00Z")] == "0"


@pytest.mark.slow
def test_compare_shows_what_a_changed_threshold_adds_and_removes(tmp_path, capsys):
    other = tmp_path / "cfg"
    shutil.copytree(DEFAULT_CONFIG_DIR, other, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    text = (other / "thresholds.yaml").read_text()
    assert "    night_db: 55 " in text
    (other / "thresholds.yaml").write_text(text.replace("    night_db: 55 ", "    night_db: 52 "))
    assert main(["detect", str(FEED), "--compare", str(other), "--no-progress", "--rows"]) == 0
    out = capsys.readouterr().out.splitlines()
    added = [line for line in out if line.startswith("+ ")]
    assert added and all(" N-night" in line or " N-pre" in line for line in added)
    summary = next(line for line in out if line.startswith("compare "))
    assert " 0 added" not in summary


def test_jsonl_from_stdin(monkeypatch, capsys):
    lines = [
        json.dumps({"ts": 1748790060000 + i * 60000, "device_id": "XMG0031", "p": 380.0}) for i in range(3)
    ]
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["detect", "-", "--format", "jsonl", "--no-deadman", "--no-progress"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert {(r["rule_id"], r["severity"]) for r in recs} == {("G-high", "yellow"), ("G-highhigh", "red")}
    assert recs[0]["device_id"] == "XMG0031" and recs[0]["ts"] == "2025-06-01T15:01:00.000Z"
    assert recs[0]["context"]["unit"] == "kPa"


def test_bad_feed_row_names_the_line(tmp_path, capsys):
    f = tmp_path / "bad.csv"
    f.write_text("ts,device_id,p\n2025-06-01T12:00:00Z,XMG0031,300\n2025-06-01T12:01:00,XMG0031,300\n")
    assert main(["detect", str(f), "--no-progress"]) == 1
    assert "line 3: ts: timestamp '2025-06-01T12:01:00' has no time zone" in capsys.readouterr().err


def test_unknown_devices_are_counted_not_fatal(tmp_path, capsys):
    f = tmp_path / "unknown.csv"
    f.write_text("ts,device_id,p\n1748779260000,NOPE,300\n1748779260000,XMG0031,300\n")
    assert main(["detect", str(f), "--no-progress", "--no-deadman"]) == 0
    assert "skipped 1 row(s) of device 'NOPE': not in the inventory" in capsys.readouterr().err


@pytest.mark.slow
def test_command_line_entry_point_runs():
    res = subprocess.run([sys.executable, "-m", "citywatch", "detect", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0 and "--compare" in res.stdout
