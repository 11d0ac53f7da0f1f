"""Partitioned mode: one answer per operator command across the workers (alerts.command_scope). Every worker's
engine receives every command; the owner of the alert's device answers an ack, the owner of the inventory's first
device answers what names no device (an unknown id, a silence, a refused command), and a silence applied by every
worker gets the same id on each, so the `unsilence` of the id the answer names ends it everywhere."""

from __future__ import annotations

import pytest

from alerts.command_scope import alert_device, answers_ack, answers_rest, shared_silence_id
from tests.unit.alerts.helpers import AUTHORS, det, make_cfg, make_engine

DEVICES = {"XMG0001", "XMG0002", "XM0001NOISE", "a.b"}


@pytest.mark.parametrize("alert_id, device", [
    ("G-high.XMG0001.20250601T143000000Z", "XMG0001"),
    ("G-high.XMG0001.after", "XMG0001"),          # any last part: the device is the part(s) before it
    ("rule.with.dots.XMG0002.20250601T143000000Z", "XMG0002"),
    ("N-day.a.b.20250601T143000000Z", "a.b"),     # a device id with a dot
    ("G-high.XMG0009.20250601T143000000Z", None),  # not in the inventory
    ("XMG0001", None),                             # no rule, no stamp
    ("XMG0001.20250601T143000000Z", None),         # the first part is the rule's, never the device's
    ("", None),
])
def test_the_device_an_alert_id_names(alert_id, device):
    assert alert_device(alert_id, DEVICES) == device


@pytest.mark.parametrize("alert_id, holds, owned, expected", [
    ("G-high.XMG0001.20250601T143000000Z", False, None, True),         # single mode answers everything
    ("G-high.XMG0001.20250601T143000000Z", False, {"XMG0001"}, True),  # its device's owner, held or not
    ("G-high.XMG0001.20250601T143000000Z", False, {"XMG0002"}, False),  # another worker's device
    ("G-high.XMG0001.20250601T143000000Z", True, {"XMG0002"}, True),   # held (a hand-over under way)
    ("G-high.XMG0009.20250601T143000000Z", False, {"XM0001NOISE"}, True),  # no such device: the first device's owner
    ("G-high.XMG0009.20250601T143000000Z", False, {"XMG0001"}, False),
    ("nope", False, {"XM0001NOISE"}, True),
    ("nope", False, set(), False),                                     # a worker owning nothing answers nothing
])
def test_who_answers_an_ack(alert_id, holds, owned, expected):
    assert answers_ack(alert_id, holds, owned, DEVICES) is expected


def test_the_rest_is_answered_by_the_owner_of_the_lowest_device_id():
    assert answers_rest(None, DEVICES) and answers_rest(None, set())
    assert answers_rest({"XM0001NOISE"}, DEVICES)
    assert not answers_rest({"XMG0001", "XMG0002", "a.b"}, DEVICES)
    assert not answers_rest(set(), set())


def test_a_silence_id_depends_on_author_and_content_only():
    cmd = {"action": "silence", "matchers": {"rule_id": "N-day"}, "comment": "works", "expires_s": 600}
    sid = shared_silence_id("li", cmd)
    assert sid == shared_silence_id("li", dict(reversed(list(cmd.items()))))
    assert sid != shared_silence_id("chen", cmd)
    assert sid != shared_silence_id("li", {**cmd, "expires_s": 601})
    assert len(sid) == 12 and sid.isalnum()


def two_workers(tmp_path):
    """Two engines of one inventory: `first` owns the inventory's lowest device id, `other` the second one."""
    cfg = make_cfg()
    ids = sorted(d.id for d in cfg.devices)
    engines = []
    for name, owned in (("first", {ids[0]}), ("other", set(ids[1:]))):
        (tmp_path / name).mkdir()
        engine, _ = make_engine(tmp_path / name, cfg)
        engine.set_owned(owned)
        engines.append(engine)
    return cfg, ids, engines


def test_an_ack_is_answered_by_the_owner_of_its_device_only(tmp_path):
    cfg, ids, (first, other) = two_workers(tmp_path)
    sensor = next(i for i, d in enumerate(cfg.devices) if d.id == ids[1])
    other.process(det([(sensor, 0, "N-day", "yellow", 72)]))
    (alert,) = other.active()
    ack = {"action": "ack", "alert_id": alert.alert_id}
    assert [e.submit_command("mqtt:t", ack, AUTHORS["li"]) for e in (first, other)] == [None, "ok"]
    assert first.counters["commands_elsewhere"] == 1
    assert first.store.unapplied_commands() == [] and other.alert(alert.alert_id).acked_by == "li"
    # An id of a device neither holds an alert of: its owner says so, once.
    gone = {"action": "ack", "alert_id": f"N-day.{ids[1]}.20250601T000000000Z"}
    assert [e.submit_command("mqtt:t", gone, AUTHORS["li"]) for e in (first, other)] == [
        None, f"error: no alert {gone['alert_id']!r}"]
    # An id naming no device, and a command that does not validate: the owner of the first device answers.
    assert [e.submit_command("mqtt:t", {"action": "ack", "alert_id": "nope"}, AUTHORS["li"]) for e in (first, other)] == [
        "error: no alert 'nope'", None]
    answers = [e.submit_command("mqtt:t", {"action": "ak"}, AUTHORS["li"]) for e in (first, other)]
    assert answers[0].startswith("error: action:") and answers[1] is None
    for e in (first, other):
        e.stop()


def test_a_silence_is_applied_by_every_worker_under_one_id_and_answered_once(tmp_path):
    _, _, (first, other) = two_workers(tmp_path)
    first.tick(0)
    other.tick(0)
    silence = {"action": "silence", "matchers": {"rule_id": "N-day"}, "comment": "works", "expires_s": 3600}
    answers = [e.submit_command("mqtt:t", silence, AUTHORS["chen"]) for e in (first, other)]
    assert answers[0].startswith("ok: silence ") and answers[1] is None
    sid = answers[0].split()[2]
    assert [list(e.muter.silences) for e in (first, other)] == [[sid], [sid]]
    unsilence = {"action": "unsilence", "silence_id": sid}
    assert [e.submit_command("mqtt:t", unsilence, AUTHORS["chen"]) for e in (first, other)] == ["ok", None]
    assert [e.muter.silences for e in (first, other)] == [{}, {}]
    for e in (first, other):
        e.stop()


def test_single_mode_answers_every_command_with_its_own_silence_ids(tmp_path):
    engine, _ = make_engine(tmp_path)
    assert engine.submit_command("mqtt:t", {"action": "ack", "alert_id": "nope"}, AUTHORS["li"]) == "error: no alert 'nope'"
    silence = {"action": "silence", "matchers": {"rule_id": "N-day"}, "comment": "works", "expires_s": 3600}
    ids = {engine.submit_command("mqtt:t", silence, AUTHORS["chen"]).split()[2] for _ in range(2)}
    assert len(ids) == 2  # a random id each, as before partitioned mode
    engine.stop()
