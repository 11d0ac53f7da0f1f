"""`citywatch warmup` learns the gas profile from a real InfluxDB's history and writes the snapshot that
`citywatch run` starts from; an unreachable InfluxDB and an empty span are one clear line each."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from config import DEFAULT_CONFIG_DIR, load_config
from core.timefmt import iso_utc
from detectors import snapshot
from detectors.gas import GasProfile
from detectors.registry import RuleSet
from ingest.lineproto import LineProtocolEncoder
from tests.unit.detectors.helpers import batch

pytestmark = [pytest.mark.integration, pytest.mark.shared_influx]

ROOT = Path(__file__).resolve().parents[2]
DEV = "XMG0027"
H = 3600 * 10**9


def config_dir(tmp_path: Path) -> Path:
    """The shipped config with a one-week profile and XMG0027 sampling hourly (one reading learns an hour)."""
    d = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, d, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    th = (d / "thresholds.yaml").read_text()
    assert th.count("    min_weeks: 2 ") == 1
    (d / "thresholds.yaml").write_text(th.replace("    min_weeks: 2 ", "    min_weeks: 1 "))
    inv = (d / "inventory.yaml").read_text()
    old = f"  - id: {DEV}\n    kind: gas\n    site: GS-SM-07\n    report_interval_s: 900\n    sample_interval_s: 60\n"
    assert inv.count(old) == 1
    new = old.replace("report_interval_s: 900", "report_interval_s: 3600").replace("sample_interval_s: 60",
                                                                                  "sample_interval_s: 3600")
    (d / "inventory.yaml").write_text(inv.replace(old, new))
    return d


def warmup(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citywatch", "warmup", *args, "--no-progress"], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **env}, timeout=120)


def test_warmup_learns_the_profile_from_influx_history(influx, tmp_path):
    cdir = config_dir(tmp_path)
    cfg = load_config(cdir)
    # Three days of hourly readings ending an hour ago: 72 hours of the week, each with its own pressure.
    end = (time.time_ns() // H - 1) * H
    ts = end - np.arange(72)[::-1] * H
    p = 290.0 + (ts // H % 7)
    rows = [(DEV, int(t), {"p": float(v)}) for t, v in zip(ts, p)]
    influx.write(LineProtocolEncoder(cfg).encode(batch(rows, cfg)).decode())
    assert influx.count("gas_pressure") == 72
    env = influx.env()

    # 5-hour queries: the span is read in 20 windows that do not divide it evenly.
    res = warmup(["--config", str(cdir), "--since", "4d", "--query-window-s", "18000"], env)
    assert res.returncode == 0, res.stderr
    state = cfg.resolve_path(cfg.alerting.detector_state_path)
    assert f"detector state saved to {state}" in res.stdout
    assert "learned from 72 readings of 1 device(s) (0 noise, 1 gas)" in res.stdout
    assert f" 72/168 hours learned: 1 device(s): {DEV}" in res.stdout

    rs = RuleSet.from_config(cfg)
    report = snapshot.load(rs, state)
    assert report.ok, report.error
    prof = next(c for c in rs.components if isinstance(c, GasProfile))
    i = list(prof.group.global_index).index(rs.inv.ids.index(DEV))
    learned = prof.count_[i] >= prof.need[i]
    assert learned.sum() == 72
    # Each learned hour holds the pressure written in it (every reading read once, in its own hour).
    assert np.allclose(np.sort(prof.mean_[i][learned]), np.sort(p.astype(np.float32)))

    # A second warmup does not replace the snapshot the service may be using.
    again = warmup(["--config", str(cdir), "--since", "4d"], env)
    assert again.returncode == 1 and "already holds a detector snapshot" in again.stderr
    assert "stop the service first, then give --force" in again.stderr


def test_warmup_over_an_empty_span_writes_nothing(influx, tmp_path):
    cdir = config_dir(tmp_path)
    res = warmup(["--config", str(cdir), "--since", "2020-01-01T00:00:00Z", "--until", "2020-01-02T00:00:00Z"],
                 influx.env())
    assert res.returncode == 1
    assert res.stderr.splitlines() == [
        f"citywatch warmup: no readings of inventory devices in InfluxDB {influx.url} ({influx.database}) from "
        "2020-01-01T00:00:00.000Z to 2020-01-02T00:00:00.000Z; no state written"]
    cfg = load_config(cdir)
    assert not cfg.resolve_path(cfg.alerting.detector_state_path).exists()


def test_warmup_reports_an_unreachable_influx_in_one_line(tmp_path):
    cdir = config_dir(tmp_path)
    res = warmup(["--config", str(cdir), "--since", "1d"], {"CITYWATCH_INFLUX_URL": "http://127.0.0.1:9"})
    assert res.returncode == 2
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("citywatch warmup: cannot reach InfluxDB at http://127.0.0.1:9: ")
    cfg = load_config(cdir)
    assert not cfg.resolve_path(cfg.alerting.detector_state_path).exists()


def test_history_is_read_in_time_order_across_windows_and_measurements(influx, tmp_path):
    from detectors.feed import influx_records

    cfg = load_config(config_dir(tmp_path))
    t0 = 1_748_736_000 * 10**9  # 2025-06-01T00:00:00Z
    gas = [(DEV, t0 + i * 3600 * 10**9, {"p": 300.0}) for i in range(30)]
    noise = [("XM0002NOISE", t0 + i * 1800 * 10**9 + 7 * 10**9, {"leq": 60.0, "lmax": 70.0, "l90": 50.0})
             for i in range(60)]
    influx.write(LineProtocolEncoder(cfg).encode(batch(gas + noise, cfg)).decode())
    recs = [r for _, r in influx_records(influx.url, influx.database, iso_utc(t0), iso_utc(t0 + 30 * 3600 * 10**9),
                                         auth=(influx.username, influx.password), window_s=7 * 3600)]
    ts = [r["ts"] for r in recs]
    assert len(recs) == 90 and ts == sorted(ts)
    assert {r["device_id"] for r in recs} == {DEV, "XM0002NOISE"}
    # The window edges neither lose nor repeat a reading: the first one at an edge is there once.
    assert ts.count((t0 + 7 * 3600 * 10**9) // 10**6) == 1
