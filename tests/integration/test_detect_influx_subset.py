"""`citywatch detect --influx --measurement noise` judges only the noise devices: the gas sensors, whose
readings were never read, are not called Offline (they were, all 40 of them)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from config import load_config
from detectors.feed import FeedReader
from ingest.lineproto import LineProtocolEncoder

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FEED = ROOT / "examples" / "feeds" / "xm_night_2025-06-01.csv"


def _detect(args: list[str], env: dict) -> list[dict]:
    res = subprocess.run([sys.executable, "-m", "citywatch", "detect", "--influx", "--since", "2025-06-01T12:00:00Z",
                          "--until", "2025-06-01T18:01:00Z", "--no-progress", *args], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, **env}, timeout=300)
    assert res.returncode == 0, res.stderr
    return list(csv.DictReader(res.stdout.splitlines()))


def test_a_detection_over_one_measurement_judges_only_its_devices(influx):
    cfg = load_config()
    kinds = {d.id: d.kind for d in cfg.devices}
    enc = LineProtocolEncoder(cfg)
    with FEED.open() as f:
        for chunk in FeedReader(cfg, chunk_rows=5000).read(f, "csv"):
            influx.write(enc.encode(chunk.batch).decode())
    env = influx.env()

    noise = _detect(["--measurement", "noise"], env)
    offline = {r["device_id"] for r in noise if r["rule_id"] == "Offline"}
    assert not {d for d in offline if kinds[d] == "gas"}
    # The noise devices are still judged: the feed's silent noise monitor is Offline.
    assert "XM0007NOISE" in offline
    assert {kinds[r["device_id"]] for r in noise} == {"noise"}

    gas = _detect(["--measurement", "gas_pressure"], env)
    # The silent noise monitor is not the gas run's to judge.
    assert not {r["device_id"] for r in gas if kinds[r["device_id"]] == "noise"}

    # Both measurements: everything is judged, as before.
    both = _detect([], env)
    assert {r["device_id"] for r in both if r["rule_id"] == "Offline"} >= {"XM0007NOISE"}
