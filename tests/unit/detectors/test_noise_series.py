"""The noise rules' whole-batch path (NoiseEnergy / NoiseBackground `run_series`, the rules' `evaluate_series`)
gives exactly what the round-by-round path gives: the same detections, bit for bit, and the same state after
(the rolling-Leq ring and blocks, the L90 background, every rule's level), batch after batch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import Detections
from detectors.noise import NoiseBackground, NoiseEnergy
from detectors.registry import RuleSet
from detectors.snapshot import capture
from tests.unit.detectors.helpers import TEST_DEVICES, TEST_SITES, local_ns, make_config
from tests.unit.detectors.test_conformance import to_batch

S = 1_000_000_000
NOISE_RULES = [
    {"id": "N-day", "type": "noise_day_limit"},
    {"id": "N-night", "type": "noise_night_limit"},
    {"id": "N-day-bg", "type": "noise_day_limit", "background_correction": "gb12523"},
    {"id": "N-night-bg", "type": "noise_night_limit", "background_correction": "gb12523", "window_s": 600},
    {"id": "N-max", "type": "noise_night_lmax"},
    {"id": "N-pro", "type": "noise_prohibited"},
    {"id": "N-exam", "type": "noise_exam"},
    {"id": "N-pre", "type": "noise_pre_warning"},
    {"id": "N-data", "type": "noise_data_quality", "kind": "noise"},
]
# A fourth noise monitor reporting every 20 s: the ring's slot is then 20 s, and the 60 s monitors' readings
# land one slot in three.
DEVICES = TEST_DEVICES + [{"id": "N-FAST", "kind": "noise", "site": "HL-2025-102", "report_interval_s": 20}]
NOISE = (0, 1, 2, 5)  # the noise devices' indexes (3 and 4 are gas)
_CFG: dict = {}


def config(slot_s: int = 60):
    """Every noise rule; slot_s 20 adds the 20 s monitor (a 20 s ring slot)."""
    if slot_s not in _CFG:
        devices = DEVICES if slot_s == 20 else TEST_DEVICES
        _CFG[slot_s] = make_config(rules=NOISE_RULES, devices=devices, sites=TEST_SITES, noise={"min_coverage": 0.5})
    return _CFG[slot_s]


def both(cfg) -> tuple[RuleSet, RuleSet]:
    series, rounds = RuleSet.from_config(cfg), RuleSet.from_config(cfg, series=False)
    assert {type(c) for c in series._series_components} == {NoiseEnergy, NoiseBackground}
    assert not rounds._series_components
    return series, rounds


def _plain(x):
    """A record's values with NaN as a marker (NaN != NaN would fail equal records)."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, float) and x != x:
        return "NaN"
    return x


def same_detections(a: Detections, b: Detections) -> None:
    a, b = a.sorted(), b.sorted()
    # Every column and context value, floats bit for bit.
    assert [_plain(r) for r in a.records()] == [_plain(r) for r in b.records()]


def same_state(a: RuleSet, b: RuleSet) -> None:
    sa, sb = capture(a), capture(b)
    assert sa.pieces.keys() == sb.pieces.keys()
    for key, pa in sa.pieces.items():
        pb = sb.pieces[key]
        assert pa.arrays.keys() == pb.arrays.keys(), key
        for name, arr in pa.arrays.items():
            assert np.array_equal(arr, pb.arrays[name], equal_nan=arr.dtype.kind == "f"), (key, name)


def run_both(cfg, batches: list[list]) -> Detections:
    """Feed the batches to both paths, comparing detections after each and the state at the end."""
    series, rounds = both(cfg)
    found = []
    for rows in batches:
        x, y = series.process(to_batch(rows)), rounds.process(to_batch(rows))
        same_detections(x, y)
        found.append(x)
    same_state(series, rounds)
    return Detections.concat(found)


def feed(device: int, start: str, levels: list, step_s: float = 60, quality: int = 0) -> list:
    t0 = local_ns(start)
    return [(device, t0 + int(round(k * step_s * S)), {"leq": v, "lmax": v + 12.0, "l90": v - 6.5}, quality)
            for k, v in enumerate(levels)]


def loud(n: int, base: float = 72.3) -> list:
    return [base + (k % 5) * 1.1 for k in range(n)]


# name -> (ring slot s, batches of rows): each a case the whole-batch path must replay exactly.
CASES = {
    "day over the limit, then clear": (60, [feed(1, "2025-06-02 09:00", loud(40) + [50.3] * 30)]),
    "gaps and NaNs": (60, [feed(1, "2025-06-02 09:00", loud(10) + [float("nan")] * 5 + loud(10) + [20.3, 150.3] + loud(8))
                           + feed(0, "2025-06-02 09:00", loud(30), step_s=180)]),
    "flags other than N": (60, [feed(1, "2025-06-02 09:00", loud(12), quality=4) + feed(1, "2025-06-02 09:12", loud(20))]),
    "day to night at 22:00": (60, [feed(1, "2025-06-02 21:30", loud(60, 62.3))]),
    "prohibited 12:00 and permit night": (60, [feed(1, "2025-06-02 11:40", loud(50, 66.3)),
                                               feed(0, "2025-06-02 21:40", loud(60, 66.3))]),
    "exam day and listening test": (60, [feed(2, "2025-06-08 14:20", loud(60, 56.3))]),
    "several readings in one slot": (60, [feed(1, "2025-06-02 09:00", loud(90), step_s=10)]),
    "readings faster than the slot, 20 s slots": (20, [feed(5, "2025-06-02 09:00", loud(200), step_s=7)
                                                       + feed(1, "2025-06-02 09:00", loud(40))]),
    "a batch longer than the ring": (60, [feed(1, "2025-06-02 09:00", loud(150) + [48.3] * 100 + loud(60))]),
    "a gap of more than a block within a batch": (60, [feed(1, "2025-06-02 09:00", loud(20))
                                                       + feed(1, "2025-06-02 13:00", loud(30, 52.3)) + feed(1, "2025-06-03 09:00", [50.3] * 5)]),
    "late readings in a later batch": (60, [feed(1, "2025-06-02 09:00", loud(40))[::2],
                                            feed(1, "2025-06-02 09:00", loud(40))[1::2] + feed(1, "2025-06-02 09:40", loud(10))]),
    "readings with equal times": (60, [[r for r in feed(1, "2025-06-02 09:00", loud(30)) for _ in (0, 1)]]),
    "one sensor's batches split anywhere": (60, [feed(1, "2025-06-02 09:00", loud(7)), feed(1, "2025-06-02 09:07", loud(1)),
                                                 feed(1, "2025-06-02 09:08", loud(25) + [45.3] * 20)]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_series_equals_rounds(name):
    slot_s, batches = CASES[name]
    found = run_both(config(slot_s), batches)
    if name != "flags other than N":
        assert len(found), "the case raises nothing: it tests nothing"


def test_the_cases_reach_every_rule():
    """The table above exercises every noise rule's raise and clear (else it proves little)."""
    ids = set()
    for slot_s, batches in CASES.values():
        # The whole-batch path alone: test_series_equals_rounds shows the rounds find the same.
        rules = RuleSet.from_config(config(slot_s))
        ids |= {r for rows in batches for r in rules.process(to_batch(rows)).rule_id.tolist()}
    assert ids >= {"N-day", "N-night", "N-day-bg", "N-night-bg", "N-max", "N-pro", "N-exam", "N-pre"}


def test_late_rows_store_nothing_and_see_newer_slots_as_outside():
    """A batch of readings older than the ring's newest: the rounds' ring is the series' ring after."""
    new = feed(1, "2025-06-02 10:00", loud(30))
    old = feed(1, "2025-06-02 09:35", loud(40, 80.3))
    run_both(config(), [new, old, new[5:]])


STARTS = ["2025-06-01 21:45", "2025-06-02 05:50", "2025-06-02 11:55", "2025-06-08 14:30", "2025-06-08 09:00",
          "2025-06-03 14:25"]
LEVELS = [40.3, 50.3, 53.7, 56.3, 60.7, 66.3, 70.7, 76.3, 85.3, float("nan"), 20.3, 150.3]
PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])


@st.composite
def noise_feeds(draw):
    """Arrival-ordered rows of the noise monitors with gaps, bursts, repeated times, NaNs, bad flags and
    out-of-range levels, cut into batches, with some rows held back into a later batch (late)."""
    start = local_ns(draw(st.sampled_from(STARTS)))
    slot_s = draw(st.sampled_from([60, 20]))
    rows = []
    for s in draw(st.lists(st.sampled_from(NOISE if slot_s == 20 else NOISE[:3]), min_size=1, max_size=4, unique=True)):
        n = draw(st.integers(1, 60))
        t = start + draw(st.sampled_from([0, 30, 60])) * S
        level = draw(st.sampled_from(LEVELS))
        for _ in range(n):
            t += draw(st.sampled_from([0, 5, 20, 60, 60, 60, 60, 120, 900])) * S
            if draw(st.integers(0, 3)) == 0:
                level = draw(st.sampled_from(LEVELS))
            v = level + draw(st.sampled_from([0.0, 0.4, -0.6]))
            rows.append((s, t, {"leq": v, "lmax": v + draw(st.sampled_from([5.5, 15.5, 25.5])),
                                "l90": v - draw(st.sampled_from([1.5, 4.5, 9.5]))},
                         draw(st.sampled_from([0, 0, 0, 0, 0, 4]))))
    rows.sort(key=lambda r: r[1])
    late = draw(st.lists(st.integers(0, len(rows) - 1), max_size=4, unique=True))
    held = [rows[i] for i in sorted(late)]
    rest = [r for i, r in enumerate(rows) if i not in set(late)]
    cuts = sorted(draw(st.lists(st.integers(0, len(rest)), max_size=3)))
    batches = [rest[a:b] for a, b in zip([0] + cuts, cuts + [len(rest)])]
    batches.append(held)
    return slot_s, [b for b in batches if b]


@PROPS
@given(case=noise_feeds())
def test_series_equals_rounds_property(case):
    slot_s, batches = case
    run_both(config(slot_s), batches)


def test_series_off_steps_noise_rules_in_rounds():
    """`RuleSet(..., series=False)` keeps its meaning: every stateful rule and component round by round."""
    series, rounds = both(config())
    by = {d.rule_id: d for _, ds in rounds._groups for d in ds}
    assert {"N-day", "N-night", "N-pro", "N-exam", "N-pre"} <= set(by)
    assert len(rounds._component_groups) == 2
    whole = {d.rule_id for _, ds in series._whole for d in ds}
    assert {"N-day", "N-night", "N-pro", "N-exam", "N-pre", "N-max"} <= whole
    assert not any(isinstance(c, (NoiseEnergy, NoiseBackground)) for c, _ in series._component_groups)


def test_a_rule_in_rounds_keeps_the_shared_components_and_their_readers_in_rounds():
    """A rule that reads NoiseEnergy but steps in rounds (here a day limit without a series path) keeps the
    components in rounds, and with them every series rule reading them: the same detections as rounds."""
    from detectors.context import Inventory
    from detectors.noise import NoiseDayLimit
    from detectors.registry import validate_rules

    class RoundsOnlyDay(NoiseDayLimit):
        series = False

    cfg = config()
    _, built = validate_rules(cfg)
    built = [(r, RoundsOnlyDay if r.id == "N-day" else cls, p) for r, cls, p in built]
    mixed = RuleSet(Inventory(cfg), built)
    assert not mixed._series_components
    stepped = {d.rule_id for _, ds in mixed._groups for d in ds}
    assert {"N-day", "N-night", "N-pro", "N-exam", "N-pre"} <= stepped
    rows = feed(1, "2025-06-02 09:00", loud(40) + [50.3] * 30) + feed(0, "2025-06-02 21:40", loud(60, 66.3))
    same_detections(mixed.process(to_batch(rows)), RuleSet.from_config(cfg, series=False).process(to_batch(rows)))
