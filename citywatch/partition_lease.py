"""`citywatch run --partitions auto`: workers divide the partitions among the live ones through leases in the
NATS cluster's own JetStream key-value store (R3), never through coordination of our own (README "Cluster mode").

Bucket LEASE_BUCKET, history 1, max age = connections.cluster.lease_ttl_s: a key not written again within the
TTL is removed by the server. `w.<worker>` is a worker's membership (rewritten each renewal period); `p.<k>` is
partition k's lease, holding the owner's id: taken with `create` (fails while any live value exists), renewed
with a revision-checked `update` (fails once anyone else wrote it), given up with a revision-checked `delete`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

LEASE_BUCKET = "citywatch_partitions"
# The object store of each partition's detector state (citywatch/partition_state.py).
STATE_BUCKET = "citywatch_detector_state"
# The key-value bucket of each partition's open alerts, written after every alert transition (partition_state.py).
ALERTS_BUCKET = "citywatch_partition_alerts"
# Renewals per TTL: a lease survives up to RENEWALS - 1 failed renewals in a row (a JetStream leader election
# after a node's death takes about 5 s).
RENEWALS = 4


def default_worker_id() -> str:
    """`<host>-<pid>`: unique among the live workers of a cluster (KV keys allow [-_=/.A-Za-z0-9])."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())
    return f"{host[:30]}-{os.getpid()}"


def check_worker_options(worker_id: str | None, metrics_port: int | None) -> None:
    """Raises ValueError for a `--worker-id` that cannot be a key of the lease bucket or a `--metrics-port`
    outside 1-65535."""
    if worker_id is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,40}", worker_id):
        raise ValueError(f"--worker-id: {worker_id!r} must be 1 to 40 letters, digits, '-' or '_'")
    if metrics_port is not None and not 1 <= metrics_port <= 65535:
        raise ValueError(f"--metrics-port: {metrics_port} is not a port between 1 and 65535")


def assign(workers: list[str], total: int, holders: dict[int, str] | None = None) -> dict[str, tuple[int, ...]]:
    """The partitions each live worker should own. Every worker gets total // n or one more; a partition stays
    with its live holder while that holder is within its share (the extra ones go to the workers holding most,
    then by id), and the rest (free, a dead worker's, a holder's excess) go to the workers below their share in
    id order, lowest partition first. Every worker computes the same plan from the same view of membership and
    holders, and a worker joining or leaving moves only the partitions it must.

    workers: the live worker ids; total: the partition count; holders: {partition: holder id} of the leases now.
    Raises ValueError for no workers or no partitions."""
    if not workers:
        raise ValueError("assign: no live workers")
    if total < 1:
        raise ValueError(f"assign: partitions must be at least 1 (got {total})")
    live = sorted(set(workers))
    held: dict[str, list[int]] = {w: [] for w in live}
    for k, w in sorted((holders or {}).items()):
        if w in held and 0 <= k < total:
            held[w].append(k)
    base, extra = divmod(total, len(live))
    by_holding = sorted(live, key=lambda w: (-len(held[w]), w))
    quota = {w: base + (1 if i < extra else 0) for i, w in enumerate(by_holding)}
    plan = {w: held[w][:quota[w]] for w in live}
    taken = {k for ks in plan.values() for k in ks}
    rest = [k for k in range(total) if k not in taken]
    for w in live:
        while len(plan[w]) < quota[w] and rest:
            plan[w].append(rest.pop(0))
    return {w: tuple(sorted(ks)) for w, ks in plan.items()}


@dataclass
class _Held:
    revision: int
    renewed_at: float  # monotonic s of the last successful write


@dataclass
class LeaseEvents:
    """What the lease loop did, for the log and the tests: (monotonic s, partition, "acquired"|"released"|"lost")."""

    log: list[tuple[float, int, str]] = field(default_factory=list)


class PartitionLeases:
    """Keeps this worker's share of the partitions: joins, takes the partitions the plan gives it once they are
    free, renews them, gives up the ones the plan moves to a newer worker, and on `stop()` gives up everything so
    the survivors take over at once (a SIGKILLed worker's leases expire after `ttl_s` instead).

    servers: nats://host:port of the cluster's client listeners; user/password: the service account; total: the
    partition count; ttl_s: lease TTL in seconds; acquire(k) / release(k): start / stop serving partition k,
    called from a worker thread (release may block while held messages are acked), never concurrently;
    replicas: the bucket's replication (3 on the 3-node cluster); state: the partitions' detector state and open
    alerts in the cluster (citywatch.partition_state.PartitionState): restored (and the partition's alerts owned)
    before a partition is served, saved when it is given up (its alerts then dropped here), every
    `state.every_s` while it is held and soon after any of its alerts' transitions.
    """

    def __init__(self, servers: list[str], user: str | None, password: str | None, total: int, ttl_s: float,
                 acquire: Callable[[int], None], release: Callable[[int], None], worker_id: str | None = None,
                 replicas: int = 3, state=None) -> None:
        if not servers:
            raise ValueError("--partitions auto needs connections.cluster.nats: the NATS client listeners "
                             "(host:port) of the cluster's nodes (CITYWATCH_CLUSTER_NATS; .stack/cluster.env sets it)")
        self.servers, self.user, self.password = servers, user, password
        self.total, self.ttl_s = total, float(ttl_s)
        self.period_s = self.ttl_s / RENEWALS
        self.worker_id = worker_id or default_worker_id()
        self.replicas = replicas
        self.state = state
        self._acquire, self._release = acquire, release
        self.held: dict[int, _Held] = {}
        self.events = LeaseEvents()
        self.members: tuple[str, ...] = ()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._join_deadline = 0.0  # monotonic s: until when start() retries a cluster not ready yet
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    # ----- from the service's thread -----------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        """Connect, open (or create) the bucket and join; returns once the first round ran. Raises RuntimeError
        when the cluster cannot be reached or the bucket cannot be opened within `timeout_s`."""
        # A cluster just started answers "no responders" until JetStream has its leaders: retried until then.
        self._join_deadline = time.monotonic() + max(1.0, timeout_s - 2.0)
        self._thread = threading.Thread(target=self._run, name="partition-leases", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout_s):
            raise RuntimeError(f"partition leases: no answer from the cluster {', '.join(self.servers)} within "
                               f"{timeout_s:.0f} s")
        if self._error is not None:
            raise RuntimeError(f"partition leases: {self._error}") from self._error

    def stop(self, timeout_s: float = 30.0) -> None:
        """Release every partition (each `release(k)` first, then its lease), leave, disconnect."""
        if self._loop is not None and self._stop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout_s)

    @property
    def owned(self) -> tuple[int, ...]:
        return tuple(sorted(self.held))

    def metrics(self) -> dict:
        """For the Prometheus endpoint (any thread): worker id, partition count, owned partitions, live workers,
        per partition how often this worker took it (`acquired`: a start, a takeover or a rebalance) and gave
        it up (`released`) or lost its lease (`lost`), and the detector state's `snapshot_age_s` / counts."""
        events: dict[str, dict[int, int]] = {"acquired": {}, "released": {}, "lost": {}}
        for _, k, what in list(self.events.log):
            events[what][k] = events[what].get(k, 0) + 1
        state = self.state.metrics() if self.state is not None else {"snapshot_age_s": {}, "counts": {}}
        return {"worker": self.worker_id, "total": self.total, "owned": self.owned, "members": len(self.members),
                **events, **state}

    # ----- the loop ---------------------------------------------------------------------------------

    def _run(self) -> None:
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start(), or logged once running
            self._error = exc
            if self._ready.is_set():
                log.error("partition leases stopped: %s", exc)
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        import nats
        import nats.errors
        from nats.js.api import KeyValueConfig
        from nats.js.errors import BucketNotFoundError

        self._stop = asyncio.Event()
        nc = await nats.connect(servers=self.servers, user=self.user, password=self.password,
                                name=f"citywatch-{self.worker_id}", connect_timeout=5, reconnect_time_wait=1,
                                max_reconnect_attempts=-1, allow_reconnect=True)
        try:
            js = nc.jetstream(timeout=5)
            while True:
                try:
                    try:
                        kv = await js.key_value(LEASE_BUCKET)
                    except BucketNotFoundError:
                        kv = await js.create_key_value(KeyValueConfig(
                            bucket=LEASE_BUCKET, history=1, ttl=self.ttl_s, replicas=self.replicas,
                            description="citywatch partition leases (citywatch/partition_lease.py)"))
                    if self.state is not None:
                        await self.state.open(js, self.replicas)
                    log.info("partition leases: worker %s joins (%d partitions, lease TTL %g s, bucket %s)",
                             self.worker_id, self.total, self.ttl_s, LEASE_BUCKET)
                    await self._round(kv)
                    break
                except (nats.errors.Error, TimeoutError) as exc:
                    # JetStream without its leaders yet (a cluster just started, a node just restarted).
                    if time.monotonic() >= self._join_deadline:
                        raise
                    log.info("partition leases: the cluster's JetStream is not ready (%s: %s); retrying",
                             type(exc).__name__, exc)
                    await asyncio.sleep(1.0)
            self._ready.set()
            while not self._stop.is_set():
                try:
                    await asyncio.wait_for(self._stop.wait(), self.period_s)
                except TimeoutError:
                    pass
                if not self._stop.is_set():
                    try:
                        await self._round(kv)
                    except Exception as exc:  # noqa: BLE001 - the cluster away for a moment: next round
                        log.warning("partition leases: round failed (%s: %s); retrying in %.1f s",
                                    type(exc).__name__, exc, self.period_s)
            await self._leave(kv)
        finally:
            if self.state is not None:
                await self.state.close()
            await nc.close()

    async def _round(self, kv) -> None:
        from nats.js.errors import KeyDeletedError, KeyNotFoundError, KeyWrongLastSequenceError, NoKeysError

        now = time.monotonic()
        await kv.put(f"w.{self.worker_id}", b"alive")
        # Renew first: a lease whose update fails was taken by another worker (ours had expired); one not
        # renewed for most of a TTL may expire any moment, so it is given up before someone else serves it too.
        for k, h in list(self.held.items()):
            try:
                h.revision = await kv.update(f"p.{k}", self.worker_id.encode(), last=h.revision)
                h.renewed_at = time.monotonic()
            except KeyWrongLastSequenceError:
                await self._drop(k, "lost", "its lease was taken by another worker")
            except Exception as exc:  # noqa: BLE001 - the cluster unreachable: try again next round
                if time.monotonic() - h.renewed_at > self.ttl_s - self.period_s:
                    await self._drop(k, "lost", f"its lease could not be renewed for "
                                     f"{time.monotonic() - h.renewed_at:.1f} s ({exc})")
        try:
            keys = await kv.keys()
        except NoKeysError:
            keys = []
        members = sorted({key[2:] for key in keys if key.startswith("w.")} | {self.worker_id})
        if tuple(members) != self.members:
            log.info("partition leases: live workers %s", ", ".join(members))
            self.members = tuple(members)
        holders = {k: self.worker_id for k in self.held}
        for key in keys:
            if key.startswith("p.") and key[2:].isdigit() and int(key[2:]) not in self.held:
                try:
                    holders[int(key[2:])] = (await kv.get(key)).value.decode()
                except (KeyNotFoundError, KeyDeletedError):
                    pass  # given up or expired since the listing
        plan = assign(members, self.total, holders)[self.worker_id]
        # Give up what the plan moved elsewhere (a worker joined), so its new owner can take it.
        for k in [k for k in self.held if k not in plan]:
            h = self.held[k]
            await self._drop(k, "released", "the plan gives it to another worker")
            try:
                await kv.delete(f"p.{k}", last=h.revision)
            except Exception as exc:  # noqa: BLE001 - it then expires after the TTL
                log.debug("partition %d: lease not deleted (%s); it expires", k, exc)
        for k in plan:
            if k in self.held:
                continue
            try:
                rev = await kv.create(f"p.{k}", self.worker_id.encode())
            except KeyWrongLastSequenceError:
                continue  # still held (its owner gives it up, or its lease expires): next round
            self.held[k] = _Held(rev, time.monotonic())
            if self.state is not None:  # before its first message: the detectors go on where the last owner was
                await self.state.restore(k)
            await asyncio.get_running_loop().run_in_executor(None, self._acquire, k)
            self.events.log.append((time.monotonic(), k, "acquired"))
            log.info("partition %d: taken by worker %s (%.1f s into the round)", k, self.worker_id,
                     time.monotonic() - now)
        if self.state is not None and self.held and time.monotonic() - self.state.saved_at >= self.state.every_s:
            self.state.saved_at = time.monotonic()  # the periodic save of everything held (a handover saves one)
            await self.state.save(sorted(self.held))

    async def _drop(self, k: int, what: str, why: str) -> None:
        self.held.pop(k, None)
        log.info("partition %d: %s by worker %s: %s", k, what, self.worker_id, why)
        await asyncio.get_running_loop().run_in_executor(None, self._release, k)
        if self.state is not None:  # its alerts go too; lost: its new owner's state is newer than ours, not saved
            await self.state.give_up(k, save=what == "released")
        self.events.log.append((time.monotonic(), k, what))

    async def _leave(self, kv) -> None:
        for k, h in list(self.held.items()):
            await self._drop(k, "released", "the worker stops")
            try:
                await kv.delete(f"p.{k}", last=h.revision)
            except Exception as exc:  # noqa: BLE001 - it then expires after the TTL
                log.debug("partition %d: lease not deleted (%s); it expires", k, exc)
        try:
            await kv.delete(f"w.{self.worker_id}")
        except Exception as exc:  # noqa: BLE001
            log.debug("membership not deleted (%s); it expires", exc)
        log.info("partition leases: worker %s left", self.worker_id)


class StaticPartitions:
    """`--partitions LIST`: the same `metrics()` as PartitionLeases for a worker whose partitions are fixed."""

    def __init__(self, partitions: tuple[int, ...], total: int, worker_id: str | None = None) -> None:
        self.partitions, self.total, self.worker_id = tuple(partitions), total, worker_id or default_worker_id()

    def metrics(self) -> dict:
        return {"worker": self.worker_id, "total": self.total, "owned": self.partitions, "members": 0,
                "acquired": {k: 1 for k in self.partitions}, "released": {}, "lost": {}, "snapshot_age_s": {},
                "counts": {}}


def worker_config(cfg, worker_id: str, metrics_port: int | None):
    """The config of one partitioned worker: its own alerting.mqtt_client_id `<id>-<worker>` (two workers with
    one id would take each other's alert sink and command sessions over), its own Prometheus port
    (`metrics_port`; default 0, a free one, logged at start: workers on one host would all want 9464), and
    `ingest.ack_after: influxdb`: a partition outlives its worker, so a message is acked once InfluxDB has its
    rows, not once this worker's own disk has them (measured: with `spool`, a SIGKILLed worker took acked
    readings that were not yet in InfluxDB with it; its spool drains only when it starts again)."""
    alerting = cfg.alerting.model_copy(update={"mqtt_client_id": f"{cfg.alerting.mqtt_client_id}-{worker_id}"[:64]})
    http = cfg.ingest.metrics_http.model_copy(update={"port": metrics_port or 0})
    if cfg.ingest.ack_after != "influxdb":
        log.info("partitioned worker: messages are acked once InfluxDB has them (ingest.ack_after: influxdb, "
                 "not %s): a partition outlives its worker, the worker's spool does not", cfg.ingest.ack_after)
    ingest = cfg.ingest.model_copy(update={"metrics_http": http, "ack_after": "influxdb"})
    return cfg.model_copy(update={"alerting": alerting, "ingest": ingest})


def start_leases(cfg, service, worker_id: str, env: dict | None = None, pipeline=None) -> PartitionLeases:
    """`--partitions auto`: join the cluster's partition leases for `service` (its collector a dynamic
    PartitionedCollector), serving each partition the leases give this worker; with `pipeline` (the
    DetectionPipeline), each partition's detector state moves with it (citywatch.partition_state). Raises
    RuntimeError (cluster unreachable) or ValueError (connections.cluster.nats empty)."""
    state = None
    if pipeline is not None:
        from citywatch.partition_state import PartitionState

        state = PartitionState(pipeline, cfg, every_s=cfg.alerting.detector_state_save_s)
        pipeline.reload_hooks.append(state.reconfigure)  # ownership follows a reloaded inventory
    env = dict(os.environ) if env is None else env
    cl, mq = cfg.connections.cluster, cfg.connections.mqtt
    flush_s = cfg.ingest.batch_max_age_ms / 1000 + 2.0  # a batch's age plus one InfluxDB write
    leases = PartitionLeases(cl.nats_urls(), mq.username, env.get(mq.password_env) if mq.password_env else None,
                             cl.partitions, cl.lease_ttl_s, acquire=service.collector.add,
                             release=lambda k: service.collector.remove(k, flush_s), worker_id=worker_id,
                             replicas=min(3, max(1, len(cl.nats))), state=state)
    leases.start()
    return leases
