"""Reachability logs one line per change of a connection's state, with the reason and the time away."""

from __future__ import annotations

import logging

from core.reachability import Reachability, connect_error, format_duration


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_one_line_down_one_line_back_whatever_the_number_of_tries(caplog):
    clock = Clock()
    log = logging.getLogger("test.reach")
    r = Reachability("MQTT broker h:1 (collector)", log, down_note="reconnecting", clock=clock)
    caplog.set_level(logging.INFO, "test.reach")
    assert r.up() is False  # reachable from the start: nothing to say
    assert r.down("[Errno 111] Connection refused") is True
    for _ in range(20):
        clock.t += 1
        assert r.down("[Errno 111] Connection refused") is False
    clock.t += 52.5
    assert r.up("session present: True") is True
    assert r.up() is False
    assert [(rec.levelname, rec.getMessage()) for rec in caplog.records] == [
        ("WARNING", "MQTT broker h:1 (collector) unreachable ([Errno 111] Connection refused): reconnecting"),
        ("INFO", "MQTT broker h:1 (collector) back after 1 min 12 s, session present: True"),
    ]
    assert r.reachable and r.reason is None


def test_the_latest_reason_is_kept_while_down():
    r = Reachability("InfluxDB", logging.getLogger("test.reach"))
    r.down("HTTP 503: busy")
    r.down("connection refused")
    assert not r.reachable and r.reason == "connection refused"


def test_durations_read_well():
    assert [format_duration(s) for s in (0.42, 12.34, 59.94, 302, 7500)] == [
        "0.4 s", "12.3 s", "59.9 s", "5 min 02 s", "2 h 05 min"]


def test_connect_error_reads_the_exception_being_handled():
    assert connect_error() == "connection failed"
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except OSError:
        assert connect_error() == "[Errno 111] Connection refused"
