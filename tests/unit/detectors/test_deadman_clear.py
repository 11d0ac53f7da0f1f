"""The deadman's clear means "the device is alive now": it is never stamped before the tick that raised
Offline, whatever the reading's own time, and the vectorized rule agrees with the reference with ticks
between the batches (the conformance suite never ticks)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config.rules import TIME_DRIVEN_TYPES
from detectors.base import Detector
from detectors.reference import ReferenceRuleSet
from detectors.registry import REGISTRY, RuleSet
from tests.unit.detectors.helpers import batch, local_ns, rows_of, small_config
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
