"""Config problems with file, line and key path, and the words their messages use (values, key paths,
"did you mean"). pydantic's errors become problems in config/pydantic_errors.py."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ConfigProblem:
    """One problem in the configuration, printed as `file:line: path: message`."""

    file: str
    line: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """Raised when a configuration has one or more problems; `problems` lists them all."""

    def __init__(self, problems: Iterable[ConfigProblem]):
        self.problems = sorted(set(problems), key=lambda p: (p.file, p.line or 0, p.path, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


def show(value: Any) -> str:
    """Render a received value for an error message, short and unambiguous."""
    if isinstance(value, bool):
        text = "true" if value else "false"  # as YAML spells it
    elif isinstance(value, str):
        text = repr(value)
    elif isinstance(value, dict):
        text = "a mapping"
    elif isinstance(value, list):
        text = "a list"
    elif value is None:
        text = "nothing"
    else:
        text = str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """A `; did you mean 'x'?` hint for a misspelt key, enum value or id, or an empty string."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def path_text(path: Iterable[Any]) -> str:
    """`("noise", "limits", "day_db")` -> `noise.limits.day_db`; list indexes as `[3]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
