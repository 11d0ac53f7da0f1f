"""The sink contract: send one notice, or raise SinkError saying whether a retry could succeed.

Retry with backoff, rate limits and dedup live once in `dispatch.Dispatcher`; a sink only speaks its
protocol. `send` is called from one dispatcher thread per sink, in notice order; `close` is not called
until the last `send` has returned.
"""

from __future__ import annotations

from typing import Protocol

from alerts.model import Notice


class SinkError(Exception):
    """A notice could not be sent. `retryable`: the same notice may succeed later (network, 5xx)."""

    def __init__(self, message: str, retryable: bool):
        super().__init__(message)
        self.retryable = retryable


class Sink(Protocol):
    def send(self, notice: Notice) -> str | None:
        """Deliver one notice; raise SinkError on failure. A sink that reaches people may return whom
        (e.g. "team gas-duty level 0: 林工 (email)"); the dispatcher records it in the delivery log."""

    def close(self) -> None:
        """Release connections."""
