"""The sink contract: send one notice, or raise SinkError saying whether a retry could succeed.

Retry with backoff, rate limits and dedup live once in `alerts.dispatch.Dispatcher`; a sink only speaks
its protocol and classifies its failures (`retryable_status` for HTTP). `send` is called from one
dispatcher thread per sink, in notice order; `close` is not called until the last `send` has returned.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from alerts.model import Notice

if TYPE_CHECKING:
    from config.oncall import Person


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


class PersonSink(Protocol):
    """A channel sink that can also reach one person (alerts/sinks/team.py): `send(notice, person)` uses
    the person's address on its channel, and returns whom it reached."""

    def send(self, notice: Notice, person: Person | None = None) -> str:
        """As `Sink.send`; `person` None sends to the sink's own recipients."""

    def close(self) -> None:
        """Release connections."""


def retryable_status(code: int) -> bool:
    """Whether an HTTP error status may succeed on retry: 5xx, 408 (timeout) and 429 (rate limited) may;
    any other 4xx is the request itself and never will."""
    return code >= 500 or code in (408, 429)
