"""Acks after the local spool (ingest.ack_after: spool, issue 17): a message is acked once its rows are fsynced
into the spool, before InfluxDB has them. Such readings must survive kill -9 and land exactly once."""

from __future__ import annotations

import re
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from config import load_config
from ingest.spool import SpoolWriter
from tests.integration.test_ingest_harness import (  # noqa: F401 - fixture
    GAS,
    NOISE_JSON,
    Stream,
    config_copy,
    counts,
    service_factory,
    wait_counts,
)

pytestmark = pytest.mark.integration

DEVICES = [NOISE_JSON[0], NOISE_JSON[1], GAS[0]]


def _any_metrics_port(cfg_dir) -> None:
    path = cfg_dir / "ingest.yaml"
    text, n = re.subn(r"(?m)^    port: 9464\b", "    port: 0", path.read_text(), count=1)
    assert n == 1
    path.write_text(text)


def _acked(svc) -> float:
    url = re.search(r"Prometheus metrics at (http://\S+/metrics)", svc.log_text()).group(1)
    with urllib.request.urlopen(url, timeout=10) as r:
        m = re.search(r"(?m)^citywatch_messages_acked_total (\S+)$", r.read().decode())
    return float(m.group(1)) if m else 0.0


def _wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)
    return predicate()


def _redelivered_to_session(mosquitto, client_id: str, settle_s: float = 2.0) -> int:
    """Take the collector's persistent session over and count what the broker resends: messages it still
    holds unacked (or queued) for it."""
    got = [0]
    ready = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.username_pw_set(*mosquitto.credentials.collector)
    c.on_message = lambda cl, u, m: got.__setitem__(0, got[0] + 1) if m.topic.startswith("city/xm/") and "/internal/" not in m.topic else None
    c.on_connect = lambda cl, u, f, rc, p: ready.set()
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    c.connect(mosquitto.host, mosquitto.port, clean_start=False, properties=props)
    c.loop_start()
    try:
        assert ready.wait(30)
        time.sleep(settle_s)  # the broker resends a session's unacked messages right after CONNACK
        return got[0]
    finally:
        c.disconnect()
        c.loop_stop()


def test_readings_acked_from_the_spool_survive_kill9_and_land_once(tmp_path, mosquitto, influx, service_factory):
    cfg_dir = config_copy(tmp_path, ack_after="spool")
    _any_metrics_port(cfg_dir)
    assert load_config(cfg_dir, {}).ingest.ack_after == "spool"
    svc = service_factory(cfg_dir)
    # InfluxDB down: nothing can reach it, so every ack below is an ack of a spooled reading.
    influx.stop()
    stream = Stream(mosquitto, DEVICES, messages=1500, samples_per_message=4, rate=1500).start()
    stream.join()
    assert _wait(lambda: _acked(svc) >= stream.messages, 60), _acked(svc)
    assert _acked(svc) == stream.messages
    spool_dir = tmp_path / "var" / "spool"
    assert SpoolWriter.inspect(spool_dir).records > 0
    svc.kill()
    # The broker holds nothing for the collector's session: every message was acked before the kill.
    client_id = load_config(cfg_dir, {}).connections.mqtt.client_id
    assert _redelivered_to_session(mosquitto, client_id) == 0
    influx.start()
    svc = service_factory(cfg_dir)
    expected = stream.expected()
    assert wait_counts(influx, expected, 120) == expected
    assert svc.terminate() == 0
    assert counts(influx) == expected
    assert SpoolWriter.inspect(spool_dir).records == 0
