"""`citywatch detect --compare` reads as alerts: each config's detections through the alert engine's
lifecycle (for_s, clear_for_s), compared per rule and device; rows only with --rows; filters; plots."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from citywatch import whatif
from citywatch.cli import main
from config import DEFAULT_CONFIG_DIR, load_config
from core import Detections

ROOT = Path(__file__).resolve().parents[3]
FEED = ROOT / "examples" / "feeds" / "xm_night_2025-06-01.csv"
NS = 1_000_000_000


def _config(tmp_path, name: str, edits: list[tuple[str, str, str]]) -> Path:
    cfg = tmp_path / name
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    for file, old, new in edits:
        text = (cfg / file).read_text()
        assert old in text, old
        (cfg / file).write_text(text.replace(old, new, 1))
    return cfg


@pytest.fixture(scope="module")
def night50(tmp_path_factory):
    return _config(tmp_path_factory.mktemp("whatif"), "night50",
                   [("thresholds.yaml", "    night_db: 55 ", "    night_db: 50 ")])


@pytest.fixture(scope="module")
def report(night50, tmp_path_factory):
    """The issue's example: night limit 55 -> 50 over the shipped night feed, with plots."""
    import contextlib
    import io

    plots = tmp_path_factory.mktemp("plots")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["detect", str(FEED), "--compare", str(night50), "--no-progress", "--plot", str(plots)])
    assert rc == 0
    return buf.getvalue().splitlines(), plots


@pytest.mark.slow
def test_the_night_limit_example_reads_as_a_short_alert_report(report):
    lines, _ = report
    # It printed 1,337 per-minute lines ending `N-night: +6 -0 / N-pre: +1331 -0`.
    assert len(lines) < 120
    assert not any(line.startswith(("+ 2025", "- 2025")) for line in lines)
    summary = next(line for line in lines if line.startswith("compare "))
    rules = {line.split(":")[0].strip(): line for line in lines[lines.index(summary) + 1:] if line.startswith("  ")}
    assert set(rules) >= {"N-night", "N-pre"}
    # The two night pours already broke 55: their N-night alerts start earlier and end later, no new ones.
    assert rules["N-night"].startswith("  N-night:") and "+0 opened" in rules["N-night"] and "~2 times" in rules["N-night"]
    assert "+0 opened" not in rules["N-pre"]
    # Each alert line has start, end and peak, grouped under its rule and site.
    night = lines.index("N-night")
    assert lines[night + 1].startswith("  HL-2025-102 ") and "XM0002NOISE" in lines[night + 2]
    assert "before: orange 06-01 23:01 -> 06-02 01:50" in lines[night + 2] and "peak 65.8 dB(A), limit 55.0" in lines[night + 2]
    assert "after:  orange 06-01 23:00 -> 06-02 01:51" in lines[night + 3] and "limit 50.0" in lines[night + 3]


@pytest.mark.slow
def test_the_plot_is_one_png_per_device_whose_alerts_change(report):
    lines, plots = report
    changed = {line.split()[1] for line in lines if line.startswith(("    +", "    -", "    ~"))}
    files = {p.stem for p in plots.glob("*.png")}
    assert files == changed and "XM0001NOISE" in files
    png = (plots / "XM0001NOISE.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    assert any(line.startswith(f"plots: {len(files)} device(s) in {plots}") for line in lines)


@pytest.mark.slow
def test_rows_only_on_request(night50, capsys):
    assert main(["detect", str(FEED), "--compare", str(night50), "--no-progress", "--rows", "--rule", "N-night"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith(("+ 2025", "- 2025"))]
    assert rows and all(" N-night " in line for line in rows)
    assert any(line.startswith("compare ") and "added" in line for line in out)   # the rows' own summary
    assert any(line.startswith("compare ") and "opened" in line for line in out)  # and the alerts'


@pytest.mark.slow
def test_filters_by_device_site_and_rule(night50, capsys):
    assert main(["detect", str(FEED), "--compare", str(night50), "--no-progress", "--device", "XM0004NOISE"]) == 0
    out = capsys.readouterr().out
    assert "XM0004NOISE" in out and "XM0001NOISE" not in out
    # A site by its name, as the board shows it.
    assert main(["detect", str(FEED), "--compare", str(night50), "--no-progress", "--site",
                 "Siming residential block 1", "--rule", "N-night"]) == 0
    out = capsys.readouterr().out
    assert "XM0001NOISE" in out and "N-pre" not in out and "XM0002NOISE" not in out
    assert main(["detect", str(FEED), "--compare", str(night50), "--no-progress", "--site", "SM-2025-10"]) == 1
    assert "--site 'SM-2025-10': no site has this id or name; did you mean" in capsys.readouterr().err
    assert main(["detect", str(FEED), "--no-progress", "--rule", "N-nite"]) == 1
    assert "--rule 'N-nite': no such rule; did you mean 'N-night'?" in capsys.readouterr().err


@pytest.mark.slow
def test_the_same_config_changes_nothing(capsys):
    assert main(["detect", str(FEED), "--compare", str(DEFAULT_CONFIG_DIR), "--no-progress"]) == 0
    out = capsys.readouterr().out.splitlines()
    summary = next(line for line in out if line.startswith("compare "))
    assert "+0 opened, -0 no longer opened, ~0 changed severity, ~0 changed times" in summary
    assert not any(line.startswith(("    +", "    -", "    ~")) for line in out)


@pytest.mark.slow
def test_for_s_of_the_other_config_is_applied(tmp_path, capsys):
    # Same thresholds; N-pre must hold 3 hours before it fires: the night's N-pre alerts are no longer opened.
    other = _config(tmp_path, "slow", [("rules.yaml", "{id: N-pre, type: noise_pre_warning, kind: noise",
                                        "{id: N-pre, type: noise_pre_warning, kind: noise, for_s: 3h")])
    assert main(["detect", str(FEED), "--compare", str(other), "--no-progress", "--rule", "N-pre"]) == 0
    out = capsys.readouterr().out.splitlines()
    line = next(x for x in out if x.startswith("  N-pre:"))
    assert "+0 opened" in line and "-0 no longer" not in line


# ----- the lifecycle is the engine's --------------------------------------------------------------

def _dets(rows):
    """rows: (device index, seconds, rule, severity, value, limit)."""
    n = len(rows)
    return Detections(np.array([r[0] for r in rows], np.int32), np.array([int(r[1] * NS) for r in rows], np.int64),
                      np.array([r[2] for r in rows], object), np.full(n, "noise", object),
                      np.array([r[3] for r in rows], np.int8), np.array([r[4] for r in rows], float),
                      np.array([r[5] for r in rows], float), np.zeros(n), [{"unit": "dB(A)"} for _ in rows])


def test_alert_spans_apply_for_s_and_clear_for_s():
    cfg = load_config()
    rule = next(r for r in cfg.rules if r.id == "N-day")
    t0 = 1_748_750_400
    hold = rule.for_s + 60
    # Device 0: active long enough to fire, then clear; device 1: active for less than for_s (if any).
    rows = [(0, t0 + s, "N-day", 2, 71.0 + s / 600, 70.0) for s in range(0, int(hold) + 61, 60)]
    rows += [(0, t0 + hold + 120, "N-day", 0, 60.0, 70.0)]
    spans = whatif.alert_spans(cfg, [_dets(rows)], t0 * NS + 7200 * NS)
    assert len(spans) == 1
    s = spans[0]
    assert (s.rule_id, s.device_id, s.peak_severity) == ("N-day", cfg.devices[0].id, 2)
    assert s.started_ns == t0 * NS and s.firing_ns == (t0 + rule.for_s) * NS
    assert s.end_ns == int((t0 + hold + 120 + rule.clear_for_s) * NS)


def test_compare_pairs_overlapping_alerts():
    def span(start, end, sev, dev="D1"):
        return whatif.Span("N-day", dev, "S", "Site", start, start, end, sev, 72.0, 70.0, "dB(A)")

    before = [span(0, 100, 2), span(200, 300, 2), span(1000, 1100, 3, "D2")]
    after = [span(10, 120, 3), span(200, 300, 2), span(500, 600, 2), span(1000, None, 3, "D2")]
    kinds = [(c.device_id, c.kind) for c in whatif.compare_spans(before, after)]
    assert kinds == [("D1", "severity"), ("D1", "same"), ("D1", "opened"), ("D2", "times")]
    assert [c.kind for c in whatif.compare_spans(after, before)] == ["severity", "same", "closed", "times"]
