"""Issue 12 (testers): one meaning of --speed (event time / N) for every feed kind, readings counted in a
replay, the expected wall time said before a long run, alerts tagged with a run id and `score` selecting
a run, and an instant, one-line exit 2 when nothing listens at the broker's address."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from alerts.model import Notice
from alerts.sinks.influx import line_of
from citywatch.cli import main
from citywatch.commands.replay import say_expected_wall_time
from ingest.codecs.hj212 import build_noise_frame
from ingest.codecs.json_envelope import encode_batch
from simulators.alert_sources import from_influx_result, from_notice_payloads
from simulators.recorder import record_line
from simulators.replay import read_feed, readings_in

ROOT = Path(__file__).resolve().parents[3]
T = 1_748_800_000_000   # ms, 2025-06-01


def _envelope(device: str, site: str, ts: list[int]) -> bytes:
    return encode_batch(device, site, "noise", [(t, {"leq": 60.0, "lmax": 70.0, "lmin": 50.0}) for t in ts], 1, 60, ts[-1])


def test_a_capture_is_paced_by_event_time_not_by_when_it_was_recorded(cfg, tmp_path):
    # Recorded while a simulation ran at 1000x: receive times 1 s apart, event times 1000 s apart.
    p = tmp_path / "cap.jsonl"
    p.write_text("".join(record_line("city/xm/noise/SM-2025-101/XM0001NOISE/data",
                                     _envelope("XM0001NOISE", "SM-2025-101", [T + k * 1_000_000 - 60_000 * j
                                                                              for j in (2, 1, 0)]),
                                     1_900_000_000_000 + k * 1000) + "\n" for k in range(3)))
    got = read_feed(p, cfg)
    assert [m.t_ms - got[0].t_ms for m in got] == [0, 1_000_000, 2_000_000]
    # Readings, not messages: three samples per envelope.
    assert [m.n for m in got] == [3, 3, 3]


def test_readings_in_counts_samples_rows_and_frames():
    import datetime as dt
    frame = build_noise_frame("XM0004NOISE", dt.datetime(2025, 6, 1, 8, 0),
                              {k: 60.0 for k in ("leq", "lmax", "lmin", "l10", "l50", "l90")}, "N", cn=2051)
    assert readings_in(_envelope("XM0001NOISE", "SM-2025-101", [T, T + 60_000])) == 2
    assert readings_in(json.dumps([{"ts": T, "values": {"leq": 1}}, {"ts": T + 1, "values": {"leq": 1}}]).encode()) == 2
    assert readings_in(json.dumps({"ts": T, "values": {"leq": 1}}).encode()) == 1
    assert readings_in(frame) == 1
    assert readings_in(b"online") == 0 and readings_in(b"##0001x0000\r\n") == 0


def test_the_expected_wall_time_is_said_before_a_long_run(capsys):
    assert say_expected_wall_time("replay", 12 * 3600 * 1000, 10) == 4320.0
    err = capsys.readouterr().err
    assert "12 h 0 min of event time at --speed 10 takes about 1 h 12 min" in err and "event time / N" in err
    say_expected_wall_time("replay", 60_000, 10)   # 6 s: nothing to say
    assert capsys.readouterr().err == ""


@pytest.mark.slow
def test_replay_help_states_one_meaning_of_speed():
    out = subprocess.run([sys.executable, "-m", "citywatch", "replay", "--help"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False).stdout
    assert "event time / N" in " ".join(out.split())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]   # closed again: nothing listens there


@pytest.mark.slow
def test_connection_refused_is_one_line_and_exit_2(tmp_path):
    port = str(_free_port())
    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"devices": {}, "tester": {"username": "tester", "password": "x"}}))
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps({"t": T, "device": "XM0001NOISE", "n": 1, "topic": "city/xm/noise/SM-2025-101/XM0001NOISE/data",
                                "payload": _envelope("XM0001NOISE", "SM-2025-101", [T]).decode()}) + "\n")
    common = ["--host", "127.0.0.1", "--port", port, "--credentials", str(creds)]
    for args in (["replay", str(feed), "--fast", "--no-progress"],
                 ["record", "--out", str(tmp_path / "rec.jsonl")],
                 ["simulate", str(ROOT / "simulators/scenarios/city_day.yaml"), "--duration", "1h", "--no-progress",
                  "--truth", str(tmp_path / "truth.jsonl")]):
        r = subprocess.run([sys.executable, "-m", "citywatch", *args, *common], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, check=False)
        assert r.returncode == 2, (args[0], r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if "connection refused" in ln]
        assert len(lines) == 1 and f"127.0.0.1:{port}: connection refused" in lines[0], (args[0], r.stderr)
        assert "Traceback" not in r.stderr


def _notice(run_id: str | None) -> Notice:
    payload = {"rule_id": "Offline", "category": "device", "severity": "yellow", "site": {"id": "S1"},
               "device": {"id": "D1"}, "value": 1.0, "limit": 2.0}
    if run_id:
        payload["run_id"] = run_id
    return Notice(alert_id="Offline.D1.20250602T011000000Z", key="k", seq=1, transition="firing",
                  ts_ns=T * 1_000_000, payload=payload)


def test_the_influx_point_carries_the_run_id_tag():
    assert ",run_id=speed10," in line_of(_notice("speed10")) or ",run_id=speed10 " in line_of(_notice("speed10"))
    assert "run_id" not in line_of(_notice(None))


def test_alerts_know_their_run_from_notices_and_influx():
    got = from_notice_payloads([{"alert_id": "N-day.D1.20250602T011000000Z", "rule_id": "N-day", "transition": "firing",
                                 "severity": "orange", "run_id": "r7", "device": {"id": "D1"}}])
    assert [a.run_id for a in got] == ["r7"]
    doc = {"results": [{"series": [{"columns": ["time", "alert_id", "rule_id", "transition", "severity", "run_id"],
                                    "values": [[T, "N-day.D1.20250602T011000000Z", "N-day", "firing", "orange", "r8"]]}]}]}
    assert [a.run_id for a in from_influx_result(doc)] == ["r8"]


def _score_files(tmp_path):
    meta = {"name": "t", "seed": 1, "start": "2025-06-01T22:00:00Z", "end": "2025-06-02T22:00:00Z", "devices": 10}
    truth = tmp_path / "truth.jsonl"
    truth.write_text(json.dumps({"id": "F1", "type": "S3", "device": "D1", "site": "S1", "start": "2025-06-02T01:00:00Z",
                                 "end": "2025-06-02T02:30:00Z", "rules": ["N-day"], "scenario": meta}) + "\n")
    alerts = tmp_path / "alerts.jsonl"
    alerts.write_text("".join(json.dumps(n) + "\n" for n in [
        {"alert_id": "N-day.D1.20250602T011000000Z", "rule_id": "N-day", "transition": "firing", "severity": "orange",
         "device": {"id": "D1"}, "site": {"id": "S1"}, "run_id": "good"},
        {"alert_id": "Offline.D2.20250602T050000000Z", "rule_id": "Offline", "transition": "firing",
         "severity": "yellow", "device": {"id": "D2"}, "site": {"id": "S2"}, "run_id": "other"},
    ]))
    return truth, alerts


def test_score_selects_a_run_and_warns_when_runs_are_mixed(tmp_path, capsys):
    truth, alerts = _score_files(tmp_path)
    assert main(["score", "--truth", str(truth), "--alerts", str(alerts), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["precision"] == 0.5
    assert "WARNING: the alerts come from 2 runs (good, other); pass --run-id" in captured.err
    assert main(["score", "--truth", str(truth), "--alerts", str(alerts), "--json", "--run-id", "good"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["precision"] == 1.0
    assert "scoring 1 of 2 alerts (run id good); 1 filtered out" in captured.err
    assert main(["score", "--truth", str(truth), "--alerts", str(alerts), "--json",
                 "--until", "2025-06-02T03:00:00Z"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["precision"] == 1.0 and "1 filtered out" in captured.err
