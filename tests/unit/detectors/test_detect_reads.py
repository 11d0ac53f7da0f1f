"""What a rule reads, in `citywatch detect`: the fields each detector type declares (`Detector.reads`,
a rule's own `field` / `fields` first), the warning for a field the feed has no column for (domain rules
too), and `--compare --plot` drawing the fields the changed rules read (a generic device's `value`)."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import pytest

from citywatch import whatif
from citywatch.commands import detect
from config import DEFAULT_CONFIG_DIR, load_config
from detectors.offline import plot_fields, rule_fields
from detectors.registry import REGISTRY


def run_detect(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="citywatch")
    detect.register(parser.add_subparsers())
    args = parser.parse_args(["detect", *argv])
    return args.func(args)


def _rule(cfg, rule_id: str):
    return next(r for r in cfg.rules if r.id == rule_id)


# ----- what each type reads ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule_id,kinds,fields", [
    ("N-day", None, ["leq"]), ("N-night", None, ["leq"]), ("N-night-max", None, ["lmax"]),
    ("N-prohibited", None, ["leq"]), ("N-exam", None, ["leq"]), ("N-pre", None, ["leq"]),
    ("N-data", ["noise"], ["leq"]), ("N-data", ["gas"], ["p"]),
    ("G-high", None, ["p"]), ("G-leak", None, ["p"]), ("G-rupture", None, ["p"]), ("G-range", None, ["p"]),
    ("G-flatline", None, ["p"]),   # gas_flatline's `field` defaults to p
    ("Batt", None, ["batt_v"]), ("Offline", None, []),
])
def test_shipped_rules_read_their_fields(rule_id, kinds, fields):
    cfg = load_config(None)
    assert rule_fields(_rule(cfg, rule_id), kinds) == fields


def test_a_rule_field_comes_first_and_every_type_declares_a_tuple():
    from config.rules import RuleSpec

    rule = RuleSpec.model_validate({"id": "H", "type": "hotelling_t2", "fields": ["leq", "l90"]})
    assert rule_fields(rule) == ["leq", "l90"]
    rule = RuleSpec.model_validate({"id": "F", "type": "gas_flatline", "kind": "gas", "field": "t_dev"})
    assert rule_fields(rule) == ["t_dev"]
    for cls in REGISTRY.values():
        assert isinstance(cls.reads, tuple) and all(isinstance(f, str) for f in cls.reads)
    assert plot_fields(load_config(None)) == ["leq", "lmax", "p", "batt_v"]


# ----- the warning --------------------------------------------------------------------------------------

def _shipped_device(kind: str) -> str:
    return next(d.id for d in load_config(None).devices if d.kind == kind)


@pytest.mark.parametrize("kind,header,value,expected,absent", [
    ("noise", "lmax", "60", [
        "warning: rule 'N-day' reads field 'leq', which the feed has no column for (columns: lmax); it judged nothing",
        "warning: rule 'N-pre' reads field 'leq', which the feed has no column for (columns: lmax); it judged nothing",
        "warning: rule 'N-data' reads field 'leq', which the feed has no column for (columns: lmax); every reading "
        "counts as invalid data (the valid-data rate is 0)",
    ], ["'N-night-max'", "'G-high'", "'Batt'", "'Offline'"]),
    ("noise", "Leq", "60", [
        "warning: rule 'N-night' reads field 'leq', which the feed has no column for (columns: Leq); did you mean "
        "'Leq'? Rule fields are lower case: rename the column to leq; it judged nothing",
        "warning: rule 'N-night-max' reads field 'lmax', which the feed has no column for (columns: Leq); it judged "
        "nothing",
    ], ["'G-high'"]),
    ("gas", "batt_v", "3.6", [
        "warning: rule 'G-high' reads field 'p', which the feed has no column for (columns: batt_v); it judged nothing",
        "warning: rule 'G-leak' reads field 'p', which the feed has no column for (columns: batt_v); it judged nothing",
    ], ["'Batt'", "'N-day'", "'N-data'", "'leq'"]),   # the shipped N-data runs on noise monitors only
])
def test_domain_rules_warn_about_a_field_the_feed_lacks(tmp_path, capsys, kind, header, value, expected, absent):
    dev = _shipped_device(kind)
    (tmp_path / "f.csv").write_text(f"ts,device_id,{header}\n2025-06-01T12:00:00Z,{dev},{value}\n")
    assert run_detect([str(tmp_path / "f.csv"), "--no-progress", "--no-deadman"]) == 0
    err = capsys.readouterr().err
    lines = [line.removeprefix("citywatch detect: ") for line in err.splitlines()]
    for text in expected:
        assert text in lines, (text, err)
    for name in absent:
        assert not any(name in line for line in lines if "warning" in line), (name, err)


def test_a_full_feed_gets_no_field_warning(capsys):
    feed = Path(__file__).resolve().parents[3] / "examples" / "feeds" / "xm_night_2025-06-01.csv"
    assert run_detect([str(feed), "--no-progress", "--rule", "N-day", "--rule", "G-high", "--rule", "Batt"]) == 0
    assert "warning" not in capsys.readouterr().err


# ----- --compare --plot on a generic device --------------------------------------------------------------

def _config_with(tmp_path: Path, name: str, rule: str) -> Path:
    cfg = tmp_path / name
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    text = (cfg / "rules.yaml").read_text()
    (cfg / "rules.yaml").write_text(text.rstrip("\n") + "\n" + rule + "\n")
    return cfg


def test_plot_of_a_generic_device_draws_the_field_its_changed_rule_reads(tmp_path, monkeypatch, capsys):
    rule = "  - {{id: V-hi, type: threshold, kind: any, field: value, unit: bar, levels: [{{above: {}, severity: yellow}}]}}"
    base, other = _config_with(tmp_path, "base", rule.format(8)), _config_with(tmp_path, "other", rule.format(4))
    values = [1, 2, 5, 6, 5, 1, 1, 9, 9, 1, 2, 1]
    (tmp_path / "f.csv").write_text("ts,device_id,value\n" + "".join(
        f"2025-06-01T00:{i:02d}:00Z,EVAL1,{v}\n" for i, v in enumerate(values)))
    drawn: list = []
    real = whatif.plot_device

    def spy(series, changes, names, tz, path, unit=""):
        out = real(series, changes, names, tz, path, unit)
        drawn.append((series, unit))
        return out

    monkeypatch.setattr(whatif, "plot_device", spy)
    import matplotlib.axes

    lines: list = []
    real_plot = matplotlib.axes.Axes.plot

    def plot(self, *args, **kwargs):
        got = real_plot(self, *args, **kwargs)
        lines.extend(got)
        return got

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", plot)
    plots = tmp_path / "plots"
    rc = run_detect([str(tmp_path / "f.csv"), "--config", str(base), "--compare", str(other), "--kind", "generic",
                     "--no-progress", "--no-deadman", "--plot", str(plots)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "V-hi" in out and f"plots: 1 device(s) in {plots}: EVAL1.png" in out
    png = (plots / "EVAL1.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    (series, unit), = drawn
    assert series.field == "value" and unit == "bar"
    assert series.values.tolist() == [float(v) for v in values]
    readings = [ln for ln in lines if ln.get_label() == "readings (value)"]
    assert len(readings) == 1 and np.asarray(readings[0].get_ydata(), float).tolist() == [float(v) for v in values]


def test_plot_of_two_changed_rules_draws_both_fields(tmp_path, monkeypatch, capsys):
    rule = ("  - {{id: V-a, type: threshold, kind: any, field: a, levels: [{{above: {}, severity: yellow}}]}}\n"
            "  - {{id: V-b, type: threshold, kind: any, field: b, levels: [{{above: {}, severity: yellow}}]}}")
    base, other = _config_with(tmp_path, "base", rule.format(8, 8)), _config_with(tmp_path, "other", rule.format(4, 2.5))
    a, b = [1, 5, 6, 1, 1, 1], [2, 3, 3, 2, 2, 2]
    (tmp_path / "f.csv").write_text("ts,device_id,a,b,c\n" + "".join(
        f"2025-06-01T00:{i:02d}:00Z,EVAL1,{x},{y},7\n" for i, (x, y) in enumerate(zip(a, b))))
    drawn: list = []
    real = whatif.plot_device
    monkeypatch.setattr(whatif, "plot_device", lambda series, *rest: (drawn.append(series), real(series, *rest))[1])
    plots = tmp_path / "plots"
    assert run_detect([str(tmp_path / "f.csv"), "--config", str(base), "--compare", str(other), "--kind", "generic",
                       "--no-progress", "--no-deadman", "--plot", str(plots)]) == 0
    capsys.readouterr()
    (series,) = drawn
    assert series.field == "a, b"    # column c is read by no rule: not drawn
    assert series.values.tolist() == [[float(x), float(y)] for x, y in zip(a, b)]
    assert (plots / "EVAL1.png").stat().st_size > 10_000


def test_plot_of_a_deadman_change_draws_the_main_value(tmp_path, monkeypatch, capsys):
    # The deadman reads no field: its plot shows the device's main value (leq), where the gap is.
    base = _config_with(tmp_path, "base", "")
    other = tmp_path / "other"
    shutil.copytree(base, other)
    text = (other / "rules.yaml").read_text()
    (other / "rules.yaml").write_text(text.replace("{id: Offline, type: deadman, kind: any}",
                                                   "{id: Offline, type: deadman, kind: any, grace_s: 7200}"))
    dev = _shipped_device("noise")
    minutes = list(range(0, 30)) + list(range(150, 170))
    (tmp_path / "f.csv").write_text("ts,device_id,leq,lmax\n" + "".join(
        f"2025-06-01T{m // 60:02d}:{m % 60:02d}:00Z,{dev},{50 + m % 7},{60 + m % 5}\n" for m in minutes))
    drawn: list = []
    real = whatif.plot_device
    monkeypatch.setattr(whatif, "plot_device", lambda series, *rest: (drawn.append(series), real(series, *rest))[1])
    plots = tmp_path / "plots"
    assert run_detect([str(tmp_path / "f.csv"), "--config", str(base), "--compare", str(other), "--no-progress",
                       "--device", dev, "--rule", "Offline", "--plot", str(plots)]) == 0
    assert f"plots: 1 device(s) in {plots}: {dev}.png" in capsys.readouterr().out
    (series,) = drawn
    assert series.field == "leq" and series.values.tolist() == [float(50 + m % 7) for m in minutes]
