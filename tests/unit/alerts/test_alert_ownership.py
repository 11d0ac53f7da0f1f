"""Partitioned mode: an engine raises alerts only for the devices it owns, and an open alert moves to the
engine that takes its devices over (AlertEngine.set_owned / release_alerts / adopt_alerts): same alert id,
same sequence, no second firing; the old owner drops it without a notice. Without ownership (single mode)
nothing changes."""

from __future__ import annotations

import json

from alerts.store import AlertStore
from tests.unit.alerts.helpers import at, det, make_cfg, make_engine

RULE = {"id": "N-day", "type": "noise_day_limit", "kind": "noise", "clear_for_s": 60}


def engines(tmp_path):
    cfg = make_cfg(rules=[RULE])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, sink_a = make_engine(tmp_path / "a", cfg)
    b, sink_b = make_engine(tmp_path / "b", cfg)
    return cfg, (a, sink_a), (b, sink_b)


def test_detections_of_devices_not_owned_raise_nothing(tmp_path):
    cfg, (a, sink), _ = engines(tmp_path)
    mine = cfg.devices[0].id
    a.set_owned({mine})
    a.process(det([(0, 0, "N-day", "yellow", 72), (1, 0, "N-day", "yellow", 72)]))
    assert a.flush(5)
    assert [(n.payload["device"]["id"], n.transition) for n in sink.notices] == [(mine, "firing")]
    assert a.counters["foreign_rows"] == 1
    a.stop()


def test_an_open_alert_moves_with_its_devices_and_fires_once(tmp_path):
    cfg, (a, sink_a), (b, sink_b) = engines(tmp_path)
    dev = cfg.devices[0].id
    a.set_owned({dev})
    b.set_owned(set())
    a.process(det([(0, 0, "N-day", "yellow", 72)]))
    assert a.flush(5)
    (alert,) = a.active()
    state = json.loads(json.dumps(a.release_alerts({dev})))  # through JSON, as through the object store
    assert a.active() == [] and a.owned == frozenset()
    assert AlertStore(tmp_path / "a" / "alerts.sqlite").open_alerts() == []  # the old owner forgets it
    # The old owner's detections of the device (still queued when it gave it up) raise nothing.
    a.process(det([(0, 30, "N-day", "clear", 60)]))
    assert b.adopt_alerts({dev}, state, kept={("N-day", dev)}) == 1
    (moved,) = b.active()
    assert (moved.alert_id, moved.seq, moved.state, moved.notified_firing) == (alert.alert_id, 1, "firing", True)
    b.process(det([(0, 40, "N-day", "orange", 80)]))  # still active: no new firing on the taker
    b.process(det([(0, 50, "N-day", "clear", 60)]))
    b.tick(at(200))
    assert a.flush(5) and b.flush(5)
    assert [(n.key, n.transition) for n in sink_a.notices] == [(f"{alert.alert_id}:1", "firing")]
    assert [(n.key, n.transition) for n in sink_b.notices] == [(f"{alert.alert_id}:2", "severity"),
                                                               (f"{alert.alert_id}:3", "resolved")]
    a.stop()
    b.stop()


def test_undelivered_notices_move_with_the_alert_under_their_own_key(tmp_path):
    cfg, (a, sink_a), (b, sink_b) = engines(tmp_path)
    dev = cfg.devices[0].id
    a.set_owned({dev})
    b.set_owned(set())
    sink_a.fail = 10_000  # the old owner's sink never gets it out (e.g. it dies right after the transition)
    a.process(det([(0, 0, "N-day", "yellow", 72)]))
    state = json.loads(json.dumps(a.export_alerts({dev})))
    assert [n["key"] for n in state["notices"]] == [state["alerts"][0]["alert_id"] + ":1"]
    b.adopt_alerts({dev}, state, kept={("N-day", dev)})
    assert b.flush(5)
    assert [(n.key, n.transition) for n in sink_b.notices] == [(state["notices"][0]["key"], "firing")]
    a.dispatcher.stop(timeout_s=0.1)  # its queue never empties: no use waiting for it
    b.stop()


def test_a_restarted_worker_forgets_the_stored_alerts_of_devices_it_does_not_own(tmp_path):
    cfg, (a, sink), _ = engines(tmp_path)
    dev = cfg.devices[0].id
    a.process(det([(0, 0, "N-day", "yellow", 72)]))
    assert a.flush(5)
    a.stop()
    again, sink2 = make_engine(tmp_path / "a", cfg)
    again.set_owned(set())  # partitioned, before the leases give it anything
    again.start()
    assert again.active() == []
    again.tick(at(10_000))
    assert again.flush(5) and sink2.notices == []
    assert AlertStore(tmp_path / "a" / "alerts.sqlite").open_alerts() == []
    assert again.adopt_alerts({dev}, None) == 0 and again.owned == frozenset({dev})
    again.stop()


def test_single_mode_owns_everything(tmp_path):
    _, (a, sink), _ = engines(tmp_path)
    assert a.owned is None
    a.process(det([(0, 0, "N-day", "yellow", 72), (1, 0, "N-day", "yellow", 72)]))
    assert a.flush(5)
    assert len(sink.notices) == 2 and "foreign_rows" not in a.counters
    a.stop()
