"""pytest fixtures: real Mosquitto and InfluxDB servers in temporary directories, started per test; a module's
tests that carry the `shared_influx` marker share one InfluxDB (a fresh database per test).
`--hypothesis-profile=fast` (`make test-fast`) caps every property test at FAST_EXAMPLES examples."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

from tests.servers import InfluxServer, MosquittoServer, SharedInfluxPool, service_env_for

# CITYWATCH_TEST_SHARED_INFLUX=0 gives every test its own InfluxDB again (to compare, or to rule sharing out).
SHARING = os.environ.get("CITYWATCH_TEST_SHARED_INFLUX", "1") != "0"


# The fast loop's examples: the same properties over fewer generated cases. `make test` runs the count each
# test asks for; a profile alone would not do, since a test's own @settings(max_examples=...) wins over it.
FAST_EXAMPLES = 10
settings.register_profile("fast", max_examples=FAST_EXAMPLES)


@pytest.hookimpl(optionalhook=True)  # an xdist hook: absent without pytest-xdist
def pytest_configure_node(node) -> None:
    """pytest-xdist, on the controller: hand each worker the controller's COLUMNS and LINES."""
    node.workerinput["terminal_env"] = {k: os.environ.get(k) for k in ("COLUMNS", "LINES")}


def pytest_configure(config: pytest.Config) -> None:
    # An xdist worker starts with COLUMNS=80 and LINES=24 of its own, which the CLI's piped-output width
    # rule reads (citywatch/commands/alerts.py); a worker runs with the environment a single process has.
    for key, value in getattr(config, "workerinput", {}).get("terminal_env", {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("hypothesis_profile", None) != "fast":
        return
    for item in items:
        fn = getattr(getattr(item, "obj", None), "__func__", getattr(item, "obj", None))
        # Where @given keeps the test's settings (hypothesis reads it on every run of the test).
        own = getattr(fn, "_hypothesis_internal_use_settings", None)
        if own is not None and own.max_examples > FAST_EXAMPLES:
            fn._hypothesis_internal_use_settings = settings(own, max_examples=FAST_EXAMPLES)


def _shares(request: pytest.FixtureRequest) -> bool:
    return SHARING and request.node.get_closest_marker("shared_influx") is not None


@pytest.fixture(scope="module")
def shared_influx_pool(tmp_path_factory):
    """The module's InfluxDB (started on first use, killed by pid after the module)."""
    pool = SharedInfluxPool(tmp_path_factory.mktemp("shared"))
    yield pool
    pool.close()


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
def influx(request, tmp_path):
    """A fresh InfluxDB 1.x on free ports with database `citywatch`; killed by pid after the test.

    Marked `shared_influx`: the module's server instead, with a new database `citywatch_t<n>` of its own
    (dropped after the test; stop, kill and restart refused).
    """
    if _shares(request):
        view = request.getfixturevalue("shared_influx_pool").influx()
        yield view
        view.drop()
        return
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
