"""The demo's web console: `citywatch console` in its own process beside the demo's service, with a demo
account `duty` (role operator, a password generated for this run and printed once) in the demo's own users
file, so the live board, the map and the device charts can be watched while the simulated day runs."""

from __future__ import annotations

import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEMO_USER = "duty"
DEMO_NAME = "Demo duty officer"
READY_S = 60.0       # how long the console may take to answer its login page


class PortTaken(SystemExit):
    """The port asked for with --console-port is in use."""


def port_free(host: str, port: int) -> bool:
    """Whether a TCP server could listen on host:port now (nothing else listens there)."""
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def choose_port(host: str, configured: int, requested: int | None) -> tuple[int, str | None]:
    """(port, note). A port given on the command line must be free: raises PortTaken otherwise (the user asked
    for that one). The configured port (console.port, 8080) may be held by a console that is already running:
    then another free port is used and `note` says so."""
    if requested is not None:
        if not port_free(host, requested):
            raise PortTaken(f"demo: --console-port {requested}: port {requested} on {host} is in use; "
                            f"choose another port, or stop what listens there")
        return requested, None
    if port_free(host, configured):
        return configured, None
    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    return port, (f"console.port {configured} on {host} is in use (another console?): "
                  f"the demo's console listens on {port} instead")


def point_vendor_dir(config_dir: Path, vendor_dir: Path) -> None:
    """Point the config copy's console.vendor_dir at the project's installed front-end packages (a relative
    path would resolve inside the demo's directory, where nothing is installed)."""
    path = config_dir / "console.yaml"
    text = path.read_text(encoding="utf-8")
    new, n = re.subn(r"(?m)^(\s+vendor_dir:\s*)\S+", lambda m: m.group(1) + str(vendor_dir), text, count=1)
    if n != 1:
        raise SystemExit(f"demo: {path} has no console.vendor_dir key to point at {vendor_dir}")
    path.write_text(new, encoding="utf-8")


class DemoConsole:
    """A running `citywatch console` of the demo, stopped by its pid."""

    def __init__(self, proc: subprocess.Popen, url: str, password: str, log_path: Path, note: str | None):
        self.proc, self.url, self.password, self.log_path, self.note = proc, url, password, log_path, note

    @property
    def line(self) -> str:
        return f"console: {self.url}  login: {DEMO_USER} / {self.password}"

    def wait_ready(self, timeout_s: float = READY_S) -> None:
        """Wait until GET /login answers 200. Raises SystemExit with the console's log when it exits or does
        not answer in time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"demo: citywatch console exited with {self.proc.returncode}; its log "
                                 f"({self.log_path}):\n{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/login", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"demo: citywatch console did not answer on {self.url} within {timeout_s:.0f} s; "
                         f"see {self.log_path}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        """SIGTERM to its pid (its own session: the terminal's Ctrl-C never reached it), SIGKILL after 10 s."""
        if self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def start(work: Path, config_dir: Path, env: dict[str, str], root: Path, port: int | None = None) -> DemoConsole:
    """Create the demo account in the config copy's users file (console.users_path, inside `work`, mode 0600),
    point the copy at the installed front-end packages and start `citywatch console` on the configured port
    (or `port`). Returns once the process runs; call `wait_ready`. Raises SystemExit (PortTaken) with a message
    for the terminal."""
    from config import load_config
    from console.users import UserStore

    shipped = load_config(root / "config", env={})
    point_vendor_dir(config_dir, shipped.resolve_path(shipped.console.vendor_dir))
    cfg = load_config(config_dir, env=env)
    host = cfg.console.host
    chosen, note = choose_port(host, cfg.console.port, port)
    password = secrets.token_urlsafe(12)
    users = UserStore(cfg.resolve_path(cfg.console.users_path))
    try:
        users.add(DEMO_USER, DEMO_NAME, "operator", password)
    finally:
        users.close()
    log_path = work / "console.log"
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "citywatch", "console", "--config", str(config_dir),
                                 "--port", str(chosen)], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=root, start_new_session=True)
    shown = "127.0.0.1" if host in ("127.0.0.1", "0.0.0.0", "localhost") else host
    return DemoConsole(proc, f"http://{shown}:{chosen}", password, log_path, note)


def missing_password(env: dict[str, str], cfg) -> str | None:
    """A warning when the console's broker password is not in the environment (its board stays red)."""
    var = cfg.console.mqtt_password_env
    if env.get(var):
        return None
    return (f"{var} is not set (`source .stack/env` after `scripts/stack.sh up`): the console cannot log in to "
            f"the broker and its board stays red")

