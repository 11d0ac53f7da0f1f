"""The gas rules' whole-batch path (GasProfile `run_series` / `after_series`, G-rupture's and G-leak's
`evaluate_series`) gives exactly what the round-by-round path gives: the same detections, bit for bit, and the
same state after (the profile's means, counts, weeks, the rupture ring, its tags and blocks, the CUSUM, sigma,
every rule's level), batch after batch."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import Detections
from detectors import gas as gas_module
from detectors.gas import GasLeakCusum, GasProfile, GasRupture, _segment_cummax, week_number
from detectors.registry import RuleSet
from detectors.snapshot import capture
from tests.unit.detectors.helpers import TEST_SITES, by_time, cut, feed_both, late_and_cut, local_ns, make_config
from tests.unit.detectors.test_conformance import to_batch
from tests.unit.detectors.test_noise_series import same_detections, same_state

S = 1_000_000_000
RULES = [
    {"id": "G-leak", "type": "gas_leak_cusum"},
    {"id": "G-leak-tight", "type": "gas_leak_cusum", "k_sigma": 0.2, "h_sigma": 2.0, "severity": "orange"},
    {"id": "G-rupture", "type": "gas_rupture"},
    {"id": "G-high", "type": "gas_high"},
    {"id": "G-low", "type": "gas_low"},
    {"id": "G-flat", "type": "gas_flatline"},
    {"id": "G-range", "type": "gas_sensor_range"},
]


def gas(id_: str, set_kpa: float, sample_s: int = 60) -> dict:
    low = set_kpa < 10
    return {"id": id_, "kind": "gas", "site": "GS-1", "report_interval_s": 900, "sample_interval_s": sample_s,
            "pressure_class": "low" if low else "medium_a", "set_pressure_kpa": set_kpa,
            "mop_kpa": min(set_kpa * 1.4, 10.0 if low else 400.0), "full_scale_kpa": set_kpa * 4}  # MOP inside the class


# A 300 kPa main and a 2.5 kPa service line sampled every minute, and a 300 kPa main sampled every second
# (the ring's slot is then 1 s).
DEVICES = [gas("G-MED", 300.0), gas("G-LOW", 2.5), gas("G-FAST", 300.0, 1)]
MED, LOW, FAST = 0, 1, 2
P_SET = {MED: 300.0, LOW: 2.5, FAST: 300.0}
_CFG: dict = {}


def config(fast: bool = False):
    """Every gas rule; the profile learned after one week, G-leak judging after 5 residuals."""
    if fast not in _CFG:
        _CFG[fast] = make_config(rules=RULES, devices=DEVICES if fast else DEVICES[:2], sites=TEST_SITES,
                                 gas={"profile": {"min_weeks": 1}, "cusum": {"warmup": 5}})
    return _CFG[fast]


def both(fast: bool = False) -> tuple[RuleSet, RuleSet]:
    cfg = config(fast)
    series, rounds = RuleSet.from_config(cfg), RuleSet.from_config(cfg, series=False)
    assert [type(c) for c in series._series_components] == [GasProfile]
    assert not series._groups and not series._component_groups  # no gas row steps in rounds
    assert {d.rule_id for _, ds in rounds._groups for d in ds} == {"G-leak", "G-leak-tight", "G-rupture"}
    return series, rounds


def learned(rules: RuleSet, weeks: int = 1, at: str = "2025-06-02 00:00", mean: float = 0.995,
            swing: float = 0.0) -> None:
    """Prepare a profile learned in every hour (mean x set pressure, swinging by `swing` over each day), as if
    `weeks` weeks were seen."""
    prof = next(c for c in rules.components if isinstance(c, GasProfile))
    p_set = rules.inv.p_set[prof.group.global_index]
    day = 1.0 + swing * np.sin(2 * np.pi * np.arange(168) / 24)
    prof.mean_[:] = (mean * p_set[:, None] * day).astype(np.float32)
    prof.count_[:] = prof.need[:, None]
    prof.weeks_[:] = weeks
    prof.last_week_[:] = week_number(local_ns(at) // S + 8 * 3600) - 1


def unlearned_at_8(rules: RuleSet) -> None:
    """A learned profile but for Monday 08:xx, five readings short: its readings switch it on at 08:01:20."""
    learned(rules)
    prof = next(c for c in rules.components if isinstance(c, GasProfile))
    prof.count_[:, 8] = prof.need - 5


def run_both(batches: list[list], prepare=None, fast: bool = False) -> Detections:
    """Feed the batches to both paths, comparing detections and the whole state after each batch (a later
    batch starts from it). prepare(rule_set) edits both rule sets' state first."""
    series, rounds = both(fast)
    if prepare is not None:
        prepare(series)
        prepare(rounds)
    series.trace_scores()
    rounds.trace_scores()
    found = feed_both(series, rounds, batches, to_batch, same_detections, same_state)
    same_scores(series, rounds)
    return Detections.concat(found)


def same_scores(a: RuleSet, b: RuleSet) -> None:
    """The score each rule recorded for each row it evaluated (`detect --scores`), bit for bit, in the same
    (sensor, time) order."""
    sa, sb = a.traced_scores(), b.traced_scores()
    assert sa.keys() == sb.keys()
    for rule, x in sa.items():
        y = sb[rule]
        assert (x is None) == (y is None), rule
        if x is None:
            continue
        ox, oy = np.lexsort((x[1], x[0])), np.lexsort((y[1], y[0]))
        for cx, cy in zip(x, y):
            assert np.array_equal(cx[ox], cy[oy], equal_nan=cx.dtype.kind == "f"), rule


def feed(device: int, start: str, rel: list, step_s: float = 60, quality: int | list = 0, seed: int = 0,
         noise: float = 0.001) -> list:
    """Readings of one device every step_s from start (local time): rel x set pressure, plus noise of
    `noise` x set pressure; quality one for every row or one per row."""
    t0 = local_ns(start)
    jitter = np.random.default_rng(seed).normal(0.0, noise, len(rel))
    out = []
    for k, v in enumerate(rel):
        q = quality[k] if isinstance(quality, list) else quality
        out.append((device, t0 + int(round(k * step_s * S)), {"p": P_SET[device] * (v + jitter[k])}, q))
    return out


def ramp(n: int, to: float, frm: float = 1.0) -> list:
    return list(np.linspace(frm, to, n))


NORMAL = [1.0] * 30
# A slow leak: 2 % of set pressure lost over 40 minutes, held, then repaired.
LEAK = NORMAL + ramp(40, 0.98) + [0.98] * 20 + [1.0] * 40
# A rupture: 8 % down within 3 minutes (orange), then 14 % (red), then back.
RUPTURE = NORMAL + ramp(4, 0.92) + [0.92] * 5 + ramp(6, 0.86, 0.92) + [0.86] * 10 + [1.0] * 30
# An over-pressure episode (outside the band: not learned, not a rupture on the way back), then a sag.
EPISODE = NORMAL + [1.3] * 10 + [1.0] * 10 + [0.8] * 10 + [1.0] * 30

# name -> (batches of rows, prepare, fast): each a case the whole-batch path must replay exactly.
CASES = {
    "a slow leak against a learned profile": ([feed(MED, "2025-06-09 10:00", LEAK, seed=1)], learned, False),
    "a slow leak, batches cut anywhere": (cut(feed(MED, "2025-06-09 10:00", LEAK, seed=2), 1, 2, 31, 60, 61, 99),
                                          learned, False),
    "a rupture against the profile": ([feed(MED, "2025-06-09 10:00", RUPTURE, seed=3)], learned, False),
    "a rupture on raw pressure (no profile yet)": ([feed(MED, "2025-06-09 10:00", RUPTURE, seed=4)], None, False),
    "a rupture across batches": (cut(feed(LOW, "2025-06-09 10:00", RUPTURE, seed=5), 33, 34, 40, 41), learned, False),
    "an episode outside the band, then a sag": ([feed(MED, "2025-06-09 10:00", EPISODE, seed=6)], learned, False),
    "two devices in one batch": ([by_time(feed(MED, "2025-06-09 10:00", LEAK, seed=7),
                                          feed(LOW, "2025-06-09 10:00:30", RUPTURE + [1.0] * 20, seed=8))], learned, False),
    "60-sample batches of a 1 s sensor": (cut(feed(FAST, "2025-06-09 10:29:30", [1.0] * 100 + ramp(40, 0.9) + [0.9] * 60,
                                                   step_s=1, seed=9), 60, 120, 180), learned, True),
    "the profile learns an hour's readings in sequence (hour and week boundaries)": (
        [feed(MED, "2025-06-08 22:00", [1.0] * 150 + ramp(5, 0.9) + [1.0] * 25, seed=10), feed(MED, "2025-06-09 01:00", [1.0] * 90, seed=11)],
        lambda r: learned(r, at="2025-06-01 00:00"), False),
    "the profile becomes learned inside a batch, inside a ring slot (the switch from raw pressure)": (
        [feed(MED, "2025-06-09 07:00", [1.0] * 200 + ramp(10, 0.9), step_s=20, seed=12)], unlearned_at_8, False),
    "invalid readings: flags, NaN, out of range": (
        [feed(MED, "2025-06-09 10:00", LEAK[:50] + [float("nan")] * 3 + [9.0] * 3 + LEAK[50:],
              quality=[0] * 20 + [4] * 10 + [0] * 106, seed=13)], learned, False),
    "readings with equal times": ([[r for r in feed(MED, "2025-06-09 10:00", RUPTURE, seed=14) for _ in (0, 1)]],
                                  learned, False),
    "late readings in a later batch": (
        [feed(MED, "2025-06-09 10:00", RUPTURE, seed=15)[::2],
         feed(MED, "2025-06-09 10:00", RUPTURE, seed=15)[1::2] + feed(MED, "2025-06-09 11:30", LEAK, seed=16)],
        learned, False),
    "readings faster than the ring's slot": ([feed(MED, "2025-06-09 10:00", RUPTURE, step_s=17, seed=17)], learned, False),
    "a stuck sensor judged against a swinging profile (G-flatline reads the profile before the batch)": (
        [feed(MED, "2025-06-09 09:00", [1.0] * 200, noise=0.0), feed(MED, "2025-06-09 12:20", [1.0] * 30, noise=0.0)],
        lambda r: learned(r, swing=0.05), False),
    "gaps longer than the ring": ([feed(MED, "2025-06-09 10:00", RUPTURE, step_s=700, seed=18)], learned, False),
}


@contextlib.contextmanager
def leak_chain(how: str):
    """G-leak's recursion and the profile's running means one row at a time in plain floats ("rows") or in
    numpy steps over the sensors ("steps"); the batch's shape picks (PER_ROW_SENSORS, PER_ROW_CHAINS), the
    tests run both."""
    keep = gas_module.PER_ROW_SENSORS, gas_module.PER_ROW_CHAINS
    gas_module.PER_ROW_SENSORS = gas_module.PER_ROW_CHAINS = 10**9 if how == "rows" else 0
    try:
        yield
    finally:
        gas_module.PER_ROW_SENSORS, gas_module.PER_ROW_CHAINS = keep


@contextlib.contextmanager
def baseline_lookup(how: str):
    """The profile's whole-batch baselines as they come ("as-is": by runs of rows where the rows' bins never
    decrease, else by searching the learning rows) or always by searching ("search")."""
    if how == "as-is":
        yield
        return

    def search(self, loc, local, own, ok, after, first, end):
        return self._series_baseline_search(loc, local, np.flatnonzero(ok), after)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(GasProfile, "_series_baseline_in_order", search)
        yield


@pytest.mark.parametrize("lookup", ["as-is", "search"])
@pytest.mark.parametrize("how", ["rows", "steps"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_series_equals_rounds(name, how, lookup):
    batches, prepare, fast = CASES[name]
    with leak_chain(how), baseline_lookup(lookup):
        found = run_both(batches, prepare, fast)
    assert len(found), "the case raises nothing: it tests nothing"


def test_the_cases_take_both_baseline_lookups(monkeypatch):
    """Batches in bin order (the usual one: no week boundary inside) take the lookup by runs, the others the
    search; the table has both, with learned rows (the lookup by runs is the fast one: a batch that should
    take it and does not is a slowdown no equality shows)."""
    seen: dict = {"in order": 0, "search": 0}

    def spy(name, fn):
        def call(self, *args):
            prof, learned = fn(self, *args)
            seen[name] += int(learned.sum())
            return prof, learned
        return call

    monkeypatch.setattr(GasProfile, "_series_baseline_in_order",
                        spy("in order", GasProfile._series_baseline_in_order))
    monkeypatch.setattr(GasProfile, "_series_baseline_search", spy("search", GasProfile._series_baseline_search))
    for batches, prepare, fast in CASES.values():
        rules = RuleSet.from_config(config(fast))
        if prepare is not None:
            prepare(rules)
        for rows in batches:
            rules.process(to_batch(rows))
    assert seen["in order"] > 100 and seen["search"] > 100, seen


def test_chain_means_step_as_one_reading_at_a_time():
    """Both ways of `_chain_means` (a row at a time, numpy steps over the chains) give the float32 running mean
    of `after`, m = float32(m + (p - m) / c), bit for bit: chains of 1 to 70 rows, counts up to saturation."""
    rng = np.random.default_rng(5)
    length = np.array([1, 2, 70, 7, 1, 33])
    start = np.r_[0, np.cumsum(length)[:-1]]
    chain = np.repeat(np.arange(len(length)), length)
    rank = np.arange(length.sum()) - start[chain]
    m0 = rng.uniform(1.0, 400.0, len(length)).astype(np.float32)
    p = rng.uniform(1.0, 400.0, length.sum()).round(3)
    count = np.minimum(rng.integers(1, 250, len(length))[chain] + rank, 255).astype(np.int16)
    want = np.empty(len(p), np.float32)
    for k, (a, n) in enumerate(zip(start, length)):
        m = m0[k]
        for i in range(a, a + n):
            m = want[i] = np.float32(np.float64(m) + (p[i] - np.float64(m)) / count[i])
    for how in ("rows", "steps"):
        with leak_chain(how):
            got = GasProfile._chain_means(m0, p, count, chain, rank, start, length)
        assert got.dtype == np.float32 and got.view(np.int32).tolist() == want.view(np.int32).tolist(), how


def test_smooth_rows_equals_smooth_profile_across_blocks():
    rng = np.random.default_rng(6)
    n = 2 * gas_module.SMOOTH_BLOCK + 3
    m = [rng.uniform(0.0, 400.0, n) for _ in range(6)]
    w = rng.uniform(0.0, 1.0, n)
    got, want = gas_module.smooth_rows(m, w), gas_module.smooth_profile(m, w)
    assert got.view(np.int64).tolist() == want.view(np.int64).tolist()


def test_the_cases_reach_every_stepped_rule():
    """The table raises and clears G-leak and G-rupture (both levels), else it proves little."""
    ids, sev = set(), set()
    for batches, prepare, fast in CASES.values():
        # The whole-batch path alone: test_series_equals_rounds shows the rounds find the same.
        rules = RuleSet.from_config(config(fast))
        if prepare is not None:
            prepare(rules)
        found = Detections.concat([rules.process(to_batch(rows)) for rows in batches])
        ids |= set(found.rule_id.tolist())
        sev |= {(r, int(s)) for r, s in zip(found.rule_id.tolist(), found.severity.tolist())}
    assert {"G-leak", "G-leak-tight", "G-rupture"} <= ids
    assert {("G-rupture", 3), ("G-rupture", 4), ("G-rupture", 0), ("G-leak", 2), ("G-leak", 0)} <= sev


def test_the_profile_learns_every_reading_of_a_batch():
    """Beyond equality: the running mean of one hour's 60 readings in one batch is their mean (float32 steps)."""
    rows = feed(MED, "2025-06-09 10:00", [1.0] * 60, seed=20)
    series, rounds = both()
    series.process(to_batch(rows))
    prof = next(c for c in series.components if isinstance(c, GasProfile))
    h = (local_ns("2025-06-09 10:00") // S + 8 * 3600) // 3600 % 24 + 24 * 0  # Monday 10:00 = hour 10
    assert int(prof.count_[MED, h]) == 60 and int(prof.weeks_[MED, h]) == 1
    assert prof.mean_[MED, h] == pytest.approx(np.mean([r[2]["p"] for r in rows]), rel=1e-6)


def test_counts_near_saturation_step_as_the_rounds_do():
    """Counts saturate at 255 and the weeks counter at 255: summed at once as one at a time."""
    def prepare(rules: RuleSet) -> None:
        learned(rules)
        prof = next(c for c in rules.components if isinstance(c, GasProfile))
        prof.count_[:] = 240
        prof.weeks_[:] = 254
    run_both([feed(MED, "2025-06-09 10:00", RUPTURE, seed=21), feed(MED, "2025-06-16 10:00", LEAK, seed=22)], prepare)


def test_segment_cummax_restarts_at_each_segment():
    v = np.array([1.5, -2.0, 3.0, -np.inf, -1.0, -3.0, 0.0, 2.0], np.float32)
    start = np.array([1, 0, 0, 1, 0, 1, 0, 0], bool)
    assert _segment_cummax(v, start).tolist() == [1.5, 1.5, 3.0, -np.inf, -1.0, -3.0, 0.0, 2.0]


def test_series_off_steps_the_gas_rules_in_rounds():
    series, rounds = both()
    for rules, whole in ((series, True), (rounds, False)):
        dets = [d for d in rules.rules if isinstance(d, (GasRupture, GasLeakCusum))]
        assert len(dets) == 3 and all(d.series is whole for d in dets)


def test_state_arrays_compared_are_the_rules():
    """same_state compares the profile's and the stepped rules' state arrays (so the equality covers them)."""
    series, _ = both()
    snap = capture(series).pieces
    prof = next(v for k, v in snap.items() if not k.startswith("rule:"))
    assert set(prof.arrays) >= {"mean_", "count_", "weeks_", "last_week_"}
    assert set(snap["rule:G-rupture"].arrays) >= {"ring.val_", "ring.key_", "ring_tag_", "blk_id_", "blk_cur_",
                                                    "blk_prev_", "level_"}
    assert set(snap["rule:G-leak"].arrays) >= {"seen_", "s_", "var_", "last_", "episode_", "level_"}


PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])
STARTS = ["2025-06-09 09:00", "2025-06-09 09:29", "2025-06-15 23:40", "2025-06-16 10:10"]
STEPS = [0, 1, 20, 60, 60, 60, 60, 60, 300, 900, 3600]
LEVELS = [1.0, 1.0, 1.0, 1.0, 0.999, 1.002, 0.99, 0.97, 0.94, 0.9, 0.84, 0.7, 1.3, float("nan"), 5.0]


@st.composite
def gas_feeds(draw):
    """Arrival-ordered rows of the two gas devices: runs of levels (normal, slow losses, drops, episodes outside
    the band, NaN, out of range), flags other than N, gaps, repeated times, cut into batches anywhere, some
    rows held back into a later batch."""
    start = local_ns(draw(st.sampled_from(STARTS)))
    rng = np.random.default_rng(draw(st.integers(0, 1000)))
    rows = []
    for s in draw(st.lists(st.sampled_from([MED, LOW]), min_size=1, max_size=2, unique=True)):
        t = start + draw(st.sampled_from([0, 1, 30])) * S
        level, q = 1.0, 0
        for _ in range(draw(st.integers(1, 150))):
            t += draw(st.sampled_from(STEPS)) * S
            if draw(st.integers(0, 6)) == 0:  # levels and flags come in runs
                level = draw(st.sampled_from(LEVELS))
                q = draw(st.sampled_from([0, 0, 0, 0, 4]))
            rows.append((s, t, {"p": P_SET[s] * (level + rng.normal(0.0, 0.002))}, q))
    rows.sort(key=lambda r: r[1])
    return late_and_cut(draw, rows)


@PROPS
@given(batches=gas_feeds(), weeks=st.sampled_from([0, 1, 1]), active=st.booleans(),
       how=st.sampled_from(["rows", "steps"]), lookup=st.sampled_from(["as-is", "search"]))
def test_series_equals_rounds_property(batches, weeks, active, how, lookup):
    """Any feed, from a learned profile (weeks 1), one that learns during the feed (weeks 0: the hours learn
    from their readings) or with the rules already active and S away from 0."""
    def prepare(rules: RuleSet) -> None:
        learned(rules, weeks=weeks, at="2025-06-01 00:00")
        if active:
            for d in rules.rules:
                if isinstance(d, GasLeakCusum):
                    d.seen_[:], d.s_[:], d.var_[:], d.episode_[:] = 9, 4.5, 1.0, True
                    d.level_[:] = d.sev
                if isinstance(d, GasRupture):
                    d.level_[:] = 3
    with leak_chain(how), baseline_lookup(lookup):
        run_both(batches, prepare)
