"""`citywatch score` end to end on files: tables, JSON, and the CI gates' exit codes."""

from __future__ import annotations

import json

from citywatch.cli import main


def _files(tmp_path):
    truth = tmp_path / "truth.jsonl"
    meta = {"name": "t", "seed": 1, "start": "2025-06-01T22:00:00Z", "end": "2025-06-02T22:00:00Z", "devices": 10}
    truth.write_text("".join(json.dumps(r) + "\n" for r in [
        {"id": "F1", "type": "S3", "device": "D1", "site": "S1", "start": "2025-06-02T01:00:00Z",
         "end": "2025-06-02T02:30:00Z", "rules": ["N-day"], "allowed": ["N-pre"], "severity": "orange", "scenario": meta},
        {"id": "F2", "type": "G4", "device": "D2", "site": "S2", "start": "2025-06-02T07:00:00Z",
         "end": "2025-06-02T08:30:00Z", "rules": ["G-rupture"], "allowed": [], "severity": "red", "scenario": meta},
    ]))
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text("".join(json.dumps(n) + "\n" for n in [
        {"alert_id": "N-day.D1.20250602T011000000Z", "rule_id": "N-day", "transition": "firing", "severity": "orange",
         "start_ts": "2025-06-02T01:10:00.000Z", "site": {"id": "S1"}, "device": {"id": "D1"}},
        {"alert_id": "N-pre.D9.20250602T050000000Z", "rule_id": "N-pre", "transition": "firing", "severity": "blue",
         "start_ts": "2025-06-02T05:00:00.000Z", "site": {"id": "S9"}, "device": {"id": "D9"}},
    ]))
    return truth, alerts


def test_scorecard_json_and_gates(tmp_path, capsys):
    truth, alerts = _files(tmp_path)
    assert main(["score", "--truth", str(truth), "--alerts", str(alerts), "--json"]) == 0
    card = json.loads(capsys.readouterr().out)
    assert card["recall"] == 0.5 and card["missed"] == ["F2"] and card["false_alerts"] == 1
    assert card["false_per_device_day"] == 0.1 and card["delay_median_s"] == 600.0
    assert main(["score", "--truth", str(truth), "--alerts", str(alerts), "--min-recall", "0.9"]) == 1
    err = capsys.readouterr().err
    assert "FAIL: recall 0.50 is below --min-recall 0.9" in err
    assert main(["score", "--truth", str(truth), "--alerts", str(alerts), "--max-false", "0.05"]) == 1
    assert main(["score", "--truth", str(truth), "--alerts", str(alerts), "--min-recall", "0.5", "--max-false", "0.1"]) == 0


def test_tables_name_missed_faults_and_false_alerts(tmp_path, capsys):
    truth, alerts = _files(tmp_path)
    assert main(["score", "--truth", str(truth), "--alerts", str(alerts)]) == 0
    out = capsys.readouterr().out
    assert "Per rule" in out and "Per fault type" in out
    assert "F2 G4 D2 expected G-rupture" in out
    assert "N-pre.D9.20250602T050000000Z blue" in out


def test_unreadable_sources_exit_2(tmp_path, capsys):
    truth, _ = _files(tmp_path)
    assert main(["score", "--truth", str(truth), "--alerts", f"sqlite:{tmp_path}/none.db"]) == 2
    assert "no alert store at" in capsys.readouterr().err
    assert main(["score", "--truth", str(tmp_path / "missing.jsonl"), "--alerts", str(truth)]) == 2
