"""Listens on the MQTT command topic, hands each operator command to the engine and publishes its result."""

from __future__ import annotations

import json
import logging
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from alerts.model import iso

log = logging.getLogger(__name__)


class CommandListener:
    """Subscribes to `{command_topic}/#`, which covers `{command_topic}` too (in on_connect, so it survives
    reconnects).

    `handle(source, command_dict) -> result` is called for each JSON message; errors are logged and
    counted, never raised into paho's loop. The result ("ok: ..." or "error: ...", or why the message was
    not a command) is published as JSON on `command_reply_topic` and, for an MQTT 5 command that names a
    response topic, there too with its correlation data: an operator console learns whether its ack
    was applied without reading the store.
    """

    def __init__(self, cfg, handle, env: dict[str, str]):
        m = cfg.connections.mqtt
        self.topic = cfg.alerting.command_topic.rstrip("/")
        self.reply_topic = cfg.alerting.command_reply_topic.rstrip("/")
        self.mqtt5 = m.protocol == "mqtt5"
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
            # `topic/#` also matches `topic` itself; subscribing to both would deliver (and apply) a command
            # on `topic` twice.
            client.subscribe(self.topic + "/#", 1)
            self.subscribed = True

    def _on_message(self, client, userdata, msg):
        cmd = None
        try:
            cmd = json.loads(msg.payload.decode("utf-8"))
            result = self.handle(f"mqtt:{msg.topic}", cmd)
        except Exception as exc:
            self.rejected += 1
            log.warning("rejected alert command on %s: %s", msg.topic, exc)
            result = f"error: not a command: {exc}"
        self._reply(msg, cmd, str(result))

    def _reply(self, msg, cmd, result: str) -> None:
        body = json.dumps({
            "topic": msg.topic, "command": cmd, "ok": result.startswith("ok"), "result": result,
            "at": iso(time.time_ns()),
        }, ensure_ascii=False, default=str).encode()
        try:
            self.client.publish(self.reply_topic, body, qos=1)
            props = getattr(msg, "properties", None)
            response = getattr(props, "ResponseTopic", None) if props is not None else None
            if self.mqtt5 and response:
                out = Properties(PacketTypes.PUBLISH)
                corr = getattr(props, "CorrelationData", None)
                if corr is not None:
                    out.CorrelationData = corr
                self.client.publish(response, body, qos=1, properties=out)
        except Exception:  # noqa: BLE001 - a reply is a courtesy; the command itself was handled
            log.exception("could not publish the reply to an alert command")
