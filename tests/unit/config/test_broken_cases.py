"""Pins the exact error text of every broken config under broken/<case>/ (the texts are user interface).

Each case directory is a minimal valid config plus one kind of mistake; its `expected.txt` holds a
`# what is wrong` line and then the exact problem lines. To re-pin after a deliberate wording change,
run with CITYWATCH_REPIN=1 and review the diff.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from config import ConfigError, load_config

BROKEN = Path(__file__).parent / "broken"
CASES = sorted(p.name for p in BROKEN.iterdir() if p.is_dir())
# file:line: path: message  |  file: path: message (env, directory)  |  file:line: message (file-level)
LINE = re.compile(r"^(?P<file>[^:]+?)(?::(?P<line>\d+))?: (?:(?P<path>[A-Za-z_][\w.\[\]-]*): )?(?P<msg>.+)$")


def _expected(case: str) -> tuple[str, list[str]]:
    text = (BROKEN / case / "expected.txt").read_text(encoding="utf-8").splitlines()
    header = [line for line in text if line.startswith("# ")]
    return (header[0] if header else ""), [line for line in text if line and not line.startswith("# ")]


def _problems(case: str, monkeypatch) -> list[str]:
    monkeypatch.chdir(BROKEN / case)  # file names print relative to the working directory
    with pytest.raises(ConfigError) as info:
        load_config(".", env={})
    return [str(p) for p in info.value.problems]


def test_there_are_enough_kinds_of_mistake():
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", CASES)
def test_broken_case_reports_exactly_the_pinned_lines(case, monkeypatch):
    header, expected = _expected(case)
    got = _problems(case, monkeypatch)
    if os.environ.get("CITYWATCH_REPIN") == "1":
        (BROKEN / case / "expected.txt").write_text(header + "\n" + "\n".join(got) + "\n", encoding="utf-8")
        return
    assert got == expected


@pytest.mark.parametrize("case", CASES)
def test_every_problem_names_file_line_and_key(case, monkeypatch):
    for text in _problems(case, monkeypatch):
        m = LINE.match(text)
        assert m, text
        if m["file"].endswith(".yaml"):
            assert m["line"], f"no line number: {text}"
        else:
            assert m["file"].endswith("/") or m["file"].startswith("$"), text
            assert m["path"], text


@pytest.mark.parametrize("case", CASES)
def test_the_error_text_is_the_exception_message(case, monkeypatch):
    monkeypatch.chdir(BROKEN / case)
    with pytest.raises(ConfigError) as info:
        load_config(".", env={})
    assert str(info.value).splitlines() == _expected(case)[1]


@pytest.mark.parametrize("case", ["secret_in_yaml", "secret_in_env_key", "secret_in_sink"])
def test_a_secret_is_never_echoed(case, monkeypatch):
    assert not any("hunter2" in line or "s3cr3t" in line for line in _problems(case, monkeypatch))
