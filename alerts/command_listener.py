"""Listens on the MQTT command topic and hands each operator command to the engine."""

from __future__ import annotations

import json
import logging

import paho.mqtt.client as mqtt

log = logging.getLogger(__name__)


class CommandListener:
    """Subscribes to `{command_topic}` and `{command_topic}/#` (in on_connect, so it survives reconnects).

    `handle(source, command_dict)` is called for each JSON message; errors are logged and counted,
    never raised into paho's loop.
    """

    def __init__(self, cfg, handle, env: dict[str, str]):
        m = cfg.connections.mqtt
        self.topic = cfg.alerting.command_topic.rstrip("/")
        self.handle = handle
        self.rejected = 0
        proto = mqtt.MQTTv5 if m.protocol == "mqtt5" else mqtt.MQTTv311
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"{cfg.alerting.mqtt_client_id}-cmd"[:64], protocol=proto)
        if m.username is not None:
            self.client.username_pw_set(m.username, env.get(m.password_env) if m.password_env else None)
        if m.tls.enabled:
            self.client.tls_set(ca_certs=m.tls.ca_file, certfile=m.tls.cert_file, keyfile=m.tls.key_file)
            self.client.tls_insecure_set(m.tls.insecure)
        self.client.reconnect_delay_set(m.reconnect.min_delay_s, m.reconnect.max_delay_s)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.host, self.port = m.host, m.port
        self.subscribed = False

    def start(self) -> None:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties=None):
        if not reason_code.is_failure:
            client.subscribe([(self.topic, 1), (self.topic + "/#", 1)])
            self.subscribed = True

    def _on_message(self, client, userdata, msg):
        try:
            cmd = json.loads(msg.payload.decode("utf-8"))
            self.handle(f"mqtt:{msg.topic}", cmd)
        except Exception as exc:
            self.rejected += 1
            log.warning("rejected alert command on %s: %s", msg.topic, exc)
