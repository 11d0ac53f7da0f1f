"""Every key of the sections defined in connections.py, inventory.py and time_rules.py is documented in its YAML."""

from __future__ import annotations

import re
import typing

import pytest
from pydantic import BaseModel

from config import DEFAULT_CONFIG_DIR
from config.connections import Connections
from config.console_settings import ConsoleSettings
from config.inventory import Device, Site
from config.time_rules import TimeRules


def _models(tp) -> list[type[BaseModel]]:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for arg in typing.get_args(tp) for m in _models(arg)]


def _keys(model: type[BaseModel], seen=None) -> set[str]:
    seen = set() if seen is None else seen
    if model in seen:
        return set()
    seen.add(model)
    out = set()
    for name, info in model.model_fields.items():
        out.add(info.alias or name)
        for sub in _models(info.annotation):
            out |= _keys(sub, seen)
    return out


@pytest.mark.parametrize(
    "file, models",
    [("connections.yaml", [Connections]), ("inventory.yaml", [Site, Device]), ("time_rules.yaml", [TimeRules]),
     ("console.yaml", [ConsoleSettings])],
)
def test_every_key_is_named_in_the_yaml(file, models):
    text = (DEFAULT_CONFIG_DIR / file).read_text()
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
    missing = sorted(k for m in models for k in _keys(m) if k not in words)
    assert missing == [], f"{file} does not document {missing}"
