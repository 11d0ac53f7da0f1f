"""`citywatch check-config` warns (exit 0: the config is valid) about an unsigned webhook sink and one that
sends plain http to another host; the texts are pinned."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from citywatch.cli import main
from config import DEFAULT_CONFIG_DIR

UNSIGNED = ("warning: alerting.sinks.hook.secret_env: not set: notices are sent unsigned, and a receiver "
            "cannot tell them from forged or replayed ones; set secret_env to the variable holding an HMAC key")


def plain_http(host: str) -> str:
    return (f"warning: alerting.sinks.hook.url: plain http to {host}, which is not this machine: notices "
            f"cross the network unencrypted; use https://")


@pytest.fixture
def config_with_hook(tmp_path, monkeypatch):
    """A copy of the shipped config whose alerts.yaml gains a webhook sink `hook` with the given keys."""
    for var in [v for v in os.environ if v.startswith("CITYWATCH_")]:
        monkeypatch.delenv(var)
    monkeypatch.chdir(tmp_path)
    cfg_dir = tmp_path / "cfg"

    def make(**keys) -> tuple[Path, int]:
        shutil.copytree(DEFAULT_CONFIG_DIR, cfg_dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        text = (cfg_dir / "alerts.yaml").read_text().splitlines()
        at = next(i for i, line in enumerate(text) if line.strip() == "sinks:" or line.strip().startswith("sinks:"))
        block = ["    hook:", "      type: webhook"] + [f"      {k}: {v}" for k, v in keys.items()]
        text[at + 1:at + 1] = block
        (cfg_dir / "alerts.yaml").write_text("\n".join(text) + "\n")
        # 1-based line of each key of the block, for the pinned `file:line:` prefix
        return cfg_dir, at + 2

    return make


def run_check(capsys, cfg_dir: Path) -> tuple[int, list[str], str]:
    code = main(["check-config", str(cfg_dir)])
    out, err = capsys.readouterr()
    return code, err.splitlines(), out


def test_unsigned_webhook_warns_with_file_and_line(config_with_hook, capsys):
    cfg_dir, hook_line = config_with_hook(url="https://ops.example.org/hook")
    code, err, out = run_check(capsys, cfg_dir)
    assert code == 0
    # No secret_env key: the warning points at the sink itself.
    assert err == [f"cfg/alerts.yaml:{hook_line}: {UNSIGNED}"]
    assert out.startswith("config OK:")


def test_plain_http_to_another_host_warns(config_with_hook, capsys):
    cfg_dir, hook_line = config_with_hook(url="http://203.0.113.7:8080/hook", secret_env="HOOK_SECRET")
    code, err, out = run_check(capsys, cfg_dir)
    assert code == 0
    assert err == [f"cfg/alerts.yaml:{hook_line + 2}: {plain_http('203.0.113.7')}"]
    assert out.startswith("config OK:")


def test_unsigned_plain_http_gives_both_warnings(config_with_hook, capsys):
    cfg_dir, hook_line = config_with_hook(url="http://alerts.example.org/hook")
    code, err, _ = run_check(capsys, cfg_dir)
    assert code == 0
    assert err == [f"cfg/alerts.yaml:{hook_line}: {UNSIGNED}",
                   f"cfg/alerts.yaml:{hook_line + 2}: {plain_http('alerts.example.org')}"]


@pytest.mark.parametrize("url", ["https://ops.example.org/hook", "http://127.0.0.1:9000/hook",
                                 "http://localhost/hook", "http://[::1]:9000/hook", "http://127.8.9.10/x"])
def test_signed_https_or_loopback_webhook_gives_no_warning(config_with_hook, capsys, url):
    cfg_dir, _ = config_with_hook(url=url, secret_env="HOOK_SECRET")
    code, err, out = run_check(capsys, cfg_dir)
    assert (code, err) == (0, [])
    assert out.startswith("config OK:")


def test_a_severity_that_reaches_no_sink_warns(tmp_path, monkeypatch, capsys):
    """`route.receivers: []` with the shipped child route for red alerts left yellow and orange alerts (and blue)
    unheard without a word: check-config (and `citywatch run` at start) now says so, once per severity."""
    for var in [v for v in os.environ if v.startswith("CITYWATCH_")]:
        monkeypatch.delenv(var)
    cfg_dir = tmp_path / "cfg"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    text = (cfg_dir / "alerts.yaml").read_text()
    root = "    receivers: [ops_mqtt, audit]"
    assert text.count(root) == 1
    (cfg_dir / "alerts.yaml").write_text(text.replace(root, "    receivers: []"))
    assert main(["check-config", str(cfg_dir)]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if "alerting.route: no " in line]
    assert [w.split("no ")[1].split(" alert")[0] for w in warned] == ["blue", "yellow", "orange"]
    assert all(":" in w.split(": warning:")[0] for w in warned)  # file:line
    # The shipped config routes every severity: no such warning.
    assert main(["check-config", str(DEFAULT_CONFIG_DIR)]) == 0
    assert "alerting.route: no " not in capsys.readouterr().err
