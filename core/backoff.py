"""Capped exponential backoff, the one used for every retry (InfluxDB writes, spool drain, alert sinks)."""

from __future__ import annotations

import time
from collections.abc import Callable


class Backoff:
    """Capped exponential backoff with an injected clock.

    `failed()` after each failure returns the delay to wait (min_s, then doubled each time up to max_s, or a
    server's longer Retry-After); `ready()` says whether that delay has passed; `succeeded()` starts over."""

    def __init__(self, min_s: float = 0.5, max_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.min_s, self.max_s = min_s, max_s
        self._clock = clock
        self._delay = 0.0
        self._next = 0.0

    def ready(self) -> bool:
        return self._clock() >= self._next

    def failed(self, retry_after_s: float | None = None) -> float:
        self._delay = min(self.max_s, max(self.min_s, self._delay * 2))
        delay = max(self._delay, retry_after_s or 0.0)
        self._next = self._clock() + delay
        return delay

    def succeeded(self) -> None:
        self._delay = 0.0
        self._next = 0.0

    @property
    def failing(self) -> bool:
        return self._delay > 0
