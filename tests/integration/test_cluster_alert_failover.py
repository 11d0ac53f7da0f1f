"""Partitioned mode on a real 3-node NATS cluster: the MQTT alert sink and the alert command listener fail over
across `connections.cluster.nodes` when the node they are connected to is SIGKILLed (issue 15): a notice sent
after the kill reaches an operator on another node, and a command sent there reaches the listener.
"""

from __future__ import annotations

import json
import os
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from alerts.command_listener import CommandListener
from alerts.model import Notice
from alerts.sinks import build_sinks
from alerts.sinks.base import SinkError
from config import load_config
from tests.integration.test_cluster import cluster, cluster_config  # noqa: F401 - `cluster` is a fixture

pytestmark = pytest.mark.integration


class Operator:
    """An operator's MQTT 3.1.1 client on one node: records the alert notices, publishes commands."""

    def __init__(self, cluster, node: int, topic: str):  # noqa: F811 - the fixture's name
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.user, password = cluster.credentials.operator
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"op-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(self.user, password)
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = lambda c, u, m: self._got(m)
        host, port = cluster.mqtt_nodes[node].split(":")
        self.client.connect(host, int(port))
        self.client.loop_start()
        assert self.subscribed.wait(30), "the operator could not subscribe"

    def _got(self, msg) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def notice(alert_id: str) -> Notice:
    payload = {"idempotency_key": f"{alert_id}:1", "alert_id": alert_id, "seq": 1, "transition": "firing",
               "category": "gas", "site": {"id": "GS-SM-01"}, "device": {"id": "XMG0001"}}
    return Notice(f"{alert_id}:1", alert_id, 1, "firing", time.time_ns(), payload)


def wait(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_alert_sink_and_command_listener_move_to_the_next_node(tmp_path, cluster):  # noqa: F811
    env = {**os.environ, **cluster.env()}
    cfg = load_config(cluster_config(tmp_path), env)
    assert cfg.connections.cluster.mode == "partitioned" and len(cfg.connections.cluster.nodes) == 3
    commands: list[tuple[str, bytes, str]] = []
    listener = CommandListener(cfg, lambda src, payload, author: commands.append((src, payload, author.account)) or "ok",
                               env)
    sinks = build_sinks(cfg, env)
    sink = sinks["ops_mqtt"]
    operator = Operator(cluster, 2, "city/xm/alerts/#")
    try:
        listener.start()
        wait(lambda: listener.subscribed, 30, "the command listener never subscribed")
        assert (listener.host, listener.port) == cfg.connections.cluster.hosts()[0]
        sink.send(notice("G-high.XMG0001.before"))
        wait(lambda: any(b"before" in m for _, m in operator.messages), 30, "no notice before the kill")

        cluster.kill(0)  # the node both are connected to
        killed_at = time.monotonic()
        sent = False
        while not sent:  # the dispatcher retries a retryable SinkError the same way, with the same key
            try:
                sink.send(notice("G-high.XMG0001.after"))
                sent = True
            except SinkError as exc:
                assert exc.retryable, exc
                assert time.monotonic() - killed_at < 90, f"the alert sink never got to another node: {exc}"
                time.sleep(0.5)
        wait(lambda: any(b"after" in m for _, m in operator.messages), 60, "the notice sent after the kill never arrived")
        notice_s = time.monotonic() - killed_at
        assert sink.nodes.current != cfg.connections.cluster.hosts()[0]  # type: ignore[attr-defined]

        topic = f"{cfg.alerting.command_topic}/{operator.user}"
        cmd = json.dumps({"action": "ack", "alert_id": "G-high.XMG0001.after"}).encode()
        deadline = time.monotonic() + 150  # the cluster's leader elections, then the listener's reconnect
        while not commands:  # until the listener's new subscription is in place (bounded)
            assert time.monotonic() < deadline, "the command listener never got a command after the kill"
            operator.client.publish(topic, cmd, qos=1).wait_for_publish(10)
            time.sleep(1.0)
        command_s = time.monotonic() - killed_at
        assert commands[0] == (f"mqtt:{topic}", cmd, operator.user)
        assert listener.nodes.current != cfg.connections.cluster.hosts()[0]
        print(f"\nRESULT cluster_alert_failover notice_after_kill_s={notice_s:.1f} command_after_kill_s={command_s:.1f}")
    finally:
        operator.close()
        listener.stop()
        for s in sinks.values():
            s.close()
