"""Sends notices through sinks: one worker thread per sink, retry with capped backoff, a token-bucket
rate limit, and dedup of (notice key, sink). Written once, so sinks stay small.

Each sink's queue has a lane per severity, the most severe served first: a red gas alarm's notice never
waits behind a burst of yellow ones (issue 17: a hundred queued notices held a red one for 0.7 s). An
alert's notices stay in one lane (the lane of its first one still queued), so a sink sees an alert's
notices in order. A retryable failure holds the sink (head of line) until the notice goes through, so a
late retry of "firing" can never land after its "resolved".
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Protocol

from alerts.model import Notice
from alerts.sinks.base import Sink, SinkError
from core import SEVERITY_CODES
from core.backoff import Backoff

if TYPE_CHECKING:
    from alerts.store import AlertStore

log = logging.getLogger(__name__)


# Lanes of a sink's queue: one per severity code (core.severity: 0 none ... 4 red).
LANES = 5
# Finished (notice key, sink) pairs the dispatcher still refuses to take again (about 150 bytes each).
DONE_REMEMBERED = 10_000


def severity_lane(notice: Notice) -> int:
    """The lane of a notice of its own: its alert's severity code (0 when it names none)."""
    code = SEVERITY_CODES.get(str(notice.payload.get("severity")), 0)
    return code if 0 <= code < LANES else 0


class _Worker:
    def __init__(self, name: str, sink: Sink | None, dispatcher: Dispatcher, rate_per_s: float):
        self.name = name
        self.sink = sink
        self.d = dispatcher
        # Waiting notices by lane (severity code: 4 red first); an alert's notices share the lane of its first
        # one still waiting: alert_id -> (lane, notices waiting).
        self.lanes: list[collections.deque[Notice]] = [collections.deque() for _ in range(LANES)]
        self.alert_lane: dict[str, tuple[int, int]] = {}
        self.cond = threading.Condition()
        self.busy = False
        self.rate = rate_per_s
        self.tokens = rate_per_s
        self.refilled = time.monotonic()
        self.thread = threading.Thread(target=self._run, name=f"alert-sink-{name}", daemon=True)

    def put(self, notice: Notice) -> None:
        with self.cond:
            held = self.alert_lane.get(notice.alert_id)
            lane = held[0] if held is not None else severity_lane(notice)
            self.lanes[lane].append(notice)
            self.alert_lane[notice.alert_id] = (lane, (held[1] if held is not None else 0) + 1)
            self.cond.notify()

    def waiting(self) -> int:
        with self.cond:
            return sum(len(q) for q in self.lanes)

    def idle(self) -> bool:
        with self.cond:
            return not any(self.lanes) and not self.busy

    def _head(self) -> int | None:
        """The lane whose first notice goes next: the most severe waiting (caller holds cond)."""
        for lane in range(LANES - 1, -1, -1):
            if self.lanes[lane]:
                return lane
        return None

    def _take_token(self) -> None:
        while not self.d.stopping.is_set():
            now = time.monotonic()
            self.tokens = min(self.rate, self.tokens + (now - self.refilled) * self.rate)
            self.refilled = now
            if self.tokens >= 1:
                self.tokens -= 1
                return
            self.d.stopping.wait((1 - self.tokens) / self.rate)

    def _run(self) -> None:
        while True:
            with self.cond:
                lane = self._head()
                while lane is None and not self.d.stopping.is_set():
                    self.cond.wait(0.5)
                    lane = self._head()
                if self.d.stopping.is_set() or lane is None:
                    return
                notice = self.lanes[lane][0]
                self.busy = True
            self._deliver(notice)
            self.d.finished(notice.key, self.name)
            with self.cond:
                self.lanes[lane].popleft()
                held_lane, n = self.alert_lane[notice.alert_id]
                if n > 1:
                    self.alert_lane[notice.alert_id] = (held_lane, n - 1)
                else:
                    del self.alert_lane[notice.alert_id]
                self.busy = False
                self.cond.notify_all()

    def _deliver(self, notice: Notice) -> None:
        attempts = 0
        backoff = Backoff(self.d.initial_s, self.d.max_s)
        while not self.d.stopping.is_set():
            if self.sink is None:
                self.d.record(notice, self.name, "failed", 1, f"no sink named {self.name!r}")
                return
            self._take_token()
            attempts += 1
            try:
                reached = self.sink.send(notice)
            except SinkError as exc:
                if not exc.retryable:
                    log.error("alert sink %s dropped notice %s: %s", self.name, notice.key, exc)
                    self.d.record(notice, self.name, "failed", attempts, str(exc))
                    return
                self.d.count("retries", self.name)
                if attempts == 1 or attempts % 20 == 0:
                    log.warning("alert sink %s: %s (attempt %d, retrying)", self.name, exc, attempts)
                    # The store (and the console) shows why a delivery is still pending, as often as the log.
                    self.d.record(notice, self.name, "pending", attempts, str(exc))
                self.d.stopping.wait(backoff.failed())
                continue
            except Exception as exc:  # a sink bug must not kill its worker: treat as retryable
                log.exception("alert sink %s raised unexpectedly", self.name)
                self.d.count("retries", self.name)
                if attempts == 1 or attempts % 20 == 0:
                    self.d.record(notice, self.name, "pending", attempts, f"{type(exc).__name__}: {exc}")
                self.d.stopping.wait(backoff.failed())
                continue
            # A sink that reaches people (alerts/sinks/team.py) says whom; the delivery log keeps it.
            self.d.record(notice, self.name, "sent", attempts, None, reached if isinstance(reached, str) else None)
            return


class NoticeDispatcher(Protocol):
    """What the alert engine needs of a dispatcher (`Dispatcher`, or a stand-in that sends nothing)."""

    def submit(self, notice: Notice, sink_name: str) -> bool: ...

    def flush(self, timeout_s: float = 10.0) -> bool: ...

    def stop(self, timeout_s: float = ...) -> None: ...


class Dispatcher:
    """Delivers (notice, sink) pairs. `store.mark_delivery` records each outcome when a store is given."""

    def __init__(self, sinks: dict[str, Sink], store: AlertStore | None = None, initial_s: float = 1.0, max_s: float = 60.0,
                 rates: dict[str, float] | None = None):
        self.sinks = sinks
        self.store = store
        self.initial_s = initial_s
        self.max_s = max_s
        self.rates = rates or {}
        self.stopping = threading.Event()
        self._workers: dict[str, _Worker] = {}
        # (notice key, sink) pairs queued or being delivered: a second submit of one is refused. A pair
        # leaves when its delivery is final (or the dispatcher stops), so the set holds what is queued,
        # not everything ever sent (300,000 notices once held 43 MB). `_done` remembers the last
        # DONE_REMEMBERED finished pairs, so a resubmit soon after delivery is refused too.
        self._seen: set[tuple[str, str]] = set()
        self._done: collections.OrderedDict[tuple[str, str], None] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.counters: collections.Counter[tuple[str, str]] = collections.Counter()

    def _worker(self, sink_name: str) -> _Worker:
        w = self._workers.get(sink_name)
        if w is None:
            w = _Worker(sink_name, self.sinks.get(sink_name), self, self.rates.get(sink_name, 50.0))
            self._workers[sink_name] = w
            w.thread.start()
        return w

    def submit(self, notice: Notice, sink_name: str) -> bool:
        """Queue a notice for a sink; False (and nothing queued) if this pair is queued or being delivered,
        or is one of the last DONE_REMEMBERED delivered, or the dispatcher is stopping."""
        with self._lock:
            pair = (notice.key, sink_name)
            if pair in self._seen or pair in self._done or self.stopping.is_set():
                return False
            self._seen.add(pair)
            w = self._worker(sink_name)
        w.put(notice)
        return True

    def finished(self, key: str, sink: str) -> None:
        """The delivery of (key, sink) is over (sent, failed, or given up at stop): stop holding it."""
        with self._lock:
            pair = (key, sink)
            self._seen.discard(pair)
            self._done[pair] = None
            if len(self._done) > DONE_REMEMBERED:
                self._done.popitem(last=False)

    def record(self, notice: Notice, sink: str, status: str, attempts: int, error: str | None,
               reached: str | None = None) -> None:
        """Count an outcome (sent | failed) and write it to the store; "pending" (still retrying, with the
        last error) is written, not counted: the retries are."""
        if status != "pending":
            self.count(status, sink)
        if self.store is not None:
            try:
                self.store.mark_delivery(notice.key, sink, status, attempts, error, reached)
            except Exception:
                log.exception("cannot record delivery of %s to %s", notice.key, sink)

    def count(self, what: str, sink: str) -> None:
        with self._lock:
            self.counters[(what, sink)] += 1

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queue is empty; False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                workers = list(self._workers.values())
            if all(w.idle() for w in workers):
                return True
            time.sleep(0.01)
        return False

    def pending(self) -> int:
        with self._lock:
            workers = list(self._workers.values())
        return sum(w.waiting() for w in workers)

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the workers (a notice being sent finishes); unsent notices stay pending in the store."""
        self.flush(timeout_s)
        self.stopping.set()
        for w in list(self._workers.values()):
            with w.cond:
                w.cond.notify_all()
            w.thread.join(timeout_s)
        for sink in self.sinks.values():
            try:
                sink.close()
            except Exception:
                log.exception("closing an alert sink")
