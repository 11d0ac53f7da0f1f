"""Failed-login limit: at most `max_failures` failures per key (a user name, a client address) within a
sliding window; pure, with an injected clock, so it is tested without sleeping."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class LoginLimiter:
    """Counts failures per key; `blocked(keys)` says how many seconds until each may try again (0: now).

    Memory is bounded: at most `max_keys` keys are tracked; the oldest-touched key is forgotten first.
    """

    def __init__(self, max_failures: int, window_s: float, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000):
        self.max_failures = max_failures
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._fails: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float]:
        q = self._fails.get(key)
        if q is None:
            return deque()
        while q and q[0] <= now - self.window_s:
            q.popleft()
        if not q:
            del self._fails[key]
        return q

    def retry_after(self, *keys: str) -> float:
        """Seconds until every key may try again; 0 when none is blocked."""
        now = self.clock()
        wait = 0.0
        for key in keys:
            q = self._recent(key, now)
            if len(q) >= self.max_failures:
                wait = max(wait, q[-self.max_failures] + self.window_s - now)
        return wait

    def fail(self, *keys: str) -> None:
        now = self.clock()
        for key in keys:
            q = self._fails.pop(key, None) or deque()
            q.append(now)
            while len(q) > self.max_failures:
                q.popleft()
            self._fails[key] = q  # re-inserted: dict order is the order keys were last touched
        while len(self._fails) > self.max_keys:
            self._fails.pop(next(iter(self._fails)))

    def succeed(self, *keys: str) -> None:
        for key in keys:
            self._fails.pop(key, None)

    def forgive(self, *keys: str) -> None:
        """Take back one failure of each key (the newest): an attempt counted as a failure before it was
        checked (`fail` first, so that concurrent attempts cannot all pass the limit) that succeeded."""
        for key in keys:
            q = self._fails.get(key)
            if q:
                q.pop()
                if not q:
                    del self._fails[key]
