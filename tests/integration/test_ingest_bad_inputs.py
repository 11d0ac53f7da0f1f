"""The bad-input catalogue through a real broker and `citywatch run`: each payload yields dead-letter records
with the right reasons (JSONL store and MQTT dead-letter topic), the valid rows of mixed payloads land, and
the collector keeps running."""

from __future__ import annotations

import json
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from config import load_config
from ingest.decoder import Decoder
from tests.integration.test_ingest_harness import (  # noqa: F401 - fixture
    NOISE_JSON,
    config_copy,
    counts,
    data_topic,
    noise_payload,
    service_factory,
    wait_counts,
)
from tests.unit.ingest.bad_inputs import catalogue

pytestmark = pytest.mark.integration


def reasons_of(rec: dict) -> list[str]:
    """Every reject a dead-letter record stands for: its refused rows by reason, or its payload-level reason."""
    return [r for r, n in (rec.get("rows_by_reason") or {rec["reason"]: 1}).items() for _ in range(n)]


def connect_tester(mosquitto, on_message=None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tester-{time.time_ns()}", protocol=mqtt.MQTTv5)
    c.username_pw_set(*mosquitto.credentials.tester)
    c.max_inflight_messages_set(100)
    if on_message:
        c.on_message = on_message
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    return c


def test_every_bad_input_is_dead_lettered_with_its_reason(tmp_path, mosquitto, influx, service_factory):
    cfg_dir = config_copy(tmp_path)
    cfg = load_config(cfg_dir)
    svc = service_factory(cfg_dir)
    now_ms = time.time_ns() // 1_000_000
    cases = catalogue(now_ms, cfg.ingest.max_payload_bytes)
    assert len(cases) >= 25

    dl_msgs: list[dict] = []
    subscribed = threading.Event()
    watcher = connect_tester(mosquitto, lambda c, u, m: dl_msgs.append(json.loads(m.payload)))
    watcher.on_subscribe = lambda *a: subscribed.set()
    watcher.subscribe("city/xm/deadletter/#", qos=1)
    assert subscribed.wait(10)

    pub = connect_tester(mosquitto)
    for case in cases:
        pub.publish(case.topic, case.payload, qos=1).wait_for_publish(20)
    # A good reading afterwards: it lands only if the collector is still running after all of the above.
    dev = NOISE_JSON[2]
    pub.publish(data_topic(dev), noise_payload(dev, [now_ms - 5_000]), qos=1).wait_for_publish(20)

    # Points the valid rows must produce: decode the same messages locally, count distinct (sensor, ts).
    dec = Decoder(cfg)
    keys = {(int(s), int(t)) for case in cases
            for b in [dec.decode(case.topic, case.payload, now_ms * 1_000_000).batch]
            for s, t in zip(b.sensor, b.ts_ns)}
    assert len(keys) >= 2
    expected = (len(keys) + 1, 0)
    assert wait_counts(influx, expected, 60) == expected

    store = tmp_path / "var" / "deadletter" / "deadletter.jsonl"
    records = [json.loads(line) for line in store.read_text().splitlines() if line.strip()]
    # One group of records per refused message, in publish order (one subscriber session delivers in order).
    groups: list[list[dict]] = []
    for rec in records:
        if groups and groups[-1][0]["recv_ns"] == rec["recv_ns"] and groups[-1][0]["topic"] == rec["topic"]:
            groups[-1].append(rec)
        else:
            groups.append([rec])
    assert [c.name for c in cases] and len(groups) == len(cases), [g[0]["reason"] for g in groups]
    for case, group in zip(cases, groups):
        assert case.topic == group[0]["topic"], case.name
        assert len(group) == 1 and sorted(reasons_of(group[0])) == case.reasons, case.name  # one record a message
        assert group[0]["payload_bytes"] == len(case.payload), case.name
        assert all(r["detail"] for r in group), case.name
    # The same records went out on the MQTT dead-letter topic.
    deadline = time.monotonic() + 20
    while len(dl_msgs) < len(records) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sorted(m["reason"] for m in dl_msgs) == sorted(r["reason"] for r in records)
    assert svc.proc.poll() is None
    pub.disconnect()
    watcher.disconnect()
    assert svc.terminate() == 0
