"""The MQTT side of ingest: a paho-mqtt 2.x client with a persistent session and manual acks.

`_on_publish` only stamps the receive time and hands the message on (paho's network loop must never block or
raise); the pipeline acks each message later, once its rows are durable or dead-lettered. ReceiveClient cuts
paho's own per-message cost (issue 17); a refused data subscription is asked again (issue 15). Retained messages
the broker delivers again (on every resubscribe) are recognised and acked here, never processed twice.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.backoff import Backoff
from core.node_rotation import NodeRotation
from core.reachability import Reachability, connect_error

if TYPE_CHECKING:
    from config.connections import Mqtt
    from ingest.metrics import IngestMetrics

log = logging.getLogger(__name__)

# MQTT PUBACK fixed header: packet type 4 (0x40), remaining length 2 (the packet identifier).
_PUBACK = 0x40
_PUBACK_HEAD = bytes([_PUBACK, 2])

# domain.md §3: per-domain data and status topics, and raw HJ 212 frames keyed by MN. The whole subtrees
# are taken, not just the topics we decode: a reading published on a malformed topic must reach the
# dead-letter store (unknown_topic) rather than vanish unseen. Command topics (`.../cmd`) are skipped.
TOPICS = (
    "city/xm/noise/#",
    "city/xm/gas/#",
    "city/xm/hj212/#",
)
# Retained {"state": "online"} while this collector is connected; the broker's last will sets "offline" when
# it goes without a clean stop (killed, network lost), and a clean stop sets it: the console's liveness signal.
PRESENCE_PREFIX = "city/xm/internal/presence"
# Partitioned mode (README "Cluster mode"): the cluster maps each device topic to `cw/p/<k>/<device topic>`.
PARTITION_PREFIX = "cw/p"


def presence_topic(client_id: str) -> str:
    """The retained presence topic of the collector with this MQTT client id (wildcards made harmless)."""
    return f"{PRESENCE_PREFIX}/{client_id.replace('/', '_').replace('+', '_').replace('#', '_')}"


# Named tuples, not dataclasses: one of each is built per message on paho's thread, where time counts.
class AckToken(NamedTuple):
    """Identifies one received message for its later ack: the connection it came on, its packet id, QoS."""

    generation: int
    mid: int
    qos: int
    source: int = 0  # partitioned mode: the partition whose client received it (one session per partition)


# Topics whose last processed retained payload is remembered: at most one retained message per topic exists,
# and only inventory devices may publish, so this is the inventory's size; beyond it, duplicates are processed.
RETAINED_TOPICS_MAX = 100_000


class Message(NamedTuple):
    """One received message: topic, raw payload, receive time (UTC ns) and its ack token."""

    topic: str
    payload: bytes
    recv_ns: int
    token: AckToken
    retain: bool = False


class MqttCollector:
    """Receives the device topics at QoS 1 on a persistent session and acks on request.

    mqtt:            the `connections.mqtt` config section
    password:        broker password (from the environment), or None
    sink:            called with each Message from paho's network thread; must be fast and never raise
    receive_maximum: MQTT 5 Receive Maximum: how many unacked messages the broker may have in flight to us.
                     Acks wait for a durable batch, so this window must hold a batch's messages; it also bounds
                     what we hold in memory when we stop acking (spool full). MQTT 3.1.1 has no such
                     property: there the broker's `max_inflight_messages` is the window.
    metrics:         IngestMetrics to count retained re-deliveries and clears into (optional)
    partition:       partitioned mode (README "Cluster mode"): the partition k this client owns, on session
                     `<client_id>-p<k>`, topics `cw/p/<k>/#` with the prefix stripped; None: single mode
    hosts:           (host, port) of the cluster's nodes, tried in turn after a lost connection (default: the
                     one broker of `mqtt`)

    Retained messages (issue 10): the broker sends a topic's retained message again on every subscribe, so
    after each reconnect. It is a re-delivery, not a new reading, but it may also be the only copy of a reading
    we never got (published while our session was gone). So it is never dropped unseen: a retained message is
    processed unless the same payload on the same topic was processed *and made durable* before (its ack went
    out), in this process; then it is acked here and counted (`retained_duplicates`). With MQTT 5 the
    subscription asks for Retain As Published, so a retained publish that reaches us live is known as such
    too, and an empty retained publish (a client clearing a retained message) is acked and counted
    (`retained_cleared`) instead of being dead-lettered as an empty payload. After a restart, the first
    re-delivery is processed once more (idempotent: same series and timestamp).

    Thread-safe: `ack` and `publish` may be called from any thread.
    """

    def __init__(self, mqtt: Mqtt, password: str | None, sink: Callable[[Message], None], receive_maximum: int = 20000,
                 metrics: IngestMetrics | None = None, partition: int | None = None,
                 hosts: list[tuple[str, int]] | None = None) -> None:
        self.cfg = mqtt
        # Partitioned mode: this client owns partition `partition` under its own session `<client_id>-p<k>`
        # (whoever takes the partition over connects with that id); the topic prefix is stripped before the
        # pipeline sees a message. Partition 0 also takes the device subtrees the mapping leaves (malformed
        # topics), so that they are dead-lettered as in single mode.
        self.partition = partition
        client_id = mqtt.client_id if partition is None else f"{mqtt.client_id}-p{partition}"
        self._topics = TOPICS if partition is None else (f"{PARTITION_PREFIX}/{partition}/#",) + (
            TOPICS if partition == 0 else ())
        self._strip = None if partition is None else f"{PARTITION_PREFIX}/{partition}/"
        self._source = partition or 0
        # Nodes to fail over to, in order (connections.cluster.nodes); single mode: the one broker.
        self._nodes = NodeRotation(list(hosts) if hosts else [(mqtt.host, mqtt.port)])
        self._sink = sink
        self._metrics = metrics
        # topic -> digest of the last retained payload made durable; (generation, mid) -> (topic, digest) of
        # retained messages handed on and not yet acked. Plain dict operations: atomic under the GIL.
        self._retained_done: dict[str, bytes] = {}
        self._retained_pending: dict[tuple[int, int], tuple[str, bytes]] = {}
        self._retained_logged: set[str] = set()
        self._generation = 0
        self._connected = threading.Event()
        # Subscriptions the broker has not granted yet: SUBACK packet id -> the topics asked in it. A broker
        # may refuse a subscription it would take a moment later (a cluster node still electing its leaders,
        # an ACL being reloaded); the refused topics are asked again with backoff (issue 15).
        self._sub_lock = threading.Lock()
        self._sub_pending: dict[int, tuple[str, ...]] = {}
        self._refused: set[str] = set()
        self._resubscribe_backoff = Backoff(mqtt.reconnect.min_delay_s, mqtt.reconnect.max_delay_s)
        self._refusal_logged = False
        self._paused = False
        self.connects = 0
        self.last_error: str | None = None
        v5 = mqtt.protocol == "mqtt5"
        self._v5 = v5
        self.client = mqtt_client(client_id, mqtt5=v5)
        if mqtt.username:
            self.client.username_pw_set(mqtt.username, password)
        if mqtt.tls.enabled:
            self.client.tls_set(ca_certs=mqtt.tls.ca_file, certfile=mqtt.tls.cert_file, keyfile=mqtt.tls.key_file,
                                cert_reqs=ssl.CERT_REQUIRED)
            self.client.tls_insecure_set(mqtt.tls.insecure)
        self.client.reconnect_delay_set(max(1, int(mqtt.reconnect.min_delay_s)), max(1, int(mqtt.reconnect.max_delay_s)))
        # Dead-letter publishes queue inside paho while the broker is away (the JSONL file is the durable copy).
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        self._props: Properties | None = None
        if v5:
            self._props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho: no annotations here
            self._props.SessionExpiryInterval = int(mqtt.session_expiry_s)
            self._props.ReceiveMaximum = max(1, min(65535, int(receive_maximum)))
        # The broker's outages are logged once each (unreachable with the reason, back with how long).
        where = f"{mqtt.host}:{mqtt.port}" if hosts is None else self._nodes.describe()
        who = "collector" if client_id == mqtt.client_id else f"collector {client_id}"  # a partition's own session
        self.reachability = Reachability(f"MQTT broker {where} ({who})", log,
                                         down_note="readings wait at the broker; reconnecting")
        self.presence_topic = presence_topic(client_id)
        self.client.will_set(self.presence_topic, b'{"state":"offline"}', qos=1, retain=True)
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message  # QoS 2 only (ReceiveClient hands QoS 0/1 to _on_publish)
        self.client.on_publish_received = self._on_publish
        self.client.on_subscribe = self._on_subscribe

    # ----- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho reconnects with capped exponential delay after any failure."""
        if self._v5:
            self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, clean_start=False,
                                      properties=self._props)
        else:
            host, port = self._nodes.current
            self.client.connect_async(host, port, self.cfg.keepalive_s)
        self.client.loop_start()

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def pause(self) -> None:
        """Stop handing on messages (they stay unacked, so the broker redelivers them to the next session)."""
        self._paused = True

    def stop(self) -> None:
        """Disconnect cleanly (queued acks are sent first: paho writes packets in order) and stop the loop."""
        self._paused = True
        try:
            if self._connected.is_set():  # a clean disconnect sends no will: say it ourselves, before it
                self.client.publish(self.presence_topic, b'{"state":"offline"}', qos=1, retain=True)
            self.client.disconnect()
        finally:
            self.client.loop_stop()
            self._connected.clear()

    # ----- acks and publishing ---------------------------------------------------------------------

    def ack(self, tokens: list[AckToken]) -> int:
        """Ack messages, in the order given. Tokens of an earlier connection are skipped: the broker resends
        those messages on the new connection (same session), and they are processed and acked again.
        Returns the number of acks sent."""
        gen = self._generation
        if self._retained_pending:
            self._retained_durable(tokens)
        mids = [t.mid for t in tokens if t.qos == 1 and t.generation == gen]
        other = [t for t in tokens if t.qos == 2 and t.generation == gen]
        if other:  # QoS 2 is not used by devices; ack one by one through paho (PUBREC/PUBCOMP handshake)
            for tok in other:
                self.client.ack(tok.mid, tok.qos)
        if not mids:
            return len(other)
        queue_packet = getattr(self.client, "_packet_queue", None)
        if queue_packet is None or len(mids) < 8:
            for mid in mids:
                self.client.ack(mid, 1)
            return len(mids) + len(other)
        # One write for a whole batch of PUBACKs instead of one packet (and one wake-up of paho's loop) per
        # message: at thousands of messages per second that is most of the collector's MQTT overhead.
        # PUBACK without reason code and properties (remaining length 2) is valid in MQTT 3.1.1 and in
        # MQTT 5 (reason Success), which is what paho itself sends.
        blob = b"".join(_PUBACK_HEAD + mid.to_bytes(2, "big") for mid in mids)
        queue_packet(_PUBACK, blob, 0, 0)
        return len(mids) + len(other)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        try:
            self.client.publish(topic, payload, qos=qos)
        except (ValueError, RuntimeError) as exc:  # oversize or queue trouble: the file copy is kept anyway
            log.warning("publish to %s failed: %s", topic, exc)

    # ----- paho callbacks (network thread) ---------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            self.last_error = f"connect refused: {reason_code}"
            self.reachability.down(f"the broker refused the connection: {reason_code}")
            return
        self._generation += 1
        self.connects += 1
        # Subscriptions are made here so that they survive reconnects, even to a broker that lost the session.
        # `connected` (and wait_connected) wait for the SUBACK: before it, a device's publish reaches a broker
        # that does not yet route it to us (a fresh session would miss it).
        with self._sub_lock:
            self._sub_pending.clear()
            self._refused.clear()
        self._subscribe(self._topics)
        client.publish(self.presence_topic, b'{"state":"online"}', qos=1, retain=True)
        session = getattr(flags, "session_present", None)
        if not self.reachability.up(f"session present: {session}"):
            log.info("connected to MQTT broker %s:%s (session present: %s)", client.host, client.port, session)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.last_error = connect_error()
        self.reachability.down(self.last_error)
        self._nodes.advance(client)  # with several nodes, the next one (its session lives on every node)

    def _subscribe(self, topics: tuple[str, ...]) -> None:
        """Ask for `topics` at QoS 1 (MQTT 5: with Retain As Published, see the class docstring)."""
        request: list[tuple[str, Any]]
        if self._v5:
            request = [(t, SubscribeOptions(qos=1, retainAsPublished=True)) for t in topics]
        else:
            request = [(t, 1) for t in topics]
        with self._sub_lock:  # the SUBACK (network thread) must find its topics, whichever thread asked
            rc, mid = self.client.subscribe(request)
            if rc == mqtt.MQTT_ERR_SUCCESS and mid is not None:
                self._sub_pending[mid] = topics

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None) -> None:
        with self._sub_lock:
            topics = self._sub_pending.pop(mid, None)
            if topics is None:  # a SUBACK of an earlier connection's request
                return
            # One reason code per topic, in the order asked (MQTT 3.1.1 §3.9.3, MQTT 5 §3.9.3): a granted QoS
            # 0-2, or 0x80 and above for a refusal (3.1.1: 0x80 Failure; 5: e.g. 0x87 Not authorized).
            refused = tuple(t for t, rc in zip(topics, reason_codes) if getattr(rc, "is_failure", False))
            refused += topics[len(reason_codes):]  # a SUBACK with too few codes granted nothing more
            self._refused.difference_update(topics)
            self._refused.update(refused)
            deaf = bool(self._refused)
        if not refused:
            if not deaf:
                if self._refusal_logged:
                    log.info("MQTT broker took the data subscription now: receiving all of %s", ", ".join(self._topics))
                self._refusal_logged = False
                self._resubscribe_backoff.succeeded()
                self._connected.set()
            return
        # Connected but deaf: without asking again, readings would pile up unread until the next reconnect.
        codes = [rc for rc in reason_codes if getattr(rc, "is_failure", False)]
        first = codes[0] if codes else "too few reason codes"
        self.last_error = f"subscription refused: {first}"
        self._connected.clear()
        delay = self._resubscribe_backoff.failed()
        if not self._refusal_logged:  # once per episode: a broker refusing for minutes must not flood the log
            self._refusal_logged = True
            log.warning("MQTT broker refused the data subscription to %s (%s); asking again with backoff "
                        "(%.0f s, doubling up to %.0f s) until it is taken", ", ".join(refused), first, delay,
                        self._resubscribe_backoff.max_s)
        timer = threading.Timer(delay, self._resubscribe, args=(self._generation, refused))
        timer.daemon = True
        timer.start()

    def _resubscribe(self, generation: int, topics: tuple[str, ...]) -> None:
        """Ask again for `topics` the broker refused on connection `generation` (timer thread)."""
        # After a reconnect on_connect has asked for everything already; after a stop nothing is asked.
        if generation != self._generation or self._paused or not self.client.is_connected():
            return
        self._subscribe(topics)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        self._connected.clear()
        if reason_code != 0:
            self.last_error = f"disconnected: {reason_code}"
            self.reachability.down(f"connection lost: {reason_code}")
            self._nodes.advance(client)

    def _on_publish(self, topic_utf8: bytes, payload: bytes, mid: int, qos: int, retain: bool) -> None:
        """One received PUBLISH (ReceiveClient, network thread): the whole per-message work of the collector.

        Kept to a few cheap operations (one token, one Message, one queue put through the sink): at
        thousands of messages per second this runs on the GIL that the decoder and the detectors share.
        No logging, locks or counters per message."""
        # Anything raised here would end paho's network loop: catch all of it.
        try:
            if self._paused:
                return
            # A topic that is not UTF-8 (a broker must refuse it; MQTT §1.5.4) becomes a readable unknown_topic
            # dead letter, acked like any other, rather than a message that is never acked.
            topic = topic_utf8.decode("utf-8", "replace")
            token = AckToken(self._generation, mid, qos, self._source)
            if retain and self._retained_handled(topic, payload, token):
                return
            strip = self._strip
            if strip is not None and topic.startswith(strip):
                topic = topic[len(strip):]
            self._sink(Message(topic, payload, time.time_ns(), token, retain))
        except Exception:  # noqa: BLE001
            log.exception("dropping a message in on_message (it stays unacked; the broker will redeliver it)")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        """paho's own path (QoS 2 messages): the same handling as `_on_publish`."""
        payload = msg.payload if isinstance(msg.payload, bytes) else bytes(msg.payload)
        topic = msg.topic
        self._on_publish(topic.encode() if isinstance(topic, str) else topic, payload, msg.mid, msg.qos,
                         bool(msg.retain))

    # ----- retained messages (paho thread, and the acking thread) --------------------------------------

    def _retained_handled(self, topic: str, payload: bytes, token: AckToken) -> bool:
        """True when a retained message is dealt with here (acked and counted): an empty one (a clear), or a
        payload this topic's last durable retained message already had. Else it is remembered as pending
        and handed on like any message (False)."""
        if not payload:
            self._retained_done.pop(topic, None)
            self._ack_here(token, "retained_cleared", topic,
                           "an empty retained message on %s cleared the retained message there: acked, not a "
                           "bad payload (counted as retained_cleared; said once)")
            return True
        digest = hashlib.blake2b(payload, digest_size=16).digest()
        if self._retained_done.get(topic) == digest:
            self._ack_here(token, "retained_duplicates", topic,
                           "the retained message on %s was delivered again (resubscribe) after it was processed: "
                           "acked, not processed again (counted as retained_duplicates; said once)")
            return True
        if token.qos:
            self._retained_pending[(token.generation, token.mid)] = (topic, digest)
        return False

    def _retained_durable(self, tokens: list[AckToken]) -> None:
        """Remember the retained messages among `tokens` (durable now: the pipeline acks them)."""
        pending, done = self._retained_pending, self._retained_done
        for t in tokens:
            hit = pending.pop((t.generation, t.mid), None)
            if hit is not None and (hit[0] in done or len(done) < RETAINED_TOPICS_MAX):
                done[hit[0]] = hit[1]

    def _ack_here(self, token: AckToken, counter: str, topic: str, message: str) -> None:
        if token.qos:
            self.client.ack(token.mid, token.qos)
        if self._metrics is not None:
            self._metrics.add(counter)
        if counter not in self._retained_logged:
            self._retained_logged.add(counter)
            log.info(message, topic)


def mqtt_client(client_id: str, mqtt5: bool = True, manual_ack: bool = True) -> ReceiveClient:
    """A paho 2.x client for the collector: fixed id, persistent session (3.1.1: clean_session False)."""
    if mqtt5:
        return ReceiveClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                             manual_ack=manual_ack)
    return ReceiveClient(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                         clean_session=False, manual_ack=manual_ack)


# Bytes asked of the socket at once by the collector's client (see ReceiveClient): one recv for many packets.
RECV_CHUNK = 256 * 1024
# At most this many packets per read of the socket while bytes are buffered, so the acks queued meanwhile
# are written in between (paho writes after each read).
READ_BATCH = 2_000

PublishHandler = Callable[[bytes, bytes, int, int, bool], None]


class ReceiveClient(mqtt.Client):
    """paho's Client with a cheaper receive path for a fast stream of small PUBLISH packets (issue 17).

    paho reads each packet with three or more `recv` calls (the type byte, each length byte, the body) and
    goes back to `select` after every packet when acks are manual, then builds an MQTTMessage (and, in
    MQTT 5, a Properties object) and matches the topic against its per-topic callbacks: about as much
    Python as the rest of the collector's per-message work. Here the socket is read RECV_CHUNK bytes at a
    time into a buffer, all buffered packets are handled in one go, and a QoS 0/1 PUBLISH is decoded in
    place and handed to `on_publish_received(topic, payload, mid, qos, retain)` (topic as raw UTF-8 bytes;
    MQTT 5 properties skipped: the collector uses none, and it announces no Topic Alias Maximum, so the
    broker sends none). Between packets, the complete QoS 0/1 PUBLISH packets at the front of the buffer are
    cut straight from it (`_read_buffered`); any other packet, and one whose end is not buffered yet, goes
    through paho's own packet parser, which takes its bytes from the same buffer (so a packet split across
    recv chunks continues there). QoS 2 and every other packet type are handled by paho. Everything else
    (connect, keepalive, acks, reconnects, TLS) is paho's.

    Relies on paho-mqtt 2.x internals (`_sock_recv`, `_packet_read`, `_handle_publish`, `_in_packet`,
    `_last_bytes_received`); tests/unit/ingest/test_collector_receive.py checks it against real packets,
    and `pyproject.toml` pins paho-mqtt to 2.2.x.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rpos = 0
        self.on_publish_received: PublishHandler | None = None

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            buf = super()._sock_recv(RECV_CHUNK)  # raises BlockingIOError when nothing is there
            if not buf:
                return buf  # the broker closed the connection
            self._rbuf, pos = buf, 0
        end = pos + bufsize
        self._rpos = end
        return buf[pos:end]

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0  # bytes of a lost connection never reach the next one
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        # paho handles max(1, in-flight QoS 2 count) packets per select(); with manual acks that is one
        # packet per select. Handle what is buffered (and what the socket has) until it would block.
        n = 0
        while True:
            if self._sock is None:
                return MQTTErrorCode.MQTT_ERR_NO_CONN
            handler = self.on_publish_received
            # paho's parser is between packets when its `_in_packet` is as it resets it (a type byte 0x00,
            # which no packet has, leaves `command` 0 with length bytes read: that one stays with paho).
            if handler is not None and not self._in_packet["command"] and not self._in_packet["remaining_count"]:
                if self._rpos >= len(self._rbuf):
                    rc = self._fill()
                    if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                        return MQTTErrorCode.MQTT_ERR_SUCCESS
                    if rc:
                        return self._loop_rc_handle(rc)
                rc, k = self._read_buffered(handler)
                if rc:
                    return self._loop_rc_handle(rc)
                n += k
                if self._rpos >= len(self._rbuf):
                    if n >= READ_BATCH:
                        return MQTTErrorCode.MQTT_ERR_SUCCESS
                    continue
                # Another packet type, or a packet whose end is still in the socket: paho's parser takes it.
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == MQTTErrorCode.MQTT_ERR_AGAIN:
                if self._rpos < len(self._rbuf):  # paho pauses a long packet after 100 reads: go on with it
                    continue
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            n += 1
            # Stop only with nothing buffered: select() cannot see bytes already taken from the socket.
            if n >= READ_BATCH and self._rpos >= len(self._rbuf):
                return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _fill(self) -> MQTTErrorCode:
        """Read the socket into the empty buffer: SUCCESS, AGAIN (nothing there yet) or CONN_LOST, as paho's
        `_packet_read` answers a failed read of a packet's type byte."""
        try:
            data = super()._sock_recv(RECV_CHUNK)
        except BlockingIOError:
            return MQTTErrorCode.MQTT_ERR_AGAIN
        except OSError as err:  # a socket timeout included
            self._easy_log(mqtt.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        if not data:  # the broker closed the connection
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        self._rbuf, self._rpos = data, 0
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _read_buffered(self, handler: PublishHandler) -> tuple[MQTTErrorCode, int]:
        """Handle the complete QoS 0/1 PUBLISH packets at the front of the buffer; return paho's code and how
        many were handled. Stops at the buffer's end, at any other packet, and at a packet whose end is not
        buffered yet: paho's parser takes those from `_rpos` on."""
        buf, pos = self._rbuf, self._rpos
        end = len(buf)
        n = 0
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            while pos < end:
                header = buf[pos]
                # MQTT 3.1.1 / MQTT 5 §3.3.1: PUBLISH is type 3; QoS bits (0x06) 00 or 01 leave 0x04 clear.
                if header & 0xF4 != 0x30 or pos + 1 >= end:
                    break
                # Remaining length (3.1.1 §2.2.3, 5 §2.1.4): one byte below 128, as for a single reading.
                size = buf[pos + 1]
                start = pos + 2
                if size >= 0x80:
                    size, start = _varint(buf, pos + 1, end)
                    if size < 0:
                        break
                stop = start + size
                if stop > end:
                    break
                self._rpos = pos = stop  # taken before the handler runs (it may close the connection)
                n += 1
                rc = self._deliver_publish(handler, header, buf, start, stop)
                if rc or self._rbuf is not buf:  # a failed auto-ack, or the connection closed meanwhile
                    break
        except MalformedPacket as exc:  # as paho's _packet_read
            self._easy_log(mqtt.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
        if n:
            with self._msgtime_mutex:  # keepalive: paho stamps the time after every packet it reads
                self._last_bytes_received = mqtt.time_func()
        return rc, n

    def _handle_publish(self) -> MQTTErrorCode:
        # A PUBLISH paho's parser read: one whose end was not buffered yet when it began (see loop_read).
        handler = self.on_publish_received
        header = self._in_packet["command"]
        if handler is None or header & 0x04:  # QoS 2 (and the malformed 3) take paho's own path
            return super()._handle_publish()
        packet = bytes(self._in_packet["packet"])
        return self._deliver_publish(handler, header, packet, 0, len(packet))

    def _deliver_publish(self, handler: PublishHandler, header: int, buf: bytes, start: int,
                         stop: int) -> MQTTErrorCode:
        """Decode the QoS 0/1 PUBLISH with fixed header byte `header` and body buf[start:stop], hand it to
        `handler` and ack it unless acks are manual. Raises MalformedPacket when the body is shorter than
        its own fields say."""
        # MQTT 3.1.1 §3.3.2 / MQTT 5 §3.3.2: topic (2-byte length + UTF-8), packet id if QoS > 0, then in
        # MQTT 5 the properties (a variable byte integer length, then that many bytes), then the payload.
        qos = (header & 0x06) >> 1
        if stop - start < 2:
            raise MalformedPacket("PUBLISH shorter than its header says")
        topic_end = start + 2 + ((buf[start] << 8) | buf[start + 1])
        pos = topic_end + 2 if qos else topic_end
        if pos > stop:
            raise MalformedPacket("PUBLISH shorter than its header says")
        mid = (buf[topic_end] << 8) | buf[topic_end + 1] if qos else 0
        if self._protocol == mqtt.MQTTv5:
            if pos >= stop:
                raise MalformedPacket("PUBLISH shorter than its header says")
            size = buf[pos]
            if size < 0x80:
                pos += 1 + size
            else:
                size, pos = _varint(buf, pos, stop)
                if size < 0:
                    raise MalformedPacket("PUBLISH shorter than its header says")
                pos += size
            if pos > stop:
                raise MalformedPacket("PUBLISH shorter than its header says")
        with self._in_callback_mutex:
            handler(buf[start + 2:topic_end], buf[pos:stop], mid, qos, bool(header & 0x01))
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def _varint(buf: bytes, pos: int, end: int) -> tuple[int, int]:
    """The MQTT variable byte integer at buf[pos:end] (3.1.1 §2.2.3, 5 §1.5.5) and the position after it;
    (-1, end) when its last byte is not there yet. Raises MalformedPacket when it runs past 4 bytes."""
    value, shift = 0, 0
    while pos < end:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise MalformedPacket("variable byte integer longer than 4 bytes")
    return -1, end
