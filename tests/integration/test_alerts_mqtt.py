"""The alert engine against a real Mosquitto: one notice per transition, retained active state, acks by
MQTT command, and a restart from the store that neither repeats the firing nor loses the resolved."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from citywatch.pipeline import DetectionPipeline
from config import load_config
from core import ReadingBatch
from tests.unit.alerts.helpers import T0, S, Subscriber, mqtt_env, publish, write_config

pytestmark = pytest.mark.integration

ALERTS_YAML = """
alerting:
  sinks:
    ops_mqtt: {type: mqtt, topic_prefix: city/xm/alerts, qos: 1}
  route:
    receivers: [ops_mqtt]
    group_by: [site_id, rule_id]
    group_wait_s: 0
    group_interval_s: 0
    repeat_interval_s: 100000
  escalation: {red_s: 300, orange_s: 900, yellow_s: 3600}
  retry: {initial_s: 0.1, max_s: 0.5}
  recovered_clear_after_s: 0
  store_path: STORE
  command_topic: city/xm/alerts/cmd
  operators: [{username: operator, name: "Duty officer Wang"}]
"""
RULES_YAML = """
rules:
  - {id: G-highhigh, type: gas_highhigh, kind: gas, clear_for_s: 0}
"""


class FakeClock:
    """Wall clock stand-in: the tests move it; no sleeps stand for minutes."""

    def __init__(self, t_ns: int):
        self.t = t_ns

    def __call__(self) -> int:
        return self.t


@pytest.fixture
def setup(tmp_path, mosquitto):
    cfg_dir = write_config(tmp_path / "config", ALERTS_YAML.replace("STORE", str(tmp_path / "alerts.sqlite")), RULES_YAML)
    env = mqtt_env(mosquitto)
    cfg = load_config(cfg_dir, env)
    gas = next(i for i, d in enumerate(cfg.devices) if d.kind == "gas")
    sub = Subscriber(mosquitto, ["city/xm/alerts/#"])
    yield cfg, cfg_dir, env, gas, sub
    sub.stop()


def batch(sensor: int, t_s: float, p: float) -> ReadingBatch:
    return ReadingBatch(np.array([sensor]), np.array([T0 + int(t_s * S)]), {"p": np.array([p])})


def test_one_firing_notice_retained_state_then_one_resolved(setup, mosquitto):
    cfg, cfg_dir, env, gas, sub = setup
    dev = cfg.devices[gas]
    pipe = DetectionPipeline(cfg, env, cfg_dir, clock=FakeClock(T0), listen=False)
    pipe.engine.start()
    for t in (0, 60):
        pipe.on_batch(batch(gas, t, dev.set_pressure_kpa))
    for t in (120, 180, 240):  # over the limit three times: one alert, one notice
        pipe.on_batch(batch(gas, t, dev.mop_kpa * 1.5))
    assert pipe.engine.flush(10)
    active_prefix = "city/xm/alerts/active/"
    assert sub.wait_for(lambda m: any(t.startswith(active_prefix) for t, _, _ in m))
    notices = sub.notices()
    assert [(n["transition"], n["severity"], n["rule_id"]) for n in notices] == [("firing", "red", "G-highhigh")]
    n = notices[0]
    assert n["site"]["id"] == dev.site and n["device"]["id"] == dev.id and n["value"] == dev.mop_kpa * 1.5
    assert n["idempotency_key"] == f"{n['alert_id']}:1"
    topics = [t for t, _, _ in sub.messages]
    assert f"city/xm/alerts/gas/{dev.site}" in topics

    # a console that connects late sees the active alert, retained
    late = Subscriber(mosquitto, [active_prefix + "#"])
    assert late.wait_for(lambda m: len(m) == 1)
    topic, payload, retained = late.messages[0]
    assert topic == active_prefix + n["alert_id"] and retained and json.loads(payload)["state"] == "firing"
    late.stop()

    pipe.on_batch(batch(gas, 300, dev.set_pressure_kpa))
    assert pipe.engine.flush(10)
    assert sub.wait_for(lambda m: len([x for x in m if x[0] == active_prefix + n["alert_id"]]) == 2)
    assert [x["transition"] for x in sub.notices()] == ["firing", "resolved"]
    cleared = [p for t, p, _ in sub.messages if t == active_prefix + n["alert_id"]][-1]
    assert cleared == b""
    # and nothing is retained any more
    late = Subscriber(mosquitto, [active_prefix + "#"])
    time.sleep(0.3)  # bounded: a retained message would arrive with the SUBACK
    assert late.messages == []
    late.stop()
    pipe.stop()


def test_ack_by_mqtt_command_stops_escalation(setup, mosquitto):
    cfg, cfg_dir, env, gas, sub = setup
    dev = cfg.devices[gas]
    clock = FakeClock(T0)
    pipe = DetectionPipeline(cfg, env, cfg_dir, clock=clock, listen=True)
    pipe.start()
    assert _wait(lambda: pipe.listener.subscribed)
    pipe.on_batch(batch(gas, 0, dev.mop_kpa * 1.5))
    assert sub.wait_for(lambda m: len(sub.notices()) == 1)
    alert_id = sub.notices()[0]["alert_id"]
    # the author is the account the command came from (its own topic), shown with its display name
    cmd = {"action": "ack", "alert_id": alert_id, "note": "crew dispatched"}
    publish(mosquitto, "city/xm/alerts/cmd/operator", json.dumps(cmd).encode(), who="operator")
    assert _wait(lambda: pipe.engine.alert(alert_id).acked_by == "operator")
    clock.t = T0 + 3600 * S  # an hour later: red would have escalated twice
    pipe.tick()
    assert pipe.engine.flush(10)
    assert sub.wait_for(lambda m: len(sub.notices()) == 2)
    time.sleep(0.3)
    kinds = [n["transition"] for n in sub.notices()]
    assert kinds == ["firing", "acknowledged"]
    ack = sub.notices()[1]["ack"]
    assert (ack["by"], ack["name"], ack["note"]) == ("operator", "Duty officer Wang", "crew dispatched")
    # who and when are recorded
    a = pipe.engine.store.alert(alert_id)
    assert (a.acked_by, a.acked_by_name, a.acked_ns) == ("operator", "Duty officer Wang", T0)
    pipe.stop()


def test_unacked_alert_escalates(setup):
    cfg, cfg_dir, env, gas, sub = setup
    clock = FakeClock(T0)
    pipe = DetectionPipeline(cfg, env, cfg_dir, clock=clock, listen=False)
    pipe.engine.start()
    pipe.on_batch(batch(gas, 0, cfg.devices[gas].mop_kpa * 1.5))
    clock.t = T0 + 301 * S
    pipe.tick()
    assert pipe.engine.flush(10)
    assert sub.wait_for(lambda m: len(sub.notices()) == 2)
    assert [(n["transition"], n["escalation_name"]) for n in sub.notices()] == [
        ("firing", "duty_officer"), ("escalated", "section_chief")]
    pipe.stop()


def test_restart_while_open_sends_no_duplicate_and_still_resolves(setup):
    cfg, cfg_dir, env, gas, sub = setup
    dev = cfg.devices[gas]
    pipe = DetectionPipeline(cfg, env, cfg_dir, clock=FakeClock(T0), listen=False)
    pipe.engine.start()
    pipe.on_batch(batch(gas, 0, dev.mop_kpa * 1.5))
    assert pipe.engine.flush(10)
    assert sub.wait_for(lambda m: len(sub.notices()) == 1)
    # "crash": the engine object is dropped without stop(); only what it committed survives
    pipe.engine.dispatcher.stop(timeout_s=1)
    # a new process: fresh detectors (no memory of the open condition), same store
    pipe2 = DetectionPipeline(load_config(cfg_dir, env), env, cfg_dir, clock=FakeClock(T0), listen=False)
    pipe2.engine.start()
    pipe2.on_batch(batch(gas, 60, dev.mop_kpa * 1.5))  # still over: refreshes the open alert
    pipe2.on_batch(batch(gas, 120, dev.set_pressure_kpa))  # back to normal: resolves it
    assert pipe2.engine.flush(10)
    assert sub.wait_for(lambda m: len(sub.notices()) == 2)
    time.sleep(0.3)
    notices = sub.notices()
    assert [n["transition"] for n in notices] == ["firing", "resolved"]
    assert notices[0]["alert_id"] == notices[1]["alert_id"]
    assert [n["idempotency_key"].rsplit(":", 1)[1] for n in notices] == ["1", "2"]
    pipe2.stop()


def test_config_reload_with_unchanged_rule_keeps_the_alert_open(setup):
    cfg, cfg_dir, env, gas, sub = setup
    dev = cfg.devices[gas]
    pipe = DetectionPipeline(cfg, env, cfg_dir, clock=FakeClock(T0), listen=False)
    pipe.engine.start()
    pipe.on_batch(batch(gas, 0, dev.mop_kpa * 1.5))
    alert_id = pipe.engine.active()[0].alert_id
    # an engineer edits another file (a comment in thresholds) and the directory is reloaded
    p = cfg_dir / "thresholds.yaml"
    p.write_text(p.read_text() + "\n# edited\n")
    assert pipe.reload_from_disk()
    assert [a.alert_id for a in pipe.engine.active()] == [alert_id]
    pipe.on_batch(batch(gas, 60, dev.mop_kpa * 1.6))
    pipe.on_batch(batch(gas, 120, dev.set_pressure_kpa))
    assert pipe.engine.flush(10)
    assert sub.wait_for(lambda m: len(sub.notices()) == 2)
    assert [(n["transition"], n["alert_id"]) for n in sub.notices()] == [("firing", alert_id), ("resolved", alert_id)]
    # a broken config is rejected and changes nothing
    (cfg_dir / "alerts.yaml").write_text("alerting:\n  flap_window_s: -1\n")
    assert not pipe.reload_from_disk()
    assert pipe.cfg.alerting.flap_window_s == cfg.alerting.flap_window_s
    pipe.stop()


def _wait(predicate, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def test_each_mqtt_command_gets_a_reply_and_an_mqtt5_response(setup, mosquitto):
    import paho.mqtt.client as mqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    cfg, cfg_dir, env, gas, sub = setup
    dev = cfg.devices[gas]
    pipe = DetectionPipeline(cfg, env, cfg_dir, clock=lambda: T0, listen=True)
    pipe.start()
    assert _wait(lambda: pipe.listener.subscribed)
    pipe.on_batch(batch(gas, 0, dev.mop_kpa * 1.5))
    assert sub.wait_for(lambda m: len(sub.notices()) == 1)
    alert_id = sub.notices()[0]["alert_id"]
    replies = Subscriber(mosquitto, ["city/xm/alerts/replies/#", "city/xm/alerts/replies"], who="operator")
    publish(mosquitto, "city/xm/alerts/cmd/operator", json.dumps({"action": "ack", "alert_id": alert_id}).encode(),
            who="operator")
    publish(mosquitto, "city/xm/alerts/cmd/operator", json.dumps({"action": "ack", "alert_id": "nope"}).encode(),
            who="operator")
    publish(mosquitto, "city/xm/alerts/cmd/operator", b"{not json", who="operator")
    assert replies.wait_for(lambda m: len(m) >= 3)
    got = [json.loads(p) for t, p, _ in replies.messages if t == "city/xm/alerts/replies"]
    assert [r["ok"] for r in got] == [True, False, False], got
    assert got[0]["command"]["alert_id"] == alert_id and got[0]["result"].startswith("ok")
    assert got[0]["author"] == "operator" and got[0]["author_name"] == "Duty officer Wang"
    assert "no alert 'nope'" in got[1]["result"] and got[2]["result"].startswith("error: payload: not JSON")
    # MQTT 5 request/response: the reply also goes to the command's response topic, with its correlation data.
    console = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="console-7", protocol=mqtt.MQTTv5)
    console.username_pw_set(**mosquitto.client_args("operator"))
    answers = []
    console.on_message = lambda c, u, msg: answers.append((msg.topic, msg.properties.CorrelationData, json.loads(msg.payload)))
    console.connect(mosquitto.host, mosquitto.port)
    console.loop_start()
    console.subscribe("city/xm/alerts/replies/console-7", qos=1)
    time.sleep(0.3)
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = "city/xm/alerts/replies/console-7"
    props.CorrelationData = b"req-42"
    cmd = {"action": "silence", "matchers": {"rule_id": "G-highhigh"}, "comment": "works", "expires_s": 600}
    console.publish("city/xm/alerts/cmd/operator", json.dumps(cmd), qos=1, properties=props).wait_for_publish(5)
    assert _wait(lambda: len(answers) == 1)
    topic, corr, body = answers[0]
    assert topic == "city/xm/alerts/replies/console-7" and corr == b"req-42" and body["ok"], body
    console.disconnect()
    console.loop_stop()
    replies.stop()
    pipe.stop()
