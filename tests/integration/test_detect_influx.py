"""`citywatch detect --influx` reads history back from a real InfluxDB and finds what the CSV run finds."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from config import load_config
from detectors.feed import FeedReader
from ingest.lineproto import LineProtocolEncoder

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FEED = ROOT / "examples" / "feeds" / "xm_night_2025-06-01.csv"
DEVICES = {"XM0002NOISE", "XM0011NOISE", "XMG0025", "XMG0031", "XMG0010"}


def run_detect(args: list[str], env: dict) -> list[dict]:
    res = subprocess.run([sys.executable, "-m", "citywatch", "detect", *args, "--no-progress", "--no-deadman"],
                         capture_output=True, text=True, cwd=ROOT, env={**os.environ, **env}, timeout=120)
    assert res.returncode == 0, res.stderr
    return list(csv.DictReader(res.stdout.splitlines()))


def test_detect_over_influx_history_matches_the_feed(influx, tmp_path):
    cfg = load_config()
    rows = [r for r in csv.DictReader(FEED.open()) if r["device_id"] in DEVICES]
    subset = tmp_path / "subset.csv"
    with subset.open("w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    enc = LineProtocolEncoder(cfg)
    with subset.open() as f:
        for chunk in FeedReader(cfg, chunk_rows=2000).read(f, "csv"):
            influx.write(enc.encode(chunk.batch).decode())
    assert influx.count("noise") + influx.count("gas_pressure") > 0

    env = influx.env()
    from_influx = run_detect(["--influx", "--since", "2025-06-01T12:00:00Z", "--until", "2025-06-01T18:01:00Z"], env)
    from_csv = run_detect([str(subset)], env)
    key = lambda r: (r["ts"], r["device_id"], r["rule_id"], r["severity"])  # noqa: E731
    assert sorted(map(key, from_influx)) == sorted(map(key, from_csv))
    assert {r["rule_id"] for r in from_influx} >= {"N-prohibited", "G-rupture", "G-highhigh"}
    np.testing.assert_allclose([float(r["value"]) for r in sorted(from_influx, key=key)],
                               [float(r["value"]) for r in sorted(from_csv, key=key)], rtol=1e-6)


def test_detect_reports_an_unreachable_influx(tmp_path):
    res = subprocess.run([sys.executable, "-m", "citywatch", "detect", "--influx", "--since", "2025-06-01T12:00:00Z",
                          "--until", "2025-06-01T13:00:00Z", "--no-progress"], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "CITYWATCH_INFLUX_URL": "http://127.0.0.1:9"}, timeout=60)
    # The wording and exit code every command uses (citywatch.errors; tests/integration/test_unreachable_errors.py).
    assert res.returncode == 2 and res.stderr.startswith("citywatch detect: cannot reach InfluxDB at http://127.0.0.1:9: ")
