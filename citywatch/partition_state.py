"""`--partitions auto`: each partition's detector state and open alerts in the cluster's replicated object store,
so the worker that takes a partition over goes on from where its last owner was (README "Cluster mode").

The state is the detector snapshot of detectors/snapshot.py (its own serialization) cut down to the devices of
one partition, with their open alerts (AlertEngine.export_alerts: ids, sequence numbers, flap histories,
undelivered notices): object STATE_BUCKET/p<k>, R3 like the MQTT sessions, written every `every_s`, within
SNAPSHOT_AFTER_ALERT_S of an alert transition of the partition (at most once per that), and when the partition
is given up (the old owner then drops its alerts without a notice). The alerts alone are written to the
key-value bucket ALERTS_BUCKET (key a.<k>, one small write) after every transition, and the transition's
notices reach the sinks only once that write is done (AlertEngine.hold_until_saved): a worker killed before
it has sent nothing its taker does not know of. The taker restores the detector snapshot and the newer of the
two alert copies (by `saved_ns`) before its session opens.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alerts.engine import alert_from_state
from citywatch.cluster import partition_of
from citywatch.partition_lease import ALERTS_BUCKET, LEASE_BUCKET, STATE_BUCKET
from detectors import snapshot
from detectors.snapshot import Piece, Snapshot

log = logging.getLogger(__name__)


# An object starts with MAGIC, the length of the alerts' JSON (8 bytes, big-endian), that JSON, then the detector
# snapshot file; an object without MAGIC (written before alerts moved) is the snapshot file alone.
MAGIC = b"CWPS1\n"
# After an alert transition the partition's detector snapshot follows within this (s), at most once per it: a
# snapshot costs a capture of every rule under the detectors' lock, a file and four store round trips
# (measured: saved after every transition of a 4 Hz flapping probe it took 50-65 ms CPU/s of the worker).
SNAPSHOT_AFTER_ALERT_S = 2.0
# Alerts larger than this do not fit a key-value message (NATS max_payload, 1 MB by default): they go in the
# object instead (a full save), and the key is deleted so the object is the newer copy.
ALERTS_KV_MAX_BYTES = 900_000
# A transition's notices wait for its alerts' write at most this long (s): a cluster that does not answer
# delays an alarm by this, never more (the notices then go unsaved, logged).
ALERTS_SAVE_TIMEOUT_S = 2.0


def partition_devices(cfg, k: int, total: int) -> set[str]:
    """Ids of the inventory devices the cluster's mapping sends to partition k: by site (data, status, event
    topics), HJ 212 frames by MN; a device without either is partition 0's (whose session takes the topics the
    mapping leaves)."""
    def partition(d) -> int:
        key = d.mn_or_id if d.protocol == "hj212" else d.site
        return partition_of(key, total) if key else 0

    return {d.id for d in cfg.devices if partition(d) == k}


def cut(snap: Snapshot, devices: set[str]) -> Snapshot:
    """The part of `snap` that belongs to `devices`: each piece with only their rows. A piece whose state is
    not per device (shared by every device of the rule) cannot be split and is left out: the taker keeps its
    own there."""
    pieces = {}
    for key, p in snap.pieces.items():
        rows = np.flatnonzero(np.isin(np.asarray(p.devices, str), np.asarray(sorted(devices), str)))
        n = len(p.devices)
        if not len(rows) or any(a.shape[:1] != (n,) for a in p.arrays.values()) or p.dev_fp.shape[:1] != (n,):
            continue
        pieces[key] = Piece(key, p.fp, [p.devices[i] for i in rows], p.dev_fp[rows],
                            {name: a[rows] for name, a in p.arrays.items()}, dict(p.scalars), p.needs)
    return Snapshot(pieces, snap.watermark_ns, snap.saved_ns)


def to_bytes(snap: Snapshot, alerts: dict | None = None) -> bytes:
    """The object's bytes: MAGIC, the alerts' JSON (AlertEngine.export_alerts; None: none) and the snapshot
    file's bytes (detectors.snapshot.write)."""
    with tempfile.TemporaryDirectory(prefix="cw-state-") as d:
        path = Path(d) / "p.npz"
        snapshot.write(snap, path)
        head = json.dumps(alerts or {}, sort_keys=True).encode()
        return MAGIC + len(head).to_bytes(8, "big") + head + path.read_bytes()


def alerts_in_object(data: bytes) -> dict | None:
    """The alerts of an object's bytes (to_bytes) without reading its snapshot; None for a bare snapshot file
    (written before alerts moved) or an unreadable head."""
    if not data.startswith(MAGIC):
        return None
    start = len(MAGIC) + 8
    try:
        return json.loads(data[start:start + int.from_bytes(data[len(MAGIC):start], "big")]) or None
    except ValueError:
        return None


def from_bytes(data: bytes) -> tuple[Snapshot, dict | None]:
    """(snapshot, alerts or None) from the bytes of to_bytes (or a bare snapshot file). Raises
    detectors.snapshot.SnapshotError for bytes that are neither."""
    alerts = None
    if data.startswith(MAGIC):
        n = int.from_bytes(data[len(MAGIC):len(MAGIC) + 8], "big")
        start = len(MAGIC) + 8
        try:
            alerts = json.loads(data[start:start + n]) or None
        except ValueError as exc:
            raise snapshot.SnapshotError(f"the alerts of the partition state are not JSON: {exc}") from None
        data = data[start + n:]
    fd, name = tempfile.mkstemp(prefix="cw-state-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        return snapshot.read(name), alerts
    finally:
        os.unlink(name)


def split_alerts(alerts: dict, devices: set[str]) -> dict:
    """The part of an AlertEngine.export_alerts result that belongs to `devices`."""
    return {**alerts, "alerts": [a for a in alerts.get("alerts", []) if a["device_id"] in devices],
            "flips": [f for f in alerts.get("flips", []) if f[1] in devices],
            "notices": [n for n in alerts.get("notices", []) if (n["payload"].get("device") or {}).get("id") in devices]}


def newer_alerts(kv_alerts: dict | None, obj_alerts: dict | None, obj_saved_ns: int) -> dict | None:
    """The newer of a partition's two alert copies: the key-value one (alerts only, written after every
    transition) and the object's (with the detector snapshot), by `saved_ns` (an object written before alerts
    carried it: the snapshot's time)."""
    if kv_alerts is None:
        return obj_alerts
    if obj_alerts is None:
        return kv_alerts
    obj_ns = int(obj_alerts.get("saved_ns") or obj_saved_ns or 0)
    return kv_alerts if int(kv_alerts.get("saved_ns") or 0) >= obj_ns else obj_alerts


class PartitionState:
    """Saves and restores the detector state and open alerts of partitions for one worker's DetectionPipeline.

    pipeline: citywatch.pipeline.DetectionPipeline (capture_partition / hand_over / take_over, its engine's
    checkpoint_alerts); cfg: the config (inventory, partition count); every_s: how often the owned partitions'
    detector state is saved (also within SNAPSHOT_AFTER_ALERT_S of an alert transition). Every call but `notify`
    runs on the lease loop.
    """

    def __init__(self, pipeline, cfg, every_s: float = 30.0) -> None:
        self.pipeline = pipeline
        self.total = cfg.connections.cluster.partitions
        self.devices = {k: partition_devices(cfg, k, self.total) for k in range(self.total)}
        self._partition = {d: k for k, devs in self.devices.items() for d in devs}
        self.every_s = every_s
        self.saved_at = time.monotonic()
        self.store = None
        self.kv = None
        self.owned: set[int] = set()
        self._dirty: set[int] = set()     # partitions whose alerts changed since their last alerts save
        self._snap_due: set[int] = set()  # partitions whose snapshot is to follow their alerts
        self._leaving: set[int] = set()   # partitions being handed over (give_up)
        self._snap_mark: dict[int, tuple] = {}  # what the pipeline had evaluated at each partition's last snapshot
        self._loop: asyncio.AbstractEventLoop | None = None
        self._io: asyncio.Lock | None = None     # the object store, hand-overs and restores
        self._kv_io: asyncio.Lock | None = None  # the alerts' key-value writes
        self._savers: list[asyncio.Task] = []
        self._wake: asyncio.Event | None = None       # alerts changed
        self._snap_wake: asyncio.Event | None = None  # a snapshot is due
        # For the Prometheus endpoint (`metrics`): monotonic s of each partition's last saves, counts.
        self.snapshot_saved_at: dict[int, float] = {}
        self.alerts_saved_at: dict[int, float] = {}
        self.counts = {"snapshot_saves": 0, "alerts_saves": 0, "save_errors": 0, "skipped_saves": 0,
                       "restores": 0, "hand_overs": 0}

    async def open(self, js, replicas: int) -> None:
        from nats.js.api import KeyValueConfig, ObjectStoreConfig
        from nats.js.errors import BucketNotFoundError

        try:
            self.store = await js.object_store(STATE_BUCKET)
        except BucketNotFoundError:
            # nats-py takes the bucket name beside the config (it overwrites the config's with it).
            self.store = await js.create_object_store(STATE_BUCKET, config=ObjectStoreConfig(
                bucket=STATE_BUCKET, replicas=replicas,
                description="citywatch detector state per partition (citywatch/partition_state.py)"))
        try:
            self.kv = await js.key_value(ALERTS_BUCKET)
        except BucketNotFoundError:
            self.kv = await js.create_key_value(KeyValueConfig(
                bucket=ALERTS_BUCKET, history=1, replicas=replicas,
                description="citywatch open alerts per partition (citywatch/partition_state.py)"))
        self._loop = asyncio.get_running_loop()
        self._io = asyncio.Lock()
        self._kv_io = asyncio.Lock()
        self._wake = asyncio.Event()
        self._snap_wake = asyncio.Event()
        self._savers = [self._loop.create_task(self._save_soon()), self._loop.create_task(self._snapshot_soon())]
        engine = self.pipeline.engine
        engine.hold_until_saved = True
        engine.on_transitions = self.notify

    def reconfigure(self, cfg) -> None:
        """A reload hook (DetectionPipeline.reload_hooks, under the pipeline's lock): the partitions' devices
        follow the new inventory (a device added to an owned partition's site raises alerts here; one moved to
        another partition's site is that partition's owner's from now on, its open alerts dropped here without
        a notice). The partition count stays: the cluster's subject mapping has it (a restart of nodes and
        workers changes it)."""
        total = cfg.connections.cluster.partitions
        if total != self.total:
            log.warning("reload: connections.cluster.partitions %d -> %d takes effect only after a restart of the "
                        "cluster's nodes and every worker; keeping %d", self.total, total, self.total)
        self.devices = {k: partition_devices(cfg, k, self.total) for k in range(self.total)}
        self._partition = {d: k for k, devs in self.devices.items() for d in devs}
        owned = list(self.owned)
        self.pipeline.engine.set_owned(set().union(*(self.devices[k] for k in owned)) if owned else set())

    def notify(self, devices: set[str]) -> None:
        """From the alert engine (any thread, under its lock): alerts of `devices` changed; their partitions'
        alerts are saved at once (their notices wait for it), their detector snapshot soon."""
        loop = self._loop
        parts = {self._partition.get(d, -1) for d in devices}
        if loop is None or not parts or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._mark, parts)

    def _mark(self, parts: set[int]) -> None:
        self._dirty |= parts
        if self._wake is not None:
            self._wake.set()

    async def _save_soon(self) -> None:
        """The alerts' saver: each alert change's partitions have their alerts written as soon as the last write
        is done (a burst of transitions costs one write); their snapshot is due SNAPSHOT_AFTER_ALERT_S later."""
        assert self._wake is not None and self._snap_wake is not None
        while True:
            await self._wake.wait()
            self._wake.clear()
            parts, self._dirty = self._dirty, set()
            if not parts:
                continue
            try:
                await self.save_alerts(sorted(parts))
            except Exception:  # noqa: BLE001 - never leave notices held: they go unsaved, logged
                log.exception("partition alerts not saved; their notices go anyway")
                engine = self.pipeline.engine
                engine.release_unsaved(engine.take_unsaved())
            self._snap_due |= parts & self.owned
            self._snap_wake.set()

    async def _snapshot_soon(self) -> None:
        """The snapshots' saver, apart from the alerts' (a snapshot takes much longer, and notices wait for the
        alerts' writes only): at most one snapshot save per SNAPSHOT_AFTER_ALERT_S."""
        assert self._snap_wake is not None
        while True:
            await self._snap_wake.wait()
            self._snap_wake.clear()
            if self._snap_due:
                due, self._snap_due = sorted(self._snap_due), set()
                started = time.monotonic()
                try:
                    await self.save(due)
                except Exception:  # noqa: BLE001 - the next one saves again
                    log.exception("partition detector state not saved")
                await asyncio.sleep(max(0.0, started + SNAPSHOT_AFTER_ALERT_S - time.monotonic()))

    async def close(self) -> None:
        """Stop the saves (the lease loop's end); notices still held go to their sinks."""
        engine = self.pipeline.engine
        engine.on_transitions = None
        engine.hold_until_saved = False
        for task in self._savers:
            task.cancel()
        engine.release_unsaved(engine.take_unsaved())

    def _mark_now(self) -> tuple:
        """What the pipeline has evaluated so far: a partition whose snapshot was saved at the same mark has
        nothing new to save."""
        c = getattr(self.pipeline, "counters", {})
        return c.get("batches"), c.get("readings"), getattr(self.pipeline.engine, "counters", {}).get("notices")

    async def save_alerts(self, partitions: list[int]) -> None:
        """Write the open alerts of `partitions` still owned to the key-value bucket (one write each), then let
        their held notices go; held notices of devices in no owned partition go at once. Logs and goes on when
        the store fails (the notices then go anyway: alerting matters more than the window it closes)."""
        engine = self.pipeline.engine
        if self.kv is None or self._kv_io is None:
            engine.release_unsaved(engine.take_unsaved())
            return
        async with self._kv_io:
            todo = [k for k in partitions if k in self.owned]
            everything: dict = {}
            held_of: dict[int, list] = {k: [] for k in todo}
            stamp = 0
            if todo:
                # One export for all of them, cut per partition: an export reads and parses every pending
                # delivery in the store (up to 600 in bench_cluster's batch shape, the MQTT sink behind), under
                # the engine's lock; once per partition that was most of this thread's CPU. Each partition's
                # held notices still go only once its own write is done.
                everything, held = engine.checkpoint_alerts(set().union(*(self.devices[k] for k in todo)))
                stamp = time.time_ns()
                for u in held:
                    j = self._partition.get(u[1].device_id or "", todo[0])
                    held_of[j if j in held_of else todo[0]].append(u)
            try:
                for k in todo:
                    alerts = split_alerts(everything, self.devices[k])
                    alerts["saved_ns"] = stamp
                    try:
                        data = json.dumps(alerts, sort_keys=True).encode()
                        if len(data) > ALERTS_KV_MAX_BYTES:  # too large for one message: the object carries them
                            await self.save([k], force=True)
                            await self.kv.delete(f"a.{k}")
                        else:
                            await asyncio.wait_for(self.kv.put(f"a.{k}", data), ALERTS_SAVE_TIMEOUT_S)
                        self.counts["alerts_saves"] += 1
                        self.alerts_saved_at[k] = time.monotonic()
                    except Exception as exc:  # noqa: BLE001 - the notices go anyway; the next transition saves again
                        self.counts["save_errors"] += 1
                        log.warning("partition %d: open alerts not saved to the cluster (their notices go anyway): %s",
                                    k, exc if str(exc) else type(exc).__name__)
                    finally:
                        engine.release_unsaved(held_of.pop(k))
            finally:  # a cancelled save (the lease loop's end) lets the rest go too
                for rest in held_of.values():
                    engine.release_unsaved(rest)
            # Notices of devices no owned partition holds (a race with a hand-over, a device a reload added).
            # (Those of a partition being handed over go once the hand-over is written: give_up.)
            kept = self.owned | self._leaving
            mine = set().union(*(self.devices[k] for k in kept)) if kept else set()
            engine.release_unsaved(engine.take_unsaved(mine, others=True))

    async def save(self, partitions: list[int], force: bool = False) -> None:
        """Write the state of `partitions` still owned (one capture for all), skipping a partition whose last
        snapshot was taken at the same point of evaluation (nothing new; `force` writes anyway). Logs and goes on
        when the store fails."""
        if not partitions or self.store is None or self._io is None:
            return
        loop = asyncio.get_running_loop()
        async with self._io:
            mark = self._mark_now()
            todo = [k for k in partitions if k in self.owned and (force or self._snap_mark.get(k) != mark)]
            self.counts["skipped_saves"] += len([k for k in partitions if k in self.owned]) - len(todo)
            if not todo:
                return
            devices = set().union(*(self.devices[k] for k in todo))
            # Stamped before the capture, the alerts' key-value copy after its export: the newer stamp on restore
            # is then the copy that holds every notice already let go. On an executor thread: the capture waits
            # for the detector thread's batch (the pipeline's lock).
            stamp = time.time_ns()
            snap, alerts = await loop.run_in_executor(None, self.pipeline.capture_partition, devices)
            alerts["saved_ns"] = stamp
            for k in todo:
                if await self._put(k, cut(snap, self.devices[k]), split_alerts(alerts, self.devices[k])):
                    self._snap_mark[k] = mark

    async def _put(self, k: int, part: Snapshot, alerts: dict) -> bool:
        assert self.store is not None
        try:
            data = await asyncio.get_running_loop().run_in_executor(None, to_bytes, part, alerts)
            info = await self.store.put(f"p{k}", data)
            self.counts["snapshot_saves"] += 1
            self.snapshot_saved_at[k] = time.monotonic()
            log.debug("partition %d: state saved (%d bytes, %d pieces, %d open alerts)", k, info.size,
                      len(part.pieces), len(alerts.get("alerts", [])))
            return True
        except Exception as exc:  # noqa: BLE001 - the last saved state stays; next save
            self.counts["save_errors"] += 1
            log.warning("partition %d: detector state not saved: %s", k, exc)
            return False

    async def give_up(self, k: int, save: bool) -> None:
        """Stop owning partition k's devices (after its session was closed): their open alerts are dropped
        without a notice. save: write its state for the next owner first (a hand-over); False when the lease
        was lost (the new owner's state is newer than ours)."""
        if self._io is None:
            return
        loop = asyncio.get_running_loop()
        engine = self.pipeline.engine
        async with self._io:  # not the alerts' writes: a copy written meanwhile is older (saved_ns)
            self._leaving.add(k)
            self.owned.discard(k)
            self._snap_mark.pop(k, None)
            try:
                snap, alerts = await loop.run_in_executor(None, self.pipeline.hand_over, self.devices[k])
                alerts["saved_ns"] = time.time_ns()
                if save and self.store is not None:
                    await self._put(k, cut(snap, self.devices[k]), alerts)
                    if self.kv is not None:
                        try:  # the object is the newer copy now; an alerts key left behind would be older anyway
                            await self.kv.delete(f"a.{k}")
                        except Exception as exc:  # noqa: BLE001
                            log.debug("partition %d: alerts key not deleted (%s)", k, exc)
            finally:
                # Its held notices are all from before the hand-over's export (in it): they go now.
                engine.release_unsaved(engine.take_unsaved(self.devices[k]))
                self._leaving.discard(k)
            self.counts["hand_overs"] += 1
        if alerts.get("alerts"):
            log.info("partition %d: %d open alerts %s with it", k, len(alerts["alerts"]),
                     "handed over" if save else "dropped (lease lost)")

    async def restore(self, k: int) -> None:
        """Own partition k's devices from now on: load its saved detector state into the pipeline's rules (its
        devices only) and go on with its open alerts (the newer of the key-value and the object copy). No saved
        state, or one that cannot be used, leaves the worker's own detector state for them (logged)."""
        from nats.js.errors import KeyDeletedError, KeyNotFoundError, ObjectNotFoundError

        if self._io is None:
            return
        loop = asyncio.get_running_loop()
        async with self._io:  # not the alerts' writes: a copy written meanwhile is older (saved_ns)
            snap, alerts, kv_alerts = None, None, None
            try:
                res = await self.store.get(f"p{k}") if self.store is not None else None
                if res is not None:
                    snap, alerts = from_bytes(res.data)
            except ObjectNotFoundError:
                log.info("partition %d: no saved detector state; its devices' detectors go on from here", k)
            except snapshot.SnapshotError as exc:
                log.warning("partition %d: saved detector state unusable: %s", k, exc)
            except Exception as exc:  # noqa: BLE001
                log.warning("partition %d: detector state not read (%s); its devices' detectors go on from here",
                            k, exc)
            try:
                entry = await self.kv.get(f"a.{k}") if self.kv is not None else None
                kv_alerts = json.loads(entry.value) if entry is not None and entry.value else None
            except (KeyNotFoundError, KeyDeletedError):
                pass
            except Exception as exc:  # noqa: BLE001
                log.warning("partition %d: saved open alerts not read (%s); those of the detector state are used",
                            k, exc)
            alerts = newer_alerts(kv_alerts, alerts, snap.saved_ns if snap is not None else 0)
            report, adopted = await loop.run_in_executor(None, self.pipeline.take_over, self.devices[k], snap,
                                                         alerts, f"partition {k}")
            self.owned.add(k)
            self.counts["restores"] += 1
        if snap is None or report is None:
            if adopted:
                log.info("partition %d: %d open alerts adopted (no detector state)", k, adopted)
            return
        devices = sum(int(r.restored.sum()) for r in report.pieces.values() if r.key in snap.pieces)
        age = (time.time_ns() - snap.saved_ns) / 1e9
        log.info("partition %d: detector state restored (%d pieces, %d device states, %d open alerts, saved %.0f s "
                 "ago)", k, len(snap.pieces), devices, adopted, age)

    def metrics(self, now: float | None = None) -> dict:
        """For the Prometheus endpoint: seconds since each owned partition's last snapshot save (None: not yet
        saved by this worker) and the counts."""
        now = time.monotonic() if now is None else now
        return {"snapshot_age_s": {k: (now - self.snapshot_saved_at[k]) if k in self.snapshot_saved_at else None
                                   for k in sorted(self.owned)},
                "counts": dict(self.counts)}


# ----- the one board across workers (`citywatch alerts list|show` given a cluster) -------------------------------

# Seconds to connect to a node (each tried in turn) and to read everything: the board of an unreachable cluster
# says so within about this, never hangs.
BOARD_CONNECT_TIMEOUT_S = 3
BOARD_READ_TIMEOUT_S = 10.0


@dataclass
class PartitionAlerts:
    """One partition's open alerts as the cluster holds them (the newer of its key-value and object copies).

    owner: the worker holding its lease now (None: none, a takeover under way or no worker running); saved_ns:
    wall time of that copy (None: never saved); watermark_ns: the engine clock of its writer then."""

    partition: int
    owner: str | None
    alerts: list
    saved_ns: int | None
    watermark_ns: int


class ClusterUnreachable(Exception):
    """The cluster's nodes did not answer (the reason, for one line)."""


def cluster_alerts(cfg, env: dict, timeout_s: float = BOARD_READ_TIMEOUT_S) -> list[PartitionAlerts]:
    """Every partition's open alerts and owner, read from the cluster's nodes (connections.cluster.nats) as the
    service account (connections.mqtt.username, its password_env). Raises ClusterUnreachable when no node answers
    within BOARD_CONNECT_TIMEOUT_S each, or the reads do not end within `timeout_s`."""
    cl, mq = cfg.connections.cluster, cfg.connections.mqtt
    if not cl.nats:
        raise ClusterUnreachable("connections.cluster.nats names no node (CITYWATCH_CLUSTER_NATS; "
                                 ".stack/cluster.env sets it)")
    password = env.get(mq.password_env) if mq.password_env else None
    return asyncio.run(_read_cluster(cl.nats_urls(), mq.username, password, cl.partitions, timeout_s))


async def _read_cluster(servers: list[str], user: str | None, password: str | None, total: int,
                        timeout_s: float) -> list[PartitionAlerts]:
    import nats
    import nats.errors

    errors: list[BaseException] = []

    async def keep(exc: BaseException) -> None:  # instead of nats-py's log line per failed try
        errors.append(exc)

    where = ", ".join(servers)
    try:
        # One pass over the nodes (max_reconnect_attempts=1), each within the connect timeout.
        nc = await asyncio.wait_for(nats.connect(
            servers=servers, user=user, password=password, name="citywatch-alerts-board", error_cb=keep,
            connect_timeout=BOARD_CONNECT_TIMEOUT_S, reconnect_time_wait=0.2, max_reconnect_attempts=1),
            BOARD_CONNECT_TIMEOUT_S * len(servers) + 1)
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        why = errors[-1] if errors else exc
        reason = ("connection refused" if isinstance(why, ConnectionRefusedError) else
                  "timed out" if isinstance(why, TimeoutError) else str(why) or type(why).__name__)
        raise ClusterUnreachable(f"cannot reach the cluster at {where}: {reason}") from None
    try:
        return await asyncio.wait_for(_read_partitions(nc.jetstream(timeout=timeout_s), total), timeout_s)
    except (nats.errors.Error, TimeoutError) as exc:
        raise ClusterUnreachable(f"the cluster at {where} did not answer: {exc or type(exc).__name__}") from None
    finally:
        await nc.close()


async def _read_partitions(js, total: int) -> list[PartitionAlerts]:
    from nats.js.errors import NotFoundError

    async def bucket(opener, name):
        try:
            return await opener(name)
        except NotFoundError:  # no worker has written one yet
            return None

    alerts_kv = await bucket(js.key_value, ALERTS_BUCKET)
    leases = await bucket(js.key_value, LEASE_BUCKET)
    store = await bucket(js.object_store, STATE_BUCKET)

    async def value(kv, key: str) -> bytes | None:
        try:
            return (await kv.get(key)).value if kv is not None else None
        except NotFoundError:
            return None

    async def partition(k: int) -> PartitionAlerts:
        kv_data, owner = await value(alerts_kv, f"a.{k}"), await value(leases, f"p.{k}")
        try:
            obj = alerts_in_object((await store.get(f"p{k}")).data) if store is not None else None
        except NotFoundError:
            obj = None
        newest = newer_alerts(json.loads(kv_data) if kv_data else None, obj, 0) or {}
        return PartitionAlerts(k, owner.decode() if owner else None,
                               [alert_from_state(a) for a in newest.get("alerts", [])],
                               int(newest["saved_ns"]) if newest.get("saved_ns") else None,
                               int(newest.get("watermark_ns") or 0))

    return list(await asyncio.gather(*(partition(k) for k in range(total))))
