"""The alert engine: detections in, one notice per alert transition out, state in SQLite first.

Lifecycle (per (rule, device) key, driven by event time): a detection opens an alert `pending`; it
fires once the condition has held `for_s`; it resolves once the condition has been clear for
`clear_for_s` (the detector already applied hysteresis). A key whose condition flips more than
`flap_max_transitions` times in `flap_window_s` is held firing and marked flapping until the flips
in the window fall to half that. Severity may rise and fall within one alert; `peak_severity` keeps
the highest it reached (stored, and on every notice). Unacknowledged firing
alerts escalate one level after the severity's escalation time and are repeated every
`repeat_interval_s` of their route. Timers run on `now` = the watermark (max event time seen), or the
injected clock when that is later (live).
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import json
import logging
import math
import os
import threading
import time
import uuid
from collections.abc import Callable, Collection, Hashable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from alerts import command_scope, lifecycle
from alerts import commands as command_rules
from alerts.dispatch import Dispatcher, NoticeDispatcher
from alerts.grouping import GroupTimer
from alerts.lifecycle import Activity, Snapshot, Step, Timings, Transition
from alerts.model import Alert, Notice, iso
from alerts.muting import Muter, Silence, overridden_health, really_active
from alerts.routing import receivers_of, route
from alerts.store import AlertStore
from core import Detections
from core.timefmt import NS_PER_S as NS

if TYPE_CHECKING:
    from alerts.sinks.base import Sink
    from config.inventory import Device
    from config.model import Config

log = logging.getLogger(__name__)

# Dirty alert refreshes (last value, last seen) are persisted at most this often; transitions at once.
REFRESH_PERSIST_S = 5.0
PRUNE_EVERY_NS = 3600 * NS  # how often the store is pruned (retention_days), engine clock
# process(): how often (engine clock) the timers of alerts that no detection of the batch touched run; a
# detection step comes every few ms under load, and advancing every open alert each time was a tenth of its cost.
ADVANCE_EVERY_NS = NS // 10
# A running engine writes its heartbeat (meta `heartbeat`: wall time, engine clock, clock kind) this often,
# so that `citywatch alerts list` can tell a live board from a stale store (DESIGN: a stale view never
# looks like an all-clear); `stop()` writes meta `stopped`.
HEARTBEAT_S = 10.0


def wall_clock_ns() -> int:
    return time.time_ns()


class AlertEngine:
    """Turns `Detections` into alert transitions and notices.

    cfg:        a loaded `config.Config` (alerting, rules, inventory)
    store:      an AlertStore (default: the file at cfg.alerting.store_path)
    sinks:      name -> Sink (default: built from cfg.alerting.sinks); a route naming a missing sink
                records that delivery as failed
    clock:      callable returning UTC ns; None = event time only (replay, table tests)
    dispatcher: sends notices (default: a threaded Dispatcher over `sinks`)

    Thread-safe: process/observe_readings/tick/apply_command/reload may come from different threads.
    """

    muter: Muter
    _seen_ns: npt.NDArray[np.int64]
    _seen_ids: list[str]

    def __init__(self, cfg: Config, store: AlertStore | None = None, sinks: dict[str, Sink] | None = None,
                 clock: Callable[[], float] | None = None, dispatcher: NoticeDispatcher | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.cfg = cfg
        self.store = store if store is not None else AlertStore(cfg.resolve_path(cfg.alerting.store_path))
        if sinks is None:
            from alerts.sinks import build_sinks

            sinks = build_sinks(cfg, env)
        self.sinks = sinks
        self.clock = clock
        self._env = env
        self._run_id = str((env if env is not None else os.environ).get("CITYWATCH_RUN_ID", "") or "").strip()
        if dispatcher is None:
            from alerts.sinks import sink_rates

            r = cfg.alerting.retry
            dispatcher = Dispatcher(sinks, self.store, r.initial_s, r.max_s, sink_rates(cfg))
        self.dispatcher: NoticeDispatcher = dispatcher
        self._lock = threading.RLock()
        self._open: dict[tuple[str, str], Alert] = {}
        self._by_id: dict[str, Alert] = {}
        self._flips: dict[tuple[str, str], Sequence[int]] = {}  # flap history per key (alerts.lifecycle)
        self._watermark = 0
        self._restart_wm: int | None = None
        self._outbox: list[tuple[int, int, Notice, str]] = []  # heap of (due_ns, order, notice, sink)
        self._order = itertools.count()
        self._groups = GroupTimer()
        self._dirty: dict[str, Alert] = {}
        self._dirty_flips: set[tuple[str, str]] = set()
        self._last_persist = 0.0
        # Written at the next persist at once, not with the REFRESH_PERSIST_S refreshes: an open alert's mute
        # changed (a silence began or ended, an inhibitor came or went: the console's alert page, which reads
        # the store, shows a new silence at the next tick, not up to 5 s later), or a pending alert was
        # discarded (its condition cleared before for_s: no transition, so `_emit` does not write it; a crash
        # before the refreshes would load it as pending again, its old start time counting towards for_s).
        self._persist_soon = False
        self.counters = {"late_rows": 0, "unknown_sensor_rows": 0, "notices": 0, "suppressed": 0, "pruned": 0}
        self._pruned_at: int | None = None
        self._advanced_ns: int | None = None  # engine time every open alert's timers last ran (_advance_all)
        self._heartbeat_at = -math.inf  # time.monotonic() of the last heartbeat written
        self._logged_once: set[tuple[Hashable, ...]] = set()  # faults already logged (see _log_once)
        self._commands_given_up: set[int] = set()  # command rows that could not even be marked
        # Partitioned mode: the devices whose alerts this engine owns (None: every device, single mode), as
        # a mask over cfg.devices; `on_transitions` is told the devices of each batch of new notices.
        self._owned: frozenset[str] | None = None
        self._owned_mask: npt.NDArray[np.bool_] | None = None
        self.on_transitions: Callable[[set[str]], None] | None = None
        # With `hold_until_saved` (partitioned mode, citywatch/partition_state.py) a transition's notices wait
        # here, not in the outbox, until the partition's alerts holding it are saved in the cluster
        # (`checkpoint_alerts`, then `release_unsaved`): a worker killed before that save has sent nothing its
        # taker does not know of. Entries: (due ns, notice, sink).
        self.hold_until_saved = False
        self._unsaved: list[tuple[int, Notice, str]] = []
        self._configure(cfg)
        self._started = False

    # ----- configuration --------------------------------------------------------------------------

    def _configure(self, cfg: Config) -> None:
        self.cfg = cfg
        a = cfg.alerting
        self._rules = {r.id: r for r in cfg.rules}
        silences = self.muter.silences if hasattr(self, "muter") else {}
        self.muter = Muter(silences, list(a.quiet_windows), list(a.inhibit), cfg.time.tz)
        self._levels = list(a.escalation.levels)
        self._repeat_cache: dict[tuple[Hashable, ...], float] = {}
        escalate_s = {4: a.escalation.red_s, 3: a.escalation.orange_s, 2: a.escalation.yellow_s}
        # An alert whose rule is gone: no for_s, no clear_for_s; each rule adds its own.
        self._no_timings = Timings(flap_window_ns=int(a.flap_window_s * NS), flap_max_transitions=a.flap_max_transitions,
                                   levels=tuple(self._levels), repeat_s=self._repeat_s,
                                   escalate_ns={sev: int(s * NS) for sev, s in escalate_s.items()})
        self._timings = {r.id: dataclasses.replace(self._no_timings, for_ns=int(r.for_s * NS),
                                                   clear_for_ns=int(r.clear_for_s * NS)) for r in cfg.rules}
        self._labels = [self._device_labels(cfg, d) for d in cfg.devices]
        self._device_ids = frozenset(d.id for d in cfg.devices)  # who answers a command (alerts.command_scope)
        self._first_device = min(self._device_ids) if self._device_ids else None  # answers the rest (answers_rest)
        # Rules raised by the clock (deadman): their clear is never a late row (see _apply_detections).
        self._time_driven = {r.id for r in cfg.rules if r.time_driven}
        self._remap_seen([d.id for d in cfg.devices])
        if self._owned is not None:
            self._owned_mask = np.array([d.id in self._owned for d in cfg.devices], bool)

    def _remap_seen(self, ids: list[str]) -> None:
        """Keep each device's newest observed reading time across a reload that changed the inventory."""
        old_ids = getattr(self, "_seen_ids", None)
        if old_ids == ids:
            return
        seen = np.full(len(ids), -1, np.int64)
        if old_ids:
            pos = {d: i for i, d in enumerate(old_ids)}
            for i, d in enumerate(ids):
                if d in pos:
                    seen[i] = self._seen_ns[pos[d]]
        # Event time of the newest reading with data of each device (-1: none since start), from
        # observe_readings: an Offline verdict older than it is stale and inhibits nothing.
        self._seen_ns, self._seen_ids = seen, ids

    @staticmethod
    def _device_labels(cfg: Config, d: Device) -> tuple[dict[str, Any], dict[str, Any]]:
        s = cfg.site(d.site) if d.site is not None else None  # a generic device has no site
        site = {"id": d.site, "name": s.name if s else d.site, "address": s.address if s else "",
                "district": s.district if s else "", "lat": s.lat if s else None, "lon": s.lon if s else None,
                "crs": s.crs if s else "WGS84"}
        device = {"id": d.id, "mn": d.mn_or_id, "kind": d.kind}
        return site, device

    # ----- life of the engine ---------------------------------------------------------------------

    def start(self, kept: Collection[object] = ()) -> None:
        """Load open alerts, flap history, silences and undelivered notices from the store; queue them.

        kept: rule ids, or (rule id, device id) keys, whose detector state was restored (a detector
        snapshot) and still holds the condition active: their open alerts go on as before the restart,
        since those detectors will send the clear. Every other open alert is handled as recovered (see
        `observe_readings`)."""
        with self._lock:
            if self._started:
                return
            self._started = True
            wm = self.store.meta("watermark")
            self._watermark = max(self._watermark, int(wm) if wm else 0)
            foreign = []
            for a in self.store.open_alerts():
                if self._owned is not None and a.device_id not in self._owned:
                    foreign.append(a)  # another worker's now (partitioned mode): its state moved with its partition
                    continue
                a.recovered = not _names(kept, a)
                self._open[a.key] = a
                self._by_id[a.alert_id] = a
            self._restart_wm = self._watermark if any(a.recovered for a in self._open.values()) else None
            self._flips = self.store.flips()
            if foreign:
                self._forget(foreign)
            self.muter.silences = {s.id: s for s in self.store.silences()}
            for notice, sink, due in self.store.pending_deliveries():
                heapq.heappush(self._outbox, (due, next(self._order), notice, sink))
            self._apply_inbox()  # never raises: a stored command that fails is marked failed
            self._pump(self._now())
            self.heartbeat(force=True)

    def stop(self) -> None:
        """Persist refreshed alerts and stop the dispatcher (undelivered notices stay in the store)."""
        with self._lock:
            self._persist_refreshes(force=True)
            if self._started:
                self._write_meta({"stopped": str(time.time_ns())})
        self.dispatcher.stop()

    def heartbeat(self, force: bool = False) -> None:
        """Record in the store that this engine is alive (at most every HEARTBEAT_S unless `force`):
        wall time, the engine's clock (`now_ns`) and its kind (wall | event). Never raises."""
        with self._lock:
            if not force and time.monotonic() - self._heartbeat_at < HEARTBEAT_S:
                return
            self._heartbeat_at = time.monotonic()
            beat = {"wall_ns": time.time_ns(), "now_ns": self._now(), "clock": "event" if self.clock is None else "wall"}
            self._write_meta({"heartbeat": json.dumps(beat, sort_keys=True), "watermark": str(self._watermark)})

    def _write_meta(self, meta: dict[str, str]) -> None:
        try:
            self.store.commit([], [], meta=meta)
        except Exception:  # noqa: BLE001 - liveness bookkeeping must never stop alerting
            self._log_once(("heartbeat",), "could not write the engine heartbeat to the alert store")

    def reload(self, cfg: Config, detectors_reset: bool | Collection[object] = False) -> None:
        """Swap in a new validated config atomically; open alerts stay open (alerts of removed or
        disabled rules resolve). Sinks are rebuilt when their settings or the connections changed.

        detectors_reset: True when every detector was rebuilt without state, or the rule ids (and
        (rule id, device id) keys) whose detectors were: their open alerts are handled as after a
        restart (see `observe_readings`). The others' detectors kept their state and will send the clear."""
        retired = None
        with self._lock:
            old = self.cfg
            self._configure(cfg)
            if detectors_reset and self._open:
                hit = [a for a in self._open.values() if detectors_reset is True or _names(detectors_reset, a)]
                for a in hit:
                    a.recovered = True
                if hit:
                    self._restart_wm = self._watermark
            if cfg.alerting.sinks != old.alerting.sinks or cfg.connections != old.connections:
                retired = self._swap_sinks(cfg)
            now = self._now()
            trans: list[Transition] = []
            for a in list(self._open.values()):
                rule = self._rules.get(a.rule_id)
                if rule is not None and not rule.enabled:
                    a.context = {**a.context, "resolution": "rule disabled"}
                    self._take(lifecycle.resolve(a, now), trans)
                elif rule is None and self._rules_known(old, a.rule_id):
                    a.context = {**a.context, "resolution": "rule removed"}
                    self._take(lifecycle.resolve(a, now), trans)
            self._emit(trans, now)
        if retired is not None:
            # The old sinks finish outside the engine's lock: three sinks stuck mid-send held detections and
            # notices for 8 s (found by an audit). Then what they did not deliver is queued again.
            retired.stop(timeout_s=2.0)
            with self._lock:
                self._requeue_pending()

    @staticmethod
    def _rules_known(cfg: Config, rule_id: str) -> bool:
        return any(r.id == rule_id for r in cfg.rules)

    def _swap_sinks(self, cfg: Config) -> NoticeDispatcher:
        """New sinks and dispatcher for `cfg`; returns the old dispatcher, for the caller to stop (outside the
        lock) before `_requeue_pending`."""
        from alerts.sinks import build_sinks, sink_rates

        old = self.dispatcher
        self.sinks = build_sinks(cfg, self._env)
        r = cfg.alerting.retry
        self.dispatcher = Dispatcher(self.sinks, self.store, r.initial_s, r.max_s, sink_rates(cfg))
        return old

    def _requeue_pending(self) -> None:
        """What an old dispatcher did not deliver is still pending in the store: queue it again."""
        queued = {(n.key, s) for _, _, n, s in self._outbox}
        for notice, sink, due in self.store.pending_deliveries():
            if (notice.key, sink) not in queued:
                heapq.heappush(self._outbox, (due, next(self._order), notice, sink))

    # ----- partitioned mode: alerts owned by one worker at a time ------------------------------------

    @property
    def owned(self) -> frozenset[str] | None:
        """The device ids whose alerts this engine owns; None: every device (single mode)."""
        return self._owned

    def set_owned(self, devices: Collection[str] | None) -> None:
        """Own the alerts of `devices` only (None: every device, as in single mode). Detections of other
        devices are dropped (counted in counters['foreign_rows']); open alerts of devices no longer owned
        are forgotten without a notice (in memory and in this engine's store): their state moves with
        their partition (`release_alerts` / `adopt_alerts`)."""
        with self._lock:
            self._owned = None if devices is None else frozenset(devices)
            self._owned_mask = (None if self._owned is None else
                                np.array([d.id in self._owned for d in self.cfg.devices], bool))
            if self._owned is not None and self._started:
                self._forget([a for a in self._open.values() if a.device_id not in self._owned])

    def export_alerts(self, devices: Collection[str], pending: bool = True) -> dict[str, Any]:
        """The open alerts of `devices` with their flap histories (and, with `pending`, the notices of the
        devices' alerts not yet delivered by every sink), as JSON-able data for `adopt_alerts` on another worker."""
        with self._lock:
            devs = set(devices)
            alerts = [a for a in self._open.values() if a.device_id in devs]
            flips = [[k[0], k[1], list(v)] for k, v in self._flips.items() if k[1] in devs and v]
            notices = []
            if pending:  # also those of alerts resolved since the last save: their resolved notice may be pending
                for n, sink, due in self.store.pending_deliveries():
                    if n.device_id in devs:
                        notices.append({"key": n.key, "alert_id": n.alert_id, "seq": n.seq, "transition": n.transition,
                                        "ts_ns": n.ts_ns, "payload": n.payload, "sink": sink, "due_ns": due})
            return {"version": 1, "watermark_ns": self._watermark,
                    "alerts": [_json_safe(a.to_dict()) for a in alerts], "flips": flips, "notices": notices}

    def release_alerts(self, devices: Collection[str]) -> dict[str, Any]:
        """Give up the alerts of `devices` (their partition moves to another worker): returns what
        `export_alerts` returns (without pending notices: this engine still delivers what it queued), then
        stops owning them and forgets their open alerts without sending anything."""
        with self._lock:
            state = self.export_alerts(devices, pending=False)
            if self._owned is not None:
                self.set_owned(self._owned - set(devices))
            else:
                self._forget([a for a in self._open.values() if a.device_id in set(devices)])
            return state

    def adopt_alerts(self, devices: Collection[str], state: dict[str, Any] | None,
                     kept: Collection[object] = ()) -> int:
        """Own the alerts of `devices` from now on and go on with the open alerts of `state` (from
        `export_alerts` on their last owner): same alert id, sequence and idempotency keys, no new firing.
        kept: (rule id, device id) keys whose detector state was restored holding the condition active;
        the other adopted alerts are handled as after a restart (`observe_readings`). Notices in `state`
        not yet delivered are queued again under their own keys. Returns the number of alerts adopted."""
        with self._lock:
            if not self._started:
                self.start()
            if self._owned is not None:
                self.set_owned(self._owned | set(devices))
            if not state:
                return 0
            devs = set(devices)
            adopted: list[Alert] = []
            for d in state.get("alerts", []):
                a = alert_from_state(d)
                if a.device_id not in devs or not a.open:
                    continue
                old = self._open.get(a.key)
                if old is not None and old.alert_id != a.alert_id:
                    self._forget([old])
                a.recovered = not _names(kept, a)
                self._open[a.key] = a
                self._by_id[a.alert_id] = a
                adopted.append(a)
            if any(a.recovered for a in adopted):
                self._restart_wm = max(self._restart_wm or 0, self._watermark)
            flips = {(r, d): [int(t) for t in ts] for r, d, ts in state.get("flips", []) if d in devs}
            self._flips.update(flips)
            out: list[tuple[Notice, list[tuple[str, int]]]] = []
            for n in state.get("notices", []):
                notice = Notice(n["key"], n["alert_id"], int(n["seq"]), n["transition"], int(n["ts_ns"]), n["payload"])
                out.append((notice, [(n["sink"], int(n["due_ns"]))]))
            self.store.commit(adopted, out, flips)
            for notice, deliveries in out:
                for sink, due in deliveries:
                    heapq.heappush(self._outbox, (due, next(self._order), notice, sink))
            self._watermark = max(self._watermark, int(state.get("watermark_ns") or 0))
            self._pump(self._now())
            return len(adopted)

    def checkpoint_alerts(self, devices: Collection[str]) -> tuple[dict[str, Any], list[tuple[int, Notice, str]]]:
        """`export_alerts(devices)` and the notices of `devices` held for a save (`hold_until_saved`), taken
        together: every held notice taken is in the export. Hand them to `release_unsaved` once the export
        is saved (or could not be)."""
        with self._lock:
            return self.export_alerts(devices), self.take_unsaved(devices)

    def take_unsaved(self, devices: Collection[str] | None = None, others: bool = False) -> list[tuple[int, Notice, str]]:
        """Take the held notices of `devices` (None: all; `others`: of every device but these) out of the hold,
        for `release_unsaved`."""
        with self._lock:
            devs = None if devices is None else set(devices)
            keep: list[tuple[int, Notice, str]] = []
            taken: list[tuple[int, Notice, str]] = []
            for u in self._unsaved:
                mine = devs is None or (u[1].device_id in devs) != others
                (taken if mine else keep).append(u)
            self._unsaved = keep
            return taken

    def release_unsaved(self, held: list[tuple[int, Notice, str]]) -> None:
        """Queue held notices (from `checkpoint_alerts` / `take_unsaved`) for their sinks."""
        if not held:
            return
        with self._lock:
            for due, notice, sink in held:
                heapq.heappush(self._outbox, (due, next(self._order), notice, sink))
            self._pump(self._now())

    def _forget(self, alerts: list[Alert]) -> None:
        """Drop open alerts without a notice (another worker owns them now), here and in the store."""
        for a in alerts:
            self._open.pop(a.key, None)
            self._by_id.pop(a.alert_id, None)
            self._dirty.pop(a.alert_id, None)
            self._flips.pop(a.key, None)
            self._dirty_flips.discard(a.key)
        if alerts:
            self.store.forget([a.alert_id for a in alerts], [a.key for a in alerts])

    # ----- time -----------------------------------------------------------------------------------

    def _now(self) -> int:
        if self.clock is None:
            return self._watermark
        return max(self._watermark, int(self.clock()))

    @property
    def watermark_ns(self) -> int:
        return self._watermark

    # ----- input ----------------------------------------------------------------------------------

    def process(self, det: Detections) -> list[Notice]:
        """Apply a batch of detections (any order); returns the notices it produced."""
        with self._lock:
            if not self._started:
                self.start()
            trans: list[Transition] = []
            if len(det):
                self._watermark = max(self._watermark, int(det.ts_ns.max()))
                self._apply_detections(det, trans)
            now = self._now()
            # The timers of the alerts no detection of this batch touched (those were advanced as they were
            # applied): at most every ADVANCE_EVERY_NS of the engine's clock here, every second in tick().
            # Transitions are stamped with the time they fell due, so only a notice's wall latency changes.
            last = self._advanced_ns
            if last is None or now - last >= ADVANCE_EVERY_NS or now < last:
                self._advance_all(now, trans)
            notices = self._emit(trans, now)
            self._persist_refreshes()
            self._pump(now)
            return notices

    def observe_readings(self, sensor: np.ndarray, ts_ns: np.ndarray) -> list[Notice]:
        """Readings the detectors have just evaluated. After a restart the detectors have forgotten
        which conditions were active and may never send the clear of an alert opened before it: an
        alert loaded from the store whose device reports `recovered_clear_after_s` after the restart
        without its condition being seen again is treated as cleared at that reading."""
        with self._lock:
            if len(sensor):
                sensor_a = np.asarray(sensor, np.int64)
                known = (sensor_a >= 0) & (sensor_a < len(self._seen_ns))
                np.maximum.at(self._seen_ns, sensor_a[known], np.asarray(ts_ns, np.int64)[known])
            if self._restart_wm is None or len(sensor) == 0:
                return []
            recovered = [a for a in self._open.values() if a.recovered]
            if not recovered:
                self._restart_wm = None
                return []
            after = self._restart_wm + int(self.cfg.alerting.recovered_clear_after_s * NS)
            sensor = np.asarray(sensor)
            ts_ns = np.asarray(ts_ns, np.int64)
            trans: list[Transition] = []
            for a in recovered:
                try:
                    idx = self.cfg.device_index(a.device_id)
                except KeyError:
                    continue
                ts = ts_ns[sensor == idx]
                ts = ts[ts >= after]
                if len(ts) == 0:
                    continue
                t = int(ts.min())
                a.recovered = False
                self._watermark = max(self._watermark, int(ts_ns.max()))
                if a.clear_since_ns is None:
                    self._advance(a, t, trans)
                    if a.open:
                        self._on_clear(a, t, trans)
            now = self._now()
            self._advance_all(now, trans)
            notices = self._emit(trans, now)
            self._pump(now)
            return notices

    def tick(self, now_ns: int | None = None) -> list[Notice]:
        """Advance timers (for_s, clear_for_s, escalation, repeat, silence expiry, group waits) to
        `now_ns` (default: the clock), apply queued operator commands, and send what is due."""
        with self._lock:
            if not self._started:
                self.start()
            if now_ns is not None:
                self._watermark = max(self._watermark, int(now_ns))
            self._apply_inbox()
            now = self._now()
            trans: list[Transition] = []
            self._advance_all(now, trans)
            notices = self._emit(trans, now)
            self._persist_refreshes()
            self._pump(now)
            self._prune(now)
            self.heartbeat()
            return notices

    def _prune(self, now: int) -> None:
        """Once an hour (of the engine's clock): drop what ended more than `retention_days` ago."""
        if self._pruned_at is not None and now - self._pruned_at < PRUNE_EVERY_NS:
            return
        self._pruned_at = now
        try:
            gone = self.store.prune(now - int(self.cfg.alerting.retention_days * 86400 * NS))
        except Exception:  # noqa: BLE001 - pruning is housekeeping: never stop alerting for it
            log.exception("alert store pruning failed")
            return
        n = sum(gone.values())
        if n:
            self.counters["pruned"] += n
            log.info("alert store: deleted %s older than %g days", ", ".join(f"{v} {k}" for k, v in gone.items() if v),
                     self.cfg.alerting.retention_days)

    def _apply_detections(self, det: Detections, trans: list[Transition]) -> None:
        ndev = len(self._labels)
        known = (det.sensor >= 0) & (det.sensor < ndev)
        if not known.all():
            self.counters["unknown_sensor_rows"] += int((~known).sum())
            det = det.take(known)
            if len(det) == 0:
                return
        if self._owned_mask is not None:
            # Partitioned mode: another worker owns the alerts of the other partitions' devices.
            mine = self._owned_mask[det.sensor]
            if not mine.all():
                self.counters["foreign_rows"] = self.counters.get("foreign_rows", 0) + int((~mine).sum())
                det = det.take(mine)
                if len(det) == 0:
                    return
        n = len(det)
        rule_ids: Any
        if n <= 64:
            # A small step's few rows: the sorted ids and each row's index in them (np.unique's result) in
            # plain Python, several times cheaper than np.unique of a str array up to here.
            ids = [str(r) for r in det.rule_id.tolist()]
            rule_ids = sorted(set(ids))
            pos = {r: i for i, r in enumerate(rule_ids)}
            rule_code = np.array([pos[r] for r in ids], np.intp)
        else:
            rule_ids, rule_code = np.unique(det.rule_id.astype(str), return_inverse=True)
        sensor = det.sensor.astype(np.int64)
        key = rule_code.astype(np.int64) * (int(sensor.max()) + 1) + sensor
        order = np.lexsort((det.ts_ns, key))
        key_s, sev_s, ts_s = key[order], det.severity[order].astype(np.int64), det.ts_ns[order]
        # Segments: runs of one key with one severity. Python works per segment, never per reading.
        start = np.ones(n, bool)
        start[1:] = (key_s[1:] != key_s[:-1]) | (sev_s[1:] != sev_s[:-1])
        bounds = np.append(np.flatnonzero(start), n)
        value, limit = det.value[order], det.limit[order]
        # Distance past the limit of each row, above (+1) and below (-1); NaN never a peak (-inf).
        past = value - limit
        nan = np.isnan(past)
        past_up, past_down = np.where(nan, -np.inf, past), np.where(nan, -np.inf, -past)
        for b in range(len(bounds) - 1):
            i0, i1 = int(bounds[b]), int(bounds[b + 1])
            row0 = int(order[i0])
            s = int(det.sensor[row0])
            rule_id = str(rule_ids[rule_code[row0]])
            site, device = self._labels[s]
            k = (rule_id, device["id"])
            sev = int(sev_s[i0])
            t0 = int(ts_s[i0])
            alert = self._open.get(k)
            if alert is not None:
                last = max(alert.last_active_ns, alert.clear_since_ns or 0)
                if t0 < last:
                    if sev != 0 or rule_id not in self._time_driven:
                        self.counters["late_rows"] += i1 - i0
                        continue
                    # The clear of a clock-raised rule (Offline) says "the device is alive now": its
                    # reading may be older than the tick that raised the alert (a batch's oldest sample,
                    # HJ 212 whole seconds, a late message), but it is never stale. Applied as of the
                    # newest row the alert has, so the lifecycle stays in time order.
                    t0 = last
                self._advance(alert, t0, trans)
                alert = self._open.get(k)
            if sev == 0:
                if alert is not None:
                    self._on_clear(alert, t0, trans)
                continue
            last_i = i1 - 1
            ctx = det.context[int(order[last_i])] if det.context else {}
            row = Activity(rule_id, device["id"], str(det.category[row0]), site, device, t0, sev, float(value[i0]),
                           float(limit[i0]))
            alert = self._on_active(alert, row, trans)
            alert.last_active_ns = int(ts_s[last_i])
            alert.value, alert.limit = float(value[last_i]), float(limit[last_i])
            # The peak is the most severe value in the direction of the condition: with hysteresis an
            # active row may lie just inside the limit, and its distance must never count as a peak.
            d = _direction(alert)
            peak_i = i0 if i1 - i0 == 1 else i0 + int(np.argmax((past_up if d > 0 else past_down)[i0:i1]))
            pv = float(value[peak_i])
            if not math.isnan(pv) and (math.isnan(alert.peak_value) or (pv - alert.peak_value) * d >= 0):
                alert.peak_value = pv
            alert.context = dict(ctx or {})
            self._dirty[alert.alert_id] = alert

    # ----- the lifecycle (alerts.lifecycle: each call returns a Step; `trans` collects Transitions) ----

    def _timings_of(self, rule_id: str) -> Timings:
        return self._timings.get(rule_id, self._no_timings)

    def _take(self, step: Step, trans: list[Transition]) -> Alert:
        """Apply a lifecycle Step to the engine's maps, flap histories and dirty set; collect its transitions."""
        alert = step.alert
        if step.flips is not None:
            self._flips[alert.key] = step.flips
            self._dirty_flips.add(alert.key)
        if step.opened:
            self._open[alert.key] = alert
            self._by_id[alert.alert_id] = alert
        if step.closed:
            self._open.pop(alert.key, None)
            self._by_id.pop(alert.alert_id, None)
            self._dirty[alert.alert_id] = alert
            if not step.transitions:  # discarded while pending: see _persist_soon
                self._persist_soon = True
        trans.extend(step.transitions)
        return alert

    def _on_active(self, alert: Alert | None, row: Activity, trans: list[Transition]) -> Alert:
        flips = self._flips.get((row.rule_id, row.device_id), [])
        return self._take(lifecycle.on_active(alert, row, self._timings_of(row.rule_id), flips), trans)

    def _on_clear(self, alert: Alert, ts: int, trans: list[Transition]) -> None:
        step = lifecycle.on_clear(alert, ts, self._timings_of(alert.rule_id), self._flips.get(alert.key, []))
        self._take(step, trans)
        if step.flips is not None:  # the condition flipped: the alert changed (clear_since, or discarded)
            self._dirty[alert.alert_id] = alert

    def _advance(self, alert: Alert, now: int, trans: list[Transition]) -> None:
        """Run an alert's timers up to `now` (lifecycle.advance)."""
        self._take(lifecycle.advance(alert, now, self._timings_of(alert.rule_id), self._flips.get(alert.key, [])),
                   trans)

    def _repeat_s(self, alert: Alert) -> float:
        """The shortest repeat interval of the routes an alert takes (cached: routing is pure)."""
        level = self._levels[min(alert.escalation_level, len(self._levels) - 1)]
        key = (alert.rule_id, alert.category, alert.severity, alert.site.get("id"), alert.site.get("district"), level)
        r = self._repeat_cache.get(key)
        if r is None:
            r = self._repeat_cache[key] = min(
                m.repeat_interval_s for m in route(self.cfg.alerting.route, alert.labels(self._levels)))
        return r

    def _stale(self, alert: Alert) -> bool:
        """A clock-raised alert (Offline) whose device has reported a reading newer than the newest one
        its verdict knew of (`context.last_reading_ns`): its condition is gone even before the clear
        arrives (e.g. a recovered alert after a restart, whose detector state started fresh)."""
        if alert.rule_id not in self._time_driven or "last_reading_ns" not in (alert.context or {}):
            return False
        try:
            seen = int(self._seen_ns[self.cfg.device_index(alert.device_id)])
        except (KeyError, IndexError):
            return False
        if seen < 0:
            return False
        last = alert.context.get("last_reading_ns")
        return last is None or seen > int(last)

    def _inhibitors(self) -> list[Alert]:
        """The alerts that may inhibit others now: really active (firing, condition not cleared) and not
        stale (alerts.muting)."""
        return [a for a in self._open.values() if really_active(a) and not self._stale(a)]

    def _advance_all(self, now: int, trans: list[Transition]) -> None:
        self._advanced_ns = now
        firing = self._inhibitors()
        for a in list(self._open.values()):
            try:  # one alert's fault must not stop the timers of the others (see _alert_fault)
                if a.state == "firing":
                    reason = self.muter.reason(a, now, firing)
                    if reason != a.muted:
                        a.muted = reason
                        self._dirty[a.alert_id] = a
                        self._persist_soon = True
                        # A firing notice held by a mute goes out once the mute ends and the alert still fires.
                        if reason is None and not a.notified_firing:
                            trans.append(lifecycle.transition(a, "firing", now, {"late": True}))
                self._advance(a, now, trans)
            except Exception as exc:  # noqa: BLE001
                self._alert_fault(a, exc)

    # ----- notices --------------------------------------------------------------------------------

    def _emit(self, trans: list[Transition], now: int) -> list[Notice]:
        """Turn transitions into notices (or suppress them), commit, then queue for the sinks."""
        if not trans:
            return []
        trans.sort(key=lambda t: t.ts_ns)
        firing = self._inhibitors()
        out: list[tuple[Notice, list[tuple[str, int]]]] = []
        changed: dict[str, Alert] = {}
        for t in trans:
            alert = t.alert
            changed[alert.alert_id] = alert
            try:  # one alert's bad record must not keep every other alert's notices from going out
                built = self._transition_notice(t, firing)
            except Exception as exc:  # noqa: BLE001
                self._alert_fault(alert, exc)
                continue
            if built is not None:
                out.append(built)
        alerts = list(changed.values()) + [a for k, a in self._dirty.items() if k not in changed]
        self._dirty.clear()
        flips = {k: self._flips.get(k, []) for k in self._dirty_flips}
        self._dirty_flips.clear()
        # The durable write comes first: a crash after it re-sends these notices with the same keys.
        self.store.commit(alerts, out, flips, meta={"watermark": str(self._watermark)})
        self._persist_soon = False
        self._last_persist = time.monotonic()
        if self.on_transitions is not None and out:
            try:  # partitioned mode: the partition's state is saved to the cluster soon (never raises here)
                self.on_transitions({n.payload["device"]["id"] for n, _ in out})
            except Exception:  # noqa: BLE001
                self._log_once(("on_transitions",), "could not signal new alert transitions")
        for notice, deliveries in out:
            for sink, due in deliveries:
                if self.hold_until_saved:
                    self._unsaved.append((due, notice, sink))
                else:
                    heapq.heappush(self._outbox, (due, next(self._order), notice, sink))
        self.counters["notices"] += len(out)
        return [n for n, _ in out]

    def _transition_notice(self, t: Transition, firing: list[Alert]) -> tuple[Notice, list[tuple[str, int]]] | None:
        """The notice of one transition with its deliveries, or None when it is held (muted, or a
        transition of an alert whose firing was never notified)."""
        alert, kind, ts = t.alert, t.kind, t.ts_ns
        reason = self.muter.reason(alert, ts, firing) if kind != "resolved" else None
        if kind != "resolved":
            self._note_device_health(alert, firing)
        if kind == "firing":
            if alert.notified_firing:
                return None
            if reason is not None:
                alert.muted = reason
                self.counters["suppressed"] += 1
                return None
            built = self._notice(t)
            alert.notified_firing = True
            alert.muted = None
            return built
        if not alert.notified_firing or (kind != "resolved" and reason is not None):
            self.counters["suppressed"] += 1
            return None
        return self._notice(t)

    def _note_device_health(self, alert: Alert, firing: list[Alert]) -> None:
        """A red process alarm that a device-health alert of its device would have inhibited is delivered
        anyway; its notices say so in `context.device_health` (gone again once that alert is not)."""
        src = overridden_health(alert, self.muter.inhibit, firing)
        ctx = alert.context or {}
        if src is None:
            if "device_health" in ctx:
                alert.context = {k: v for k, v in ctx.items() if k != "device_health"}
            return
        last = (src.context or {}).get("last_reading_ns")
        alert.context = {**ctx, "device_health": {
            "alert_id": src.alert_id, "rule_id": src.rule_id, "severity": src.severity_name,
            "since": iso(src.firing_ns if src.firing_ns is not None else src.started_ns),
            "last_reading_ts": iso(int(last)) if last is not None else None,
        }}

    def _notice(self, t: Transition) -> tuple[Notice, list[tuple[str, int]]]:
        alert = t.alert
        alert.seq += 1
        alert.last_notice_ns = max(alert.last_notice_ns or 0, t.ts_ns)
        current = Snapshot.of(alert)
        t.snapshot.put(alert)  # the notice shows the alert as it was at the transition
        try:
            return self._build_notice(alert, t.kind, t.ts_ns, dict(t.extra))
        finally:
            current.put(alert)

    def _build_notice(self, alert: Alert, kind: str, ts: int, extra: dict[str, Any]
                      ) -> tuple[Notice, list[tuple[str, int]]]:
        labels = alert.labels(self._levels)
        matched = route(self.cfg.alerting.route, labels)
        receivers = receivers_of(matched)
        first = matched[0]
        group_labels = {g: labels.get(g, "") for g in first.group_by}
        gkey = (first.path, tuple(sorted(group_labels.items()))) if first.group_by else (first.path, alert.alert_id)
        due = self._groups.due(gkey, alert.alert_id, ts, first.group_wait_s, first.group_interval_s)
        if kind == "resolved":
            self._groups.leave(gkey, alert.alert_id)
        key = f"{alert.alert_id}:{alert.seq}"
        payload = self._payload(alert, kind, ts, key, extra, receivers, group_labels)
        notice = Notice(key, alert.alert_id, alert.seq, kind, ts, payload)
        return notice, [(r, due) for r in receivers]

    def _payload(self, a: Alert, kind: str, ts: int, key: str, extra: dict[str, Any], receivers: list[str],
                 group_labels: dict[str, str]) -> dict[str, Any]:
        ctx = a.context or {}
        return {
            "idempotency_key": key,
            "alert_id": a.alert_id,
            "seq": a.seq,
            "transition": kind,
            "ts": iso(ts),
            "ts_ns": ts,
            "state": a.state,
            "rule_id": a.rule_id,
            "rule_version": ctx.get("rule_version"),
            "dedupe_key": f"{a.site.get('id', '')}/{a.device_id}/{a.rule_id}",
            "category": a.category,
            "severity": a.severity_name,
            "severity_code": a.severity,
            # Additive (receivers that do not know them ignore them): the highest severity so far.
            "peak_severity": a.peak_severity_name,
            "peak_severity_code": a.peak_severity,
            "site": a.site,
            "device": a.device,
            "metric": ctx.get("metric"),
            "window": ctx.get("window"),
            "unit": ctx.get("unit"),
            "value": _num(a.value),
            "limit": _num(a.limit),
            "peak_value": _num(a.peak_value),
            "start_ts": iso(a.started_ns),
            "firing_ts": iso(a.firing_ns),
            "resolved_ts": iso(a.resolved_ns),
            "duration_s": round((ts - a.started_ns) / NS, 3),
            "flapping": a.flapping,
            "ack": {"by": a.acked_by, "name": a.acked_by_name, "at": iso(a.acked_ns), "note": a.ack_note}
            if a.acked_by else None,
            "escalation_level": a.escalation_level,
            "escalation_name": self._levels[min(a.escalation_level, len(self._levels) - 1)] if self._levels else None,
            "context": {k: v for k, v in ctx.items() if _jsonable(v)},
            "receivers": receivers,
            "group": group_labels,
            # The run (a simulation or replay) this service run belongs to: CITYWATCH_RUN_ID, when set.
            **({"run_id": self._run_id} if self._run_id else {}),
            **extra,
        }

    def _pump(self, now: int) -> None:
        """Hand every notice whose group time has come to the dispatcher."""
        while self._outbox and self._outbox[0][0] <= now:
            _, _, notice, sink = heapq.heappop(self._outbox)
            self.dispatcher.submit(notice, sink)

    def _persist_refreshes(self, force: bool = False) -> None:
        """Write refreshed alerts and flap history; transitions are written at once by `_emit`."""
        if not (self._dirty or self._dirty_flips):
            return
        if force or self._persist_soon or time.monotonic() - self._last_persist >= REFRESH_PERSIST_S:
            flips = {k: self._flips.get(k, []) for k in self._dirty_flips}
            self.store.commit(list(self._dirty.values()), [], flips, meta={"watermark": str(self._watermark)})
            self._dirty.clear()
            self._dirty_flips.clear()
            self._persist_soon = False
            self._last_persist = time.monotonic()

    # ----- operator commands ----------------------------------------------------------------------
    # A command is validated (alerts.commands) before it is stored as one to apply; one that does not
    # validate is stored as refused with its reason. Applying a stored command never raises: whatever
    # goes wrong marks it failed with the reason, and it is never tried again (at a tick or a start).

    def answers_rest(self) -> bool:
        """Whether this engine answers the commands that name no device of its own (single mode: always;
        partitioned: the owner of the inventory's lowest device id, alerts.command_scope)."""
        return command_scope.owns_first(self._owned, self._first_device)

    def submit_command(self, source: str, command: Any, author: command_rules.Author | None = None) -> str | None:
        """Validate, record and apply one operator command. Never raises.

        source:  where it came from, recorded (`mqtt:<topic>`, `cli:<login>`)
        command: the parsed command, or the raw payload (bytes/str, parsed here with the size and depth
                 bounds of alerts.commands.parse_payload)
        author:  who sends it, authenticated by the caller (the broker account of the topic, or the
                 local login); None is refused
        Returns "ok..." or "error: <why>" for the operator; None in partitioned mode when another worker
        answers it (alerts.command_scope): an ack of an alert of a device another worker owns is left to that
        worker (neither applied nor recorded here, counted in `commands_elsewhere`); a silence is applied
        here too, and a refusal recorded, but one worker answers them."""
        # Parsing and validating read only the payload, the author and the config: done before the engine's
        # lock, so no command, however hostile, holds detections and notices while it is checked.
        try:
            command, checked = self._check_command(command, author)
            with self._lock:
                return self._submit(source, command, author, checked)
        except Exception as exc:  # noqa: BLE001 - e.g. the store is unwritable: say so, never raise
            with self._lock:
                self._count("commands_failed")
            log.exception("alert command from %s could not be handled", source)
            return f"error: internal: {type(exc).__name__}: {_cut(str(exc))}"

    def _check_command(self, command: Any, author: command_rules.Author | None) -> tuple[Any, dict[str, Any] | ValueError]:
        """(the command as parsed, its validated form or the ValueError that refuses it)."""
        try:
            if author is None:
                raise ValueError("no authenticated author: send commands as your own operator account")
            why = command_rules.author_allowed(self.cfg, author)
            if why:
                raise ValueError(why)
            if isinstance(command, (bytes, bytearray, str)):
                command = command_rules.parse_payload(command)
            return command, command_rules.validate(command, self.cfg, author)
        except ValueError as exc:
            return command, exc

    def _submit(self, source: str, command: Any, author: command_rules.Author | None,
                checked: dict[str, Any] | ValueError) -> str | None:
        rest = self.answers_rest()
        if isinstance(checked, ValueError):
            result = f"error: {checked}"
            self.store.add_command(source, command_rules.record_form(command),
                                   author.account if author else None, author.name if author else None, status="refused", result=result)
            self._count("commands_refused")
            log.info("alert command from %s refused: %s", source, result)
            return result if rest else None
        assert author is not None  # a command without one is refused by _check_command
        cmd = checked
        if cmd["action"] == "ack":
            held = self._by_id.get(cmd["alert_id"])
            if not command_scope.answers_ack(cmd["alert_id"], held is not None and held.open, self._owned,
                                             self._device_ids):
                self._count("commands_elsewhere")
                return None
        elif self._owned is not None and cmd["action"] == "silence" and not cmd.get("id"):
            cmd["id"] = command_scope.shared_silence_id(author.account, cmd)
        cid = self.store.add_command(source, cmd, author.account, author.name)
        result = self._apply_command(cid, cmd, author)
        return result if rest or cmd["action"] == "ack" else None

    def _apply_inbox(self) -> None:
        """Apply the commands queued in the store (by the terminal, or left by a crash). Never raises."""
        try:
            rows = self.store.unapplied_commands()
        except Exception:  # noqa: BLE001 - the inbox is retried on the next tick; alerting goes on
            self._log_once(("inbox", "read"), "could not read the alert command inbox")
            return
        for row in rows:
            if row.id in self._commands_given_up:
                continue
            try:
                if row.error:
                    raise ValueError(row.error)
                if row.author is None:
                    raise ValueError("no authenticated author (a command stored by an earlier version): send it again")
                author = command_rules.Author(row.author, row.author_name or row.author)
                why = command_rules.author_allowed(self.cfg, author)
                if why:
                    raise ValueError(why)
                cmd = command_rules.validate(row.command, self.cfg, author)
            except Exception as exc:  # noqa: BLE001 - any stored row, however written, is marked, never raised
                self._mark_command(row.id, f"error: {exc}" if isinstance(exc, ValueError)
                                   else f"error: internal: {type(exc).__name__}: {_cut(str(exc))}")
                continue
            self._apply_command(row.id, cmd, author)

    def _apply_command(self, cid: int, cmd: dict[str, Any], author: command_rules.Author) -> str:
        """Apply a validated command and mark its row applied or failed. Never raises."""
        try:
            result = self._apply(cmd, author)
        except ValueError as exc:
            result = f"error: {exc}"
        except Exception as exc:  # noqa: BLE001 - a command that breaks something is failed, not retried
            log.exception("alert command %s failed", cid)
            result = f"error: internal: {type(exc).__name__}: {_cut(str(exc))}"
        self._mark_command(cid, result)
        log.info("alert command %s by %s (%s): %s", cmd.get("action"), author.account, author.name, result)
        return result

    def _mark_command(self, cid: int, result: str) -> None:
        status = "applied" if result.startswith("ok") else "failed"
        if status == "failed":
            self._count("commands_failed")
        try:
            self.store.mark_command(cid, result, status)
        except Exception:  # noqa: BLE001 - not retried in this process either way
            self._commands_given_up.add(cid)
            self._log_once(("mark", cid), f"could not mark alert command {cid} as {status}")

    def _apply(self, cmd: dict[str, Any], author: command_rules.Author) -> str:
        now = self._now()
        trans: list[Transition] = []
        if cmd["action"] == "ack":
            alert = self._by_id.get(cmd["alert_id"])
            if alert is None or not alert.open:
                stored = self.store.alert(cmd["alert_id"])
                if stored is None:
                    raise ValueError(f"no alert {cmd['alert_id']!r}")
                raise ValueError(f"alert {cmd['alert_id']!r} is {stored.state}: nothing to acknowledge")
            if alert.acked_by:
                return f"ok: already acknowledged by {alert.acked_by}"
            alert.acked_by, alert.acked_by_name = author.account, author.name
            alert.acked_ns, alert.ack_note = now, cmd.get("note") or None
            self._dirty[alert.alert_id] = alert
            if alert.state == "firing":
                trans.append(lifecycle.transition(alert, "acknowledged", now))
            self._emit(trans, now)
            self._persist_refreshes(force=True)
            self._pump(now)
            return "ok"
        if cmd["action"] == "silence":
            sid = cmd.get("id") or uuid.uuid4().hex[:12]
            s = Silence(sid, cmd["matchers"], author.account, cmd["comment"], now, now + int(cmd["expires_s"] * NS),
                        created_ns=now)
            # Stored first: a silence the store cannot hold must not mute anything in memory either.
            self.store.commit([], [], silences=[s])
            self.muter.silences[sid] = s
            return f"ok: silence {sid} until {iso(s.expires_ns)}"
        active = self.muter.silences.get(cmd["silence_id"])
        if active is None:
            raise ValueError(f"no active silence {cmd['silence_id']!r}")
        ended = Silence(**{**active.to_dict(), "ended_by": author.account, "expires_ns": min(active.expires_ns, now)})
        self.store.commit([], [], silences=[ended])
        del self.muter.silences[active.id]
        self._advance_all(now, trans)
        self._emit(trans, now)
        self._pump(now)
        return "ok"

    def _count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def _log_once(self, key: tuple[Hashable, ...], message: str) -> None:
        """Log an exception once per key (e.g. (alert id, error type)): a fault repeated every tick
        would otherwise bury everything else in the log."""
        self._count("errors")
        if key in self._logged_once:
            return
        self._logged_once.add(key)
        log.exception("%s (logged once; counted in counters['errors'])", message)

    def _alert_fault(self, alert: Alert, exc: BaseException) -> None:
        """One alert's timers raised: count it, log it once per (alert, error type), and let the tick go
        on with the other alerts (a bad record must not stop escalation and expiry of all the rest)."""
        self._log_once((alert.alert_id, type(exc).__name__), f"alert {alert.alert_id} could not be advanced")

    # ----- views ----------------------------------------------------------------------------------

    def active(self) -> list[Alert]:
        """Open alerts (pending and firing), red first, then oldest first."""
        with self._lock:
            return sorted(self._open.values(), key=lambda a: (-a.severity, a.started_ns))

    def alert(self, alert_id: str) -> Alert | None:
        with self._lock:
            return self._by_id.get(alert_id) or self.store.alert(alert_id)

    def flush(self, timeout_s: float = 10.0) -> bool:
        """Wait until every due notice has been sent (or failed for good)."""
        return self.dispatcher.flush(timeout_s)


def _json_safe(d: dict[str, Any]) -> dict[str, Any]:
    """An alert's fields for JSON: NaN values as None (read back as NaN by `alert_from_state`)."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items()}


def alert_from_state(d: dict[str, Any]) -> Alert:
    d = dict(d)
    for k in ("value", "limit", "peak_value"):
        if d.get(k) is None:
            d[k] = float("nan")
    return Alert.from_dict(d)


def _names(keys: Collection[object], alert: Alert) -> bool:
    """Whether `keys` (rule ids and (rule id, device id) keys) names the alert's rule or key."""
    return alert.rule_id in keys or alert.key in keys


def _direction(alert: Alert) -> int:
    """+1 for a condition above its limit, -1 below; an alert from an older store infers it from its peak."""
    if alert.direction == 0:
        below = not math.isnan(alert.peak_value) and not math.isnan(alert.limit) and alert.peak_value < alert.limit
        alert.direction = -1 if below else 1
    return alert.direction


def _cut(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _num(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _jsonable(v: object) -> bool:
    return v is None or isinstance(v, (str, int, float, bool, list, dict))
