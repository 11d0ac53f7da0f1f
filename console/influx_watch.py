"""Whether the console can reach InfluxDB: a thread pings it (`/ping`, with the citywatch account's credentials
as the console's reads use) every `console.influx_check_s`, so the boards' banner can say "InfluxDB
unreachable since ..." without ever blocking the event loop."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from config.connections import basic_auth
from core.reachability import Reachability

log = logging.getLogger(__name__)


class InfluxWatch:
    """Pings InfluxDB from its own thread; `state()` is the last answer, `on_change(state)` is called from that
    thread when it goes from reachable to unreachable or back (also on the first answer).

    state: {"ok": True|False|None (not checked yet), "since": wall time of the first failed or good check of the
    current state, "checked": wall time of the last check, "error": why it failed (None when ok), "url"}."""

    def __init__(self, cfg, env: dict[str, str], on_change: Callable[[dict], None] | None = None):
        influx = cfg.connections.influx
        self.url = influx.url.rstrip("/")
        self.headers = basic_auth(influx.credentials(env))
        self.every_s = float(cfg.console.influx_check_s)
        self.timeout_s = min(float(influx.timeout_s), max(1.0, self.every_s))
        self.on_change = on_change or (lambda state: None)
        self._lock = threading.Lock()
        self._state: dict = {"ok": None, "since": None, "checked": None, "error": None, "url": self.url}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.reachability = Reachability(f"InfluxDB {self.url} (console)", log,
                                         down_note="the boards' banner says so")

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="console-influx-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.timeout_s + 1)
            self._thread = None

    def state(self) -> dict:
        with self._lock:
            return dict(self._state)

    def check(self) -> dict:
        """Ping once now; record and return the new state. Never raises."""
        error = None
        req = urllib.request.Request(self.url + "/ping", headers=self.headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                if resp.status not in (200, 204):
                    error = f"HTTP {resp.status} to /ping"
        except urllib.error.HTTPError as exc:
            error = f"HTTP {exc.code} to /ping"
        except (OSError, ValueError) as exc:
            error = str(getattr(exc, "reason", None) or exc)
        now = time.time()
        with self._lock:
            changed = self._state["ok"] is not (error is None)
            if changed:
                self._state["since"] = now
            self._state.update(ok=error is None, checked=now, error=error)
            state = dict(self._state)
        if error is None:
            self.reachability.up()
        else:
            self.reachability.down(error)
        if changed:
            self.on_change(state)
        return state

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception:  # noqa: BLE001 - the watch must outlive a bug in a callback
                log.exception("console: InfluxDB check failed")
            self._stop.wait(self.every_s)
