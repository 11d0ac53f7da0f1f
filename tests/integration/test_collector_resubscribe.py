"""Issue 15 follow-up on a real broker that refuses a subscription: a NATS server's MQTT listener (the cluster
mode's broker) whose permissions refuse part of the collector's data subscription at first, as a node does
while its JetStream elects its leaders. Once the permissions allow it (a config reload, no reconnect), the
collector asks again by itself and receives the readings.

(Mosquitto 2.0's ACL file grants every subscription and filters at delivery, so it cannot refuse one.)
"""

from __future__ import annotations

import json
import os
import signal
import threading

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citywatch.cluster import NatsNode, NodePorts
from citywatch.localstack import free_port
from citywatch.service import wait_until
from config import load_config
from ingest.collector import MqttCollector

pytestmark = pytest.mark.integration



def write_conf(node: NatsNode, service_reads: list[str]) -> None:
    users = [
        {"user": "cw", "password": "cw-secret", "allowed_connection_types": ["MQTT"],
         "permissions": {"publish": {"allow": ["city.xm.internal.>"]},
                         "subscribe": {"allow": service_reads + ["$MQTT.sub.>"]}}},
        {"user": "dev", "password": "dev-secret", "allowed_connection_types": ["MQTT"],
         "permissions": {"publish": {"allow": ["city.xm.>"]}, "subscribe": {"allow": ["$MQTT.sub.>"]}}},
    ]
    p = node.ports
    node.directory.mkdir(parents=True, exist_ok=True)
    node.conf.write_text(f"""server_name: {node.server_name}
listen: 127.0.0.1:{p.client}
http: 127.0.0.1:{p.http}
jetstream {{ store_dir: "{node.directory / 'js'}", max_memory_store: 64MB, max_file_store: 256MB }}
mqtt {{ listen: 127.0.0.1:{p.mqtt} }}
authorization {{ users: {json.dumps(users)} }}
""")


@pytest.fixture
def nats(tmp_path):
    node = NatsNode(tmp_path / "nats", "n1", NodePorts(free_port(), free_port(), free_port(), free_port()))
    # At first the service may read the noise subtree only: its subscription to the gas one is refused.
    write_conf(node, ["city.xm.noise.>"])
    try:
        node.start()
    except RuntimeError as exc:  # nats-server missing or too old: cluster mode's own tests say how to install it
        pytest.fail(str(exc))
    yield node
    node.kill()


def test_collector_asks_again_for_a_refused_data_subscription(nats, caplog):
    cfg = load_config(env={})
    mq = cfg.connections.mqtt.model_copy(update={
        "protocol": "mqtt311", "host": "127.0.0.1", "port": nats.ports.mqtt, "username": "cw",
        "client_id": "cw-resubscribe",
        "reconnect": cfg.connections.mqtt.reconnect.model_copy(update={"min_delay_s": 0.2, "max_delay_s": 1.0})})
    got = []
    lock = threading.Lock()

    def sink(msg):
        with lock:
            got.append(msg)

    c = MqttCollector(mq, "cw-secret", sink)
    c.start()
    dev = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="dev-G01", protocol=mqtt.MQTTv311)
    try:
        assert wait_until(lambda: (c.last_error or "").startswith("subscription refused"), 60), c.last_error
        assert not c.connected and c.client.is_connected()  # connected to the broker, deaf to the gas topics
        connects = c.connects

        write_conf(nats, ["city.xm.>"])
        os.kill(nats.pid, signal.SIGHUP)  # NATS reloads its permissions; connections stay
        assert wait_until(lambda: c.connected, 60), f"the collector never asked again: {c.last_error}"
        assert c.connects == connects  # asked again on the same connection

        dev.username_pw_set("dev", "dev-secret")
        dev.connect("127.0.0.1", nats.ports.mqtt)
        dev.loop_start()
        topic = "city/xm/gas/S01/G01/data"
        dev.publish(topic, b'{"ts":1700000000000,"values":{"p":3.2}}', qos=1).wait_for_publish(30)
        assert wait_until(lambda: any(m.topic == topic for m in list(got)), 60)
    finally:
        dev.disconnect()
        dev.loop_stop()
        c.stop()
    refusals = [r for r in caplog.records if "refused the data subscription" in r.getMessage()]
    assert len(refusals) == 1  # once per episode, however many times it was asked
