"""`--partitions auto`: each partition's detector state and open alerts in the cluster's replicated object store,
so the worker that takes a partition over goes on from where its last owner was (README "Cluster mode").

The state is the detector snapshot of detectors/snapshot.py (its own serialization) cut down to the devices of
one partition, with their open alerts (AlertEngine.export_alerts: ids, sequence numbers, flap histories,
undelivered notices) in one object, so the two never disagree. It is saved every `every_s`, soon after any
alert transition of the partition, and when the partition is given up (the old owner then drops its alerts
without a notice); the taker restores both before its session opens. Object STATE_BUCKET/p<k>, R3 like the
MQTT sessions.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from citywatch.cluster import partition_of
from citywatch.partition_lease import STATE_BUCKET
from detectors import snapshot
from detectors.snapshot import Piece, Snapshot

log = logging.getLogger(__name__)


# An object starts with MAGIC, the length of the alerts' JSON (8 bytes, big-endian), that JSON, then the detector
# snapshot file; an object without MAGIC (written before alerts moved) is the snapshot file alone.
MAGIC = b"CWPS1\n"
# A partition whose alerts changed is saved this soon (s) after, with whatever else changed meanwhile.
PROMPT_SAVE_S = 0.05


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


class PartitionState:
    """Saves and restores the detector state and open alerts of partitions for one worker's DetectionPipeline.

    pipeline: citywatch.pipeline.DetectionPipeline (capture_partition / hand_over / take_over); cfg: the config
    (inventory, partition count); every_s: how often the owned partitions' state is saved (and soon after any
    of their alerts' transitions). Every call but `notify` runs on the lease loop, one store operation at a time.
    """

    def __init__(self, pipeline, cfg, every_s: float = 30.0) -> None:
        self.pipeline = pipeline
        self.total = cfg.connections.cluster.partitions
        self.devices = {k: partition_devices(cfg, k, self.total) for k in range(self.total)}
        self._partition = {d: k for k, devs in self.devices.items() for d in devs}
        self.every_s = every_s
        self.saved_at = time.monotonic()
        self.store = None
        self.owned: set[int] = set()
        self._dirty: set[int] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._io: asyncio.Lock | None = None
        self._saver: asyncio.Task | None = None
        self._wake: asyncio.Event | None = None

    async def open(self, js, replicas: int) -> None:
        from nats.js.api import ObjectStoreConfig
        from nats.js.errors import BucketNotFoundError

        try:
            self.store = await js.object_store(STATE_BUCKET)
        except BucketNotFoundError:
            # nats-py takes the bucket name beside the config (it overwrites the config's with it).
            self.store = await js.create_object_store(STATE_BUCKET, config=ObjectStoreConfig(
                bucket=STATE_BUCKET, replicas=replicas,
                description="citywatch detector state per partition (citywatch/partition_state.py)"))
        self._loop = asyncio.get_running_loop()
        self._io = asyncio.Lock()
        self._wake = asyncio.Event()
        self._saver = self._loop.create_task(self._save_soon())
        self.pipeline.engine.on_transitions = self.notify

    def notify(self, devices: set[str]) -> None:
        """From the alert engine (any thread): alerts of `devices` changed; their partitions are saved soon, so
        a worker that takes them over after this one dies goes on with those alerts, not new ones."""
        loop = self._loop
        parts = {self._partition[d] for d in devices if d in self._partition}
        if loop is None or not parts or loop.is_closed():
            return
        loop.call_soon_threadsafe(self._mark, parts)

    def _mark(self, parts: set[int]) -> None:
        self._dirty |= parts
        if self._wake is not None:
            self._wake.set()

    async def _save_soon(self) -> None:
        assert self._wake is not None
        while True:
            await self._wake.wait()
            await asyncio.sleep(PROMPT_SAVE_S)
            self._wake.clear()
            parts, self._dirty = sorted(self._dirty & self.owned), set()
            await self.save(parts)

    async def close(self) -> None:
        """Stop the prompt saves (the lease loop's end)."""
        self.pipeline.engine.on_transitions = None
        if self._saver is not None:
            self._saver.cancel()

    async def save(self, partitions: list[int]) -> None:
        """Write the state of `partitions` still owned (one capture for all). Logs and goes on when the store
        fails."""
        if not partitions or self.store is None or self._io is None:
            return
        loop = asyncio.get_running_loop()
        async with self._io:
            partitions = [k for k in partitions if k in self.owned]
            if not partitions:
                return
            devices = set().union(*(self.devices[k] for k in partitions))
            # On an executor thread: the capture waits for the detector thread's batch (the pipeline's lock).
            snap, alerts = await loop.run_in_executor(None, self.pipeline.capture_partition, devices)
            for k in partitions:
                await self._put(k, cut(snap, self.devices[k]), split_alerts(alerts, self.devices[k]))

    async def _put(self, k: int, part: Snapshot, alerts: dict) -> None:
        assert self.store is not None
        try:
            info = await self.store.put(f"p{k}", to_bytes(part, alerts))
            log.debug("partition %d: state saved (%d bytes, %d pieces, %d open alerts)", k, info.size,
                      len(part.pieces), len(alerts.get("alerts", [])))
        except Exception as exc:  # noqa: BLE001 - the last saved state stays; next save
            log.warning("partition %d: detector state not saved: %s", k, exc)

    async def give_up(self, k: int, save: bool) -> None:
        """Stop owning partition k's devices (after its session was closed): their open alerts are dropped
        without a notice. save: write its state for the next owner first (a hand-over); False when the lease
        was lost (the new owner's state is newer than ours)."""
        if self._io is None:
            return
        loop = asyncio.get_running_loop()
        async with self._io:
            self.owned.discard(k)
            snap, alerts = await loop.run_in_executor(None, self.pipeline.hand_over, self.devices[k])
            if save and self.store is not None:
                await self._put(k, cut(snap, self.devices[k]), alerts)
        if alerts.get("alerts"):
            log.info("partition %d: %d open alerts %s with it", k, len(alerts["alerts"]),
                     "handed over" if save else "dropped (lease lost)")

    async def restore(self, k: int) -> None:
        """Own partition k's devices from now on: load its saved detector state into the pipeline's rules (its
        devices only) and go on with its open alerts. No saved state, or one that cannot be used, leaves the
        worker's own detector state for them (logged)."""
        from nats.js.errors import ObjectNotFoundError

        if self._io is None:
            return
        loop = asyncio.get_running_loop()
        async with self._io:
            snap, alerts = None, None
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
            report, adopted = await loop.run_in_executor(None, self.pipeline.take_over, self.devices[k], snap,
                                                         alerts, f"partition {k}")
            self.owned.add(k)
        if snap is None or report is None:
            return
        devices = sum(int(r.restored.sum()) for r in report.pieces.values() if r.key in snap.pieces)
        age = (time.time_ns() - snap.saved_ns) / 1e9
        log.info("partition %d: detector state restored (%d pieces, %d device states, %d open alerts, saved %.0f s "
                 "ago)", k, len(snap.pieces), devices, adopted, age)
