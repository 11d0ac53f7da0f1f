"""One duration grammar everywhere: config.durations, the operator commands, scenario files, the CLI
options (`warmup --since`, `detect --since`, `simulate --duration`) and every YAML `*_s` key."""

from __future__ import annotations

import json
import shutil
import typing

import pytest
from pydantic import BaseModel

from alerts import commands
from citywatch.cli import main
from citywatch.commands.detect import parse_when
from config import DEFAULT_CONFIG_DIR, ConfigError, load_config
from config.base import Strict, _duration_keys
from config.durations import is_duration_key, parse_duration
from config.model import Config
from simulators import scenario

NS = 1_000_000_000

GOOD = [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400), ("2w", 1_209_600), ("1.5h", 5400),
        (" 30 s ", 30), ("250ms", 0.25)]
BAD = ["", "soon", "5x", "2 min", "-3m", "1e3s", "inf", "nan", "1" * 10, "1.1234567h", "h", "5 weeks"]


@pytest.mark.parametrize("text,seconds", GOOD)
def test_every_entry_point_reads_the_same_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert commands.parse_duration(text) == seconds
    assert scenario.parse_duration(text) == seconds
    if text.strip()[-1:] in "smhdw":  # a bare number after --since is epoch milliseconds
        assert parse_when(text, 10**18) == 10**18 - int(seconds * NS)


@pytest.mark.parametrize("text", BAD)
def test_every_entry_point_refuses_the_same_texts(text):
    for parse in (parse_duration, commands.parse_duration, scenario.parse_duration):
        with pytest.raises(ValueError):
            parse(text)


def test_refusal_texts_are_pinned():
    with pytest.raises(ValueError) as exc:
        parse_duration("soon")
    assert str(exc.value) == "duration 'soon' must be a positive number with an optional unit s, m, h, d or w"
    with pytest.raises(ValueError) as exc:
        scenario.parse_duration("-3m")
    assert str(exc.value) == "duration '-3m' must be a number with an optional unit s, m, h, d or w"
    # Zero: refused where a length must be positive (a silence), allowed where none is fine (history: 0s).
    with pytest.raises(ValueError):
        commands.parse_duration("0h")
    assert scenario.parse_duration("0s") == 0


def _config_with(tmp_path, file: str, old: str, new: str):
    cfg = tmp_path / "cfg"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    text = (cfg / file).read_text()
    assert old in text
    (cfg / file).write_text(text.replace(old, new, 1))
    return cfg


def test_yaml_seconds_keys_take_a_duration(tmp_path):
    cfg = _config_with(tmp_path, "rules.yaml", "{id: N-day, type: noise_day_limit, kind: noise, clear_for_s: 120}",
                       "{id: N-day, type: noise_day_limit, kind: noise, clear_for_s: 2m, for_s: 1.5m}")
    text = (cfg / "thresholds.yaml").read_text().replace("  orange_after_s: 86400", "  orange_after_s: 1d")
    (cfg / "thresholds.yaml").write_text(text)
    loaded = load_config(cfg, env={})
    rule = next(r for r in loaded.rules if r.id == "N-day")
    assert (rule.clear_for_s, rule.for_s) == (120, 90)
    assert loaded.offline.orange_after_s == 86400 and isinstance(loaded.offline.orange_after_s, int)


def test_a_detectors_own_seconds_key_takes_a_duration(tmp_path):
    from detectors.registry import RuleSet

    cfg = _config_with(tmp_path, "rules.yaml", "{id: Offline, type: deadman, kind: any}",
                       "{id: Offline, type: deadman, kind: any, grace_s: 10m}")
    rules = RuleSet.from_config(load_config(cfg, env={}))
    dead = next(d for d in rules.rules if d.rule_id == "Offline")
    interval = load_config(cfg, env={}).devices[0].report_interval_s
    assert dead.after_s[0] == 2 * interval + 600


def test_a_yaml_duration_that_is_not_one_names_the_grammar(tmp_path, monkeypatch):
    _config_with(tmp_path, "rules.yaml", "{id: N-day, type: noise_day_limit, kind: noise, clear_for_s: 120}",
                 "{id: N-day, type: noise_day_limit, kind: noise, clear_for_s: 2 min}")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config("cfg", env={})
    assert [str(p).split(": ", 1)[1] for p in info.value.problems] == [
        "rules[0].clear_for_s: must be a number of seconds or a duration such as 90s, 15m, 2h, 1d (got '2 min')"]


def _models(tp, seen: set) -> None:
    origin = typing.get_origin(tp)
    if origin is not None:
        for arg in typing.get_args(tp):
            _models(arg, seen)
        return
    if isinstance(tp, type) and issubclass(tp, BaseModel) and tp not in seen:
        seen.add(tp)
        for info in tp.model_fields.values():
            _models(info.annotation, seen)


def test_every_seconds_key_of_the_schema_takes_a_duration():
    seen: set = set()
    _models(Config, seen)
    from detectors.registry import REGISTRY

    for det in REGISTRY.values():
        if getattr(det, "Params", None):
            _models(det.Params, seen)
    checked = 0
    for model in seen:
        assert issubclass(model, Strict), model
        for name, info in model.model_fields.items():
            if is_duration_key(info.alias or name):
                assert (info.alias or name) in _duration_keys(model), f"{model.__name__}.{name}"
                checked += 1
    assert checked >= 30  # for_s, clear_for_s, window_s, grace_s, timeout_s, ... (rate_per_s is a rate)


def test_cli_options_take_the_same_grammar(tmp_path, capsys):
    # `simulate --duration 2w` was refused while `warmup --since 2w` worked: one small device, two weeks.
    spec = tmp_path / "s.yaml"
    spec.write_text("scenario:\n  name: two_weeks\n  seed: 1\n  start: \"2025-06-02T06:00\"\n  duration: 1h\n"
                    "  devices: [XMG0010]\n")
    out = tmp_path / "feed.jsonl"
    rc = main(["simulate", str(spec), "--config", str(DEFAULT_CONFIG_DIR), "--duration", "2w", "--dry-run", "--out",
               str(out), "--truth", str(tmp_path / "t.jsonl"), "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    first, last = (json.loads(x) for x in (out.read_text().splitlines()[0], out.read_text().splitlines()[-1]))
    span_s = (_ts(last) - _ts(first)) / 1000
    assert 13.9 * 86400 < span_s <= 14 * 86400
    with pytest.raises(SystemExit) as stop:  # refused while the arguments are parsed, as every bad option is
        main(["simulate", str(spec), "--config", str(DEFAULT_CONFIG_DIR), "--duration", "2 weeks", "--dry-run",
              "--out", str(out), "--truth", str(tmp_path / "t.jsonl"), "--no-progress"])
    assert stop.value.code == 2
    assert "duration '2 weeks' must be a positive number with an optional unit s, m, h, d or w" in capsys.readouterr().err


def _ts(record: dict) -> int:
    """Epoch ms of a feed record (the replay format keeps the message's payload)."""
    for key in ("ts_ms", "ts"):
        if key in record:
            return int(record[key])
    payload = record.get("payload")
    if isinstance(payload, str):
        payload = json.loads(payload)
    samples = payload.get("samples") or payload.get("readings") or [payload]
    return int(samples[-1].get("ts") or samples[-1].get("ts_ms"))
