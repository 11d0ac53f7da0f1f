"""Issue 15 follow-up: a data subscription the broker refuses is asked again with backoff, logged once per
episode, and the collector is not `connected` (deaf) until every topic is granted."""

from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.reasoncodes import ReasonCode

import ingest.collector as collector_module
from config import load_config
from ingest.collector import TOPICS, MqttCollector

ROOT = Path(__file__).resolve().parents[3]
CFG = load_config(ROOT / "config", env={})

GRANTED = 1
REFUSED_V5 = 0x87  # Not authorized
REFUSED_V311 = 0x80  # Failure


def suback(*codes: int) -> list[ReasonCode]:
    return [ReasonCode(PacketTypes.SUBACK, identifier=c) for c in codes]


class Timers:
    """Stands in for threading.Timer: records (delay, function, args); `fire()` runs the oldest."""

    def __init__(self) -> None:
        self.made: list[tuple[float, object, tuple]] = []

    def __call__(self, delay, function, args=()):
        self.made.append((delay, function, tuple(args)))
        return SimpleNamespace(daemon=False, start=lambda: None)

    def fire(self) -> None:
        _, function, args = self.made.pop(0)
        function(*args)


@pytest.fixture(params=["mqtt5", "mqtt311"])
def wired(request, monkeypatch):
    mq = CFG.connections.mqtt.model_copy(update={"protocol": request.param})
    c = MqttCollector(mq, None, lambda m: None)
    asked: list[tuple[str, ...]] = []

    def subscribe(request_list):
        asked.append(tuple(t for t, _ in request_list))
        return 0, len(asked)  # (MQTT_ERR_SUCCESS, packet id)

    monkeypatch.setattr(c.client, "subscribe", subscribe)
    monkeypatch.setattr(c.client, "publish", lambda *a, **k: None)
    monkeypatch.setattr(c.client, "is_connected", lambda: True)
    timers = Timers()
    monkeypatch.setattr(collector_module.threading, "Timer", timers)
    refused = REFUSED_V5 if request.param == "mqtt5" else REFUSED_V311
    return c, asked, timers, refused


def connect(c: MqttCollector) -> None:
    c._on_connect(c.client, None, SimpleNamespace(session_present=True), ReasonCode(PacketTypes.CONNACK, identifier=0),
                  None)


def test_refused_subscription_is_asked_again_with_backoff_until_taken(wired, caplog):
    c, asked, timers, refused = wired
    caplog.set_level(logging.INFO, logger="ingest.collector")
    connect(c)
    assert asked == [TOPICS]
    # The broker (a node mid-election, an ACL not loaded yet) refuses the gas topics, grants the others.
    c._on_subscribe(c.client, None, 1, suback(GRANTED, refused, GRANTED), None)
    assert not c.connected and "subscription refused" in (c.last_error or "")
    assert [(d, a) for d, _, a in timers.made] == [(1.0, (c._generation, ("city/xm/gas/#",)))]
    timers.fire()
    assert asked[-1] == ("city/xm/gas/#",)  # only what was refused: a granted topic is not asked again
    c._on_subscribe(c.client, None, 2, suback(refused), None)
    assert [d for d, _, _ in timers.made] == [2.0]  # doubled
    timers.fire()
    c._on_subscribe(c.client, None, 3, suback(GRANTED), None)
    assert c.connected and timers.made == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1  # once per episode, however many refusals
    assert warnings[0].getMessage().startswith("MQTT broker refused the data subscription to city/xm/gas/# (")
    assert "took the data subscription now" in caplog.records[-1].getMessage()
    # A later episode is said again, and its backoff starts over.
    c._on_subscribe(c.client, None, 3, suback(refused), None)  # a SUBACK already answered: ignored
    assert c.connected
    connect(c)
    c._on_subscribe(c.client, None, len(asked), suback(refused, GRANTED, GRANTED), None)
    assert [d for d, _, _ in timers.made] == [1.0]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_a_retry_of_an_earlier_connection_is_not_sent(wired):
    c, asked, timers, refused = wired
    connect(c)
    c._on_subscribe(c.client, None, 1, suback(refused, refused, refused), None)
    connect(c)  # reconnected meanwhile: on_connect asked for everything again
    assert asked == [TOPICS, TOPICS]
    timers.fire()
    assert asked == [TOPICS, TOPICS]
    c._on_subscribe(c.client, None, 1, suback(refused), None)  # the first connection's SUBACK, late: ignored
    assert timers.made == []
    c._on_subscribe(c.client, None, 2, suback(GRANTED, GRANTED, GRANTED), None)
    assert c.connected


def test_granted_subscription_connects_at_once(wired):
    c, asked, timers, _ = wired
    connect(c)
    assert not c.connected  # not before the SUBACK: a device's publish could still miss a fresh session
    c._on_subscribe(c.client, None, 1, suback(GRANTED, GRANTED, GRANTED), None)
    assert c.connected and timers.made == [] and c.last_error is None
