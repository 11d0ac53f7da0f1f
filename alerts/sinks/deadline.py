"""An overall deadline for one exchange with a remote endpoint (HTTP robots, gateways and webhooks; SMTP).

A socket timeout bounds each read, not the exchange: a server that sends one byte every half second kept a
send with `timeout_s: 1` going for 14.5 s, and an SMTP greeting trickled byte by byte for 19 s, while the
notices behind it on that sink (a red one among them) waited (found by an audit). Within `Deadline(s)`, the
sockets the exchange opens register themselves (`watch`); when the time is up a timer thread shuts them down,
so the blocked read ends at once with an error, and `expired` says why.
"""

from __future__ import annotations

import socket
import threading
from types import TracebackType

# An exchange ends within this many times the sink's timeout_s, however slowly the server sends (the timeout
# bounds each read; a server dripping a byte every half second held a 1 s sink for 14.5 s).
EXCHANGE_TIMEOUTS = 2

_current = threading.local()  # the Deadline of the exchange running in this thread, if any


class Deadline:
    """`with Deadline(seconds) as d:` around one exchange; then `d.expired`."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.expired = False
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        _current.deadline = self
        self._timer.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._timer.cancel()
        _current.deadline = None

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.expired:
                _shut(sock)
            else:
                self._socks.append(sock)

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            for sock in self._socks:
                _shut(sock)


def watch(sock: socket.socket) -> socket.socket:
    """Put `sock` under the current thread's Deadline (none: nothing happens); returns it."""
    deadline = getattr(_current, "deadline", None)
    if deadline is not None:
        deadline.watch(sock)
    return sock


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # a read blocked in another thread returns at once
    except OSError:
        pass  # already closed
