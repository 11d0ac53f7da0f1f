"""`--partitions auto`: a worker SIGKILLed the moment its alert's firing notice reaches an operator leaves that
alert to its taker, which goes on with it (same alert id, no second firing), on a real 3-node NATS cluster.

The notice leaves only once the partition's open alerts are saved in the cluster (citywatch/partition_state.py,
AlertEngine.hold_until_saved). Before that, the state was saved about 0.1 s after the transition while the
notice went at once: a worker killed in between left its taker without the alert, whose detectors then raised it
again under a new id (two firings of one condition, the first never resolved) unless the readings that raised it
were redelivered to the taker (not yet acked when the worker died: the same first reading gives the same id).
So the test asserts the mechanism too: the taker adopted the open alert (without the hold it restored 0 open
alerts here, and the id held only through the redelivery).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from citywatch.cluster import NatsCluster, partition_of
from config import load_config
from tests.integration.test_cluster import (  # noqa: F401 - `cluster` is a fixture
    PARTITIONS,
    FailoverDevice,
    cluster,
    cluster_config,
    worker_env,
)
from tests.integration.test_cluster_auto import (
    TAKEOVER_BOUND_S,
    AlertWatcher,
    AutoWorker,
    check_alerts,
    every_partition_once,
    wait_owners,
)
from tests.integration.test_ingest_harness import gas_payload

pytestmark = pytest.mark.integration


class KillOnFiring(AlertWatcher):
    """The alert watcher, SIGKILLing `victim` (from the receiving thread, at once) on the first firing notice of
    `rule` for `device`."""

    def __init__(self, cluster: NatsCluster, rule: str, device: str):
        self.rule, self.device, self.victim_pid, self.killed_at = rule, device, None, None
        super().__init__(cluster)

    def _on_message(self, client, userdata, msg) -> None:
        if self.victim_pid is not None and self.killed_at is None and "/active/" not in msg.topic and msg.payload:
            n = json.loads(msg.payload)
            if n["rule_id"] == self.rule and n["device"]["id"] == self.device and n["transition"] == "firing":
                os.kill(self.victim_pid, signal.SIGKILL)
                self.killed_at = time.monotonic()
        super()._on_message(client, userdata, msg)


def test_a_worker_killed_as_its_alert_fires_leaves_it_to_the_taker(tmp_path, cluster: NatsCluster, influx):  # noqa: F811
    cfg = load_config()
    env = worker_env(cluster, influx, tmp_path)
    gas = [d for d in cfg.devices if d.protocol == "json" and d.kind == "gas"]
    workers: list[AutoWorker] = []
    for i, name in enumerate(("wa", "wb")):
        wdir = tmp_path / name
        wdir.mkdir()
        workers.append(AutoWorker(cluster_config(wdir, i), env, wdir / "citywatch.log", name).start())
    owners = wait_owners(workers, lambda o: every_partition_once(o) and all(w.owned() for w in workers), 60)
    assert owners, "the two workers did not divide the partitions"
    faulty = gas[0]
    k = partition_of(faulty.site or "", PARTITIONS)
    victim = next(w for w in workers if k in w.owned())
    survivor = next(w for w in workers if w is not victim)
    watcher = KillOnFiring(cluster, "G-highhigh", faulty.id)
    watcher.victim_pid = victim.proc.pid
    nodes = [(n.split(":")[0], int(n.split(":")[1])) for n in cluster.mqtt_nodes]
    dev = FailoverDevice(faulty.id, cluster.credentials.devices[faulty.id], nodes)
    mop, full_scale = float(faulty.mop_kpa or 0), float(faulty.full_scale_kpa or 0)
    over_kpa = (mop + min(full_scale, 2 * mop)) / 2  # above the MOP (G-highhigh), within the sensor's range
    topic = f"city/xm/gas/{faulty.site}/{faulty.id}/data"
    ts_ms = time.time_ns() // 1_000_000 - 600_000

    def send(p: float | None, seconds: float) -> None:
        nonlocal ts_ms
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            ts_ms += 1000
            dev.publish(topic, gas_payload(faulty, [ts_ms], p))
            time.sleep(0.1)

    try:
        time.sleep(1.0)  # the last SUBACKs
        deadline = time.monotonic() + 60
        while watcher.killed_at is None:  # over-pressure until it fires and the victim dies with it
            assert time.monotonic() < deadline, "the over-pressure never fired"
            send(over_kpa, 0.5)
        took = wait_owners([survivor], lambda o: sorted(o) == list(range(PARTITIONS)), TAKEOVER_BOUND_S + 10)
        assert took, f"the survivor did not take the dead worker's partitions: {survivor.owned()}"
        send(over_kpa, 5.0)  # the condition goes on on the taker, then ends
        send(None, 5.0)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            mine = {a: ns for a, ns in watcher.by_alert().items()
                    if ns[0]["device"]["id"] == faulty.id and ns[0]["rule_id"] == "G-highhigh"}
            if mine and all(ns[-1]["transition"] == "resolved" for ns in mine.values()):
                break
            send(None, 1.0)
        # One alert, fired by the victim, resolved by the taker under the same id and the next sequence number.
        assert len(mine) == 1, {a: [(n["seq"], n["transition"]) for n in ns] for a, ns in mine.items()}
        (ns,) = mine.values()
        assert [n["transition"] for n in ns][0] == "firing" and ns[-1]["transition"] == "resolved", ns
        assert re.search(rf"partition {k}: (detector state restored \(.*?, [1-9]\d* open alerts|[1-9]\d* open alerts "
                         "adopted)", survivor.log_text()), survivor.log_tail()  # the taker went on with it
        check_alerts(watcher.by_alert())
        assert survivor.terminate() == 0, survivor.log_tail()
    finally:
        dev.close()
        watcher.close()
        for w in workers:
            w.close()
