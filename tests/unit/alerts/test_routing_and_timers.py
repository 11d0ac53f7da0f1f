"""Table tests with an injected clock: escalation, repeat, acks, silences, quiet windows, inhibition, grouping."""

from __future__ import annotations

import pytest

from alerts.grouping import GroupTimer
from alerts.routing import route
from config.alerting import Route
from tests.unit.alerts.helpers import AUTHORS, S, at, det, make_cfg, make_engine

RULES = [{"id": "N-day", "type": "noise_day_limit", "kind": "noise"},
         {"id": "Offline", "type": "deadman", "kind": "any"},
         {"id": "G-rupture", "type": "gas_rupture", "kind": "gas"},
         {"id": "G-low", "type": "gas_low", "kind": "gas"}]


def engine_for(tmp_path, alerting=None, clock=None):
    return make_engine(tmp_path, make_cfg(alerting, RULES), clock=clock)


def transitions(engine, sink):
    assert engine.flush(5)
    return [(n.transition, n.payload.get("escalation_name")) for n in sink.notices]


# ----- routing ---------------------------------------------------------------------------------------

TREE = Route.model_validate({
    "receivers": ["ops"], "group_by": ["site_id"], "group_wait_s": 10, "repeat_interval_s": 600,
    "routes": [
        {"match": {"category": ["gas"], "severity": ["red"]}, "receivers": ["gas_line"], "repeat_interval_s": 60},
        {"match": {"category": ["gas"]}, "receivers": ["gas_desk"], "continue": True},
        {"match": {"district": ["Huli"]}, "receivers": ["huli"]},
        {"match": {"level": ["section_chief"]}, "receivers": ["chief"]},
    ],
})


@pytest.mark.parametrize(
    "labels, expected",
    [
        ({"category": "noise", "severity": "yellow", "district": "Siming", "level": "duty_officer"}, [("root", ("ops",))]),
        ({"category": "gas", "severity": "red", "district": "Huli"}, [("root.routes[0]", ("gas_line",))]),
        # continue: the gas desk and then the Huli route both apply
        ({"category": "gas", "severity": "yellow", "district": "Huli"},
         [("root.routes[1]", ("gas_desk",)), ("root.routes[2]", ("huli",))]),
        ({"category": "noise", "severity": "red", "district": "Jimei", "level": "section_chief"},
         [("root.routes[3]", ("chief",))]),
    ],
)
def test_routing_tree(labels, expected):
    got = route(TREE, labels)
    assert [(m.path, m.receivers) for m in got] == expected
    assert all(m.group_wait_s == 10 and m.group_by == ("site_id",) for m in got)  # inherited


def test_child_timers_override_the_parent():
    m = route(TREE, {"category": "gas", "severity": "red"})[0]
    assert (m.repeat_interval_s, m.group_wait_s) == (60, 10)


# ----- grouping ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "events, expected_due",
    [
        # (alert, t): a new group waits group_wait (10 s); a second alert within it joins the batch
        ([("a", 0), ("b", 5)], [10, 10]),
        # after the batch left, the next change waits for group_interval (60 s after the batch)
        ([("a", 0), ("b", 20)], [10, 70]),
        # a change long after the last batch goes at once
        ([("a", 0), ("b", 500)], [10, 500]),
        # changes inside one interval share the next batch
        ([("a", 0), ("b", 20), ("c", 30)], [10, 70, 70]),
    ],
)
def test_group_windows(events, expected_due):
    g = GroupTimer()
    due = [g.due(("root", "site"), a, t * S, 10, 60) // S for a, t in events]
    assert due == expected_due


def test_group_forms_again_after_all_members_resolved():
    g = GroupTimer()
    assert g.due(("k",), "a", 0, 10, 60) == 10 * S
    g.leave(("k",), "a")
    assert g.due(("k",), "b", 100 * S, 10, 60) == 110 * S


def test_group_wait_holds_notices_until_due(tmp_path):
    engine, sink = engine_for(tmp_path, {"route": {"receivers": ["rec"], "group_by": ["site_id", "rule_id"],
                                                   "group_wait_s": 30, "group_interval_s": 120}})
    # two devices of different sites; devices 0 and 6 share no site, so two groups
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    assert transitions(engine, sink) == []
    engine.tick(at(29))
    assert transitions(engine, sink) == []
    engine.tick(at(30))
    assert transitions(engine, sink) == [("firing", "duty_officer")]
    engine.process(det([(0, 40, "N-day", "orange", 76)]))  # within group_interval of the batch at 30 s
    engine.tick(at(149))
    assert len(sink.notices) == 1
    engine.tick(at(150))
    assert [t for t, _ in transitions(engine, sink)] == ["firing", "severity"]
    engine.stop()


# ----- escalation, repeat, ack -------------------------------------------------------------------------

ESC = {"escalation": {"red_s": 300, "orange_s": 900, "yellow_s": 3600},
       "route": {"receivers": ["rec"], "group_interval_s": 0, "repeat_interval_s": 100000}}


@pytest.mark.parametrize(
    "severity, tick_s, expected",
    [
        ("red", 299, ["duty_officer"]),
        ("red", 300, ["duty_officer", "section_chief"]),
        ("red", 600, ["duty_officer", "section_chief", "bureau_leader"]),
        ("red", 5000, ["duty_officer", "section_chief", "bureau_leader"]),  # no level past the last
        ("orange", 899, ["duty_officer"]),
        ("orange", 900, ["duty_officer", "section_chief"]),
        ("yellow", 3600, ["duty_officer", "section_chief"]),
        ("blue", 99999, ["duty_officer"]),  # blue never escalates
    ],
)
def test_escalation_timing(tmp_path, severity, tick_s, expected):
    engine, sink = engine_for(tmp_path, ESC)
    engine.process(det([(0, 0, "N-day", severity, 90)]))
    engine.tick(at(tick_s))
    got = transitions(engine, sink)
    assert [level for _, level in got] == expected
    assert [t for t, _ in got] == ["firing"] + ["escalated"] * (len(expected) - 1)
    engine.stop()


def test_escalated_notice_goes_to_the_next_levels_route(tmp_path):
    alerting = {**ESC, "sinks": {"rec": {"type": "terminal"}, "chief": {"type": "terminal"}},
                "route": {**ESC["route"], "routes": [{"match": {"level": ["section_chief"]}, "receivers": ["chief"]}]}}
    engine, sink = engine_for(tmp_path, alerting)
    engine.process(det([(0, 0, "N-day", "red", 90)]))
    engine.tick(at(300))
    engine.flush(5)
    # Each sink delivers on a thread of its own: the order between two sinks is not the engine's to keep.
    assert sorted((n.transition, n.payload["receivers"]) for n in sink.notices) == [
        ("escalated", ["chief"]), ("firing", ["rec"])]
    engine.stop()


def test_ack_stops_escalation_and_repeat(tmp_path):
    engine, sink = engine_for(tmp_path, {**ESC, "route": {"receivers": ["rec"], "repeat_interval_s": 600}})
    engine.process(det([(0, 0, "N-day", "red", 90)]))
    alert_id = engine.active()[0].alert_id
    engine.tick(at(100))
    assert engine.submit_command("test", {"action": "ack", "alert_id": alert_id, "note": "crew sent"}, AUTHORS["li"]) == "ok"
    engine.tick(at(10000))
    kinds = [t for t, _ in transitions(engine, sink)]
    assert kinds == ["firing", "acknowledged"]
    ack = sink.notices[1].payload["ack"]
    assert ack["by"] == "li" and ack["name"] == "Li Wei" and ack["note"] == "crew sent"
    assert ack["at"] == "2025-06-01T14:31:40.000Z"
    engine.stop()


def test_repeat_reminders(tmp_path):
    engine, sink = engine_for(tmp_path, {**ESC, "route": {"receivers": ["rec"], "repeat_interval_s": 600}})
    engine.process(det([(0, 0, "N-day", "blue", 67)]))
    engine.tick(at(599))
    engine.tick(at(600))
    engine.tick(at(1300))
    got = transitions(engine, sink)
    assert [t for t, _ in got] == ["firing", "repeat", "repeat"]
    assert [n.ts_ns for n in sink.notices] == [at(0), at(600), at(1200)]
    engine.stop()


def test_ack_of_unknown_alert_is_an_error(tmp_path):
    engine, _ = engine_for(tmp_path)
    assert engine.submit_command("test", {"action": "ack", "alert_id": "nope"}, AUTHORS["li"]) == "error: no alert 'nope'"
    assert engine.submit_command("test", {"action": "ack", "alert_id": "nope"}) == (
        "error: no authenticated author: send commands as your own operator account")
    engine.stop()


# ----- silences, quiet windows, inhibition --------------------------------------------------------------

def test_silence_holds_firing_until_it_expires(tmp_path):
    engine, sink = engine_for(tmp_path, ESC)
    engine.tick(at(0))
    r = engine.submit_command("test", {"action": "silence", "matchers": ["device_id=XM0001NOISE"],
                                       "comment": "mic maintenance", "expires": "10m", "id": "s1"}, AUTHORS["chen"])
    assert r == "ok: silence s1 until 2025-06-01T14:40:00.000Z"
    engine.process(det([(0, 10, "N-day", "yellow", 72), (1, 10, "N-day", "yellow", 72)]))
    assert engine.flush(5)
    assert [n.payload["device"]["id"] for n in sink.notices] == ["XM0002NOISE"]
    engine.tick(at(599))
    assert len(sink.notices) == 1
    engine.tick(at(600))  # expired: the still-firing alert is notified now
    engine.flush(5)
    assert [(n.payload["device"]["id"], n.transition) for n in sink.notices] == [
        ("XM0002NOISE", "firing"), ("XM0001NOISE", "firing")]
    assert sink.notices[1].payload["late"] is True
    engine.stop()


def test_silenced_alert_that_resolves_sends_nothing(tmp_path):
    engine, sink = engine_for(tmp_path)
    engine.tick(at(0))
    engine.submit_command("test", {"action": "silence", "matchers": {"rule_id": "N-day"},
                                   "comment": "known", "expires_s": 3600}, AUTHORS["chen"])
    engine.process(det([(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "clear", 65)]))
    engine.tick(at(5000))
    assert transitions(engine, sink) == []
    engine.stop()


def test_unsilence_releases_at_once(tmp_path):
    engine, sink = engine_for(tmp_path)
    engine.tick(at(0))
    engine.submit_command("test", {"action": "silence", "matchers": {"rule_id": "N-day"},
                                   "comment": "known", "expires_s": 3600, "id": "s9"}, AUTHORS["chen"])
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    assert engine.submit_command("test", {"action": "unsilence", "silence_id": "s9"}, AUTHORS["chen"]) == "ok"
    assert [t for t, _ in transitions(engine, sink)] == ["firing"]
    silence = engine.store.silences(include_ended=True)[0]
    assert silence.ended_by == "chen"
    engine.stop()


def test_quiet_window(tmp_path):
    # 14:30Z is 22:30 in Asia/Shanghai
    q = {"quiet_windows": [{"id": "night", "windows": [{"start": "22:00", "end": "23:00"}], "match": {"category": ["noise"]}}]}
    engine, sink = engine_for(tmp_path, q)
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    engine.tick(at(1799))
    assert transitions(engine, sink) == []
    engine.tick(at(1800))  # 23:00 local: the window ends
    assert [t for t, _ in transitions(engine, sink)] == ["firing"]
    engine.stop()


INHIBIT = {"inhibit": [{"source_rule": ["Offline"], "target_rule": ["N-day"], "equal": ["device_id"]},
                       {"source_rule": ["G-rupture"], "target_rule": ["G-low"], "equal": ["site_id"]}]}


def test_offline_device_inhibits_its_own_value_alerts(tmp_path):
    engine, sink = engine_for(tmp_path, INHIBIT)
    engine.process(det([(0, 0, "Offline", "yellow", 900, 600, "device"), (0, 0, "N-day", "yellow", 72),
                        (1, 0, "N-day", "yellow", 72)]))
    assert engine.flush(5)
    got = sorted((n.alert_id.split(".")[0], n.payload["device"]["id"]) for n in sink.notices)
    assert got == [("N-day", "XM0002NOISE"), ("Offline", "XM0001NOISE")]
    # the device comes back: Offline resolves and the still-firing value alert is notified
    engine.process(det([(0, 100, "Offline", "clear", 0, 600, "device")]))
    engine.flush(5)
    assert [(n.alert_id.split(".")[0], n.transition) for n in sink.notices[2:]] == [
        ("Offline", "resolved"), ("N-day", "firing")]
    engine.stop()


def test_rupture_inhibits_low_pressure_of_the_same_site(tmp_path):
    engine, sink = engine_for(tmp_path, INHIBIT)
    cfg = engine.cfg
    gas = [i for i, d in enumerate(cfg.devices) if d.kind == "gas"]
    a = gas[0]
    same_site = [i for i in gas if cfg.devices[i].site == cfg.devices[a].site and i != a]
    other = next(i for i in gas if cfg.devices[i].site != cfg.devices[a].site)
    rows = [(a, 0, "G-rupture", "red", 150, 270, "gas"), (a, 0, "G-low", "orange", 150, 270, "gas"),
            (other, 0, "G-low", "orange", 150, 270, "gas")]
    rows += [(i, 0, "G-low", "orange", 150, 270, "gas") for i in same_site]
    engine.process(det(rows))
    engine.flush(5)
    got = sorted((n.alert_id.split(".")[0], n.payload["site"]["id"]) for n in sink.notices)
    assert got == sorted([("G-rupture", cfg.devices[a].site), ("G-low", cfg.devices[other].site)])
    engine.stop()


def test_a_new_silence_reaches_the_store_at_the_next_tick_not_with_the_refreshes(tmp_path):
    # The console's alert page reads the mute from the store; refreshes are written at most every
    # REFRESH_PERSIST_S (5 s of wall time), a mute change at once.
    engine, sink = engine_for(tmp_path)
    engine.tick(at(0))
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    alert_id = next(a.alert_id for a in engine.active() if a.device_id == "XM0001NOISE")
    assert engine.store.alert(alert_id).muted is None
    engine.submit_command("test", {"action": "silence", "matchers": {"device_id": "XM0001NOISE"},
                                   "comment": "mic maintenance", "expires_s": 600, "id": "s1"}, AUTHORS["chen"])
    engine.tick(at(1))
    assert engine.store.alert(alert_id).muted == "silence:s1"
    assert engine.submit_command("test", {"action": "unsilence", "silence_id": "s1"}, AUTHORS["chen"]) == "ok"
    engine.tick(at(2))
    assert engine.store.alert(alert_id).muted is None
    engine.stop()


def test_a_discarded_pending_alert_reaches_the_store_at_once_not_with_the_refreshes(tmp_path):
    # A pending alert whose condition clears before for_s is discarded without a transition, so `_emit` does not
    # write it; written only with the refreshes (every REFRESH_PERSIST_S of wall time), a crash in between
    # would load it as pending again, its old start counting towards for_s.
    cfg = make_cfg(rules=[{"id": "N-slow", "type": "noise_day_limit", "for_s": 300}])
    engine, sink = make_engine(tmp_path, cfg)
    engine.tick(at(0))
    engine.process(det([(0, 0, "N-slow", "yellow", 72)]))
    (alert,) = engine.store.alerts()
    assert alert.state == "pending"
    engine.process(det([(0, 60, "N-slow", "clear", 65)]))
    assert engine.store.alert(alert.alert_id).state == "discarded"
    assert sink.notices == []
    engine.stop()
