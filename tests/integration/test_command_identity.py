"""Operator commands against a real broker and a real `citywatch run` (issue 10, critical 2 and the
identity part of critical 1): the author is the account of the command topic; commands that would have
stopped the service for good (an expiry that overflows) are refused with a reply and never stored to
apply; the service keeps alerting and starts again with the same store; an old bad row left in the
store is marked failed at start instead of failing it."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest

from alerts.store import AlertStore
from config import load_config
from tests.integration.test_alerts_service import gas_payload
from tests.integration.test_ingest_harness import ServiceProcess
from tests.unit.alerts.helpers import Subscriber, publish, write_config

pytestmark = pytest.mark.integration

ALERTS_YAML = """
alerting:
  sinks:
    ops_mqtt: {type: mqtt, topic_prefix: city/xm/alerts, qos: 1}
  route: {receivers: [ops_mqtt], group_wait_s: 0, group_interval_s: 0, repeat_interval_s: 100000}
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
CMD = "city/xm/alerts/cmd/operator"  # the test broker's operator account and its own command topic
# Issue 10's payloads: each one stopped the tick for good and made every later start exit 1.
OVERFLOW = [
    (b'{"action":"silence","matchers":{"category":"gas"},"by":"x","comment":"x","expires":"999999999w"}',
     "error: by: this command's author is 'operator' (Duty officer Wang), taken from where it was sent; got 'x': "
     "leave by out"),
    (b'{"action":"silence","matchers":{"category":"gas"},"comment":"x","expires":"999999999w"}',
     "error: expires: at most 2592000 s (30d, alerting.silence_max_s), got '999999999w'"),
    (b'{"action":"silence","matchers":{"category":"gas"},"comment":"x","expires_s":Infinity}',
     "error: payload: Infinity is not a JSON number"),
    (b'{"action":"silence","matchers":{"category":"gas"},"comment":"x","expires_s":1e300}',
     "error: expires_s: at most 2592000 s (30d, alerting.silence_max_s), got 1e+300"),
]


@pytest.fixture
def stack(tmp_path, mosquitto, influx, service_env):
    store = tmp_path / "alerts.sqlite"
    cfg_dir = write_config(tmp_path / "config", ALERTS_YAML.replace("STORE", str(store)), RULES_YAML)
    cfg = load_config(cfg_dir, service_env)
    devs = [d for d in cfg.devices if d.kind == "gas" and d.protocol == "json"][:3]
    sub = Subscriber(mosquitto, ["city/xm/alerts/#"])
    replies = Subscriber(mosquitto, ["city/xm/alerts/replies"], who="operator")
    svc = ServiceProcess(cfg_dir, service_env, tmp_path / "service.log")
    yield svc, devs, sub, replies, mosquitto, store
    svc.kill()
    sub.stop()
    replies.stop()


def send_over(mosquitto, dev) -> None:
    publish(mosquitto, f"city/xm/gas/{dev.site}/{dev.id}/data", gas_payload(dev, dev.mop_kpa * 1.5), who=dev.id)


def firing_of(sub, dev) -> list[dict]:
    return [n for n in sub.notices() if n["transition"] == "firing" and n["device"]["id"] == dev.id]


def command_rows(store) -> list[dict]:
    db = sqlite3.connect(str(store))
    try:
        rows = db.execute("SELECT source, body, author, author_name, status, result FROM commands ORDER BY id").fetchall()
    finally:
        db.close()
    return [dict(zip(("source", "body", "author", "author_name", "status", "result"), r)) for r in rows]


def silences(store) -> list:
    db = sqlite3.connect(str(store))
    try:
        return db.execute("SELECT id FROM silences").fetchall()
    finally:
        db.close()


def test_operator_account_acts_overflow_commands_are_refused_and_the_service_keeps_alerting(stack):
    svc, (a, b, c), sub, replies, mosquitto, store = stack
    svc.start()
    send_over(mosquitto, a)
    assert sub.wait_for(lambda m: len(firing_of(sub, a)) == 1, 30), svc.log_text()
    alert_id = firing_of(sub, a)[0]["alert_id"]

    # the operator acks on its own topic: applied, with that account as the author
    publish(mosquitto, CMD, json.dumps({"action": "ack", "alert_id": alert_id, "note": "crew sent"}).encode(),
            who="operator")
    assert sub.wait_for(lambda m: any(n["transition"] == "acknowledged" for n in sub.notices()), 30), svc.log_text()
    ack = next(n for n in sub.notices() if n["transition"] == "acknowledged")["ack"]
    assert (ack["by"], ack["name"], ack["note"]) == ("operator", "Duty officer Wang", "crew sent")
    assert replies.wait_for(lambda m: len(m) == 1, 30)
    first = json.loads(replies.messages[0][1])
    assert (first["ok"], first["result"], first["author"]) == (True, "ok", "operator")

    # the payloads that stopped the service: each refused with a reply saying why
    for payload, _ in OVERFLOW:
        publish(mosquitto, CMD, payload, who="operator")
    assert replies.wait_for(lambda m: len(m) == 1 + len(OVERFLOW), 30), svc.log_text()
    got = [json.loads(p) for _, p, _ in replies.messages[1:]]
    assert [(r["ok"], r["result"]) for r in got] == [(False, why) for _, why in OVERFLOW]

    # ... recorded as refused (never to apply), nothing silenced; and the service goes on alerting
    rows = command_rows(store)
    assert [(r["status"], r["author"], r["source"]) for r in rows] == (
        [("applied", "operator", f"mqtt:{CMD}")] + [("refused", "operator", f"mqtt:{CMD}")] * len(OVERFLOW))
    assert [r["result"] for r in rows[1:]] == [why for _, why in OVERFLOW]
    assert silences(store) == []
    send_over(mosquitto, b)  # a gas alert after them still fires and is notified
    assert sub.wait_for(lambda m: len(firing_of(sub, b)) == 1, 30), svc.log_text()
    assert "alert tick failed" not in svc.log_text()

    # a restart with the same store starts and alerts
    svc.kill()
    svc.start()
    send_over(mosquitto, c)
    assert sub.wait_for(lambda m: len(firing_of(sub, c)) == 1, 30), svc.log_text()
    assert [r["status"] for r in command_rows(store)] == ["applied"] + ["refused"] * len(OVERFLOW)
    assert "alert tick failed" not in svc.log_text() and "Traceback" not in svc.log_text()


OLD_COMMANDS_TABLE = """
CREATE TABLE commands (
    id INTEGER PRIMARY KEY AUTOINCREMENT, received_at REAL, source TEXT, body TEXT NOT NULL,
    applied_at REAL, result TEXT);
"""


def test_old_bad_row_in_the_store_is_marked_failed_and_the_service_starts(stack):
    svc, (a, _, _), sub, replies, mosquitto, store = stack
    # A store written by the version of issue 10: its commands table, with the overflow silence stored
    # and never applied (every start re-applied it and exited 1 with an OverflowError).
    db = sqlite3.connect(str(store))
    db.executescript(OLD_COMMANDS_TABLE)
    bad = {"action": "silence", "matchers": {"category": "gas"}, "by": "x", "comment": "x", "expires": "999999999w"}
    db.execute("INSERT INTO commands (received_at, source, body) VALUES (?, ?, ?)",
               (time.time(), "mqtt:city/xm/alerts/cmd", json.dumps(bad, sort_keys=True)))
    db.commit()
    db.close()
    AlertStore(store).close()  # (the rest of the schema, as that version had it too)

    svc.start()
    send_over(mosquitto, a)
    assert sub.wait_for(lambda m: len(firing_of(sub, a)) == 1, 30), svc.log_text()
    rows = command_rows(store)
    assert [(r["status"], r["result"]) for r in rows] == [
        ("failed", "error: no authenticated author (a command stored by an earlier version): send it again")]
    assert silences(store) == []
    assert "Traceback" not in svc.log_text()
