"""Wires the detectors into the alert engine inside a running service, with live config reload.

The ingest service calls `on_batch` with each ReadingBatch as soon as it is decoded (`Service.on_decoded`:
detection does not wait for the batch age or the InfluxDB write, which only the ack waits for), in
arrival order; the detector thread evaluates whatever has queued up meanwhile together, in bounded steps of at
most `alerting.detect_step_rows_per_device` readings per device (one device's back-fill waits its turn
beside everyone else's new readings instead of holding them). A scheduled `tick` runs
the time-driven rules (deadman) and the alert timers on the wall clock; `reload` swaps a new validated
config in atomically and keeps every open alert. Reload comes from SIGHUP and from a change of the
config directory's YAML files (polled). The detectors' state is kept across a reload wherever a rule
did not change, and across a restart in a snapshot file (`alerting.detector_state_path`, detectors/snapshot.py).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from apscheduler.schedulers.background import BackgroundScheduler

from alerts.command_listener import CommandListener
from alerts.engine import AlertEngine, wall_clock_ns
from config import ConfigError, load_config
from ingest.metrics import LagWatch, LatencyHistogram

if TYPE_CHECKING:
    from detectors.snapshot import LoadReport

log = logging.getLogger(__name__)

TICK_INTERVAL_S = 1.0
WATCH_INTERVAL_S = 2.0
# Batches waiting for the detector thread; when full, `on_batch` blocks: backpressure into ingest,
# whose unacked messages the broker keeps.
QUEUE_BATCHES = 256
# The detector thread takes every batch queued while it was busy (fewer, larger calls: the rule set's
# cost is mostly per call and per reading of one sensor) while fewer than this many readings wait in its
# own backlog (a few tens of MB at most); beyond it the queue fills and ingest is held back (its unacked
# messages stay at the broker). Well above one big message (max_payload_bytes holds ~25,000 samples), so
# other devices' readings are still taken in while one or two back-fills drain.
BACKLOG_ROWS = 200_000
# The per-device step grows with a backlog spread over the devices (DetectionPipeline._split), up to this
# many times alerting.detect_step_rows_per_device.
STEP_GROWTH_MAX = 8
# ... and no further than the last step's wall time per round (one reading of each device in the step) says
# fits in this many seconds: a reading that arrives meanwhile (an alert probe) waits for at most one such
# step, not for 8 x 32 rounds of 49 devices (~150 ms; issue 17). Never below detect_step_rows_per_device.
STEP_BUDGET_S = 0.05
# A step costs about 1 ms of the detector thread's CPU whatever its size (the rules' and the engine's fixed
# Python part; every shipped rule, 8 noise devices) plus 7-20 µs per reading, so at this many rows the fixed
# part is about half of it. While fewer rows are in hand the detector thread waits for more, up to
# `alerting.detect_step_min_interval_ms` after the last step started (issue 15: at light load it otherwise
# steps for every few readings). Larger (256) saved more CPU but added ~20 ms p50 alert latency at 5,000/s.
STEP_COALESCE_ROWS = 64
# Event clock: how far one device's readings may arrive behind other devices' newer ones (each simulated
# device publishes on a connection of its own; `simulators.publisher` keeps that reorder within
# REORDER_WINDOW_MS of event time at any speed). The deadman judges silence against the feed less this
# slack, so a device whose messages are only in flight is never called offline.
EVENT_REORDER_SLACK_S = 60.0
# The per-row column (seconds) carrying how far the feed had got when the row arrived (see on_batch).
FEED_LEAD = "_feed_lead_s"
# Event clock: a reading dated more than this ahead of the feed (the newest time arrived) waits outside the
# detectors and the feed's clock until the feed gets there, or until another device's readings reach its time
# (a gap in a recording: the whole feed moves on). One reading dated 30 days ahead used to move the clock of
# every device: Offline for all of them over and over, silences ended, timers run out (found by an audit). A day:
# far beyond any device's report interval (a sparse feed's honest reading may lead the others by hours), and a
# clock set wrong is usually off by more (a reset, a wrong month or year); a reading less than a day ahead still
# moves the clock as before.
EVENT_JUMP_S = 86400.0
# Held readings at most; beyond, the oldest held are left out of detection (they are stored), counted and logged.
AHEAD_MAX_ROWS = 100_000
# Detection is "behind" once the oldest arrival not yet fully evaluated is this many seconds old (wall
# time, so it means the same live and in a 1000x replay); the log says so once, and once when it is back
# under half of it (ingest.metrics.LagWatch), checked every LAG_CHECK_S.
DETECT_LAG_WARN_S = 10.0
LAG_CHECK_S = 1.0


def step_bound(counts, setting: int, round_cost_s: float | None) -> int:
    """Rows per device for the next detection step (DetectionPipeline._split).

    counts:       rows waiting per device (an array, one entry per device with rows)
    setting:      alerting.detect_step_rows_per_device (>= 1)
    round_cost_s: wall seconds per round of the last step (its time / its most rows of one device), or None
                  before any was measured
    Returns the setting, or, when several devices have rows waiting, the (lower) median of their rows if
    larger, up to STEP_GROWTH_MAX x the setting and to what fits in STEP_BUDGET_S at `round_cost_s`.
    """
    bound = setting
    if len(counts) > 1:
        median = int(np.partition(counts, (len(counts) - 1) // 2)[(len(counts) - 1) // 2])
        bound = min(max(bound, median), bound * STEP_GROWTH_MAX)
        if round_cost_s is not None and round_cost_s > 0:
            bound = max(setting, min(bound, int(STEP_BUDGET_S / round_cost_s)))
    return bound


class DetectionPipeline:
    """Detectors -> AlertEngine for one service process.

    cfg:        the loaded Config the service started with
    env:        environment for secrets (MQTT password, webhook secrets); default os.environ
    config_dir: directory to re-read on reload (default: the directory cfg was loaded from)
    clock:      UTC ns wall clock (injected in tests)
    listen:     start the MQTT command listener (acks and silences on alerting.command_topic)
    threaded:   evaluate batches on a thread of their own, in order, so that ingest's durability
                thread never waits for the detectors (`drain()` waits for the queue)
    """

    def __init__(self, cfg, env: dict | None = None, config_dir: str | os.PathLike | None = None,
                 clock=wall_clock_ns, listen: bool = True, engine: AlertEngine | None = None,
                 threaded: bool = False):
        from detectors.registry import RuleSet

        self.cfg = cfg
        self.env = dict(os.environ) if env is None else env
        self.config_dir = Path(config_dir) if config_dir is not None else cfg.base_dir
        # `ingest.clock: event` (simulation, replay): timers and the deadman follow the event-time
        # watermark of the readings, never the wall clock, so a day replayed at 1000x alerts as lived.
        self.event_clock = cfg.ingest.clock == "event"
        if self.event_clock and clock is wall_clock_ns:
            clock = None
        self._watermark_ns = 0
        self._seen_ns = 0  # event clock: the newest reading time evaluated (the watermark may lag it, below)
        self._arrived_ns: int | None = None  # event clock: the newest reading time received (arrival order)
        self._ahead: list = []  # event clock: ReadingBatch pieces held, dated too far ahead of the feed (_hold_ahead)
        self._ahead_rows = 0
        self._ahead_said: set[int] = set()  # sensors whose held readings were logged
        self.reorder_slack_ns = int(EVENT_REORDER_SLACK_S * 1e9)
        # Devices (bool mask over the sensors) whose readings wait in the detector thread's backlog: the
        # deadman leaves them as they are (RuleSet.advance hold) until their rows have run.
        self._held: npt.NDArray[np.bool_] | None = None
        # Partitioned mode: devices of partitions another worker owns (mask over the sensors, cached per rule
        # set and owned set); the deadman leaves them as they are, like held ones (see _hold_mask).
        self._foreign: tuple[object, object, npt.NDArray[np.bool_]] | None = None
        self.clock = clock
        self.rules = RuleSet.from_config(cfg)
        self._mark_event_time(self.rules)
        self.engine = engine or AlertEngine(cfg, env=self.env, clock=clock)
        self.listener = (CommandListener(cfg, self.engine.submit_command, self.env, config=lambda: self.engine.cfg,
                                         answers_refusals=self.engine.answers_rest) if listen else None)
        self._lock = threading.RLock()
        self._scheduler: BackgroundScheduler | None = None
        self._mtimes = self._config_mtimes()
        self._reload_requested = threading.Event()
        self._queue: queue.Queue | None = queue.Queue(QUEUE_BATCHES) if threaded else None
        self._worker: threading.Thread | None = None
        # Called with each config swapped in (the ingest service re-reads its inventory there).
        self.reload_hooks: list = []
        self.counters = {"batches": 0, "readings": 0, "detections": 0, "errors": 0, "reloads": 0, "reload_errors": 0,
                         "state_saves": 0, "state_save_errors": 0, "deferred_steps": 0, "rows_ahead_dropped": 0}
        # The detection backlog (issue 17: detection never falls behind silently), for `citywatch status`,
        # the log and /metrics: rows handed over and not yet evaluated, and per arrival (monotonic time
        # handed over, cumulative rows handed over, its oldest and newest event time). Arrivals count as
        # done in arrival order as rows are evaluated (fair steps evaluate per device, so this is approximate).
        self._backlog_lock = threading.Lock()
        self._arrivals: deque = deque()
        self._rows_in = 0
        self._rows_done = 0
        self._newest_in_ns = 0
        self._newest_done_ns = 0
        self._deferred_min_ns: int | None = None
        self.lag_watch = LagWatch("detection", DETECT_LAG_WARN_S)
        # Wall clock only: from the event time of the reading that raised an alert (its device's publish
        # time, for devices that send as they measure) to the firing notice handed to the sinks.
        self.alert_latency = LatencyHistogram()
        # What the last start or reload restored of the detectors' state (detectors.snapshot.LoadReport).
        self.state_report: LoadReport | None = None
        # Partitioned mode: what owns which partition (PartitionLeases / StaticPartitions), for /metrics.
        self.partition_leases: object | None = None
        self._save_lock = threading.Lock()
        self._jobs: BackgroundScheduler | None = None
        self._started = False

    # ----- lifecycle --------------------------------------------------------------------------------

    def start(self, scheduler: BackgroundScheduler | None = None) -> None:
        """Load the detector snapshot and alert state, start the command listener and the tick /
        config-watch / state-save jobs. A missing or unusable snapshot only means the rules start fresh."""
        from detectors import snapshot

        with self._lock:
            report = self.state_report = snapshot.load(self.rules, self._state_path())
            snapshot.log_report(report)
            # Open alerts whose detector came back holding the condition go on; the rest are "recovered".
            kept = report.kept() & snapshot.active_keys(self.rules)
            self._started = True
        self.engine.start(kept=kept)
        if self._queue is not None:
            self._worker = threading.Thread(target=self._work, name="detect-alert", daemon=True)
            self._worker.start()
        if self.listener is not None:
            self.listener.start()
        if scheduler is None:
            scheduler = self._scheduler = BackgroundScheduler(timezone="UTC")
            scheduler.start()
        scheduler.add_job(self.tick, "interval", seconds=TICK_INTERVAL_S, id="alerts_tick",
                          max_instances=1, coalesce=True, replace_existing=True)
        scheduler.add_job(self._watch_config, "interval", seconds=WATCH_INTERVAL_S, id="config_watch",
                          max_instances=1, coalesce=True, replace_existing=True)
        scheduler.add_job(self.save_state, "interval", seconds=self.cfg.alerting.detector_state_save_s,
                          id="detector_state", max_instances=1, coalesce=True, replace_existing=True)
        scheduler.add_job(self.check_lag, "interval", seconds=LAG_CHECK_S, id="detection_lag",
                          max_instances=1, coalesce=True, replace_existing=True)
        self._jobs = scheduler

    def stop(self) -> None:
        """Stop jobs and the listener; persist the detector and alert state; unsent notices stay queued
        in the store."""
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=True)
            self._scheduler = None
        if self.listener is not None:
            self.listener.stop()
        if self._worker is not None and self._queue is not None:  # a worker runs only with a queue
            self._queue.put(None)
            self._worker.join(30)
            self._worker = None
        if self._started:  # a pipeline that never loaded the snapshot must not overwrite it with nothing
            self.save_state()
            self._started = False
        with self._lock:
            self.engine.stop()

    def install_signal_handlers(self) -> None:
        """SIGHUP -> reload (call from the main thread; the reload itself runs on the next watch job)."""
        signal.signal(signal.SIGHUP, lambda signum, frame: self._reload_requested.set())

    # ----- data and time ----------------------------------------------------------------------------

    def _mark_event_time(self, rules) -> None:
        if self.event_clock:
            for d in rules.rules:
                if hasattr(d, "scan"):
                    d._stamp_at_crossing = True
                    d._slack_ns = self.reorder_slack_ns  # before the first scan, e.g. a tick after a restart

    def _note_arrival(self, batch):
        """Event clock: give each row, in arrival order, the newest reading time that had arrived before it
        (as a lead in seconds over its own time, column FEED_LEAD). The deadman judges silences by it, so
        the verdict does not depend on how the detector thread happens to group or split the rows."""
        if not self.event_clock or not len(batch):
            return batch
        try:
            ts = batch.ts_ns
            seed = int(ts[0]) if self._arrived_ns is None else self._arrived_ns
            before = np.maximum(np.r_[np.int64(seed), np.maximum.accumulate(ts)[:-1]], seed)
            self._arrived_ns = max(seed, int(ts.max()))
            values = dict(batch.values)
            values[FEED_LEAD] = (before - ts) / 1e9
            return type(batch)(batch.sensor, ts, values, batch.quality)
        except Exception:
            log.exception("could not note the arrival of %d readings", len(batch))
            return batch

    def _hold_ahead(self, batch):
        """Event clock: the rows of `batch` and of those held before that may run now; holds the rows dated more
        than EVENT_JUMP_S ahead of the feed (the newest time arrived; before any, the second newest device's time
        in the batch) unless the rows of two devices or more reach that far (the feed moved on: released up to
        the second newest of them). Held rows run in a later batch once the feed gets near their time."""
        if not self.event_clock:
            return batch
        from core import ReadingBatch

        try:
            ts = batch.ts_ns
            ref = self._arrived_ns if self._arrived_ns is not None else _second_newest(batch.sensor, ts)
            jump = int(EVENT_JUMP_S * 1e9)
            if ref is None or (not self._ahead and (not len(ts) or int(ts.max()) <= ref + jump)):
                return batch  # the usual batch: nothing held, nothing ahead
            pool = ReadingBatch.concat([*self._ahead, batch]) if self._ahead else batch
            ahead = pool.ts_ns > ref + jump
            if ahead.any():
                later = _second_newest(pool.sensor[ahead], pool.ts_ns[ahead])
                if later is not None:
                    ahead &= pool.ts_ns > later + jump
            held = pool.take(np.flatnonzero(ahead))
            over = len(held) - AHEAD_MAX_ROWS
            if over > 0:
                self.counters["rows_ahead_dropped"] += over
                log.warning("detection: %d readings held as dated ahead of the feed left out of detection (at most "
                            "%d are held; they are stored)", over, AHEAD_MAX_ROWS)
                held = held.take(np.arange(over, len(held)))
            for s in set(np.unique(held.sensor).tolist()) - self._ahead_said:
                self._ahead_said.add(s)
                first = held.ts_ns[held.sensor == s].min()
                log.warning("detection holds readings of %s dated %s, more than %.0f s ahead of the feed (%s): they "
                            "run when the feed gets there or another device's readings reach that time (event clock;"
                            " they are stored)", self._device_name(s), _iso(int(first)), EVENT_JUMP_S, _iso(int(ref)))
            self._ahead = [held] if len(held) else []
            self._ahead_rows = len(held)
            return pool.take(np.flatnonzero(~ahead))
        except Exception:
            log.exception("could not check %d readings against the feed's time", len(batch))
            return batch

    def _device_name(self, sensor: int) -> str:
        devices = self.cfg.devices
        return devices[sensor].id if 0 <= sensor < len(devices) else f"sensor {sensor}"

    def on_batch(self, batch) -> None:
        """Evaluate a batch (decoded readings, and rows refused for their flag without values) and feed its
        detections to the alert engine (queued when threaded).
        Never raises: a bug here must not stop ingest (the readings are already durable)."""
        batch = self._hold_ahead(batch)
        batch = self._note_arrival(batch)
        self._arrived(batch)
        if self._worker is not None and self._queue is not None:  # a worker runs only with a queue
            self._queue.put(batch)
            return
        self._evaluate(batch)

    def drain(self, timeout_s: float = 30.0) -> bool:
        """Wait until every queued batch has been evaluated."""
        if self._queue is None:
            return True
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def _work(self) -> None:
        """The detector thread: each step takes what has queued up, adds it behind the rows deferred so far
        and evaluates at most `detect_step_rows_per_device` rows of each device (oldest first); the rest
        waits for the next step, taken together with whatever arrives meanwhile. While few rows are in
        hand (STEP_COALESCE_ROWS) and none deferred, a step starts no sooner than `detect_step_min_interval_ms`
        after the last one started: it waits on the queue for more rows until then (the None sentinel ends the
        wait), so light load takes fewer, larger steps.
        Every reading is evaluated once, each device's in event-time order, with the same detections as one
        big batch."""
        from core import ReadingBatch
        from detectors.registry import take_step

        q = self._queue
        if q is None:  # started only when the pipeline is threaded, which gives it a queue
            return
        backlog = None   # rows deferred by the per-device bound (a ReadingBatch), or None
        taken = 0        # queue items taken whose rows are not all evaluated yet (task_done when they are)
        stop = False
        last_start = -float("inf")  # monotonic start of the last step
        while True:
            got = [] if backlog is not None else [q.get()]
            rows = (len(backlog) if backlog is not None else 0) + sum(len(b) for b in got if b is not None)
            # Deferred rows wait for the per-device bound, not for company: their steps start at once.
            wait_until = (last_start + self.cfg.alerting.detect_step_min_interval_ms / 1000 if backlog is None
                          else -float("inf"))
            self._gather(q, got, rows, wait_until)
            stop = stop or bool(got and got[-1] is None)
            taken += len(got)
            todo = ([backlog] if backlog is not None else []) + [b for b in got if b is not None]
            backlog = None
            try:
                if todo:
                    batch = todo[0] if len(todo) == 1 else ReadingBatch.concat(todo)
                    step, rest = self._split(batch, take_step)
                    backlog = rest if len(rest) else None
                    last_start = time.monotonic()
                    t0 = time.perf_counter()
                    self._evaluate(step, deferred=backlog)
                    self._step_took(time.perf_counter() - t0)
            finally:
                if backlog is None:
                    for _ in range(taken):
                        q.task_done()
                    taken = 0
            if stop and backlog is None:
                return

    @staticmethod
    def _gather(q: queue.Queue, got: list, rows: int, wait_until: float) -> None:
        """Append to `got` the batches queued (until BACKLOG_ROWS rows are in hand, or the None sentinel);
        while fewer than STEP_COALESCE_ROWS rows are in hand, wait on the queue for more, up to `wait_until`
        (monotonic seconds; in the past: take only what is queued). The sentinel ends the wait at once."""
        while not (got and got[-1] is None) and rows < BACKLOG_ROWS:
            wait_s = wait_until - time.monotonic() if rows < STEP_COALESCE_ROWS else 0.0
            try:
                got.append(q.get(timeout=wait_s) if wait_s > 0 else q.get_nowait())
            except queue.Empty:
                return
            if got[-1] is not None:
                rows += len(got[-1])

    def _split(self, batch, take_step):
        """(step, rest) of `batch` under the per-device bound; the whole batch if splitting fails.

        The bound is `detect_step_rows_per_device`, or, when several devices have rows waiting, the
        (lower) median of their rows if that is larger, up to STEP_GROWTH_MAX times the setting: a backlog
        spread over the devices (minute batches of many devices) then goes in a few steps instead of
        being re-gathered and re-split every 32 rows of each device, while one device's back-fill (the
        median is then another device's few rows) still waits its turn beside everyone else's new
        readings. A grown step is also bounded in time (STEP_BUDGET_S, by the last step's cost per round,
        `_step_took`). Any split gives the same detections (registry.take_step)."""
        self._step_rounds = 0  # unknown (a small batch taken whole): its time does not update the cost
        try:
            bound = self.cfg.alerting.detect_step_rows_per_device
            if len(batch) > bound:
                counts = np.unique(batch.sensor, return_counts=True)[1]
                # Set by _step_took; absent on a pipeline that has not timed a step (or a test's stand-in).
                bound = step_bound(counts, bound, getattr(self, "_round_cost_s", None))
                self._step_rounds = int(min(bound, counts.max()))
            return take_step(batch, bound)
        except Exception:
            log.exception("could not split a batch of %d readings into bounded steps; evaluating it whole", len(batch))
            return batch, batch.take(slice(0, 0))

    def _step_took(self, seconds: float) -> None:
        """Note the wall time of the step `_split` cut last, as a cost per round for the next step's budget."""
        if self._step_rounds:
            self._round_cost_s = seconds / self._step_rounds

    def _evaluate(self, batch, deferred=None) -> None:
        """Evaluate `batch`; `deferred` (a ReadingBatch or None) holds rows of the same arrivals that later
        steps evaluate: the devices with rows there are held by the deadman, and the event-time watermark
        does not pass their oldest row (as if the whole arrival were evaluated at once)."""
        try:
            with self._lock:
                self._held = None
                if deferred is not None and len(deferred):
                    known = deferred.sensor[(deferred.sensor >= 0) & (deferred.sensor < self.rules.n_sensors)]
                    held = np.zeros(self.rules.n_sensors, bool)
                    held[known] = True
                    self._held = held if len(known) else None
                scanned = self._scan_silences(batch)
                det = self.rules.process(batch)
                if scanned is not None:
                    from core import Detections
                    det = Detections.concat([scanned, det])
                self._observe_notices(self.engine.process(det))
                # Only readings with data can show that a condition is gone (not rows refused for their
                # flag, which reach the detectors without values).
                good = batch.quality == 0
                if good.all():  # the usual batch: no gathers
                    self.engine.observe_readings(batch.sensor, batch.ts_ns)
                else:
                    self.engine.observe_readings(batch.sensor[good], batch.ts_ns[good])
                if self.event_clock and len(batch):
                    # The newest time evaluated so far; while rows wait in the backlog the watermark
                    # stops short of their oldest, and catches up once they have run.
                    self._seen_ns = mark = max(self._seen_ns, int(batch.ts_ns.max()))
                    if self._held is not None:
                        mark = min(mark, int(deferred.ts_ns.min()) - 1)
                    self._watermark_ns = max(self._watermark_ns, mark)
                    timed = self.rules.advance(self._watermark_ns - self.reorder_slack_ns, hold=self._hold_mask())
                    if len(timed):
                        self.engine.process(timed)
                    self.engine.tick(self._watermark_ns)
                self.counters["batches"] += 1
                self.counters["readings"] += len(batch)
                self.counters["detections"] += len(det)
        except Exception:
            self.counters["errors"] += 1
            log.exception("detection/alert pipeline failed on a batch of %d readings", len(batch))
        finally:
            self._evaluated(batch, deferred)

    def _scan_silences(self, batch):
        """Event clock: Offline episodes that ended inside `batch`, judged as the rows arrived (Deadman.scan)."""
        lead = batch.values.get(FEED_LEAD) if self.event_clock else None
        if lead is None or not len(batch):
            return None
        feed = batch.ts_ns + np.round(np.nan_to_num(lead, nan=0.0) * 1e9).astype(np.int64)
        found = [d.scan(batch.sensor, batch.ts_ns, feed, self.reorder_slack_ns)
                 for d in self.rules.rules if hasattr(d, "scan")]
        found = [f for f in found if f is not None and len(f)]
        if not found:
            return None
        from core import Detections
        return Detections.concat(found)

    def tick(self, now_ns: int | None = None) -> None:
        """Deadman rules and alert timers at `now_ns` (default: the clock)."""
        try:
            with self._lock:
                if now_ns is None and self.clock is None:
                    if not self._watermark_ns:
                        self.engine.heartbeat()  # alive, only idle: `alerts list` must still say so
                        return  # event clock: nothing has happened yet
                    now_ns = self._watermark_ns
                now = int(now_ns if now_ns is not None else self.clock())
                # Event clock: the deadman is judged against the feed less the transport's reorder slack.
                det = self.rules.advance(now - (self.reorder_slack_ns if self.event_clock else 0), hold=self._hold_mask())
                if len(det):
                    self._observe_notices(self.engine.process(det))
                self._observe_notices(self.engine.tick(now_ns))
        except Exception:
            self.counters["errors"] += 1
            log.exception("alert tick failed")

    # ----- backlog and latency (self-metrics) -------------------------------------------------------

    def _arrived(self, batch) -> None:
        n = len(batch)
        if not n:
            return
        lo, hi = int(batch.ts_ns.min()), int(batch.ts_ns.max())
        with self._backlog_lock:
            self._rows_in += n
            self._arrivals.append((time.monotonic(), self._rows_in, lo, hi))
            self._newest_in_ns = max(self._newest_in_ns, hi)

    def _evaluated(self, batch, deferred) -> None:
        n = len(batch)
        hi = int(batch.ts_ns.max()) if n else 0
        left = deferred is not None and len(deferred) > 0
        lo = int(deferred.ts_ns.min()) if left else None
        with self._backlog_lock:
            self._rows_done += n
            self._newest_done_ns = max(self._newest_done_ns, hi)
            self._deferred_min_ns = lo
            while self._arrivals and self._arrivals[0][1] <= self._rows_done:
                self._arrivals.popleft()
        if left:
            self.counters["deferred_steps"] += 1

    def _observe_notices(self, notices) -> None:
        if self.event_clock or not notices:
            return  # event time is not wall time in a replay: no latency to speak of
        now = time.time_ns()
        lat = [(now - n.ts_ns) / 1e9 for n in notices if n.transition == "firing"]
        if lat:
            self.alert_latency.observe_many(lat)

    def backlog(self) -> dict:
        """The detector thread's backlog now (every key always present, numbers of a fixed type):
        rows_queued (readings handed over, not yet evaluated), oldest_age_s (wall seconds since the oldest
        arrival not fully evaluated was handed over), event_lag_s (newest event time handed over minus the
        newest evaluated, or the oldest queued before any was, while rows are queued), oldest_queued_ns (the oldest event time queued, 0 if none),
        steps and deferred_steps (detector steps; those that left rows for later), readings, notices; event clock:
        rows_held_ahead (readings dated too far ahead of the feed, waiting for it) and rows_ahead_dropped."""
        now = time.monotonic()
        with self._backlog_lock:
            queued = self._rows_in - self._rows_done
            if queued > 0 and self._arrivals:
                age = now - self._arrivals[0][0]
                oldest = min(a[2] for a in self._arrivals)
                if self._deferred_min_ns is not None:
                    oldest = min(oldest, self._deferred_min_ns)
                # Before the first evaluation, the lag is the span of what waits.
                lag = max(0, self._newest_in_ns - (self._newest_done_ns or oldest)) / 1e9
            else:
                age, oldest, lag = 0.0, 0, 0.0
        return {"rows_queued": int(max(queued, 0)), "oldest_age_s": float(age), "event_lag_s": float(lag),
                "oldest_queued_ns": int(oldest), "steps": int(self.counters["batches"]),
                "deferred_steps": int(self.counters["deferred_steps"]), "readings": int(self.counters["readings"]),
                "notices": int(self.engine.counters.get("notices", 0)), "errors": int(self.counters["errors"]),
                "rows_held_ahead": int(self._ahead_rows), "rows_ahead_dropped": int(self.counters["rows_ahead_dropped"])}

    def check_lag(self) -> dict:
        """Scheduled: log once when detection falls more than DETECT_LAG_WARN_S behind ingest and once when
        it has caught up (rate-limited); returns the backlog it looked at."""
        b = self.backlog()
        said = self.lag_watch.observe(b["oldest_age_s"], f"{b['rows_queued']:,} readings queued for detection, "
                                      f"event-time lag {b['event_lag_s']:.1f} s")
        if said is not None:
            log.log(*said)
        return b

    # ----- partitioned mode: which devices this worker owns -----------------------------------------

    def _hold_mask(self):
        """The devices the deadman leaves as they are: those with rows in our backlog (`_held`) and, in
        partitioned mode, those of partitions this worker does not own (their silence is not ours to judge)."""
        owned = self.engine.owned
        if owned is None:
            return self._held
        if self._foreign is None or self._foreign[0] is not self.rules or self._foreign[1] is not owned:
            self._foreign = (self.rules, owned, np.array([i not in owned for i in self.rules.inv.ids], bool))
        foreign = self._foreign[2]
        return foreign if self._held is None else (self._held | foreign)

    def set_owned(self, devices) -> None:
        """Partitioned mode: evaluate time-driven rules and raise alerts only for `devices` (ids; None: every
        device, single mode). Open alerts of other devices are forgotten without a notice (AlertEngine.set_owned)."""
        with self._lock:
            self.engine.set_owned(None if devices is None else set(devices))

    def capture_partition(self, devices):
        """(detector snapshot of every rule, open alerts of `devices` with their undelivered notices), taken
        together between two batches: the state another worker goes on from if this one dies."""
        from detectors import snapshot

        with self._lock:
            return snapshot.capture(self.rules), self.engine.export_alerts(devices)

    def hand_over(self, devices, drain_s: float = 10.0):
        """Give `devices` up (their partition moves to another worker; its messages are acked already):
        evaluate what is queued (up to `drain_s`), then, between two batches, capture the detector snapshot
        and the devices' open alerts and stop owning them (their alerts are dropped without a notice).
        Returns (snapshot, alerts) for `take_over` on the next owner."""
        from detectors import snapshot

        if not self.drain(drain_s):
            log.warning("hand-over: detection still has readings queued after %.0f s; handing over without them",
                        drain_s)
        with self._lock:
            return snapshot.capture(self.rules), self.engine.release_alerts(devices)

    def take_over(self, devices, snap=None, alerts=None, source: str = "hand-over"):
        """Own `devices` from now on: restore their detector state from `snap` (a detector snapshot cut to
        them, or None) and go on with their open alerts `alerts` (from `hand_over` / `capture_partition` on
        the last owner, or None). Returns (LoadReport or None, number of alerts adopted)."""
        from detectors import snapshot

        with self._lock:
            report = snapshot.restore(self.rules, snap, source=source) if snap is not None else None
            kept = (report.kept() & snapshot.active_keys(self.rules)) if report is not None else set()
            return report, self.engine.adopt_alerts(devices, alerts, kept)

    # ----- detector state ---------------------------------------------------------------------------

    def _state_path(self) -> Path:
        return self.cfg.resolve_path(self.cfg.alerting.detector_state_path)

    def save_state(self) -> bool:
        """Write the detectors' state snapshot (atomically). Never raises: a failed save is logged and
        counted, and the previous snapshot stays in place."""
        from detectors import snapshot

        with self._save_lock:
            path = self._state_path()
            try:
                with self._lock:  # a consistent copy between batches; the disk write runs without the lock
                    snap = snapshot.capture(self.rules)
                snapshot.write(snap, path)
                self.counters["state_saves"] += 1
                return True
            except Exception:
                self.counters["state_save_errors"] += 1
                log.exception("detector state could not be saved to %s", path)
                return False

    # ----- reload -----------------------------------------------------------------------------------

    def reload(self, new_cfg) -> None:
        """Swap in a validated config: rebuild the rules, reconfigure the engine; open alerts stay.
        Raises ConfigError (and keeps the old config) when the detectors reject a rule."""
        from detectors import snapshot
        from detectors.registry import RuleSet

        rules = RuleSet.from_config(new_cfg)  # before taking the lock: a bad config changes nothing
        with self._lock:
            report = self.state_report = snapshot.transfer(self.rules, rules)
            self._mark_event_time(rules)
            self.rules = rules
            old_save_s = self.cfg.alerting.detector_state_save_s
            self.cfg = new_cfg
            # Rules that started fresh may never clear what their old selves raised; the others go on.
            self.engine.reload(new_cfg, detectors_reset=report.reset())
            for hook in self.reload_hooks:
                hook(new_cfg)
            self.counters["reloads"] += 1
        log.info("config reloaded from %s", self.config_dir)
        snapshot.log_report(report)
        if (new_cfg.alerting.detector_state_save_s != old_save_s and self._jobs is not None
                and hasattr(self._jobs, "reschedule_job")):
            self._jobs.reschedule_job("detector_state", trigger="interval", seconds=new_cfg.alerting.detector_state_save_s)

    def reload_from_disk(self) -> bool:
        """Load and validate the config directory, then swap it in; on problems log them and keep the old."""
        try:
            new_cfg = load_config(self.config_dir, self.env)
            self.reload(new_cfg)
            return True
        except ConfigError as exc:
            self.counters["reload_errors"] += 1
            log.error("config reload rejected, keeping the running config:\n%s", exc)
            return False

    def _config_mtimes(self) -> dict[str, float]:
        try:
            return {str(p): p.stat().st_mtime_ns for p in sorted(self.config_dir.glob("*.y*ml"))}
        except OSError:
            return {}

    def _watch_config(self) -> None:
        mtimes = self._config_mtimes()
        if mtimes != self._mtimes or self._reload_requested.is_set():
            self._reload_requested.clear()
            self._mtimes = mtimes
            self.reload_from_disk()


def _second_newest(sensor: np.ndarray, ts_ns: np.ndarray) -> int | None:
    """The newest time that two devices have reached among these rows (the second newest device's newest
    reading), or None when fewer than two devices have rows."""
    if not len(sensor):
        return None
    order = np.lexsort((ts_ns, sensor))
    s, t = sensor[order], ts_ns[order]
    last = np.r_[s[1:] != s[:-1], True]
    newest = t[last]
    if len(newest) < 2:
        return None
    return int(np.partition(newest, len(newest) - 2)[len(newest) - 2])


def _iso(ts_ns: int) -> str:
    import datetime as dt
    return dt.datetime.fromtimestamp(ts_ns / 1e9, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
