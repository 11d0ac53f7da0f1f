"""State survives restarts; notices are written before they are sent; retries, dedup and rate limits."""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.model import Notice
from alerts.store import AlertStore
from core import Detections
from tests.unit.alerts.helpers import RecordingSink, at, det, make_cfg, make_engine


class Blocked(Dispatcher):
    """A dispatcher that never sends: the process 'crashes' after the store commit."""

    def submit(self, notice, sink_name):
        return True


def test_restart_sends_no_duplicate_firing_and_still_resolves(tmp_path):
    cfg = make_cfg(rules=[{"id": "N-day", "type": "noise_day_limit", "clear_for_s": 60}])
    engine, sink = make_engine(tmp_path, cfg)
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    engine.flush(5)
    engine.dispatcher.stop()  # no stop(): as after SIGKILL, nothing more is written
    # restart from the same file: the detectors re-send the active condition, then its clear
    engine2, sink2 = make_engine(tmp_path, cfg, store=AlertStore(tmp_path / "alerts.sqlite"))
    engine2.process(det([(0, 30, "N-day", "yellow", 73)]))
    engine2.process(det([(0, 90, "N-day", "clear", 65)]))
    engine2.tick(at(200))
    engine2.flush(5)
    assert sink.transitions() == ["firing"]
    assert sink2.transitions() == ["resolved"]
    assert sink2.notices[0].key == sink.notices[0].alert_id + ":2"
    engine2.stop()


def test_restart_resolves_an_alert_whose_detector_forgot_it(tmp_path):
    cfg = make_cfg({"recovered_clear_after_s": 120}, [{"id": "N-day", "type": "noise_day_limit"}])
    engine, sink = make_engine(tmp_path, cfg)
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    engine.flush(5)
    engine.dispatcher.stop()
    engine2, sink2 = make_engine(tmp_path, cfg, store=AlertStore(tmp_path / "alerts.sqlite"))
    engine2.start()
    idx = np.array([0, 0], np.int32)
    engine2.observe_readings(idx, np.array([at(60), at(100)]))  # too soon after the restart
    engine2.flush(5)
    assert sink2.transitions() == []
    engine2.observe_readings(idx, np.array([at(130), at(190)]))
    engine2.flush(5)
    assert sink2.transitions() == ["resolved"]
    assert sink2.notices[0].ts_ns == at(130)
    engine2.stop()


def test_crash_between_commit_and_send_resends_the_same_key(tmp_path):
    cfg = make_cfg()
    store = AlertStore(tmp_path / "a.sqlite")
    engine = AlertEngine(cfg, store, {"rec": RecordingSink()}, dispatcher=Blocked({}, store))
    engine.process(det([(0, 0, "N-day", "red", 90)]))
    key = f"{engine.active()[0].alert_id}:1"
    # restart: the pending delivery is sent with the same key, and no new alert opens
    engine2, sink2 = make_engine(tmp_path, cfg, store=AlertStore(tmp_path / "a.sqlite"))
    engine2.start()
    engine2.process(det([(0, 10, "N-day", "red", 91)]))
    engine2.flush(5)
    assert [n.key for n in sink2.notices] == [key]
    assert AlertStore(tmp_path / "a.sqlite").delivery_counts() == {"sent": 1}
    engine2.stop()


def test_retryable_failures_are_retried_in_order(tmp_path):
    engine, sink = make_engine(tmp_path)
    sink.fail = 3
    engine.process(det([(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "orange", 76), (0, 120, "N-day", "clear", 60)]))
    assert engine.flush(5)
    assert sink.transitions() == ["firing", "severity", "resolved"]
    assert engine.dispatcher.counters[("retries", "rec")] == 3
    engine.stop()


def test_non_retryable_failure_is_recorded_and_skipped(tmp_path):
    engine, sink = make_engine(tmp_path)
    sink.fail, sink.retryable = 1, False
    engine.process(det([(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "clear", 60)]))
    assert engine.flush(5)
    assert sink.transitions() == ["resolved"]
    assert engine.store.delivery_counts() == {"failed": 1, "sent": 1}
    engine.stop()


def test_dispatcher_dedups_by_key_and_sink(tmp_path):
    sink = RecordingSink()
    d = Dispatcher({"rec": sink}, None, 0.01, 0.02)
    n = Notice("a:1", "a", 1, "firing", 0, {})
    assert d.submit(n, "rec") and not d.submit(n, "rec")
    d.flush(5)
    d.stop()
    assert len(sink.notices) == 1


def test_rate_limit_spaces_sends():
    import time

    sink = RecordingSink()
    d = Dispatcher({"rec": sink}, None, 0.01, 0.02, rates={"rec": 20.0})
    t0 = time.monotonic()
    for i in range(30):
        d.submit(Notice(f"a:{i}", "a", i, "firing", 0, {}), "rec")
    assert d.flush(10)
    d.stop()
    assert [n.seq for n in sink.notices] == list(range(30))
    # the bucket holds 20; the other 10 wait 1/20 s each: behaviour, not a benchmark
    assert time.monotonic() - t0 >= 0.4


def test_alert_state_is_readable_from_the_store(tmp_path):
    engine, _ = make_engine(tmp_path)
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    engine.flush(5)
    a = engine.active()[0]
    stored = AlertStore(tmp_path / "alerts.sqlite").alert(a.alert_id)
    assert stored.state == "firing" and stored.notified_firing and stored.seq == 1
    notices = engine.store.notices(a.alert_id)
    assert notices[0][0].transition == "firing" and notices[0][1] == [("rec", "sent", 1, None)]
    engine.stop()


# ----- replay at any speed: the batch split never changes the lifecycle ---------------------------

ROWS = st.lists(
    st.tuples(st.integers(0, 2), st.integers(0, 3)),  # (sensor, severity code) per minute
    min_size=1, max_size=40,
)


def _detections(seq) -> Detections:
    rows = []
    for minute, (sensor, sev) in enumerate(seq):
        rows.append((sensor, minute * 60, "N-day", ["clear", "blue", "yellow", "orange"][sev], 60 + sev * 5))
    return det(rows)


def _run(tmp_path, d: Detections, cuts: list[int]):
    cfg = make_cfg({"flap_max_transitions": 4, "flap_window_s": 600},
                   [{"id": "N-day", "type": "noise_day_limit", "for_s": 60, "clear_for_s": 120}])
    engine, sink = make_engine(tmp_path, cfg)
    bounds = sorted({0, len(d), *[c % (len(d) + 1) for c in cuts]})
    for a, b in zip(bounds, bounds[1:]):
        idx = np.arange(a, b)
        engine.process(Detections(d.sensor[idx], d.ts_ns[idx], d.rule_id[idx], d.category[idx], d.severity[idx],
                                  d.value[idx], d.limit[idx], d.score[idx], [d.context[i] for i in idx]))
    engine.tick(int(d.ts_ns.max()) + 10**13)
    engine.flush(5)
    engine.stop()
    return [(n.key, n.transition, n.ts_ns, n.payload["severity"]) for n in sink.notices]


# The escalation of a severity the alert took in the second batch was stamped before the first batch's
# notices (the severity's period counted from firing): its notice number then depended on the split.
@example(seq=[(0, 0), (0, 1), (0, 0), (0, 1), (0, 0), (0, 1), *[(0, 0)] * 7, (0, 1), (0, 0), (0, 2), (0, 0), (0, 0),
              (0, 0), (0, 1), (0, 3), (0, 0)], cuts=[66])
@settings(max_examples=40, deadline=None)
@given(ROWS, st.lists(st.integers(0, 100), max_size=5))
def test_batch_split_gives_the_same_notices(tmp_path_factory, seq, cuts):
    d = _detections(seq)
    whole = _run(tmp_path_factory.mktemp("whole"), d, [])
    split = _run(tmp_path_factory.mktemp("split"), d, cuts)
    assert sorted(split, key=lambda x: (x[2], x[0])) == sorted(whole, key=lambda x: (x[2], x[0]))


# ----- retention: the store does not grow without bound ------------------------------------------------

def test_prune_forgets_old_resolved_alerts_and_keeps_open_ones_and_pending_deliveries(tmp_path):
    cfg = make_cfg({"retention_days": 1}, [{"id": "N-day", "type": "noise_day_limit"}])
    engine, sink = make_engine(tmp_path, cfg)
    day = 86400
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))         # device 0: fires ...
    engine.process(det([(0, 60, "N-day", "clear", 65)]))         # ... and resolves at once (clear_for_s 0)
    engine.process(det([(1, 60, "N-day", "yellow", 72)]))        # device 1: still open
    engine.flush(5)
    store = engine.store
    assert {a.state for a in store.alerts()} == {"resolved", "firing"}
    old = next(a for a in store.alerts() if a.state == "resolved")
    # A notice of the resolved alert whose delivery is still pending keeps the alert (and it) in the store.
    store.mark_delivery(f"{old.alert_id}:2", "rec", "pending", 1)
    assert store.prune(at(2 * day))["alerts"] == 0
    store.mark_delivery(f"{old.alert_id}:2", "rec", "sent", 2)
    assert store.prune(at(59))["alerts"] == 0                      # resolved after `before`: kept
    gone = store.prune(at(2 * day))
    assert gone["alerts"] == 1 and gone["notices"] == 2 and gone["deliveries"] == 2
    assert [a.state for a in store.alerts()] == ["firing"] and store.notices(old.alert_id) == []
    engine.stop()


def test_the_engine_prunes_hourly_by_its_clock(tmp_path):
    cfg = make_cfg({"retention_days": 1}, [{"id": "N-day", "type": "noise_day_limit"}])
    engine, sink = make_engine(tmp_path, cfg)
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    engine.process(det([(0, 60, "N-day", "clear", 65)]))
    engine.flush(5)
    engine.tick(at(3600))                       # first check: nothing is a day old yet
    assert len(engine.store.alerts()) == 1
    engine.tick(at(86400 + 1800))               # old enough, but the last check was only 0.8 h of clock ago...
    engine.tick(at(86400 + 3600 + 120))         # ... the next hourly check deletes it
    assert engine.store.alerts() == [] and engine.counters["pruned"] >= 3
    engine.stop()
