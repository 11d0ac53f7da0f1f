"""The MQTT side of ingest: a paho-mqtt 2.x client with a persistent session and manual acks.

`on_message` only stamps the receive time and hands the message on (paho's network loop must never block or
raise); the pipeline acks each message later, once its rows are durable or dead-lettered.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from typing import Callable, NamedTuple

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

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


# Named tuples, not dataclasses: one of each is built per message on paho's thread, where time counts.
class AckToken(NamedTuple):
    """Identifies one received message for its later ack: the connection it came on, its packet id, QoS."""

    generation: int
    mid: int
    qos: int


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

    Thread-safe: `ack` and `publish` may be called from any thread.
    """

    def __init__(self, mqtt, password: str | None, sink: Callable[[Message], None], receive_maximum: int = 20000):
        self.cfg = mqtt
        self._sink = sink
        self._generation = 0
        self._connected = threading.Event()
        self._paused = False
        self.connects = 0
        self.last_error: str | None = None
        v5 = mqtt.protocol == "mqtt5"
        self._v5 = v5
        if v5:
            self.client = mqtt_client(mqtt.client_id, mqtt5=True)
        else:
            self.client = mqtt_client(mqtt.client_id, mqtt5=False)
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
        self._props = None
        if v5:
            self._props = Properties(PacketTypes.CONNECT)
            self._props.SessionExpiryInterval = int(mqtt.session_expiry_s)
            self._props.ReceiveMaximum = max(1, min(65535, int(receive_maximum)))
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe

    # ----- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; paho reconnects with capped exponential delay after any failure."""
        kwargs = {"clean_start": False, "properties": self._props} if self._v5 else {}
        self.client.connect_async(self.cfg.host, self.cfg.port, self.cfg.keepalive_s, **kwargs)
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

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self.last_error = f"connect refused: {reason_code}"
            log.error("MQTT broker %s:%s refused the connection: %s", self.cfg.host, self.cfg.port, reason_code)
            return
        self._generation += 1
        self.connects += 1
        # Subscriptions are made here so that they survive reconnects, even to a broker that lost the session.
        # `connected` (and wait_connected) wait for the SUBACK: before it, a device's publish reaches a broker
        # that does not yet route it to us (a fresh session would miss it).
        client.subscribe([(t, 1) for t in TOPICS])
        log.info("connected to MQTT broker %s:%s (session present: %s)", self.cfg.host, self.cfg.port,
                 getattr(flags, "session_present", None))

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        failed = [rc for rc in reason_codes if getattr(rc, "is_failure", False)]
        if failed:
            self.last_error = f"subscription refused: {failed[0]}"
            log.error("MQTT broker refused the data subscription: %s", failed[0])
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        self._connected.clear()
        if reason_code != 0:
            self.last_error = f"disconnected: {reason_code}"
            log.warning("MQTT connection lost (%s); reconnecting", reason_code)

    def _on_message(self, client, userdata, msg) -> None:
        # Anything raised here would end paho's network loop: catch all of it.
        try:
            if self._paused:
                return
            self._sink(Message(msg.topic, msg.payload, time.time_ns(), AckToken(self._generation, msg.mid, msg.qos),
                               bool(msg.retain)))
        except Exception:  # noqa: BLE001
            log.exception("dropping a message in on_message (it stays unacked; the broker will redeliver it)")


def mqtt_client(client_id: str, mqtt5: bool = True, manual_ack: bool = True) -> mqtt.Client:
    """A paho 2.x client for the collector: fixed id, persistent session (3.1.1: clean_session False)."""
    if mqtt5:
        return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                           manual_ack=manual_ack)
    return mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                       clean_session=False, manual_ack=manual_ack)
