"""`citywatch check-config`: exit codes, the problem listing, the summary; `citywatch --help`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from citywatch.cli import COMMAND_MODULES, build_parser, main
from config import DEFAULT_CONFIG_DIR, load_config

BROKEN = Path(__file__).parent / "broken"
PROJECT = Path(__file__).resolve().parents[3]


def _clean_env() -> dict:
    return {k: v for k, v in os.environ.items() if not k.startswith("CITYWATCH_")}


def _pinned(case: str) -> list[str]:
    lines = (BROKEN / case / "expected.txt").read_text().splitlines()
    return [line for line in lines if line and not line.startswith("# ")]


def test_the_shipped_example_passes_with_a_summary(capsys, monkeypatch):
    for var in [v for v in os.environ if v.startswith("CITYWATCH_")]:
        monkeypatch.delenv(var)
    assert main(["check-config", str(DEFAULT_CONFIG_DIR)]) == 0
    out, err = capsys.readouterr()
    cfg = load_config(DEFAULT_CONFIG_DIR)
    lines = out.splitlines()
    assert lines[0] == f"config OK: {DEFAULT_CONFIG_DIR}"
    assert f"  sites:   {len(cfg.sites)} ({len({s.district for s in cfg.sites})} districts)" in lines
    assert any(line.startswith(f"  devices: {len(cfg.devices)} (") for line in lines)
    assert err == ""


def test_without_a_directory_the_shipped_config_is_checked(capsys):
    assert main(["check-config"]) == 0
    assert capsys.readouterr().out.startswith("config OK:")


@pytest.mark.parametrize("case", ["unknown_site", "sibling_errors", "yaml_syntax_error", "several_files_at_once"])
def test_a_broken_config_lists_its_problems_and_exits_1(case, capsys, monkeypatch):
    monkeypatch.chdir(BROKEN / case)
    for var in [v for v in os.environ if v.startswith("CITYWATCH_")]:
        monkeypatch.delenv(var)
    assert main(["check-config", "."]) == 1
    out, err = capsys.readouterr()
    expected = _pinned(case)
    n = len(expected)
    assert err.splitlines() == expected + [f"{n} problem{'s' if n != 1 else ''} found"]
    assert out == ""


def test_a_missing_directory_exits_1(capsys, tmp_path):
    assert main(["check-config", str(tmp_path / "nowhere")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{tmp_path / 'nowhere'}: not a directory", "1 problem found"]


def test_a_directory_without_yaml_exits_1(capsys, tmp_path):
    assert main(["check-config", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"{tmp_path}: no *.yaml files in this directory", "1 problem found"]


def test_a_bad_port_in_the_environment_fails_the_check(capsys, monkeypatch):
    monkeypatch.setenv("CITYWATCH_MQTT_PORT", "http")
    assert main(["check-config", str(DEFAULT_CONFIG_DIR)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "$CITYWATCH_MQTT_PORT: connections.mqtt.port: must be a whole number (got 'http')",
        "1 problem found",
    ]


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for name in COMMAND_MODULES:
        assert name.replace("_", "-") in out
    assert "check-config" in out


def test_every_command_module_registers_a_parser():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) >= {m.replace("_", "-") for m in COMMAND_MODULES}


@pytest.mark.slow
def test_the_installed_command_in_a_real_process():
    """The console script end to end: --help, the shipped config, and a broken one."""
    exe = Path(sys.executable).parent / "citywatch"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "citywatch"]
    run = lambda *args: subprocess.run(  # noqa: E731
        cmd + list(args), cwd=PROJECT, env=_clean_env(), capture_output=True, text=True, timeout=60
    )
    helped = run("--help")
    assert helped.returncode == 0 and "check-config" in helped.stdout
    ok = run("check-config", "config")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("config OK:")
    bad = run("check-config", str(BROKEN / "duplicate_device_id"))
    assert bad.returncode == 1
    assert bad.stderr.splitlines()[-1] == "1 problem found"
    assert "devices[1].id: duplicate device id" in bad.stderr
