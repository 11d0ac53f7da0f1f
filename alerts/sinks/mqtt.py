"""MQTT sink for the operations center: a notice per transition, and each active alert's state retained.

Notices go to `{prefix}/{category}/{site_id}`; the alert's current state is retained on
`{prefix}/active/{alert_id}` and cleared with an empty retained message when it resolves, so a
console that connects late sees what is active now.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from alerts.model import Notice
from alerts.sinks.base import SinkError
from config.connections import Tls
from core.node_rotation import NodeRotation
from core.reachability import Reachability, connect_error

log = logging.getLogger(__name__)


def notice_topic(prefix: str, notice: Notice) -> str:
    return f"{prefix}/{notice.category}/{notice.site_id or 'none'}"


def active_topic(prefix: str, alert_id: str) -> str:
    return f"{prefix}/active/{alert_id}"


class MqttSink:
    """Publishes with its own paho client (loop thread, automatic reconnect). Not connected = retryable.

    hosts: (host, port) of a cluster's nodes in failover order (partitioned mode); after a failed or lost
    connection the next reconnect goes to the next one. Default: `host`, `port` only."""

    def __init__(self, host: str, port: int, client_id: str, username: str | None = None,
                 password: str | None = None, topic_prefix: str = "city/xm/alerts", qos: int = 1,
                 timeout_s: float = 5.0, protocol: str = "mqtt5", tls: Tls | None = None,
                 hosts: list[tuple[str, int]] | None = None) -> None:
        self.prefix = topic_prefix.rstrip("/")
        self.qos = qos
        self.timeout_s = timeout_s
        proto = mqtt.MQTTv5 if protocol == "mqtt5" else mqtt.MQTTv311
        # clean_session is a 3.1.1 flag; paho refuses it for MQTT 5 (None: not set).
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=proto,
                                  clean_session=None if proto == mqtt.MQTTv5 else True)
        if username is not None:
            self.client.username_pw_set(username, password)
        if tls is not None and getattr(tls, "enabled", False):
            self.client.tls_set(ca_certs=tls.ca_file, certfile=tls.cert_file, keyfile=tls.key_file)
            self.client.tls_insecure_set(tls.insecure)
        self.nodes = NodeRotation(hosts or [(host, port)])
        # A cluster elects new leaders within seconds of a node's death: retry its next node soon.
        self.client.reconnect_delay_set(1, 30 if len(self.nodes.hosts) == 1 else 2)
        self._connected = threading.Event()
        # One log line per outage of the broker, whatever the number of reconnect tries.
        self.reachability = Reachability(f"MQTT broker {self.nodes.describe()} (alert sink {client_id})", log,
                                         down_note="notices wait in the store and are retried")
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.connect_async(*self.nodes.current, keepalive=30)
        self.client.loop_start()

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None = None) -> None:
        if reason_code.is_failure:
            self.reachability.down(f"the broker refused the connection: {reason_code}")
            return
        self._connected.set()
        self.reachability.up()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self.reachability.down(connect_error())
        self.nodes.advance(client)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: mqtt.DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None = None) -> None:
        self._connected.clear()
        if reason_code != 0:  # 0: our own disconnect at close
            self.reachability.down(f"connection lost: {reason_code}")
            self.nodes.advance(client)

    def send(self, notice: Notice) -> None:
        # Waiting for the connection briefly keeps the first notice after start from a needless retry.
        if not self._connected.wait(min(self.timeout_s, 2.0)):
            raise SinkError("mqtt: not connected to the broker", True)
        body = json.dumps(notice.payload, sort_keys=True, separators=(",", ":")).encode()
        state = b"" if notice.transition == "resolved" else body
        # Both messages go out before either ack is awaited (one broker round trip per notice, not two: a
        # burst of notices queues behind this sink, and a red alarm's notice with it). The broker receives
        # them in order on this connection; a retry after a partial failure sends both again (the notice
        # carries its key for dedup, the retained state is the same message).
        sent = [self._publish(notice_topic(self.prefix, notice), body, retain=False),
                self._publish(active_topic(self.prefix, notice.alert_id), state, retain=True)]
        deadline = time.monotonic() + self.timeout_s
        for topic, info in sent:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError, OSError) as exc:
                raise SinkError(f"mqtt publish to {topic}: {exc}", True) from None
            if not info.is_published():
                raise SinkError(f"mqtt publish to {topic}: no ack within {self.timeout_s} s", True)

    def _publish(self, topic: str, payload: bytes, retain: bool) -> tuple[str, mqtt.MQTTMessageInfo]:
        try:
            info = self.client.publish(topic, payload, qos=self.qos, retain=retain)
        except (RuntimeError, ValueError, OSError) as exc:
            raise SinkError(f"mqtt publish to {topic}: {exc}", True) from None
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise SinkError(f"mqtt publish to {topic}: {mqtt.error_string(info.rc)}", True)
        return topic, info

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
