"""The command line in a pipe and with the stack down (issue 12): `| head` ends quietly, piped output is not
cut to 80 columns, and an unreachable InfluxDB is one line with exit 2 (citywatch.errors)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from citywatch.errors import EXIT_UNREACHABLE, short_reason, unreachable
from core import Detections
from tests.unit.alerts.helpers import at, base_cfg, make_cfg, make_engine, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def citywatch(*args, env=None, stdout=subprocess.PIPE, timeout=60):
    e = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES") and not k.startswith("CITYWATCH_")}
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "citywatch", *args], cwd=ROOT, env=e, stdout=stdout,
                          stderr=subprocess.PIPE, text=True, timeout=timeout, check=False)


def store_with_alerts(tmp_path, n_devices: int = 40):
    """A store holding a G-low alert on each of the first gas devices (a board longer than a pipe buffer
    is not needed: the reader below is gone before the first write)."""
    eng, _ = make_engine(tmp_path, make_cfg(rules=[{"id": "G-low", "type": "gas_low", "kind": "gas"}]))
    gas = [i for i, d in enumerate(base_cfg().devices) if d.kind == "gas"][:n_devices]
    n = len(gas)
    eng.process(Detections(np.array(gas, np.int32), np.full(n, at(0), np.int64), np.array(["G-low"] * n, object),
                           np.array(["gas"] * n, object), np.full(n, 3, np.int8), np.full(n, 80.0),
                           np.full(n, 90.0), np.full(n, np.nan), [{"metric": "p", "unit": "kPa"}] * n))
    eng.stop()
    return tmp_path / "alerts.sqlite"


def closed_pipe_run(*args, env=None):
    """Run with stdout a pipe whose reader has already gone (`| head` that has exited)."""
    r, w = os.pipe()
    os.close(r)
    try:
        return citywatch(*args, env=env, stdout=w)
    finally:
        os.close(w)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_alerts_list_into_a_closed_pipe_ends_without_a_traceback(tmp_path):
    store = store_with_alerts(tmp_path)
    res = closed_pipe_run("alerts", "--store", str(store), "list")
    # rich stops on a broken pipe with exit 1 (Console.on_broken_pipe), plain print() with 141: both quietly
    assert res.returncode in (1, 141) and res.stderr == ""


def test_status_into_a_closed_pipe_ends_without_a_traceback(tmp_path):
    d = write_config(tmp_path / "config", "alerting: {}\n")
    res = closed_pipe_run("status", "--config", str(d), env={"CITYWATCH_INFLUX_URL": f"http://127.0.0.1:{free_port()}"})
    assert "Traceback" not in res.stderr and "BrokenPipeError" not in res.stderr
    assert res.returncode == 141


def test_piped_board_is_not_cut_to_80_columns(tmp_path):
    store = store_with_alerts(tmp_path, 12)
    res = citywatch("alerts", "--store", str(store), "list")
    assert res.returncode == 0, res.stderr
    rows = [line for line in res.stdout.splitlines() if "G-low.XMG0010" in line]
    # One alert, one line: grep-able, with site, value and id on it whole.
    assert len(rows) == 1 and len(rows[0]) > 120
    assert "Haicang gas network point 10" in rows[0] and "80 kPa, limit 90" in rows[0]


def test_status_with_influxdb_down_is_one_line_and_exit_2(tmp_path):
    d = write_config(tmp_path / "config", "alerting: {}\n")
    url = f"http://127.0.0.1:{free_port()}"
    res = citywatch("status", "--config", str(d), env={"CITYWATCH_INFLUX_URL": url})
    assert res.returncode == EXIT_UNREACHABLE == 2
    assert res.stderr == (f"citywatch status: cannot reach InfluxDB at {url}: connection refused; is the stack "
                          "up? (scripts/stack.sh up; source .stack/env)\n")


def test_the_shared_wording_finds_the_reason_inside_wrapped_errors():
    try:
        try:
            socket.create_connection(("127.0.0.1", free_port()), timeout=5)
        except OSError as inner:
            raise RuntimeError("HTTPConnectionPool(host='127.0.0.1'): Max retries exceeded") from inner
    except RuntimeError as exc:
        assert short_reason(exc) == "connection refused"
    assert short_reason(TimeoutError("x")) == "timed out"
    assert unreachable("citywatch record", "the MQTT broker", "127.0.0.1:1883", ConnectionRefusedError(111, "x")) == (
        "citywatch record: cannot reach the MQTT broker at 127.0.0.1:1883: connection refused; is the stack up? "
        "(scripts/stack.sh up; source .stack/env)")
