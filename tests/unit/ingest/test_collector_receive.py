"""The collector's receive path: ReceiveClient's buffered reads and in-place PUBLISH decoding against real
packet bytes (and paho's own decoder), and MqttCollector's per-message hand-off."""

from __future__ import annotations

import socket
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt import _packet
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion

from config import load_config
from ingest.collector import AckToken, Message, MqttCollector, ReceiveClient

ROOT = Path(__file__).resolve().parents[3]
MQTT = load_config(ROOT / "config", env={}).connections.mqtt


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def publish_packet(topic: bytes, payload: bytes, mid: int, qos: int = 1, retain: bool = False,
                   props: bytes | None = None) -> bytes:
    """A PUBLISH packet as a broker sends it; props: MQTT 5 property bytes (None: an MQTT 3.1.1 packet)."""
    body = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    if props is not None:
        body += varint(len(props)) + props
    body += payload
    return bytes([0x30 | (qos << 1) | int(retain)]) + varint(len(body)) + body


# Two MQTT 5 user properties (0x26) and a content type (0x03), as a device with properties sends them.
PROPS = (b"\x26" + b"\x00\x04site" + b"\x00\x03S01" + b"\x26" + b"\x00\x02fw" + b"\x00\x051.4.2"
         + b"\x03" + b"\x00\x10application/json")


@pytest.fixture
def wired():
    """A ReceiveClient of each protocol version on one end of a socket pair; the test writes the other end."""
    made = []

    def make(v5: bool) -> tuple[ReceiveClient, socket.socket, list]:
        proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
        c = ReceiveClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=proto, manual_ack=True)
        ours, broker = socket.socketpair()
        ours.setblocking(False)
        c._sock = ours
        got: list = []
        c.on_publish_received = lambda *a: got.append(a)
        made.append((c, ours, broker))
        return c, broker, got

    yield make
    for c, ours, broker in made:
        c._sock = None
        ours.close()
        broker.close()


@pytest.mark.parametrize("v5", [False, True])
def test_receive_client_decodes_as_paho_does(wired, v5):
    client, broker, got = wired(v5)
    big = b'{"ts":1,"values":{"leq":' + b"5" * 70_000 + b"}}"  # longer than one read and a 3-byte length
    packets = [
        (b"city/xm/noise/S01/N01/data", b'{"ts":1700000000000,"values":{"leq":51.2}}', 1, 1, False),
        (b"city/xm/gas/S02/G07/data", b"", 65535, 1, True),
        (b"city/xm/noise/S01/N01/data", big, 2, 1, False),
        (b"city/xm/noise/S01/N01/status", b"online", 0, 0, False),
    ]
    wire = b"".join(publish_packet(t, p, m, q, r, PROPS if v5 else None) for t, p, m, q, r in packets)
    broker.sendall(wire[:5])  # a packet cut inside its fixed header, then the rest
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == []
    broker.sendall(wire[5:])
    while len(got) < len(packets):
        assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == packets
    # The same bytes through paho's own decoder give the same topic, payload, packet id, QoS and retain.
    proto = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
    for topic, payload, mid, qos, retain in packets:
        raw = publish_packet(topic, payload, mid, qos, retain, PROPS if v5 else None)
        skip = 2 + next(i for i, b in enumerate(raw[1:5]) if b < 0x80)  # type byte + remaining length
        ref = _packet.decode_publish(raw[0], bytearray(raw[skip:]), proto)
        assert (ref.topic, ref.payload, ref.mid, ref.qos, ref.retain) == (topic, payload, mid, qos, retain)


def test_receive_client_refuses_a_short_publish(wired):
    client, broker, got = wired(True)
    # The remaining length says 6: topic length 10 but only 4 bytes follow.
    broker.sendall(b"\x32\x06\x00\x0acity")
    assert client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS
    assert got == []


def test_receive_client_forgets_the_bytes_of_a_closed_connection(wired):
    client, broker, got = wired(False)
    one = publish_packet(b"a/b", b"x", 1)
    client._rbuf, client._rpos = one + one, len(one)  # a packet read from the socket and not handled yet
    client._sock_close()
    assert client._rbuf == b"" and client._rpos == 0
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    client._sock = ours
    try:
        broker.sendall(publish_packet(b"c/d", b"y", 2))
        client.loop_read()
        assert got == [(b"c/d", b"y", 2, 1, False)]  # only the new connection's packet
    finally:
        client._sock = None
        ours.close()
        broker.close()


def test_receive_client_qos2_takes_paho_path(wired):
    client, broker, got = wired(False)
    seen = []
    client.on_message = lambda c, u, msg: seen.append((msg.topic, msg.payload, msg.mid, msg.qos))
    broker.sendall(publish_packet(b"a/b", b"x", 9, qos=2))
    client.loop_read()
    assert got == []  # paho answers PUBREC and delivers on PUBREL
    broker.sendall(b"\x62\x02\x00\x09")  # PUBREL for packet 9
    client.loop_read()
    assert seen == [("a/b", b"x", 9, 2)]


def collector(partition: int | None = None) -> tuple[MqttCollector, list[Message]]:
    got: list[Message] = []
    c = MqttCollector(MQTT, None, got.append, partition=partition)
    return c, got


def test_on_publish_hands_on_one_message_with_its_token():
    c, got = collector()
    c._generation = 3
    c._on_publish(b"city/xm/noise/S01/N01/data", b"{}", 41, 1, False)
    (m,) = got
    assert (m.topic, m.payload, m.token, m.retain) == ("city/xm/noise/S01/N01/data", b"{}", AckToken(3, 41, 1, 0), False)
    assert isinstance(m.recv_ns, int) and m.recv_ns > 0


def test_on_publish_strips_the_partition_prefix_and_keeps_an_unreadable_topic():
    c, got = collector(partition=2)
    c._on_publish(b"cw/p/2/city/xm/gas/S/D/data", b"{}", 5, 1, False)
    c._on_publish(b"city/xm/gas/\xff/D/data", b"{}", 6, 1, False)  # not UTF-8: dead-lettered downstream, acked
    assert [m.topic for m in got] == ["city/xm/gas/S/D/data", "city/xm/gas/\ufffd/D/data"]
    assert [m.token.source for m in got] == [2, 2]


def test_on_publish_acks_a_retained_clear_and_paused_drops(monkeypatch):
    c, got = collector()
    acked = []
    monkeypatch.setattr(c.client, "ack", lambda mid, qos: acked.append(mid))
    c._on_publish(b"city/xm/noise/S01/N01/data", b"", 7, 1, True)  # an empty retained publish clears the topic
    assert got == [] and acked == [7]
    c.pause()
    c._on_publish(b"city/xm/noise/S01/N01/data", b"{}", 8, 1, False)
    assert got == [] and acked == [7]  # unacked: the broker gives it to the next session
