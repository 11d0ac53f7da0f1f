"""Shared fixtures of the simulator unit tests: the shipped config and the default scenario."""

from __future__ import annotations

from pathlib import Path

import pytest

from config import load_config
from simulators.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[3]
CITY_DAY = ROOT / "simulators" / "scenarios" / "city_day.yaml"


@pytest.fixture(scope="session")
def cfg():
    return load_config(ROOT / "config")


@pytest.fixture(scope="session")
def city_day(cfg):
    return load_scenario(CITY_DAY, cfg)


@pytest.fixture(scope="session")
def city_feed(city_day, cfg):
    from simulators.feed import build_feed
    return build_feed(city_day, cfg)
