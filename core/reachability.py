"""A connection's reachability, logged once per change: "unreachable" with the reason, "back" with how long
it was away. Used for the MQTT broker (collector, alert command listener, MQTT alert sink) and InfluxDB.

A client that retries every second must not log every failed try, nor stay silent about an outage: the log
holds one line when the peer goes away and one when it returns, whatever the number of tries between.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable


class Reachability:
    """The up/down state of one connection, logged on each change.

    what:     the peer and who connects to it, as the log line names it, e.g.
              "MQTT broker 127.0.0.1:1883 (collector)" or "InfluxDB http://127.0.0.1:8086"
    logger:   where the lines go (WARNING when unreachable, INFO when back)
    down_note / up_note: appended to the line, e.g. what the service does meanwhile ("readings go to
              the spool until it is back")
    clock:    monotonic seconds (injected in tests)

    Starts as reachable (nothing logged until a first failure). Thread-safe: paho's network thread, the
    durability thread and scheduled jobs may report on the same connection.
    """

    def __init__(self, what: str, logger: logging.Logger, down_note: str = "", up_note: str = "",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.what = what
        self.log = logger
        self.down_note = down_note
        self.up_note = up_note
        self._clock = clock
        self._lock = threading.Lock()
        self._down_since: float | None = None
        self.reason: str | None = None

    @property
    def reachable(self) -> bool:
        return self._down_since is None

    def down(self, reason: str) -> bool:
        """Report a failure (`reason`: why, e.g. "[Errno 111] Connection refused"). Logs and returns True
        only if the connection was reachable until now."""
        with self._lock:
            self.reason = reason
            if self._down_since is not None:
                return False
            self._down_since = self._clock()
        self.log.warning("%s unreachable (%s)%s", self.what, reason, _note(self.down_note))
        return True

    def up(self, detail: str = "") -> bool:
        """Report a success. Logs "back" with the time it was away, and returns True, only if it was
        unreachable until now. `detail` is added to that line (e.g. whether the session was kept)."""
        with self._lock:
            if self._down_since is None:
                return False
            away = self._clock() - self._down_since
            self._down_since = None
            self.reason = None
        extra = f", {detail}" if detail else ""
        self.log.info("%s back after %s%s%s", self.what, format_duration(away), extra, _note(self.up_note))
        return True


def _note(note: str) -> str:
    return f": {note}" if note else ""


def format_duration(seconds: float) -> str:
    """A short human duration for log lines: "0.4 s", "12.3 s", "5 min 02 s", "2 h 05 min"."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    s = int(round(seconds))
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def connect_error() -> str:
    """The reason of a failed MQTT connection attempt, for paho's `on_connect_fail` callback.

    paho calls `on_connect_fail` from inside its `except OSError:` around the connect attempt and passes no
    exception, so the one being handled is read here ("[Errno 111] Connection refused", a TLS error).
    """
    exc = sys.exc_info()[1]
    if exc is None:
        return "connection failed"
    return str(exc) or type(exc).__name__
