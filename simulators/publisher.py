"""Publish a feed to the broker as the field would: each device authenticates as itself, QoS 1, a retained
`status` with a last will `offline`, and simulated time paced N times faster than the wall clock.

Guarantee: `FeedPublisher.run` returns only when the broker has acknowledged (PUBACK) every message it
published, or raises PublishError naming how many were not acknowledged in time.

Order: every device has a connection of its own, so the broker may receive devices' messages in another
order than they were published. At any speed a message is published only once every message more than
REORDER_WINDOW_MS of event time older has been acknowledged: the service (event clock) sees the feed
reordered by at most that much, the bound its deadman's slack covers (citywatch.pipeline).

A broker that refuses the TCP connection fails at once (BrokerUnreachable); only time-outs are retried. The connections speak
MQTT 5, so a publish the broker's ACL refuses is acknowledged with 0x87 Not authorized and counted in
`refused` (under MQTT 3.1.1 Mosquitto would acknowledge it as usual and drop it silently).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

if TYPE_CHECKING:
    from simulators.feed import Message

TESTER = "__tester__"   # key of the shared tester connection, for topics of no known device
# Event time by which the broker may see one device's message after another device's newer one (see above);
# citywatch.pipeline.EVENT_REORDER_SLACK_S must stay above it.
REORDER_WINDOW_MS = 30_000


class PublishError(RuntimeError):
    """The broker refused a connection or did not acknowledge every message in time."""


class BrokerUnreachable(PublishError):
    """Nothing accepts connections at the broker's address (connection refused, unknown host), or it did
    not answer within the bounded retries: commands exit 2 with this one line (citywatch.errors wording).

    where: "host:port"; reason: a few words (`connection refused`, `host not found`, ...)."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"cannot reach the MQTT broker at {where}: {reason}")
        self.where, self.reason = where, reason


def probe_broker(host: str, port: int, timeout_s: float = 5.0, attempts: int = 3) -> None:
    """Open (and close) a TCP connection to the broker. A refusal or an unknown host raises BrokerUnreachable
    at once; a time-out is retried `attempts` times in all, then raises BrokerUnreachable."""
    where = f"{host}:{port}"
    for attempt in range(1, attempts + 1):
        try:
            with socket.create_connection((host, port), timeout=timeout_s):
                return
        except ConnectionRefusedError:
            raise BrokerUnreachable(where, "connection refused") from None
        except socket.gaierror:
            raise BrokerUnreachable(where, "host not found") from None
        except TimeoutError:
            if attempt == attempts:
                raise BrokerUnreachable(where, f"timed out ({attempts} tries of {timeout_s:g} s)") from None
        except OSError as exc:  # no route, network down: retrying would not help
            raise BrokerUnreachable(where, (exc.strerror or str(exc)).lower()) from None


@dataclass(frozen=True)
class BrokerCredentials:
    """Broker users, as in `.stack/credentials.json`: devices {id: password} and the tester (user, password)."""

    devices: dict[str, str]
    tester: tuple[str, str] | None = None

    @staticmethod
    def load(path: str | Path) -> BrokerCredentials:
        """Read a credentials JSON file. Raises OSError or ValueError (bad JSON or shape)."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or not isinstance(data.get("devices", {}), dict):
            raise ValueError(f"{path}: expected {{'devices': {{id: password}}, 'tester': {{...}}}}")
        t = data.get("tester")
        tester = (t["username"], t["password"]) if isinstance(t, dict) else None
        return BrokerCredentials(dict(data.get("devices", {})), tester)


@dataclass
class _Conn:
    client: mqtt.Client
    connected: threading.Event = field(default_factory=threading.Event)
    refused: str | None = None
    published: int = 0
    acked: int = 0
    # mid -> topic of messages in flight; refusals whose mid arrived before publish() stored it.
    inflight: dict[int, tuple[str, int | None]] = field(default_factory=dict)   # mid -> (topic, order seq)
    early: dict[int, bool] = field(default_factory=dict)                        # mid -> refused


class RunSummary(TypedDict):
    """What FeedPublisher.run did: messages and readings published, wall seconds, publishes refused."""

    messages: int
    readings: int
    wall_s: float
    refused: int


class FeedPublisher:
    """One MQTT connection per publishing identity (a device, or the tester for foreign topics).

    host, port:   the broker
    credentials:  BrokerCredentials; a device without a password publishes through the tester account
    status:       device id -> status topic; those devices get a retained `online` and a last will `offline`
    max_inflight: QoS 1 messages in flight per connection (large, so a fast feed is never ack-bound)
    """

    def __init__(self, host: str, port: int, credentials: BrokerCredentials, status: dict[str, str] | None = None,
                 max_inflight: int = 1000, client_prefix: str = "sim") -> None:
        self.host, self.port = host, port
        self.credentials = credentials
        self.status = status or {}
        self.max_inflight = max_inflight
        self.client_prefix = client_prefix
        self._conns: dict[str, _Conn] = {}
        self._lock = threading.Lock()
        # Publish order: (seq, event time ms) of messages not yet acknowledged, oldest first; acked seqs.
        self._seq = 0
        self._order: deque[tuple[int, int]] = deque()
        self._done: set[int] = set()
        self.refused: dict[str, int] = {}   # topic -> publishes the broker refused (PUBACK >= 0x80)

    def identity(self, device: str | None) -> str:
        """Which connection publishes for `device`: the device itself when it has a password, else the tester."""
        if device and device in self.credentials.devices:
            return device
        if self.credentials.tester is None:
            raise PublishError(f"no broker password for device {device!r} and no tester account in the credentials")
        return TESTER

    def connect(self, identities: Iterable[str], timeout_s: float = 20.0) -> None:
        """Open (and wait for) the connections of these identities. Raises BrokerUnreachable at once when the
        broker's address refuses connections, PublishError when the broker refuses an account."""
        if any(ident not in self._conns for ident in identities):
            probe_broker(self.host, self.port)
        for ident in sorted(set(identities)):
            if ident in self._conns:
                continue
            if ident == TESTER:
                if self.credentials.tester is None:
                    raise PublishError("no tester account in the credentials")
                user, pw = self.credentials.tester
                cid = f"{self.client_prefix}-tester-{id(self) % 100000}"
            else:
                user, pw = ident, self.credentials.devices[ident]
                cid = f"{self.client_prefix}-{ident}"
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
            client.username_pw_set(user, pw)
            client.max_inflight_messages_set(self.max_inflight)
            client.max_queued_messages_set(0)
            if ident in self.status:
                client.will_set(self.status[ident], "offline", qos=1, retain=True)
            conn = _Conn(client)
            client.on_connect = self._on_connect(ident, conn)
            client.on_publish = self._on_publish(conn)
            # paho annotates the delays as int seconds; it computes with them as numbers, and 0.2 s is meant.
            client.reconnect_delay_set(0.2, 5)  # type: ignore[arg-type]
            self._conns[ident] = conn
            client.connect_async(self.host, self.port, keepalive=30, clean_start=True)
            client.loop_start()
        deadline = time.monotonic() + timeout_s
        for ident, conn in self._conns.items():
            while not conn.connected.wait(0.05):
                if conn.refused:
                    raise PublishError(f"broker refused {ident}: {conn.refused}")
                if time.monotonic() > deadline:
                    raise PublishError(f"could not connect to {self.host}:{self.port} as {ident} within {timeout_s:g} s")

    def _on_connect(self, ident: str, conn: _Conn) -> mqtt.CallbackOnConnect_v2:
        def on_connect(client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
            if reason_code.is_failure:
                conn.refused = str(reason_code)
                return
            if ident in self.status:
                with self._lock:
                    conn.published += 1
                info = client.publish(self.status[ident], "online", qos=1, retain=True)
                self._track(conn, info.mid, self.status[ident])
            conn.connected.set()
        return on_connect

    def _on_publish(self, conn: _Conn) -> mqtt.CallbackOnPublish_v2:
        def on_publish(client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                       properties: Properties) -> None:
            # paho may call this before publish() has stored the mid: such refusals wait in `early`.
            with self._lock:
                conn.acked += 1
                got = conn.inflight.pop(mid, None)
                if got is None:
                    conn.early[mid] = reason_code.is_failure
                    return
                topic, seq = got
                if seq is not None:
                    self._done.add(seq)
                if reason_code.is_failure:
                    self.refused[topic] = self.refused.get(topic, 0) + 1
        return on_publish

    def publish(self, device: str | None, topic: str, payload: bytes, qos: int = 1, retain: bool = False,
                t_ms: int | None = None) -> None:
        """Publish one message; `t_ms` (its event time) enters the order bound of `run`."""
        conn = self._conns[self.identity(device)]
        seq: int | None = None
        with self._lock:
            conn.published += 1
            if t_ms is not None and qos > 0:
                self._seq += 1
                seq = self._seq
                self._order.append((seq, t_ms))
        info = conn.client.publish(topic, payload, qos=qos, retain=retain)
        if qos > 0:
            self._track(conn, info.mid, topic, seq)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN is fine: paho queues QoS 1 messages and sends them when the link returns.
            raise PublishError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")

    def _track(self, conn: _Conn, mid: int, topic: str, seq: int | None = None) -> None:
        """Remember which topic a QoS 1 publish went to, so that its PUBACK can be counted by topic."""
        with self._lock:
            if mid in conn.early:
                if seq is not None:
                    self._done.add(seq)
                if conn.early.pop(mid):
                    self.refused[topic] = self.refused.get(topic, 0) + 1
            else:
                conn.inflight[mid] = (topic, seq)

    def oldest_unacked_ms(self) -> int | None:
        """Event time of the oldest message (published with t_ms) not yet acknowledged, or None."""
        with self._lock:
            while self._order and self._order[0][0] in self._done:
                self._done.discard(self._order.popleft()[0])
            return self._order[0][1] if self._order else None

    def _wait_order(self, t_ms: int, timeout_s: float) -> None:
        """Block until no message older than t_ms - REORDER_WINDOW_MS waits for its acknowledgement."""
        deadline: float | None = None
        while True:
            oldest = self.oldest_unacked_ms()
            if oldest is None or oldest >= t_ms - REORDER_WINDOW_MS:
                return
            now = time.monotonic()
            deadline = deadline or now + timeout_s
            if now > deadline:
                raise PublishError(f"{self.pending()} messages not acknowledged by the broker within {timeout_s:g} s")
            time.sleep(0.0005)

    def pending(self) -> int:
        with self._lock:
            return sum(c.published - c.acked for c in self._conns.values())

    def flush(self, timeout_s: float = 60.0) -> None:
        """Wait until every published message is acknowledged; PublishError after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while self.pending() > 0:
            if time.monotonic() > deadline:
                raise PublishError(f"{self.pending()} messages not acknowledged by the broker within {timeout_s:g} s")
            time.sleep(0.01)

    def close(self) -> None:
        for conn in self._conns.values():
            conn.client.disconnect()
            conn.client.loop_stop()
        self._conns.clear()

    def run(self, messages: Sequence[Message], speed: float | None, t0_ms: int | None = None,
            progress: Callable[[int, int], None] | None = None, max_pending: int = 20000,
            ack_timeout_s: float = 120.0) -> RunSummary:
        """Publish `messages` (objects with t_ms, device, topic, payload, n), paced by their t_ms.

        speed:    simulated seconds per wall second; None = as fast as the broker acknowledges
        t0_ms:    simulated time that maps to "now" (default: the first message's t_ms)
        progress: called as progress(sim_ms, readings_so_far) about 10 times a second
        Returns {"messages", "readings", "wall_s", "refused"} (refused: publishes the broker's ACL refused,
        counted by topic in `self.refused`). Raises PublishError.
        """
        self.connect({self.identity(m.device) for m in messages})
        if not messages:
            return {"messages": 0, "readings": 0, "wall_s": 0.0, "refused": 0}
        t0_ms = messages[0].t_ms if t0_ms is None else t0_ms
        wall0 = time.monotonic()
        readings = 0
        next_tick = 0.0
        for i, m in enumerate(messages):
            if speed:
                due = wall0 + (m.t_ms - t0_ms) / 1000.0 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            elif i % 256 == 0:
                # As fast as possible, but bounded: never more than max_pending unacknowledged messages.
                while self.pending() > max_pending:
                    time.sleep(0.001)
            self._wait_order(m.t_ms, ack_timeout_s)
            self.publish(m.device, m.topic, m.payload, t_ms=m.t_ms)
            readings += m.n
            if progress is not None:
                now = time.monotonic()
                if now >= next_tick:
                    progress(m.t_ms, readings)
                    next_tick = now + 0.1
        self.flush(ack_timeout_s)
        if progress is not None:
            progress(messages[-1].t_ms, readings)
        with self._lock:
            refused = sum(self.refused.values())
        return {"messages": len(messages), "readings": readings, "wall_s": time.monotonic() - wall0,
                "refused": refused}


SERVICE_TOPIC = "city/xm/internal/service"   # citywatch.service announces itself here (retained)


def service_announcements(host: str, port: int, credentials: BrokerCredentials,
                          wait_s: float = 1.0) -> dict[str, dict[str, Any]]:
    """The retained announcements of citywatch services on this broker: {collector client id: {"clock",
    "run_id", "started_at", ...}}; empty when none (or nothing could be read: this is advisory only).
    Raises BrokerUnreachable when the broker's address refuses connections."""
    probe_broker(host, port)
    found: dict[str, dict[str, Any]] = {}
    done = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"sim-probe-{id(found) % 100000}",
                         protocol=mqtt.MQTTv5)
    if credentials.tester:
        client.username_pw_set(*credentials.tester)

    def on_connect(c: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                   properties: Properties | None) -> None:
        if reason_code.is_failure:
            done.set()
            return
        c.subscribe(SERVICE_TOPIC + "/+", qos=0)

    def on_message(c: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            doc = json.loads(msg.payload) if msg.payload else None
            if isinstance(doc, dict):
                found[msg.topic.rsplit("/", 1)[-1]] = doc
        except ValueError:
            pass

    client.on_connect, client.on_message = on_connect, on_message
    try:
        client.connect_async(host, port, keepalive=10)
        client.loop_start()
        done.wait(wait_s)   # retained messages arrive right after the SUBACK
    finally:
        client.disconnect()
        client.loop_stop()
    return found
