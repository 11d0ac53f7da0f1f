"""The console's live view of the alerts: a read-only MQTT client that keeps the active alerts from the
retained `{prefix}/active/+` topics and the notices, notes when anything was last heard (alerts or device
readings) and pushes every change to the connected boards."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

import paho.mqtt.client as mqtt

from core.reachability import Reachability, connect_error
from ingest.collector import presence_topic

log = logging.getLogger(__name__)


class AlertFeed:
    """Subscribes in on_connect (so it survives reconnects) to the alert prefixes and to device data topics.

    `alerts` maps alert_id -> the latest notice payload of each active alert; `on_change(event, data)` is
    called from paho's thread with ("alert", payload), ("gone", {"alert_id"}), ("reset", {}) (reconnected:
    the retained states follow) or ("status", status()).
    Device payloads are never decoded: only the time they were heard counts.
    """

    def __init__(self, cfg, env: dict[str, str], on_change: Callable[[str, dict], None] | None = None):
        m = cfg.connections.mqtt
        c = cfg.console
        self.prefixes = sorted({s.topic_prefix.rstrip("/") for s in cfg.alerting.sinks.values()
                                if s.type == "mqtt"}) or ["city/xm/alerts"]
        self.data_topics = ["city/xm/noise/+/+/data", "city/xm/gas/+/+/data"]
        # The service's collector keeps its presence retained here (online; offline by its will or clean stop).
        self.presence = presence_topic(m.client_id)
        self.service: str | None = None     # "online", "offline", or None: not heard since we connected
        self.on_change = on_change or (lambda event, data: None)
        self.alerts: dict[str, dict] = {}
        self.lock = threading.RLock()
        self.connected = False
        self.last_heard: float | None = None        # wall time of the last message of any kind
        self.last_alert_msg: float | None = None
        self.last_reading: float | None = None
        self.link_error: str | None = "not connected yet"
        proto = mqtt.MQTTv5 if m.protocol == "mqtt5" else mqtt.MQTTv311
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=c.mqtt_client_id, protocol=proto)
        password = env.get(c.mqtt_password_env)
        self.client.username_pw_set(c.mqtt_username, password)
        if m.tls.enabled:
            self.client.tls_set(ca_certs=m.tls.ca_file, certfile=m.tls.cert_file, keyfile=m.tls.key_file)
            self.client.tls_insecure_set(m.tls.insecure)
        self.client.reconnect_delay_set(1, 10)
        self.reachability = Reachability(f"MQTT broker {m.host}:{m.port} (console)", log,
                                         down_note="the board shows its data as stale")
        self.client.on_connect = self._on_connect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.host, self.port = m.host, m.port

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=15)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def status(self) -> dict:
        with self.lock:
            return {"connected": self.connected, "link_error": self.link_error, "last_heard": self.last_heard,
                    "last_reading": self.last_reading, "last_alert_msg": self.last_alert_msg,
                    "service": self.service,
                    "now": time.time(), "active": len(self.alerts)}

    def snapshot(self) -> list[dict]:
        with self.lock:
            return list(self.alerts.values())

    # ----- paho callbacks (everything caught: an exception would stop paho's loop) -----------------

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        try:
            if reason_code.is_failure:
                self._link(False, f"the broker refused the console: {reason_code}")
                self.reachability.down(f"the broker refused the connection: {reason_code}")
                return
            self.reachability.up()
            with self.lock:
                # The retained states arrive again after this subscription: they are the truth from now on.
                self.alerts.clear()
                self.service = None
            self.on_change("reset", {})
            topics = ([(f"{p}/#", 1) for p in self.prefixes] + [(t, 0) for t in self.data_topics]
                      + [(self.presence, 1)])
            client.subscribe(topics)
            self._link(True, None)
        except Exception:  # noqa: BLE001
            log.exception("console: on_connect failed")

    def _on_connect_fail(self, client, userdata):
        self.reachability.down(connect_error())
        self._link(False, "cannot reach the broker")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties=None):
        if reason_code != 0:
            self.reachability.down(f"connection lost: {reason_code}")
        self._link(False, f"connection lost: {reason_code}")

    def _link(self, up: bool, error: str | None) -> None:
        with self.lock:
            changed = self.connected != up or self.link_error != error
            self.connected, self.link_error = up, error
        if changed:
            self.on_change("status", self.status())

    def _on_message(self, client, userdata, msg):
        try:
            now = time.time()
            topic = msg.topic
            if topic == self.presence:
                try:
                    state = json.loads(msg.payload).get("state") if msg.payload else None
                except (ValueError, AttributeError):
                    state = None
                with self.lock:
                    self.service = state if state in ("online", "offline") else None
                self.on_change("status", self.status())
                return
            with self.lock:
                self.last_heard = now
            prefix = next((p for p in self.prefixes if topic.startswith(p + "/")), None)
            if prefix is None:
                with self.lock:
                    self.last_reading = now
                return
            with self.lock:
                self.last_alert_msg = now
            rest = topic[len(prefix) + 1:]
            if rest.startswith("active/"):
                alert_id = rest[len("active/"):]
                if not msg.payload:
                    self._gone(alert_id)
                else:
                    self._upsert(json.loads(msg.payload))
            elif rest.count("/") == 1 and not rest.startswith(("cmd", "replies")):
                payload = json.loads(msg.payload)
                if isinstance(payload, dict) and payload.get("alert_id"):
                    if payload.get("transition") == "resolved" or payload.get("state") == "resolved":
                        self._gone(payload["alert_id"])
                    else:
                        self._upsert(payload)
        except Exception:  # noqa: BLE001 - a malformed message must not stop the board
            log.warning("console: ignored an unreadable message on %s", msg.topic)

    def _upsert(self, payload: dict) -> None:
        alert_id = payload.get("alert_id")
        if not isinstance(alert_id, str):
            return
        with self.lock:
            old = self.alerts.get(alert_id)
            # Notices and retained states can arrive in either order: keep the one with the later sequence.
            if old is not None and (old.get("seq") or 0) > (payload.get("seq") or 0):
                return
            self.alerts[alert_id] = payload
        self.on_change("alert", payload)

    def _gone(self, alert_id: str) -> None:
        with self.lock:
            known = self.alerts.pop(alert_id, None) is not None
        if known:
            self.on_change("gone", {"alert_id": alert_id})
