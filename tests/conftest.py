"""pytest fixtures: real Mosquitto and InfluxDB servers started per test in temporary directories."""

from __future__ import annotations

import os

import pytest

from tests.servers import InfluxServer, MosquittoServer, service_env_for


@pytest.fixture
def mosquitto(tmp_path):
    """A fresh Mosquitto on a free port; stopped (or killed) by pid after the test."""
    server = MosquittoServer(tmp_path / "mosquitto")
    server.start()
    yield server
    server.kill()
    # Started as root, the broker keeps its files where its own user can reach them, outside tmp_path.
    server.remove_broker_dir()


@pytest.fixture
def influx(tmp_path):
    """A fresh InfluxDB 1.x on free ports with database `citywatch`; killed by pid after the test."""
    server = InfluxServer(tmp_path / "influxdb")
    server.start()
    yield server
    server.kill()


@pytest.fixture
def service_env(mosquitto, influx):
    """os.environ plus the CITYWATCH_* variables that point a `citywatch` process at the test servers."""
    env = dict(os.environ)
    env.update(service_env_for(mosquitto, influx))
    return env
