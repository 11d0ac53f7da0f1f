"""The registry: rule keys checked with file:line problems (texts pinned), RuleSet construction, docs."""

from __future__ import annotations

import re
import shutil
import typing

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from config import DEFAULT_CONFIG_DIR, ConfigError, load_config
from config.thresholds import Gas, Noise, Offline
from detectors.base import latch_levels
from detectors.registry import REGISTRY, RuleSet, check_rules

SHIPPED = (DEFAULT_CONFIG_DIR / "rules.yaml").read_text()
BASE_LINE = SHIPPED.count("\n")          # appended rules start on the line after this
BASE_INDEX = SHIPPED.count("\n  - ")     # and at this index (alerts.yaml names the shipped rules)


def config_with_rules(tmp_path, extra_items: str):
    d = tmp_path / "cfg"
    shutil.copytree(DEFAULT_CONFIG_DIR, d, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (d / "rules.yaml").write_text(SHIPPED + extra_items)
    return load_config(d)


def problems(tmp_path, extra_items: str) -> list[str]:
    cfg = config_with_rules(tmp_path, extra_items)
    return [str(p).split("rules.yaml", 1)[1] for p in check_rules(cfg)]


def shift(expected: str) -> str:
    """`:+1: rules[+0]...` -> absolute line and index after the shipped rules."""
    out = re.sub(r"^:\+(\d+):", lambda m: f":{BASE_LINE + int(m.group(1))}:", expected)
    return re.sub(r"rules\[\+(\d+)\]", lambda m: f"rules[{BASE_INDEX + int(m.group(1))}]", out)


def test_shipped_rules_are_valid():
    cfg = load_config()
    assert check_rules(cfg) == []
    rs = RuleSet.from_config(cfg)
    assert rs.rule_ids == [r.id for r in cfg.rules]
    assert 0 < rs.state_bytes()


@pytest.mark.parametrize("yaml, expected", [
    ("  - {id: A, type: noise_day_limt}\n",
     ":+1: rules[+0].type: unknown detector type; did you mean 'noise_day_limit'? (got 'noise_day_limt')"),
    ("  - {id: A, type: noise_day_limit, windw_s: 600}\n",
     ":+1: rules[+0].windw_s: unknown key; did you mean 'window_s'?"),
    ("  - {id: A, type: noise_day_limit, window_s: 0}\n",
     ":+1: rules[+0].window_s: must be above 0 and at most 86400 seconds (got 0)"),
    ("  - {id: A, type: gas_high, kind: noise}\n",
     ":+1: rules[+0].kind: detector type gas_high runs on gas devices (got 'noise')"),
    ("  - id: T\n    type: threshold\n    field: leq\n    levels: [{above: 80, below: 10, severity: red}]\n",
     ":+4: rules[+0].levels[0]: a level names exactly one of above or below"),
    ("  - id: T\n    type: threshold\n    levels: [{above: 80, severity: red}]\n",
     ":+1: rules[+0].field: required key is missing"),
    ("  - {id: Z, type: robust_z, field: p, window: 5, min_count: 9}\n",
     ":+1: rules[+0]: min_count (9) must not exceed window (5)"),
    ("  - {id: C, type: cusum, field: p, after_alarm: restart}\n",
     ":+1: rules[+0].after_alarm: must be one of hold, reset; did you mean 'reset'? (got 'restart')"),
])
def test_rule_problems_name_file_line_and_key(tmp_path, yaml, expected):
    assert problems(tmp_path, yaml) == [shift(expected).replace("{BASE_INDEX}", str(BASE_INDEX))]


def test_from_config_raises_config_error_with_every_problem(tmp_path):
    cfg = config_with_rules(tmp_path, "  - {id: A, type: nope}\n  - {id: B, type: battery, yellow_v: 9}\n")
    with pytest.raises(ConfigError) as err:
        RuleSet.from_config(cfg)
    assert len(err.value.problems) == 2


def test_check_config_command_reports_rule_problems(tmp_path, capsys):
    from citywatch.cli import main

    config_with_rules(tmp_path, "  - {id: A, type: gas_hihg}\n")
    assert main(["check-config", str(tmp_path / "cfg")]) == 1
    assert "unknown detector type; did you mean 'gas_high'?" in capsys.readouterr().err


def test_disabled_rules_do_not_run(tmp_path):
    cfg = config_with_rules(tmp_path, "  - {id: A, type: battery, enabled: false}\n  - {id: B, type: battery}\n")
    ids = RuleSet.from_config(cfg).rule_ids
    assert ids[-1] == "B" and "A" not in ids


def _keys(model, seen=None) -> set[str]:
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    out = set()
    for name, info in model.model_fields.items():
        out.add(info.alias or name)
        for arg in [info.annotation, *typing.get_args(info.annotation)]:
            for sub in [arg, *typing.get_args(arg)]:
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    out |= _keys(sub, seen)
    return out


def test_every_threshold_and_rule_key_is_documented_in_the_yaml():
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", (DEFAULT_CONFIG_DIR / "thresholds.yaml").read_text()))
    missing = sorted(k for m in (Noise, Gas, Offline) for k in _keys(m) if k not in words)
    assert missing == []
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", (DEFAULT_CONFIG_DIR / "rules.yaml").read_text()))
    assert sorted(t for t in REGISTRY if t not in words) == []
    missing = sorted({k for cls in REGISTRY.values() for k in _keys(cls.Params)} - words)
    assert missing == []


# ----- latch_levels: the hysteresis of batchwise detectors without a loop over rows ----------------------

@st.composite
def _runs(draw):
    """Runs of (raw, held) severities with held >= raw, and each run's initial level."""
    n_runs = draw(st.integers(1, 5))
    raws, helds, starts, inits = [], [], [], []
    for _ in range(n_runs):
        k = draw(st.integers(1, 12))
        inits.append(draw(st.sampled_from([0, 1, 2, 3, 4])))
        for j in range(k):
            r = draw(st.sampled_from([0, 0, 1, 2, 3, 4]))
            raws.append(r)
            helds.append(draw(st.integers(r, 4)))
            starts.append(j == 0)
    return (np.array(raws, np.int8), np.array(helds, np.int8), np.array(starts), np.array(inits, np.int8))


@given(_runs())
@settings(max_examples=300, deadline=None)
def test_latch_levels_equals_the_row_by_row_recursion(runs):
    raw, held, start, init = runs
    got = latch_levels(raw, held, start, init)
    want, run = [], -1
    for r, h, s in zip(raw.tolist(), held.tolist(), start.tolist()):
        if s:
            run += 1
            prev = int(init[run])
        prev = max(r, min(prev, h))
        want.append(prev)
    assert got.tolist() == want


def test_latch_levels_table():
    # yellow set, held through a dip inside the hysteresis band, reset below it; red set by a spike
    raw = np.array([2, 0, 0, 4, 0, 0], np.int8)
    held = np.array([2, 2, 0, 4, 2, 0], np.int8)
    start = np.array([True, False, False, False, False, False])
    assert latch_levels(raw, held, start, np.array([0], np.int8)).tolist() == [2, 2, 0, 4, 2, 0]
    # a run that starts active keeps its level while held, and the next run starts from its own state
    raw = np.array([0, 0, 0, 0], np.int8)
    held = np.array([3, 0, 3, 3], np.int8)
    start = np.array([True, False, True, False])
    assert latch_levels(raw, held, start, np.array([3, 0], np.int8)).tolist() == [3, 0, 0, 0]
