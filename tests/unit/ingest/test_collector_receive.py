"""The collector's receive path: ReceiveClient's buffered reads and in-place PUBLISH decoding against real
packet bytes (and paho's own decoder), and MqttCollector's per-message hand-off."""

from __future__ import annotations

import fcntl
import socket
import struct
import termios
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


# ----- the direct path from the buffer against paho's own parser: any split, any mix of packets --------------

def mixed_stream(v5: bool) -> bytes:
    """QoS 0/1 PUBLISH packets (1- and 2-byte remaining lengths, DUP, retain, empty payload) interleaved with the
    packets paho's parser keeps: PINGRESP, SUBACK, a QoS 2 PUBLISH and its PUBREL, a PUBACK of ours."""
    props = PROPS if v5 else None
    reading = b'{"ts":1700000000000,"values":{"leq":51.2,"lmax":59.2,"lmin":46.2,"l90":48.2}}'
    pub = publish_packet(b"city/xm/noise/S01/N01/data", reading, 1, props=props)
    dup = bytearray(publish_packet(b"city/xm/noise/S01/N02/data", b"7" * 130, 2, props=props))
    dup[0] |= 0x08  # DUP: a redelivery, decoded as any QoS 1 PUBLISH
    suback = b"\x00\x07" + (b"\x00" if v5 else b"") + b"\x01\x80"  # packet 7: QoS 1 granted, then refused
    return b"".join([
        pub,
        b"\xd0\x00",  # PINGRESP
        publish_packet(b"city/xm/noise/S01/N01/status", b"online", 0, qos=0, retain=True, props=props),
        b"\x90" + varint(len(suback)) + suback,
        publish_packet(b"city/xm/gas/S02/G07/data", b"q2", 9, qos=2, props=props),
        bytes(dup),
        b"\x62\x02\x00\x09",  # PUBREL for packet 9: paho hands the QoS 2 message on now
        b"\x40\x02\x00\x4d",  # PUBACK of a packet we never sent: ignored
        publish_packet(b"city/xm/gas/S02/G07/data", b"", 0, qos=0, props=props),
        pub,
    ])


def recording(client: mqtt.Client, events: list) -> None:
    """Record what `client` hands on, in order, in one form for ReceiveClient and for paho's own Client."""
    client.on_message = lambda c, u, m: events.append(
        ("publish", m.topic.encode(), bytes(m.payload), m.mid, m.qos, bool(m.retain)))
    client.on_subscribe = lambda c, u, mid, codes, props: events.append(("suback", mid, [rc.value for rc in codes]))
    pingresp = client._handle_pingresp
    client._handle_pingresp = lambda: (events.append(("pingresp",)), pingresp())[1]  # type: ignore[method-assign]
    if isinstance(client, ReceiveClient):
        client.on_publish_received = lambda *a: events.append(("publish", *a))


def sent(broker: socket.socket) -> bytes:
    """What the client wrote to the broker's end so far (its acks)."""
    broker.setblocking(False)
    out = b""
    while True:
        try:
            data = broker.recv(65536)
        except BlockingIOError:
            return out
        if not data:
            return out
        out += data


def reader_state(client: mqtt.Client, sock: socket.socket, events: list) -> tuple:
    """What a loop_read call can change: the bytes still unread in the socket, the events handed on, the acks
    queued, paho's packet parser and ReceiveClient's buffer position."""
    unread = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    parser = {k: bytes(v) if isinstance(v, bytearray) else list(v) if isinstance(v, list) else v
              for k, v in client._in_packet.items()}
    buffered = (len(client._rbuf), client._rpos) if isinstance(client, ReceiveClient) else None
    return unread, len(events), len(client._out_packet), parser, buffered


def run_client(cls: type, v5: bool, manual: bool, parts: list[bytes]) -> tuple[list, bytes, list]:
    """Feed `parts` one at a time to a fresh client of `cls`; returns its events, the bytes it sent back and
    loop_read's return codes."""
    proto = mqtt.MQTTv5 if v5 else mqtt.MQTTv311
    c = cls(CallbackAPIVersion.VERSION2, client_id="t", protocol=proto, manual_ack=manual)
    ours, broker = socket.socketpair()
    ours.setblocking(False)
    c._sock = ours
    events: list = []
    recording(c, events)
    codes = []
    try:
        for part in parts:
            broker.sendall(part)
            for _ in range(len(part) + 1):  # paho's own loop_read takes one packet per call
                before = reader_state(c, ours, events)
                codes.append(c.loop_read())
                # A call that changed nothing found nothing to read: so would every further one.
                if c._sock is None or reader_state(c, ours, events) == before:
                    break
        c.loop_write()
        return events, sent(broker), codes
    finally:
        c._sock = None
        ours.close()
        broker.close()


@pytest.mark.parametrize("v5", [False, True], ids=["v311", "v5"])
def test_receive_client_matches_paho_at_every_split(v5):
    wire = mixed_stream(v5)
    want_events, want_sent, _ = run_client(mqtt.Client, v5, True, [wire])
    # paho's own Client is the reference: 6 PUBLISH handed on (the QoS 2 one on its PUBREL), the SUBACK and
    # PINGRESP seen; it answered the QoS 2 PUBLISH with PUBREC.
    assert [e[0] for e in want_events].count("publish") == 6 and ("pingresp",) in want_events
    assert want_events[3] == ("suback", 7, [1, 0x80]) and want_sent == b"\x50\x02\x00\x09"
    for cut in range(len(wire) + 1):
        events, back, codes = run_client(ReceiveClient, v5, True, [wire[:cut], wire[cut:]])
        assert (events, back) == (want_events, want_sent), f"split at byte {cut}"
        assert set(codes) == {MQTTErrorCode.MQTT_ERR_SUCCESS}


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 8, 13, 64, 200])
@pytest.mark.parametrize("manual", [True, False], ids=["manual-ack", "auto-ack"])
@pytest.mark.parametrize("v5", [False, True], ids=["v311", "v5"])
def test_receive_client_matches_paho_across_recv_chunks(monkeypatch, v5, manual, chunk):
    # The socket read in chunks that end anywhere in a packet: in its fixed header, its remaining length
    # (the 2- and 3-byte ones here), its body; a packet spanning many chunks continues in paho's parser.
    big = publish_packet(b"city/xm/noise/S01/N01/data", b"9" * 20_000, 3, props=PROPS if v5 else None)
    wire = mixed_stream(v5) + big + mixed_stream(v5)
    want = run_client(mqtt.Client, v5, manual, [wire])
    # Auto acks: a PUBACK for each of the 7 QoS 1 packets, in order, and PUBCOMP for the two QoS 2 ones.
    acks = (7, 2) if not manual else (0, 0)
    assert (want[1].count(b"\x40\x02"), want[1].count(b"\x70\x02\x00\x09")) == acks
    monkeypatch.setattr("ingest.collector.RECV_CHUNK", chunk)
    assert run_client(ReceiveClient, v5, manual, [wire])[:2] == want[:2]


def test_receive_client_without_a_publish_handler_is_paho(wired):
    wire = mixed_stream(True)
    want = run_client(mqtt.Client, True, True, [wire])
    client, broker, _ = wired(True)
    client.on_publish_received = None
    events: list = []
    recording(client, events)
    client.on_publish_received = None
    broker.sendall(wire)
    for _ in range(20):
        client.loop_read()
    assert events == want[0]


def test_receive_client_leaves_a_reserved_type_byte_to_paho():
    # Type 0 is reserved: paho's parser, reading it and a cut length, is in a packet though `command` stays 0.
    # What follows is that packet's length and body to paho, never PUBLISH packets of their own.
    parts = [b"\x00\x85", publish_packet(b"a/b", b"x", 1) * 3]
    want = run_client(mqtt.Client, False, True, parts)
    assert want[0] == [] and run_client(ReceiveClient, False, True, parts) == want


@pytest.mark.parametrize("v5", [False, True], ids=["v311", "v5"])
@pytest.mark.parametrize("cut", [0, 1, 3, 5], ids=lambda c: f"cut{c}")
def test_receive_client_refuses_a_remaining_length_of_five_bytes(wired, v5, cut):
    client, broker, got = wired(v5)
    good = publish_packet(b"a/b", b"x", 1, props=b"" if v5 else None)
    # MQTT §2.2.3: at most 4 length bytes. This one says the length of a valid body in 5 (0x80 continues).
    body = good[2:]
    bad = bytes([0x32, 0x80 | len(body), 0x80, 0x80, 0x80, 0x00]) + body
    wire = good + bad
    # Whole, or cut inside the length bytes: the direct path and paho's parser refuse it alike.
    broker.sendall(wire[:len(good) + cut])
    rc = client.loop_read()
    if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
        broker.sendall(wire[len(good) + cut:])
        rc = client.loop_read()
    assert rc == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert got == [(b"a/b", b"x", 1, 1, False)]  # the packet before it was handed on
    assert client._sock is None  # and the connection dropped


@pytest.mark.parametrize("body", [
    b"",  # no topic length at all
    b"\x00",  # half a topic length
    b"\x00\x05a/b",  # topic longer than the packet
    b"\x00\x03a/b\x00",  # QoS 1 without its whole packet id
], ids=["empty", "half-length", "long-topic", "half-mid"])
@pytest.mark.parametrize("v5", [False, True], ids=["v311", "v5"])
def test_receive_client_refuses_a_publish_shorter_than_its_fields(wired, v5, body):
    client, broker, got = wired(v5)
    # A valid packet follows in the same buffer: the decoder must not read into it.
    broker.sendall(b"\x32" + varint(len(body)) + body + publish_packet(b"c/d", b"y", 2, props=b"" if v5 else None))
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert got == [] and client._sock is None


@pytest.mark.parametrize("props_len", [b"\x05", b"\x80", b"\x80\x80\x80\x80\x01", b""],
                         ids=["past-end", "cut-varint", "five-bytes", "missing"])
def test_receive_client_refuses_mqtt5_properties_past_the_packet(wired, props_len):
    client, broker, got = wired(True)
    body = b"\x00\x03a/b\x00\x01" + props_len
    broker.sendall(b"\x32" + varint(len(body)) + body + publish_packet(b"c/d", b"y", 2, props=b""))
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_PROTOCOL
    assert got == []


def test_receive_client_reports_a_closed_connection(wired):
    client, broker, got = wired(False)
    one = publish_packet(b"a/b", b"x", 1)
    broker.sendall(one + one[:4])  # a whole packet, then the connection ends inside the next
    broker.close()
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert got == [(b"a/b", b"x", 1, 1, False)] and client._sock is None
    client2, broker2, got2 = wired(True)
    broker2.close()  # closed between packets, nothing buffered
    assert client2.loop_read() == MQTTErrorCode.MQTT_ERR_CONN_LOST and client2._sock is None


def test_receive_client_stamps_keepalive_and_stops_between_batches(wired, monkeypatch):
    client, broker, got = wired(True)
    one = publish_packet(b"a/b", b"x", 1, props=b"")
    monkeypatch.setattr("ingest.collector.RECV_CHUNK", 2 * len(one))
    monkeypatch.setattr("ingest.collector.READ_BATCH", 3)
    client._last_bytes_received = 0.0
    broker.sendall(one * 10)
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
    # Two chunks of two packets, then back to paho's loop (it writes the queued acks) with nothing buffered.
    assert len(got) == 4 and client._rpos == len(client._rbuf)
    assert client._last_bytes_received > 0  # paho's keepalive sees the broker alive
    while len(got) < 10:
        client.loop_read()
    assert got == [(b"a/b", b"x", 1, 1, False)] * 10


def test_receive_client_stops_when_the_handler_closes_the_connection(wired):
    client, broker, got = wired(False)
    client.on_publish_received = lambda *a: (got.append(a), client._sock_close())
    broker.sendall(publish_packet(b"a/b", b"x", 1) + publish_packet(b"c/d", b"y", 2))
    assert client.loop_read() == MQTTErrorCode.MQTT_ERR_NO_CONN
    assert got == [(b"a/b", b"x", 1, 1, False)]


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
