"""Capture MQTT topics to a JSONL file that `citywatch replay` (and `score`, for the alert topic) reads:
one line per message, `{"t": receive ms (UTC), "topic", "payload" (UTF-8 text) or "payload_b64", "qos", "retain"}`."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterable
from typing import IO, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

DATA_TOPICS = ("city/xm/+/+/+/data", "city/xm/hj212/#")


def record_line(topic: str, payload: bytes | bytearray, t_ms: int, qos: int = 1, retain: bool = False) -> str:
    """One capture line (JSON, no trailing newline)."""
    try:
        body = {"payload": payload.decode("utf-8")}
    except UnicodeDecodeError:
        body = {"payload_b64": base64.b64encode(payload).decode("ascii")}
    return json.dumps({"t": t_ms, "topic": topic, **body, "qos": qos, "retain": bool(retain)},
                      separators=(",", ":"), sort_keys=True)


class FeedRecorder:
    """Subscribes (in on_connect, so a reconnect resubscribes) and appends every message to `out`.

    Writes happen on paho's network thread; `count` is the number of lines written so far.
    """

    def __init__(self, host: str, port: int, username: str | None, password: str | None,
                 topics: Iterable[str] = DATA_TOPICS, out: IO[str] | None = None, client_id: str | None = None) -> None:
        self.topics = list(topics)
        self.out = out
        self.count = 0
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.refused: str | None = None
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                   client_id=client_id or f"citywatch-record-{id(self) % 100000}",
                                   protocol=mqtt.MQTTv311, clean_session=True)
        if username:
            self._client.username_pw_set(username, password)
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *a: self.subscribed.set()
        self._client.on_message = self._on_message
        # paho annotates the delays as int seconds; it computes with them as numbers, and 0.2 s is meant.
        self._client.reconnect_delay_set(0.2, 5)  # type: ignore[arg-type]
        self._host, self._port = host, port

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        if reason_code.is_failure:
            self.refused = str(reason_code)
            return
        client.subscribe([(t, 1) for t in self.topics])

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Never let an exception escape: it would stop paho's network loop and the capture with it.
        try:
            line = record_line(msg.topic, msg.payload, int(time.time() * 1000), msg.qos, msg.retain)
            with self._lock:
                if self.out is not None:
                    self.out.write(line + "\n")
                self.count += 1
        except Exception as exc:  # noqa: BLE001
            print(f"citywatch record: dropped a message on {msg.topic}: {exc}")

    def start(self, timeout_s: float = 20.0) -> None:
        """Connect and wait until subscribed. Raises simulators.publisher.BrokerUnreachable at once when the
        broker's address refuses connections, RuntimeError when the broker refuses us or on timeout."""
        from simulators.publisher import probe_broker

        probe_broker(self._host, self._port)
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()
        deadline = time.monotonic() + timeout_s
        while not self.subscribed.wait(0.05):
            if self.refused:
                raise RuntimeError(f"broker refused the recorder: {self.refused}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"could not subscribe at {self._host}:{self._port} within {timeout_s:g} s")

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            if self.out is not None:
                self.out.flush()
