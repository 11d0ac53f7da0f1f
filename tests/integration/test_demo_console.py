"""`make demo` starts the web console beside the service (issue 11): the demo prints the console's URL and a
demo login before the simulated day, the console answers while the day runs and accepts that login, `--keep`
keeps it after the scorecard until Ctrl-C, and it is stopped by pid at the end. A port in use is handled as
a user expects: the configured one is replaced by a free one (said so), one asked for is refused clearly.

The demo runs a tiny scenario (two devices, 20 simulated minutes) against the test's own Mosquitto and InfluxDB."""

from __future__ import annotations

import re
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from citywatch import demo_console
from citywatch.localstack import free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCENARIO = """
scenario:
  name: tiny_day
  seed: 1
  start: "2025-06-02T09:00"
  duration: 20m
  devices: [XM0001NOISE, XMG0001]
"""
LINE = re.compile(r"console: (http://127\.0\.0\.1:(\d+))  login: duty / (\S+)")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def _status(url: str, data: bytes | None = None) -> int:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(urllib.request.Request(url, data=data), timeout=10) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _read_until(proc: subprocess.Popen, pattern: str, out: list[str], timeout_s: float) -> re.Match | None:
    """Read the demo's output line by line until `pattern` matches one (bounded by timeout_s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if not ready:
            if proc.poll() is not None:
                return None
            continue
        line = proc.stdout.readline()
        if not line:
            return None
        out.append(line)
        m = re.search(pattern, line)
        if m:
            return m
    return None


def _sigint_default() -> None:
    """In the demo's process before it starts: Ctrl-C's signal as a terminal's foreground process gets it. A test run
    started in the background of a non-interactive shell inherits SIGINT ignored, and Python then installs no
    KeyboardInterrupt handler: the demo slept on through the test's SIGINT (two fresh-clone runs this way)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"])
def test_demo_prints_the_console_login_keeps_it_and_stops_it_on_ctrl_c(tmp_path, mosquitto, influx, service_env, stop):
    influx.create_database("citywatch_demo")
    scenario = tmp_path / "tiny.yaml"
    scenario.write_text(SCENARIO)
    env = dict(service_env)
    env["CITYWATCH_CONSOLE_MQTT_PASSWORD"] = mosquitto.credentials.console[1]
    env["PYTHONFAULTHANDLER"] = "1"  # a stack dump on SIGABRT, should the demo not end (below)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "citywatch.demo", "--scenario", str(scenario), "--speed", "200",
                             "--workdir", str(tmp_path / "demo"), "--console-port", str(port), "--keep"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT,
                            start_new_session=True, preexec_fn=_sigint_default)
    out: list[str] = []
    try:
        m = _read_until(proc, LINE.pattern, out, 120)
        assert m, "".join(out)
        url, password = m.group(1), m.group(3)
        assert int(m.group(2)) == port
        # printed before the simulated day starts
        assert not any("landed in InfluxDB" in line or "scorecard" in line for line in out), "".join(out)
        # the console answers while the day runs, and the printed login is an operator's
        assert _status(url + "/login") == 200
        form = urllib.parse.urlencode({"username": "duty", "password": password}).encode()
        assert _status(url + "/login", form) == 303
        assert _status(url + "/login", urllib.parse.urlencode({"username": "duty", "password": "wrong-password"})
                       .encode()) == 401
        users = tmp_path / "demo" / "var" / "console_users.sqlite"
        assert users.stat().st_mode & 0o777 == 0o600
        # --keep: after the scorecard the console is still there ...
        assert _read_until(proc, r"the console keeps running", out, 240), "".join(out)
        assert any("scorecard" in line for line in out)
        assert _status(url + "/login") == 200
        # ... until Ctrl-C, which stops it by pid and ends the demo
        proc.send_signal(stop)  # SIGTERM: `kill <pid>` ends it the same way, console included
        try:
            rest, _ = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            # Show where the demo waits: PYTHONFAULTHANDLER makes SIGABRT print every thread's stack before the
            # process dies.
            proc.send_signal(signal.SIGABRT)
            rest, _ = proc.communicate(timeout=30)
            pytest.fail(f"the demo did not end within 60 s of {stop.name}; its stacks:\n" + "".join(out[-5:]) + rest)
        out.append(rest)
        if stop == signal.SIGINT:
            assert "stopping the console" in rest, "".join(out)
        else:
            assert proc.returncode == 128 + signal.SIGTERM, "".join(out)
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
    finally:
        print("".join(out))
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_a_port_in_use_is_replaced_when_configured_and_refused_when_asked_for():
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(1)
        busy = held.getsockname()[1]
        port, note = demo_console.choose_port("127.0.0.1", busy, None)
        assert port != busy and demo_console.port_free("127.0.0.1", port)
        assert note == (f"console.port {busy} on 127.0.0.1 is in use (another console?): the demo's console "
                        f"listens on {port} instead")
        with pytest.raises(demo_console.PortTaken) as err:
            demo_console.choose_port("127.0.0.1", 8080, busy)
        assert str(err.value) == (f"demo: --console-port {busy}: port {busy} on 127.0.0.1 is in use; choose another "
                                  f"port, or stop what listens there")
    free = free_port()
    assert demo_console.choose_port("127.0.0.1", free, None) == (free, None)
