"""`--partitions auto` with two workers on a real 3-node NATS cluster (issue 15): an operator's command gets one
answer, from the worker that owns the alert (before, every worker's listener answered: the owner `ok`, the others
`error: no alert ...`), a silence is applied by both under one id and answered once, and `citywatch alerts list`
given the cluster shows every partition's open alerts on one board, with partition and worker, whichever worker's
config it runs with (before, it read that worker's store: the other worker's alert was not there).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citywatch.cluster import NatsCluster, partition_of
from config import load_config
from tests.integration.test_cluster import (  # noqa: F401 - `cluster` is a fixture
    PARTITIONS,
    FailoverDevice,
    cluster,
    cluster_config,
    worker_env,
)
from tests.integration.test_cluster_auto import AlertWatcher, AutoWorker, every_partition_once, wait_owners
from tests.integration.test_ingest_harness import gas_payload

pytestmark = pytest.mark.integration

# After a command's first answer, a second one from another worker would come within this (s): every worker's
# listener gets the command at once and answers it in milliseconds.
SECOND_ANSWER_WAIT_S = 3.0


class NoticeWatcher(AlertWatcher):
    """The alert watcher, leaving out the command and reply topics (under the notices' prefix too)."""

    def __init__(self, cluster: NatsCluster, skip: tuple[str, ...]):  # noqa: F811 - the fixture's name
        self.skip = skip
        super().__init__(cluster)

    def _on_message(self, client, userdata, msg) -> None:
        if not msg.topic.startswith(self.skip):
            super()._on_message(client, userdata, msg)


class Operator:
    """An operator's MQTT 3.1.1 client: sends commands on its own command topic, reads the answers."""

    def __init__(self, cluster: NatsCluster, command_topic: str, reply_topic: str):  # noqa: F811 - the fixture's name
        self.user, password = cluster.credentials.operator
        self.topic = f"{command_topic}/{self.user}"
        self.replies: list[dict] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"op-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(self.user, password)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(reply_topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._got
        host, port = cluster.mqtt_nodes[1].split(":")
        self.client.connect(host, int(port))
        self.client.loop_start()
        assert self.subscribed.wait(30), "the operator could not subscribe to the replies"

    def _got(self, client, userdata, msg) -> None:
        with self.lock:
            self.replies.append(json.loads(msg.payload))

    def send(self, cmd: dict) -> list[str]:
        """Publish `cmd` and return the results of every answer to it: waits for the first (bounded), then
        SECOND_ANSWER_WAIT_S for any other."""
        self.client.publish(self.topic, json.dumps(cmd), qos=1).wait_for_publish(10)
        deadline = time.monotonic() + 30
        while not self._answers(cmd) and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(SECOND_ANSWER_WAIT_S)
        return self._answers(cmd)

    def _answers(self, cmd: dict) -> list[str]:
        with self.lock:
            return [r["result"] for r in self.replies if r["command"] == cmd]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def board(config_dir, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citywatch", "alerts", "--config", str(config_dir), "list", *args],
                          env={**env, "COLUMNS": "1000"}, capture_output=True, text=True, timeout=60)


def test_one_answer_per_command_and_one_board_across_workers(tmp_path, cluster: NatsCluster, influx):  # noqa: F811
    cfg = load_config()
    env = worker_env(cluster, influx, tmp_path)
    workers: list[AutoWorker] = []
    for i, name in enumerate(("wa", "wb")):
        wdir = tmp_path / name
        wdir.mkdir()
        workers.append(AutoWorker(cluster_config(wdir, i), env, wdir / "citywatch.log", name).start())
    assert wait_owners(workers, lambda o: every_partition_once(o) and all(w.owned() for w in workers), 60), \
        "the two workers did not divide the partitions"
    gas = next(d for d in cfg.devices if d.protocol == "json" and d.kind == "gas")
    k = partition_of(gas.site or "", PARTITIONS)
    owner = next(w for w in workers if k in w.owned())
    other = next(w for w in workers if w is not owner)
    watcher = NoticeWatcher(cluster, (cfg.alerting.command_topic, cfg.alerting.command_reply_topic))
    operator = Operator(cluster, cfg.alerting.command_topic, cfg.alerting.command_reply_topic)
    nodes = [(n.split(":")[0], int(n.split(":")[1])) for n in cluster.mqtt_nodes]
    dev = FailoverDevice(gas.id, cluster.credentials.devices[gas.id], nodes)
    over_kpa = (float(gas.mop_kpa or 0) + min(float(gas.full_scale_kpa or 0), 2 * float(gas.mop_kpa or 0))) / 2
    ts_ms = time.time_ns() // 1_000_000 - 600_000
    try:
        time.sleep(1.0)  # the last SUBACKs
        deadline = time.monotonic() + 60
        firing: list[dict] = []
        while not firing:  # a gas over-pressure (G-high, G-highhigh) until an alert fires
            assert time.monotonic() < deadline, "the over-pressure never fired"
            ts_ms += 1000
            dev.publish(f"city/xm/gas/{gas.site}/{gas.id}/data", gas_payload(gas, [ts_ms], over_kpa))
            time.sleep(0.1)
            firing = [ns[0] for ns in watcher.by_alert().values()
                      if ns[0]["device"]["id"] == gas.id and ns[0]["transition"] == "firing"]
        alert_id = firing[0]["alert_id"]

        # One answer per command: the owner's for its alert, the first device's owner's for the rest.
        assert operator.send({"action": "ack", "alert_id": alert_id, "note": "crew sent"}) == ["ok"]
        assert operator.send({"action": "ack", "alert_id": "G-high.NO-SUCH-DEVICE.20250601T000000000Z"}) == [
            "error: no alert 'G-high.NO-SUCH-DEVICE.20250601T000000000Z'"]
        silence = {"action": "silence", "matchers": {"device_id": gas.id}, "comment": "valve work", "expires": "1h"}
        (answer,) = operator.send(silence)
        assert answer.startswith("ok: silence "), answer
        assert operator.send({"action": "unsilence", "silence_id": answer.split()[2]}) == ["ok"]
        for w in workers:  # both applied the silence and ended it: one id on both
            assert re.search(rf"alert command unsilence by {operator.user} \(.*\): ok$", w.log_text(), re.M), \
                w.log_tail()

        # One board: the other worker's config reads the cluster (partitioned mode), its own store has not the alert;
        # the ack above is a transition, so the cluster's copy has it once the owner saved its alerts (bounded).
        mine = board(other.config_dir, env, "--store", str(other.config_dir.parent / "var" / "alerts.sqlite"))
        assert mine.returncode == 0 and gas.id not in mine.stdout, mine
        deadline = time.monotonic() + 30
        while True:
            rows = board(other.config_dir, env, "--json")
            assert rows.returncode == 0, rows.stderr
            seen = {r["alert_id"]: r for r in map(json.loads, rows.stdout.splitlines())}
            if seen.get(alert_id, {}).get("acked_by") == operator.user or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert alert_id in seen, rows.stdout
        assert (seen[alert_id]["partition"], seen[alert_id]["worker"], seen[alert_id]["acked_by"]) == (
            k, owner.name, operator.user)
        table = board(other.config_dir, env)
        assert table.returncode == 0, table.stderr
        short = f" {firing[0]['rule_id']}.{gas.id} "
        row = next((line for line in table.stdout.splitlines() if short in line), "")
        assert f"p{k} {owner.name}" in row and f"acked by {operator.user}" in row, table.stdout
        assert f"cluster: {PARTITIONS} partitions served by" in table.stdout and "NOT SERVED" not in table.stdout
        for w in workers:
            assert w.terminate() == 0, w.log_tail()
    finally:
        dev.close()
        watcher.close()
        operator.close()
        for w in workers:
            w.close()


def test_the_board_of_an_unreachable_cluster_is_one_line_and_exit_2(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "CITYWATCH_CLUSTER_NATS": f"127.0.0.1:{port}"}
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "citywatch", "alerts", "list", "--cluster"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 2, res
    assert res.stderr.startswith(f"citywatch alerts: cannot reach the cluster at nats://127.0.0.1:{port}: "), res.stderr
    assert res.stderr.count("\n") == 1 and "scripts/stack.sh up --cluster" in res.stderr, res.stderr
    assert time.monotonic() - started < 20
