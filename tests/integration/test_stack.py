"""The real servers of the test fixtures: MQTT round trip, auth and ACL, InfluxDB write/read, restart, kill."""

from __future__ import annotations

import subprocess
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion


def _client(server, who, client_id="", **kw):
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, **kw)
    if who is not None:
        c.username_pw_set(**server.client_args(who))
    return c


class Inbox:
    def __init__(self):
        self.messages = []
        self.event = threading.Event()

    def on_message(self, client, userdata, msg):
        self.messages.append((msg.topic, msg.payload))
        self.event.set()

    def wait_for(self, n, timeout_s=10.0):
        deadline = time.monotonic() + timeout_s
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.messages


def _connect(client, server):
    result = {}
    done = threading.Event()

    def on_connect(c, u, flags, rc, props=None):
        result["rc"] = rc
        done.set()

    client.on_connect = on_connect
    client.connect(server.host, server.port)
    client.loop_start()
    assert done.wait(10), "no CONNACK within 10 s"
    return result["rc"]


def _collector_subscribed(server):
    """The collector user connected and subscribed to every data topic; returns (client, inbox)."""
    inbox = Inbox()
    sub = _client(server, "collector")
    sub.on_message = inbox.on_message
    assert not _connect(sub, server).is_failure
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe("city/xm/#", qos=1)
    assert subscribed.wait(5)
    return sub, inbox


@pytest.mark.shared_influx
def test_publish_and_receive_as_device_and_collector(mosquitto):
    sub, inbox = _collector_subscribed(mosquitto)

    dev = _client(mosquitto, "XM0001NOISE")
    assert not _connect(dev, mosquitto).is_failure
    info = dev.publish("city/xm/noise/SM-2025-101/XM0001NOISE/data", b'{"x":1}', qos=1)
    info.wait_for_publish(5)
    msgs = inbox.wait_for(1)
    assert msgs == [("city/xm/noise/SM-2025-101/XM0001NOISE/data", b'{"x":1}')]
    for c in (sub, dev):
        c.loop_stop()
        c.disconnect()


@pytest.mark.shared_influx
def test_broker_refuses_unauthenticated_client(mosquitto):
    anon = _client(mosquitto, None)
    rc = _connect(anon, mosquitto)
    anon.loop_stop()
    assert rc.is_failure
    assert rc.value in (0x86, 0x87)  # MQTT 5: bad user name or password / not authorized

    wrong = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    wrong.username_pw_set("XM0001NOISE", "not-the-password")
    rc = _connect(wrong, mosquitto)
    wrong.loop_stop()
    assert rc.is_failure


@pytest.mark.shared_influx
def test_device_cannot_publish_under_another_devices_topic(mosquitto):
    sub, inbox = _collector_subscribed(mosquitto)

    dev = _client(mosquitto, "XM0001NOISE")
    acks = {}
    dev.on_publish = lambda c, u, mid, rc, props: acks.__setitem__(mid, rc)
    _connect(dev, mosquitto)
    foreign = dev.publish("city/xm/noise/SM-2025-101/XM0002NOISE/data", b"spoofed", qos=1)
    foreign_hj = dev.publish("city/xm/hj212/XM0002NOISE", b"spoofed", qos=1)
    own = dev.publish("city/xm/noise/SM-2025-101/XM0001NOISE/data", b"own", qos=1)
    own.wait_for_publish(5)
    foreign.wait_for_publish(5)
    inbox.wait_for(1)
    time.sleep(0.3)  # let any wrongly forwarded message arrive before we assert its absence
    assert [m[1] for m in inbox.messages] == [b"own"]
    # MQTT 5: the broker answers a refused QoS 1 publish with "Not authorized" (0x87).
    assert acks[foreign.mid].value == 0x87
    assert acks[foreign_hj.mid].value == 0x87
    for c in (sub, dev):
        c.loop_stop()
        c.disconnect()


@pytest.mark.shared_influx
def test_mosquitto_pub_cli_as_device(mosquitto):
    sub, inbox = _collector_subscribed(mosquitto)
    user = mosquitto.client_args("XMG0001")
    subprocess.run(
        ["mosquitto_pub", "-h", mosquitto.host, "-p", str(mosquitto.port), "-u", user["username"], "-P",
         user["password"], "-q", "1", "-t", "city/xm/gas/GS-SM-01/XMG0001/data", "-m", "hello"],
        check=True, timeout=10,
    )
    assert inbox.wait_for(1) == [("city/xm/gas/GS-SM-01/XMG0001/data", b"hello")]
    sub.loop_stop()
    sub.disconnect()


def test_persistent_session_queue_survives_broker_restart(mosquitto):
    """QoS 1 messages queued for an offline persistent session are still delivered after a broker restart."""
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    sub = _client(mosquitto, "collector", client_id="persist-test")
    result = threading.Event()
    sub.on_connect = lambda *a: result.set()
    sub.connect(mosquitto.host, mosquitto.port, clean_start=False, properties=props)
    sub.loop_start()
    assert result.wait(5)
    subscribed = threading.Event()
    sub.on_subscribe = lambda *a: subscribed.set()
    sub.subscribe("city/xm/#", qos=1)
    assert subscribed.wait(5)
    sub.disconnect()
    sub.loop_stop()

    dev = _client(mosquitto, "XMG0002")
    _connect(dev, mosquitto)
    infos = [dev.publish("city/xm/gas/GS-HL-02/XMG0002/data", str(i).encode(), qos=1) for i in range(50)]
    for info in infos:
        info.wait_for_publish(5)
    dev.loop_stop()
    dev.disconnect()

    mosquitto.restart()

    inbox = Inbox()
    sub2 = _client(mosquitto, "collector", client_id="persist-test")
    sub2.on_message = inbox.on_message
    done = threading.Event()
    sub2.on_connect = lambda *a: done.set()
    sub2.connect(mosquitto.host, mosquitto.port, clean_start=False, properties=props)
    sub2.loop_start()
    assert done.wait(5)
    msgs = inbox.wait_for(50)
    sub2.loop_stop()
    sub2.disconnect()
    assert sorted(int(p) for _, p in msgs) == list(range(50))


def test_influx_write_and_read_back(influx):
    influx.write(
        "noise,site_id=S1,device_id=D1 leq=61.5,lmax=78.2 1748788200000000000\n"
        "noise,site_id=S1,device_id=D1 leq=62.5,lmax=79.0 1748788260000000000\n"
    )
    assert influx.count("noise") == 2
    res = influx.query('SELECT "leq" FROM "noise" ORDER BY time')
    values = res[0]["series"][0]["values"]
    assert values == [[1748788200000000000, 61.5], [1748788260000000000, 62.5]]
    # Same series and timestamp: an overwrite, not a second point (what makes redelivery idempotent).
    influx.write("noise,site_id=S1,device_id=D1 leq=61.5,lmax=78.2 1748788200000000000\n")
    assert influx.count("noise") == 2


def test_influx_kill_and_restart_keeps_data(influx):
    influx.write("gas_pressure,device_id=G1 p=2.5 1748788200000000000\n")
    influx.stop()
    assert not influx.running()
    influx.start()
    assert influx.count("gas_pressure") == 1
    influx.kill()
    assert not influx.running()
    influx.start()  # the WAL brings the point back after a crash
    assert influx.count("gas_pressure") == 1
