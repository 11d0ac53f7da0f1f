"""Listens on the MQTT command topics, takes each command's author from its topic, hands it to the engine
and publishes the result."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerts.commands import MAX_PAYLOAD_BYTES, Author, operator_author
from alerts.model import iso
from core.node_rotation import NodeRotation
from core.reachability import Reachability, connect_error

if TYPE_CHECKING:
    from config.model import Config

log = logging.getLogger(__name__)

# Seconds between attempts when the broker refuses the command subscription (see _on_subscribe).
RESUBSCRIBE_S = 2.0


class CommandListener:
    """Subscribes to `{command_topic}/#` (in on_connect, so it survives reconnects) and hands each
    command sent on `{command_topic}/<username>` of a configured operator to
    `handle(source, payload_bytes, author)`, which validates, records and applies it (never raises).

    The broker's ACL lets only the account `<username>` publish on `{command_topic}/<username>`, so the
    topic authenticates the author. A message on the bare command topic, on a deeper topic, for an
    unknown username, or delivered as retained (an old command replayed on every reconnect) is refused
    here: never applied, counted in `refused` by kind, logged once per kind, and answered like any
    command. The subscription is `#` rather than `+` only so that those get their answer.

    Every result ("ok: ..." or "error: ...") is published as JSON on `command_reply_topic` and, for an
    MQTT 5 command that names a response topic, there too with its correlation data: an operator
    console learns whether its ack was applied without reading the store. A `handle` that returns None
    leaves the answer to another worker (partitioned mode: every worker receives every command; see
    alerts.command_scope): nothing is published.
    """

    def __init__(self, cfg: Config, handle: Callable[[str, bytes, Author], str | None], env: dict[str, str],
                 config: Callable[[], Config] | None = None, answers_refusals: Callable[[], bool] | None = None) -> None:
        """config: returns the config in force (after reloads), for the operator list; default `cfg`.
        answers_refusals: whether this worker answers a command refused for its topic (partitioned mode: one
        worker does, alerts.command_scope.answers_rest); default always."""
        m = cfg.connections.mqtt
        self.topic = cfg.alerting.command_topic.rstrip("/")
        self.reply_topic = cfg.alerting.command_reply_topic.rstrip("/")
        self.mqtt5 = m.protocol == "mqtt5"
        self.config = config or (lambda: cfg)
        self.handle = handle
        self.answers_refusals = answers_refusals or (lambda: True)
        self.refused: dict[str, int] = {}  # kind (bare topic, deeper topic, unknown account, retained) -> count
        self._logged_kinds: set[str] = set()
        proto = mqtt.MQTTv5 if m.protocol == "mqtt5" else mqtt.MQTTv311
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"{cfg.alerting.mqtt_client_id}-cmd"[:64], protocol=proto)
        if m.username is not None:
            self.client.username_pw_set(m.username, env.get(m.password_env) if m.password_env else None)
        if m.tls.enabled:
            self.client.tls_set(ca_certs=m.tls.ca_file, certfile=m.tls.cert_file, keyfile=m.tls.key_file)
            self.client.tls_insecure_set(m.tls.insecure)
        # paho annotates whole seconds, but takes any number of seconds (it only compares and sleeps).
        self.client.reconnect_delay_set(m.reconnect.min_delay_s, m.reconnect.max_delay_s)  # type: ignore[arg-type]
        # Partitioned mode: the cluster's nodes in failover order (connections.cluster.nodes), as the collector.
        cl = cfg.connections.cluster
        self.nodes = NodeRotation(cl.hosts() if cl.mode == "partitioned" and cl.nodes else [(m.host, m.port)])
        # One log line per outage of the broker, whatever the number of reconnect tries.
        self.reachability = Reachability(f"MQTT broker {self.nodes.describe()} (alert command listener)", log,
                                         down_note="operator commands wait until it is back")
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.host, self.port = self.nodes.current
        self.subscribed = False

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.reachability.down(connect_error())
        self.nodes.advance(client)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None = None) -> None:
        if reason_code != 0:  # 0: our own disconnect at stop
            self.reachability.down(f"connection lost: {reason_code}")
            self.nodes.advance(client)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None = None) -> None:
        if reason_code.is_failure:
            self.reachability.down(f"the broker refused the connection: {reason_code}")
        else:
            self.reachability.up()
            # `topic/#` also matches `topic` itself; subscribing to both would deliver a command twice.
            client.subscribe(self.topic + "/#", 1)
            self.subscribed = True

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: list[ReasonCode],
                      properties: Properties | None = None) -> None:
        failed = [rc for rc in reason_codes if getattr(rc, "is_failure", False)]
        if not failed:
            return
        # A broker that cannot take the subscription yet (a cluster node whose JetStream is still electing
        # its leaders refuses it) would leave the listener connected but deaf: ask again until it is taken.
        self.subscribed = False
        log.warning("MQTT broker refused the alert command subscription (%s); asking again in %.0f s", failed[0],
                    RESUBSCRIBE_S)
        timer = threading.Timer(RESUBSCRIBE_S, self._resubscribe)
        timer.daemon = True
        timer.start()

    def _resubscribe(self) -> None:
        if self.client.is_connected():  # otherwise the next on_connect subscribes
            self.client.subscribe(self.topic + "/#", 1)
            self.subscribed = True

    def author_of(self, topic: str, retained: bool = False) -> Author:
        """The operator a command on `topic` comes from. Raises TopicRefused(kind, reason)."""
        usage = f"send commands on {self.topic}/<your operator username>"
        if retained:
            raise TopicRefused("retained", f"a retained command is not applied (it would be replayed on "
                                           f"every reconnect): publish it without retain; {usage}")
        if topic == self.topic:
            raise TopicRefused("bare topic", f"no author: {usage}")
        rest = topic[len(self.topic) + 1:] if topic.startswith(self.topic + "/") else ""
        if not rest or "/" in rest:
            raise TopicRefused("deeper topic", f"{topic!r} is not a command topic: {usage}")
        author = operator_author(self.config(), rest)
        if author is None:
            raise TopicRefused("unknown account", f"{rest!r} is not an operator (alerting.operators): {usage}")
        return author

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Everything is caught: an exception here would stop paho's network loop (and every command after).
        try:
            try:
                author = self.author_of(msg.topic, bool(msg.retain))
            except TopicRefused as exc:
                self._refuse(msg, exc)
                return
            result = self.handle(f"mqtt:{msg.topic}", bytes(msg.payload), author)
            if result is not None:
                self._reply(msg, _preview(msg.payload), result, author)
        except Exception:  # noqa: BLE001
            log.exception("alert command on %s could not be handled", msg.topic)

    def _refuse(self, msg: mqtt.MQTTMessage, exc: TopicRefused) -> None:
        self.refused[exc.kind] = self.refused.get(exc.kind, 0) + 1
        if exc.kind not in self._logged_kinds:  # once per kind: a flood must not flood the log
            self._logged_kinds.add(exc.kind)
            log.warning("refused an alert command on %s (%s: %s); further ones of this kind are only counted",
                        msg.topic, exc.kind, exc.reason)
        if self.answers_refusals():
            self._reply(msg, _preview(msg.payload), f"error: {exc.reason}", None)

    def _reply(self, msg: mqtt.MQTTMessage, cmd: Any, result: str, author: Author | None) -> None:
        body = json.dumps({
            "topic": msg.topic, "command": cmd, "ok": result.startswith("ok"), "result": result,
            "author": author.account if author else None, "author_name": author.name if author else None,
            "at": iso(time.time_ns()),
        }, ensure_ascii=False, default=str).encode()
        try:
            self.client.publish(self.reply_topic, body, qos=1)
            props = getattr(msg, "properties", None)
            response = getattr(props, "ResponseTopic", None) if props is not None else None
            if self.mqtt5 and response:
                out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho: no annotations here
                corr = getattr(props, "CorrelationData", None)
                if corr is not None:
                    out.CorrelationData = corr
                self.client.publish(response, body, qos=1, properties=out)
        except Exception:  # noqa: BLE001 - a reply is a courtesy; the command itself was handled
            log.exception("could not publish the reply to an alert command")


class TopicRefused(Exception):
    """A command refused for the topic it came on (or for being retained), before its payload is read."""

    def __init__(self, kind: str, reason: str):
        super().__init__(reason)
        self.kind, self.reason = kind, reason


def _preview(payload: bytes | bytearray) -> Any:
    """The command as echoed in the reply: its JSON when it is small and readable, else None."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None
    try:
        return json.loads(payload.decode("utf-8"))
    except Exception:  # noqa: BLE001 - not JSON (or too deep): the result says why
        return None
