"""`citywatch detect` called once per file imports only its own command module (issue 16, item 8), and
the rest of the command line behaves as with every module loaded."""

from __future__ import annotations

import subprocess
import sys

import pytest

from citywatch.cli import COMMAND_MODULES, build_parser


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.slow
def test_detect_imports_only_the_detect_command():
    mods = _modules_after("from citywatch.cli import build_parser\nbuild_parser(['detect', 'feed.csv'])")
    loaded = {m.rsplit(".", 1)[1] for m in mods if m.startswith("citywatch.commands.")}
    assert loaded == {"detect"}
    # Nor does it import what only other commands or long series need.
    assert not {"scipy", "matplotlib", "rich"} & {m.split(".")[0] for m in mods}


def test_a_word_that_is_no_command_module_gets_the_whole_parser():
    # notify.py also registers `oncall`; a misspelt command lists every command.
    assert "oncall" in build_parser(["oncall", "now"])._subparsers._group_actions[0].choices
    choices = build_parser(["detecd"])._subparsers._group_actions[0].choices
    assert {"detect", "check-config", "oncall"} <= set(choices)
    assert len({c.replace("-", "_") for c in choices} & set(COMMAND_MODULES)) == len(COMMAND_MODULES)


def test_options_before_the_command_get_the_whole_parser():
    assert "detect" in build_parser(["--help"])._subparsers._group_actions[0].choices
    assert len(build_parser(["detect"])._subparsers._group_actions[0].choices) == 1
