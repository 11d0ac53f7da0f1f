"""The ingest settings this package reads: defaults, and the error text of a bad refuse_flags entry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from config import ConfigError, load_config
from ingest.validation import Limits

ROOT = Path(__file__).resolve().parents[3]


def test_shipped_limits():
    s = load_config(ROOT / "config").ingest
    limits = Limits.from_settings(s)
    assert limits.future_skew_ms == 300_000 and limits.backfill_max_age_ms == 7 * 86_400_000
    assert limits.refuse_flags == {2, 4}  # M, D


@pytest.mark.parametrize(
    "value, message",
    [
        ("[D, X]", "ingest.refuse_flags[1]: must be one of N, F, M, S, D, C, T, B (got 'X')"),
        ("[N, D]", "ingest.refuse_flags: must not list N, the flag of normal data (every reading would be refused) (got a list)"),
    ],
)
def test_bad_refuse_flags_are_located_errors(tmp_path, value, message):
    d = tmp_path / "config"
    shutil.copytree(ROOT / "config", d, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = d / "ingest.yaml"
    path.write_text(path.read_text().replace("refuse_flags: [D, M]", f"refuse_flags: {value}"))
    with pytest.raises(ConfigError) as exc:
        load_config(d)
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "refuse_flags" in text)
    assert [str(p) for p in exc.value.problems] == [f"{path}:{line}: {message}"]
