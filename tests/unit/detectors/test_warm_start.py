"""`citywatch detect --save-state`: the state learned from a recorded feed is the state a service starts
from; it continues exactly as one rule set over both feeds, and an existing snapshot is only replaced
with --force."""

from __future__ import annotations

import csv
import io
import shutil
import sys

import numpy as np
import pytest

from citywatch.cli import main
from config import DEFAULT_CONFIG_DIR, load_config
from detectors import snapshot
from detectors.gas import GasProfile
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import batch, local_ns, rows_of

DEV = "XMG0027"
STEP_S = 900
H = 3600 * 10**9
START = local_ns("2025-06-02 00:00")  # a Monday


@pytest.fixture(scope="module")
def cfg_dir(tmp_path_factory):
    """The shipped config with a one-week profile, a short sigma warm-up and XMG0027 sampling every 15 min."""
    d = tmp_path_factory.mktemp("warm") / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, d, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    th = (d / "thresholds.yaml").read_text()
    assert th.count("    min_weeks: 2 ") == 1 and th.count("    warmup: 60 ") == 1
    (d / "thresholds.yaml").write_text(th.replace("    min_weeks: 2 ", "    min_weeks: 1 ")
                                       .replace("    warmup: 60 ", "    warmup: 4 "))
    inv = (d / "inventory.yaml").read_text()
    old = f"  - id: {DEV}\n    kind: gas\n    site: GS-SM-07\n    report_interval_s: 900\n    sample_interval_s: 60\n"
    assert inv.count(old) == 1
    (d / "inventory.yaml").write_text(inv.replace(old, old.replace("sample_interval_s: 60", "sample_interval_s: 900")))
    return d


def pressure(start_h: int, hours: int, seed: int, leak_from_h: int | None = None) -> list[tuple]:
    """XMG0027 every 15 min on a 300 kPa main with a morning and an evening demand sag; optionally a leak
    losing 1.5 % of set pressure an hour from `leak_from_h` (hours since START)."""
    h = start_h + np.arange(hours * 3600 // STEP_S) * STEP_S / 3600.0
    p = 300.0 - 12.0 * np.exp(-0.5 * ((h % 24 - 8.0) / 0.8) ** 2) - 15.0 * np.exp(-0.5 * ((h % 24 - 18.5) / 1.0) ** 2)
    p += np.random.default_rng(seed).normal(0.0, 0.3, len(h))
    if leak_from_h is not None:
        on = h >= leak_from_h
        p[on] -= 4.5 * (h[on] - leak_from_h)
    return [(DEV, START + int(round(x * H)), {"p": float(v)}) for x, v in zip(h, p)]


def write_feed(path, rows) -> None:
    with path.open("w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["ts", "device_id", "p"])
        w.writerows([(r[1] // 10**6, r[0], r[2]["p"]) for r in rows])


HISTORY = pressure(0, 8 * 24, 1)                          # eight days: every hour of the week learned
FOLLOWING = pressure(8 * 24, 24, 2, leak_from_h=8 * 24 + 10)  # the next day, with a slow leak from 10:00


def detect(cfg_dir, *args) -> int:
    return main(["detect", *map(str, args), "--config", str(cfg_dir), "--no-progress", "--no-deadman"])


def learned_hours(rs: RuleSet, dev: str) -> int:
    prof = next(c for c in rs.components if isinstance(c, GasProfile))
    i = list(prof.group.global_index).index(rs.inv.ids.index(dev))
    return int((prof.count_[i] >= prof.need[i]).sum())


@pytest.mark.slow
def test_saved_state_continues_as_one_rule_set_over_both_feeds(cfg_dir, tmp_path, capsys):
    feed, state = tmp_path / "history.csv", tmp_path / "state.npz"
    write_feed(feed, HISTORY)
    assert detect(cfg_dir, feed, "--save-state", state, "--no-detections") == 0
    out = capsys.readouterr()
    assert out.out == ""  # --no-detections: nothing on standard output
    assert f"learned from {len(HISTORY):,} readings of 1 device(s) (0 noise, 1 gas)" in out.err
    assert f"168/168 hours learned: 1 device(s): {DEV}" in out.err
    assert "G-leak and G-rupture can judge 1 of " in out.err

    cfg = load_config(cfg_dir)
    loaded = RuleSet.from_config(cfg)
    assert snapshot.load(loaded, state).ok
    assert learned_hours(loaded, DEV) == 168
    whole = RuleSet.from_config(cfg)
    whole.process(batch(HISTORY, cfg))
    expected = rows_of(whole.process(batch(FOLLOWING, cfg)))
    got = rows_of(loaded.process(batch(FOLLOWING, cfg)))
    assert got == expected
    assert any(r["rule_id"] == "G-leak" and r["severity"] == "yellow" for r in got)
    # The state mattered: a rule set that starts fresh on the following day sees no leak at all.
    fresh = rows_of(RuleSet.from_config(cfg).process(batch(FOLLOWING, cfg)))
    assert not any(r["rule_id"] == "G-leak" for r in fresh)


def test_a_partial_history_reports_the_hours_it_learned(cfg_dir, tmp_path, capsys):
    feed = tmp_path / "three_days.csv"
    write_feed(feed, HISTORY[: 3 * 24 * 4])
    assert detect(cfg_dir, feed, "--save-state", tmp_path / "s.npz", "--no-detections") == 0
    err = capsys.readouterr().err
    assert f" 72/168 hours learned: 1 device(s): {DEV}" in err
    # At the end of the history (Thursday 00:00) the six hours around it are not all learned yet.
    assert "min_weeks = 1 week(s) of its readings): G-leak and G-rupture can judge 0 of " in err


def test_default_path_is_the_configs_and_an_existing_snapshot_needs_force(cfg_dir, tmp_path, capsys):
    feed = tmp_path / "history.csv"
    write_feed(feed, HISTORY)
    target = load_config(cfg_dir).resolve_path(load_config(cfg_dir).alerting.detector_state_path)
    target.unlink(missing_ok=True)
    try:
        assert detect(cfg_dir, feed, "--save-state", "--no-detections") == 0
        assert target.exists()
        before = target.read_bytes()
        capsys.readouterr()

        # A different history: without --force the snapshot stays as it was.
        other = tmp_path / "flat.csv"
        write_feed(other, [(r[0], r[1], {"p": 280.0}) for r in HISTORY])
        assert detect(cfg_dir, other, "--save-state", "--no-detections") == 1
        err = capsys.readouterr().err
        assert f"citywatch detect: {target} already holds a detector snapshot (" in err
        assert "s ago). A running `citywatch run` writes it every 60 s and at stop" in err
        assert "stop the service first, then give --force to replace the snapshot" in err
        assert target.read_bytes() == before

        assert detect(cfg_dir, other, "--save-state", "--no-detections", "--force") == 0
        rs = RuleSet.from_config(load_config(cfg_dir))
        assert snapshot.load(rs, target).ok
        prof = next(c for c in rs.components if isinstance(c, GasProfile))
        i = list(prof.group.global_index).index(rs.inv.ids.index(DEV))
        assert np.allclose(prof.mean_[i], 280.0)
    finally:
        target.unlink(missing_ok=True)


def test_a_file_that_is_not_a_snapshot_is_never_replaced(cfg_dir, tmp_path, capsys):
    feed = tmp_path / "history.csv"
    write_feed(feed, HISTORY[:10])
    text = feed.read_text()
    # `--save-state FEED`: the optional PATH took the feed's name; even --force must not overwrite it.
    assert main(["detect", "--force", "--save-state", str(feed), "--config", str(cfg_dir), "--no-progress"]) == 1
    assert f"{feed} exists and is not a detector snapshot; not replacing it" in capsys.readouterr().err
    assert feed.read_text() == text


def test_detections_are_still_written_with_save_state(cfg_dir, tmp_path, capsys):
    feed = tmp_path / "leak.csv"
    write_feed(feed, HISTORY + FOLLOWING)
    assert detect(cfg_dir, feed, "--save-state", tmp_path / "s.npz") == 0
    out = capsys.readouterr()
    rows = list(csv.DictReader(out.out.splitlines()))
    assert any(r["rule_id"] == "G-leak" and r["device_id"] == DEV for r in rows)
    assert "detector state saved to" in out.err


def test_option_mistakes_are_refused(cfg_dir, tmp_path, capsys):
    feed = tmp_path / "f.csv"
    write_feed(feed, HISTORY[:4])
    assert detect(cfg_dir, feed, "--force") == 1
    assert "--force only goes with --save-state" in capsys.readouterr().err
    assert detect(cfg_dir, feed, "--no-detections", "--flags") == 1
    assert "--no-detections writes nothing" in capsys.readouterr().err
    empty = tmp_path / "empty.csv"
    empty.write_text("ts,device_id,p\n")
    assert detect(cfg_dir, empty, "--save-state", tmp_path / "e.npz") == 1
    assert "no readings of inventory devices in" in capsys.readouterr().err
    assert not (tmp_path / "e.npz").exists()


def test_a_snapshot_written_meanwhile_is_not_overwritten(cfg_dir, tmp_path, monkeypatch, capsys):
    """A running service saves its snapshot while the history is read: ours would be overwritten at its
    next save anyway, so nothing is written and the message says to stop the service."""
    state = tmp_path / "state.npz"
    cfg = load_config(cfg_dir)

    class ServiceSavesMeanwhile(io.StringIO):
        def readline(self, *args):
            if self.tell() > 0 and not state.exists():
                snapshot.save(RuleSet.from_config(cfg), state)
            return super().readline(*args)

    feed = tmp_path / "h.csv"
    write_feed(feed, HISTORY[:50])
    monkeypatch.setattr(sys, "stdin", ServiceSavesMeanwhile(feed.read_text()))
    assert detect(cfg_dir, "-", "--input-format", "csv", "--save-state", state, "--no-detections") == 1
    assert "was written while the history was read: is `citywatch run` running?" in capsys.readouterr().err
    rs = RuleSet.from_config(cfg)
    assert snapshot.load(rs, state).ok and learned_hours(rs, DEV) == 0   # the service's, not ours
