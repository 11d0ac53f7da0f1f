"""The partition leases of `--partitions auto` on a real 3-node NATS cluster, without MQTT or InfluxDB: workers
divide the partitions, a graceful leave hands them over at once, a SIGKILLed worker's leases lapse after the
TTL and go to the survivor, and a lease another worker took is given up ("lost")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from citywatch.cluster import NatsCluster
from citywatch.localstack import Credentials
from citywatch.partition_lease import PartitionLeases
from config import load_config

pytestmark = pytest.mark.integration

TOTAL = 4
TTL_S = 4.0


@pytest.fixture
def cluster(tmp_path):
    cfg = load_config()
    creds = Credentials.generate(cfg.device_ids, [op.username for op in cfg.alerting.operators])
    c = NatsCluster(tmp_path / "cluster", creds, cfg, partitions=TOTAL)
    c.start()
    yield c
    for node in c.nodes:
        node.kill()


class Recorder:
    """acquire / release callbacks that record what a worker serves."""

    def __init__(self):
        self.serving: set[int] = set()
        self.lock = threading.Lock()

    def acquire(self, k: int) -> None:
        with self.lock:
            assert k not in self.serving
            self.serving.add(k)

    def release(self, k: int) -> None:
        with self.lock:
            self.serving.discard(k)


def leases(cluster: NatsCluster, name: str, rec: Recorder) -> PartitionLeases:
    user, pw = cluster.credentials.collector
    return PartitionLeases([f"nats://{n}" for n in cluster.nats_nodes], user, pw, TOTAL, TTL_S,
                           acquire=rec.acquire, release=rec.release, worker_id=name)


def wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_workers_divide_hand_over_and_take_a_dead_worker_s_share(cluster):
    a_rec, b_rec = Recorder(), Recorder()
    a = leases(cluster, "a", a_rec)
    a.start()
    assert a_rec.serving == {0, 1, 2, 3}  # alone: everything, in the first round
    b = leases(cluster, "b", b_rec)
    b.start()
    assert wait(lambda: len(a_rec.serving) == 2 and len(b_rec.serving) == 2, 5 * TTL_S), (a.owned, b.owned)
    assert a_rec.serving.isdisjoint(b_rec.serving)
    t0 = time.monotonic()
    b.stop()  # graceful: released and deleted, so a takes them in its next round
    assert b_rec.serving == set()
    assert wait(lambda: a_rec.serving == {0, 1, 2, 3}, 2 * TTL_S)
    handover_s = time.monotonic() - t0
    assert handover_s < TTL_S  # the leases were given up, not left to lapse
    a.stop()
    assert a_rec.serving == set()


def test_a_killed_worker_s_leases_lapse_and_move(cluster, tmp_path):
    user, pw = cluster.credentials.collector
    script = textwrap.dedent(f"""
        import json, sys, time
        from citywatch.partition_lease import PartitionLeases
        served = []
        l = PartitionLeases({json.dumps([f"nats://{n}" for n in cluster.nats_nodes])}, {user!r}, {pw!r}, {TOTAL},
                            {TTL_S}, acquire=served.append, release=served.remove, worker_id="victim")
        l.start()
        print(json.dumps(sorted(served)), flush=True)
        while True:
            time.sleep(0.2)
            print(json.dumps(sorted(served)), flush=True)
    """)
    victim = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                              env=dict(os.environ), cwd=str(tmp_path))
    rec = Recorder()
    survivor = None
    try:
        assert json.loads(victim.stdout.readline()) == [0, 1, 2, 3]
        survivor = leases(cluster, "survivor", rec)
        survivor.start()
        mine: list[int] = []
        for line in victim.stdout:  # the victim gives up half to the newcomer
            mine = json.loads(line)
            if len(mine) == 2:
                break
        assert wait(lambda: len(rec.serving) == 2, 5 * TTL_S), survivor.owned
        assert rec.serving.isdisjoint(mine)
        victim.kill()
        killed_at = time.monotonic()
        assert wait(lambda: rec.serving == {0, 1, 2, 3}, 3 * TTL_S), survivor.owned
        gap = time.monotonic() - killed_at
        print(f"\nRESULT cluster_lease_takeover ttl_s={TTL_S:g} gap_s={gap:.1f}")
        assert gap >= TTL_S * 0.5  # lapsed, not handed over: nobody deleted the victim's leases
    finally:
        victim.kill()
        victim.wait()
        if survivor is not None:
            survivor.stop()


def test_a_lease_someone_else_wrote_is_lost(cluster):
    rec = Recorder()
    a = leases(cluster, "a", rec)
    a.start()
    assert rec.serving == {0, 1, 2, 3}

    async def steal():
        import nats

        user, pw = cluster.credentials.collector
        nc = await nats.connect(servers=[f"nats://{n}" for n in cluster.nats_nodes], user=user, password=pw)
        kv = await nc.jetstream().key_value("citywatch_partitions")
        await kv.put("p.2", b"intruder")
        await nc.close()

    import asyncio

    asyncio.run(steal())
    assert wait(lambda: 2 not in rec.serving, 2 * TTL_S)
    assert any(k == 2 and what == "lost" for _, k, what in a.events.log)
    a.stop()
