"""The deadman's clear means "the device is alive now": it is never stamped before the tick that raised
Offline, whatever the reading's own time, and the vectorized rule agrees with the reference with ticks
between the batches (the conformance suite never ticks)."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.rules import TIME_DRIVEN_TYPES
from detectors.base import Detector
from detectors.registry import REGISTRY, RuleSet
from tests.unit.detectors.helpers import batch, local_ns, rows_of, small_config
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same

S = 1_000_000_000
CFG = small_config([{"id": "Offline", "type": "deadman"}])
# G-LOW reports every 900 s: offline after 2 x 900 + 300 = 2100 s without data.


def test_time_driven_types_are_the_detectors_that_advance():
    """The alert engine keeps the clears of these types (config.rules.TIME_DRIVEN_TYPES): every detector
    type raising from the clock must be listed, and nothing else."""
    assert {t for t, cls in REGISTRY.items() if cls.advance is not Detector.advance} == set(TIME_DRIVEN_TYPES)


def envelope(device: str, end_ns: int, n: int = 12, step_s: int = 300) -> list[tuple]:
    return [(device, end_ns - (n - 1 - i) * step_s * S, {"p": 2.5}) for i in range(n)]


def test_clear_of_an_envelope_ending_before_the_tick_is_stamped_at_the_tick():
    rs = RuleSet.from_config(CFG)
    t0 = local_ns("2025-06-05 09:00")
    rs.process(batch([("G-LOW", t0, {"p": 2.5})], CFG))
    tick = t0 + 3 * 3600 * S
    raised = [r for r in rows_of(rs.advance(tick)) if CFG.devices[r["sensor"]].id == "G-LOW"]
    assert [(r["severity"], r["ts_ns"]) for r in raised] == [("yellow", tick)]
    assert raised[0]["context"]["last_reading_ns"] == t0
    # The device's normal envelope: 12 samples, 5 minutes apart, the newest a fraction of a second
    # before the tick (HJ 212 whole seconds) - every sample older than the active row.
    back = rows_of(rs.process(batch(envelope("G-LOW", tick - S // 2), CFG)))
    assert [(r["severity"], r["ts_ns"]) for r in back] == [("clear", tick)]
    assert not [r for r in rows_of(rs.advance(tick + S)) if CFG.devices[r["sensor"]].id == "G-LOW"]


def test_clear_by_a_reading_newer_than_the_tick_keeps_the_reading_time():
    rs = RuleSet.from_config(CFG)
    t0 = local_ns("2025-06-05 09:00")
    rs.process(batch([("G-LOW", t0, {"p": 2.5})], CFG))
    tick = t0 + 3 * 3600 * S
    rs.advance(tick)
    back = rows_of(rs.process(batch([("G-LOW", tick + 7 * S, {"p": 2.5})], CFG)))
    assert [(r["severity"], r["ts_ns"]) for r in back] == [("clear", tick + 7 * S)]


def test_an_older_batch_after_a_newer_one_does_not_raise_again():
    rs = RuleSet.from_config(CFG)
    t0 = local_ns("2025-06-05 09:00")
    rs.process(batch([("G-LOW", t0, {"p": 2.5})], CFG))
    tick = t0 + 3 * 3600 * S
    rs.advance(tick)
    assert rows_of(rs.process(batch(envelope("G-LOW", tick), CFG)))[0]["severity"] == "clear"
    assert rows_of(rs.process(batch(envelope("G-LOW", tick - 3600 * S), CFG))) == []
    assert not [r for r in rows_of(rs.advance(tick + 60 * S)) if CFG.devices[r["sensor"]].id == "G-LOW"]


STEPS = st.lists(st.tuples(st.sampled_from(["batch", "tick"]), st.integers(0, 4), st.sampled_from([-900, -1, 0, 1, 1800, 4000]),
                           st.integers(1, 12)), min_size=1, max_size=14)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=STEPS)
def test_ticks_and_batches_match_the_reference(steps):
    """Ticks and batches (late, early, out of order) in any sequence: the same rows as the reference."""
    vec, ref = RuleSet.from_config(CFG), ReferenceRuleSet(CFG)
    ids = [d.id for d in CFG.devices]
    now = local_ns("2025-06-05 09:00")
    for what, dev, offset_s, n in steps:
        now += 1500 * S
        if what == "tick":
            a, b = vec.advance(now), ref.advance(now)
        else:
            rows = envelope(ids[dev], now + offset_s * S, n=n, step_s=300)
            a, b = vec.process(batch(rows, CFG)), ref.process(batch(rows, CFG))
        assert_same(a, b)
        assert [c.get("last_reading_ns") for c in a.sorted().context] == [c.get("last_reading_ns") for c in b.sorted().context]


def _plain(dets) -> list[dict]:
    return [r for r in rows_of(dets) if CFG.devices[r["sensor"]].id == "N-PLAIN"]


def test_an_event_time_back_fill_split_over_batches_raises_one_offline():
    """Event time (issue 12): an HJ 212 monitor sends its back-fill one frame per message, so ingest may hand it
    to the detectors in several batches. Between two of them the device's newest reading lies inside the gap
    it is filling, far behind the feed, but the device has just been heard: the tick in between must not
    raise a second Offline (it did: one Offline per part, so the count depended on the replay speed)."""
    rs = RuleSet.from_config(CFG)
    dm = next(r for r in rs.rules if r.rule_id == "Offline")
    dm._stamp_at_crossing = True                 # as the event-clock pipeline sets it
    slack = 60 * S
    dev = CFG.device_index("N-PLAIN")            # reports every 60 s: offline after 2 x 60 + 300 = 420 s
    last = local_ns("2025-06-02 09:59")

    def arrive(ts_ns: list[int], feed_ns: int) -> list[dict]:
        """One batch of N-PLAIN frames arriving while the feed stands at feed_ns, then the tick after it."""
        ts = np.array(ts_ns, np.int64)
        found = dm.scan(np.full(len(ts), dev), ts, np.full(len(ts), feed_ns), slack)
        out = _plain(found) if found is not None else []
        out += _plain(rs.process(batch([("N-PLAIN", int(t), {"leq": 55.0}) for t in ts], CFG)))
        return out + _plain(rs.advance(feed_ns - slack))

    arrive([last - 60 * S, last], last + 2 * S)
    # The comms gap (10:00-10:30): ticks past the limit raise Offline once, stamped at the crossing.
    raised = _plain(rs.advance(last + 1200 * S))
    assert [(r["severity"], r["ts_ns"]) for r in raised] == [("yellow", last + 420 * S)]
    # The back-fill of 10:00..10:30 arrives at 10:30:01 in three batches (every frame is one message).
    feed = last + 1801 * S
    frames = [last + k * 60 * S for k in range(1, 31)]
    got = [arrive(part, feed) for part in (frames[:2], frames[2:21], frames[21:])]
    # The first part ends the gap (its clear); no part raises again - the device was heard at 10:30.
    assert [r["severity"] for r in got[0] if r["severity"] != "clear"] in ([], ["yellow"])
    assert "clear" in [r["severity"] for r in got[0]]
    assert [r for part in got[1:] for r in part] == []
    # A real silence after the back-fill is still caught, once.
    later = _plain(rs.advance(frames[-1] + 1000 * S))
    assert [r["severity"] for r in later] == ["yellow"]
