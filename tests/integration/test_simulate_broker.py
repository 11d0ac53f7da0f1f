"""Simulator, recorder and replay against a real Mosquitto: every reading arrives, a mosquitto_sub -v
capture replays, and replays at two speeds deliver the same messages."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config import load_config
from simulators.recorder import FeedRecorder
from simulators.replay import read_feed

pytestmark = [pytest.mark.integration, pytest.mark.shared_influx]

ROOT = Path(__file__).resolve().parents[2]
CITY_DAY = ROOT / "simulators" / "scenarios" / "city_day.yaml"


def citywatch(*args, timeout=120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citywatch", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def broker_args(mosquitto) -> list[str]:
    return ["--host", mosquitto.host, "--port", str(mosquitto.port), "--credentials", str(mosquitto.credentials_path)]


def start_recorder(mosquitto, out, topics=("city/xm/+/+/+/data", "city/xm/hj212/#")) -> FeedRecorder:
    rec = FeedRecorder(mosquitto.host, mosquitto.port, *mosquitto.credentials.tester, topics=topics, out=out)
    rec.start()
    return rec


def wait_for(rec: FeedRecorder, count: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while rec.count < count and time.monotonic() < deadline:
        time.sleep(0.05)


def lines(path: Path) -> list[dict]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def test_simulated_hours_arrive_complete_at_high_speed(mosquitto, tmp_path):
    feed, truth, cap = tmp_path / "feed.jsonl", tmp_path / "truth.jsonl", tmp_path / "cap.jsonl"
    with open(cap, "w") as out:
        rec = start_recorder(mosquitto, out)
        r = citywatch("simulate", str(CITY_DAY), "--speed", "3600", "--duration", "3h", "--out", str(feed),
                      "--truth", str(truth), "--no-progress", *broker_args(mosquitto))
        assert r.returncode == 0, r.stderr
        sent = lines(feed)
        wait_for(rec, len(sent))
        rec.stop()
    got = lines(cap)
    assert collections.Counter((m["topic"], m["payload"]) for m in got) == \
           collections.Counter((m["topic"], m["payload"]) for m in sent)
    assert sum(m["n"] for m in sent) > 5000
    faults = lines(truth)
    assert {f["id"] for f in faults} == {"F03", "F13", "F14", "F16", "F20", "F22"}   # those starting by 09:00
    assert all(f["start"].endswith("Z") and f["scenario"]["devices"] == 52 for f in faults)
    assert "published" in r.stderr
    # Each device left a retained `online` status on its own status topic (its last will says `offline`).
    status = tmp_path / "status.jsonl"
    with open(status, "w") as out:
        rec = start_recorder(mosquitto, out, topics=("city/xm/+/+/+/status",))
        wait_for(rec, 52)
        rec.stop()
    got = lines(status)
    assert len(got) == 52 and {m["payload"] for m in got} == {"online"} and all(m["retain"] for m in got)


def test_devices_publish_only_as_themselves(mosquitto, tmp_path):
    # A wrong password for one device is refused: each device authenticates as itself.
    creds = json.loads(Path(mosquitto.credentials_path).read_text())
    creds["devices"]["XM0001NOISE"] = "wrong"
    bad = tmp_path / "creds.json"
    bad.write_text(json.dumps(creds))
    r = citywatch("simulate", str(CITY_DAY), "--fast", "--duration", "10m", "--no-progress", "--truth",
                  str(tmp_path / "t.jsonl"), "--host", mosquitto.host, "--port", str(mosquitto.port),
                  "--credentials", str(bad))
    assert r.returncode == 1
    assert "broker refused XM0001NOISE" in r.stderr


def test_mosquitto_sub_capture_replays(mosquitto, tmp_path):
    user, pw = mosquitto.credentials.tester
    sub_out = tmp_path / "sub.txt"
    with open(sub_out, "wb") as fh:
        sub = subprocess.Popen(["mosquitto_sub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-u", user, "-P", pw,
                                "-q", "1", "-v", "-t", "city/xm/+/+/+/data", "-t", "city/xm/hj212/#"], stdout=fh)
        try:
            time.sleep(0.5)
            feed = tmp_path / "feed.jsonl"
            r = citywatch("simulate", str(CITY_DAY), "--fast", "--duration", "40m", "--out", str(feed), "--truth",
                          str(tmp_path / "t.jsonl"), "--no-progress", *broker_args(mosquitto))
            assert r.returncode == 0, r.stderr
            sent = lines(feed)
            deadline = time.monotonic() + 20
            while sub_out.read_bytes().count(b"\ncity/xm/") + 1 < len(sent) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            sub.send_signal(signal.SIGTERM)
            sub.wait(10)
    cap = tmp_path / "replayed.jsonl"
    with open(cap, "w") as out:
        rec = start_recorder(mosquitto, out)
        r = citywatch("replay", str(sub_out), "--speed", "1000", "--no-progress", *broker_args(mosquitto))
        assert r.returncode == 0, r.stderr
        wait_for(rec, len(sent))
        rec.stop()
    got = collections.Counter((m["topic"], m["payload"]) for m in lines(cap))
    assert got == collections.Counter((m["topic"], m["payload"]) for m in sent)


def test_replay_at_two_speeds_delivers_the_same_messages(mosquitto, tmp_path):
    feed = tmp_path / "feed.jsonl"
    r = citywatch("simulate", str(CITY_DAY), "--dry-run", "--duration", "2h", "--out", str(feed), "--truth",
                  str(tmp_path / "t.jsonl"))
    assert r.returncode == 0, r.stderr
    expected = read_feed(feed, load_config(ROOT / "config"))
    results = []
    for speed in (["--speed", "2000"], ["--fast"]):
        cap = tmp_path / f"cap{len(results)}.jsonl"
        with open(cap, "w") as out:
            rec = start_recorder(mosquitto, out)
            r = citywatch("replay", str(feed), *speed, "--no-progress", *broker_args(mosquitto))
            assert r.returncode == 0, r.stderr
            wait_for(rec, len(expected))
            rec.stop()
        results.append(collections.Counter((m["topic"], m["payload"]) for m in lines(cap)))
    assert results[0] == results[1] == collections.Counter((m.topic, m.payload.decode()) for m in expected)


def test_record_command_captures_then_replay_command_republishes(mosquitto, tmp_path):
    feed, cap = tmp_path / "feed.jsonl", tmp_path / "cap.jsonl"
    r = citywatch("simulate", str(CITY_DAY), "--dry-run", "--duration", "30m", "--out", str(feed), "--truth",
                  str(tmp_path / "t.jsonl"))
    assert r.returncode == 0, r.stderr
    sent = lines(feed)
    rec = subprocess.Popen([sys.executable, "-m", "citywatch", "record", "--out", str(cap), "--count", str(len(sent)),
                            "--duration", "60s", *broker_args(mosquitto)], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    try:
        assert rec.stderr.readline().startswith("recording city/xm/+/+/+/data city/xm/hj212/#")
        r = citywatch("replay", str(feed), "--fast", "--no-progress", *broker_args(mosquitto))
        assert r.returncode == 0, r.stderr
        assert rec.wait(60) == 0
    finally:
        if rec.poll() is None:
            rec.kill()
            rec.wait(10)
    got = lines(cap)
    assert collections.Counter((m["topic"], m["payload"]) for m in got) == \
           collections.Counter((m["topic"], m["payload"]) for m in sent)
    assert all(set(m) == {"t", "topic", "payload", "qos", "retain"} for m in got)
