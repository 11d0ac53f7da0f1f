"""Every test in this folder starts a real server (Mosquitto, InfluxDB, a citywatch process or Chromium): all of
them carry the `integration` marker, so `make test-fast` (`-m "not integration"`) leaves them out."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.integration)
