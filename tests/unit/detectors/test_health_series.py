"""N-data's whole-batch path (`DataQuality.evaluate_series`) gives exactly what the round-by-round path gives:
the same detections record for record (floats bit for bit) and the same state after (hour, count, first-hour
mark, last complete hour's rate, bad-flag run start, level), batch after batch."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import Detections
from detectors.device_health import DataQuality
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import (
    TEST_DEVICES,
    TEST_SITES,
    by_time,
    cut,
    feed_both,
    late_and_cut,
    local_ns,
    make_config,
)
from tests.unit.detectors.test_conformance import to_batch
from tests.unit.detectors.test_noise_series import same_detections, same_state

S = 1_000_000_000
RULES = [
    {"id": "N-data", "type": "noise_data_quality"},  # every kind, the shipped limits (0.75, 900 s)
    {"id": "N-data-strict", "type": "noise_data_quality", "kind": "noise", "min_vdr": 0.95, "bad_flag_for_s": 180,
     "severity": "orange"},
    {"id": "G-data", "type": "noise_data_quality", "kind": "gas", "bad_flag_for_s": 1800},
]
# A noise monitor reporting every 20 s (180 readings a complete hour) beside the 60 s ones and the 900 s gas
# sensors (4 a complete hour).
DEVICES = TEST_DEVICES + [{"id": "N-FAST", "kind": "noise", "site": "HL-2025-102", "report_interval_s": 20}]
NOISE, GAS = (0, 1, 2, 5), (3, 4)
CFG = make_config(rules=RULES, devices=DEVICES, sites=TEST_SITES)
NAN = float("nan")


def both() -> tuple[RuleSet, RuleSet]:
    series, rounds = RuleSet.from_config(CFG), RuleSet.from_config(CFG, series=False)
    assert {d.rule_id for _, ds in series._whole for d in ds} == {"N-data", "N-data-strict", "G-data"}
    assert not series._groups
    assert {d.rule_id for _, ds in rounds._groups for d in ds} == {"N-data", "N-data-strict", "G-data"}
    return series, rounds


def run_both(batches: list[list], prepare=None) -> Detections:
    """Feed the batches to both paths, comparing detections after each and the state at the end (and after
    every batch: a later batch starts from it). prepare(rule_set) edits both rule sets' state first."""
    series, rounds = both()
    if prepare is not None:
        prepare(series)
        prepare(rounds)
    found = feed_both(series, rounds, batches, to_batch, same_detections, same_state)
    return Detections.concat(found)


def feed(device: int, start: str, n: int, step_s: float = 60, quality: int | list = 0, value: float | list = 50.3,
         skip: set | None = None) -> list:
    """n readings of one device every step_s from start (local time), leaving out the indexes in skip;
    quality and value: one for every row, or one per row."""
    t0 = local_ns(start)
    field = "p" if device in GAS else "leq"
    out = []
    for k in range(n):
        if skip and k in skip:
            continue
        q = quality[k] if isinstance(quality, list) else quality
        v = value[k] if isinstance(value, list) else value
        out.append((device, t0 + int(round(k * step_s * S)), {field: v}, q))
    return out


# 09:01 .. 13:01 every minute except 30 minutes of 11:xx (a 50 % hour, below 0.75) and five of 12:xx (92 %).
HOURS = feed(1, "2025-06-05 09:01", 241, skip=set(range(130, 160)) | {190, 200, 210, 220, 230})
BAD_RUN = feed(1, "2025-06-05 09:01", 60, quality=[0] * 10 + [4] * 25 + [0] * 5 + [2] * 3 + [0] * 17)

# name -> batches of rows: each a case the whole-batch path must replay exactly.
CASES = {
    "hour boundaries, readings stamped at the hour's end": [feed(1, "2025-06-05 09:00", 241, skip={150, 160, 170, 175})],
    "hour boundaries, a low hour and a nearly full one": [HOURS],
    "the first partial hour is never judged": [feed(0, "2025-06-05 09:59", 3), feed(0, "2025-06-05 10:02", 70)],
    "a gap of more than an hour (the rate of a skipped hour is 0)": [
        feed(1, "2025-06-05 09:01", 120) + feed(1, "2025-06-05 13:31", 60)],
    "a gap inside one batch and across batches": [feed(1, "2025-06-05 09:01", 90), feed(1, "2025-06-05 12:01", 90)],
    "NaNs are not valid data": [feed(1, "2025-06-05 09:01", 200, value=[NAN if k % 3 == 0 else 50.3 for k in range(200)])],
    "flags other than N are not valid data": [feed(1, "2025-06-05 09:01", 200, quality=[4 if k % 4 == 0 else 0
                                                                                         for k in range(200)])],
    "bad-flag runs, one long enough": [BAD_RUN],
    "a bad-flag run across batch boundaries": cut(BAD_RUN, 12, 20, 21, 36),
    "a bad-flag run across every batch boundary": cut(BAD_RUN, *range(1, 60)),
    "a bad-flag run open at the end of a batch, continued later": [
        feed(1, "2025-06-05 09:01", 8, quality=2), feed(1, "2025-06-05 09:09", 30, quality=[2] * 20 + [0] * 10)],
    "batches split anywhere": cut(HOURS, 1, 59, 60, 61, 119, 120, 160),
    "gas sensors count p, every 15 minutes": [feed(3, "2025-06-05 09:15", 20, step_s=900, skip={6, 7, 9}),
                                              feed(4, "2025-06-05 09:15", 20, step_s=900, quality=[0] * 5 + [4] * 10 + [0] * 5)],
    "noise and gas in one batch": [by_time(feed(0, "2025-06-05 09:01", 180, skip=set(range(70, 100))),
                                           feed(3, "2025-06-05 09:15", 12, step_s=900, quality=[0, 0, 4, 4, 4, 0] * 2),
                                           feed(5, "2025-06-05 09:00:20", 540, step_s=20, skip=set(range(200, 260))))],
    "readings with equal times": [[r for r in feed(1, "2025-06-05 09:01", 150, quality=[0] * 100 + [4] * 50)
                                   for _ in (0, 1)]],
    "late readings of an earlier hour in a later batch": [
        feed(1, "2025-06-05 10:01", 60), feed(1, "2025-06-05 09:30", 45, quality=[0] * 30 + [4] * 15),
        feed(1, "2025-06-05 11:01", 70)],
    "late readings of the same hour in a later batch": [
        feed(1, "2025-06-05 09:01", 100)[::2], feed(1, "2025-06-05 09:01", 100)[1::2]
        + feed(1, "2025-06-05 10:41", 90, quality=[4] * 20 + [0] * 70)],
    "a fast monitor's hours": [feed(5, "2025-06-05 09:00:20", 700, step_s=20, quality=[0] * 300 + [4] * 20 + [0] * 380,
                                    skip=set(range(400, 450)))],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_series_equals_rounds(name):
    found = run_both(CASES[name])
    if "first partial" not in name:
        assert len(found), "the case raises nothing: it tests nothing"


def test_the_cases_reach_both_reasons_and_every_rule():
    """The table raises on a low hour and on a bad-flag run, and clears (else it proves little)."""
    reasons, ids, sev = set(), set(), set()
    for batches in CASES.values():
        # The whole-batch path alone: test_series_equals_rounds shows the rounds find the same.
        rules = RuleSet.from_config(CFG)
        found = Detections.concat([rules.process(to_batch(rows)) for rows in batches])
        reasons |= {c.get("reason") for c in found.context}
        ids |= set(found.rule_id.tolist())
        sev |= set(found.severity.tolist())
    assert reasons >= {"flag", "vdr", None}
    assert ids == {"N-data", "N-data-strict", "G-data"}
    assert 0 in sev  # a clear row


def test_the_hour_rate_and_run_lengths_are_the_rules():
    """Spot values of the case table, beyond equality: 11:xx holds 30 of 60 readings, 12:xx 55 (judged from
    the first reading after the hour, 13:00 being 12:xx's last); a bad-flag run of one-minute readings has
    lasted 180 s at its third reading."""
    found = run_both([HOURS])
    vdr = {(int(t) - local_ns("2025-06-05 00:00")) // (60 * S): v
           for t, v, r in zip(found.ts_ns, found.value, found.rule_id) if r == "N-data"}
    assert vdr[12 * 60 + 1] == 0.5  # the first reading of 12:xx judges 11:xx
    strict = found.value[(found.rule_id == "N-data-strict") & (found.ts_ns == local_ns("2025-06-05 13:01"))]
    assert strict.tolist() == [55 / 60]
    flags = run_both([BAD_RUN])
    strict = flags.take(flags.rule_id == "N-data-strict")
    assert [c["bad_flag_s"] for c in strict.context][:2] == [180.0, 240.0]  # from the 3rd bad reading, 180 s


def test_counts_near_the_int16_limit_wrap_as_the_rounds_do():
    """The hour count is int16 state: summing a batch at once wraps exactly as adding one at a time."""
    def prepare(rules: RuleSet) -> None:
        det = next(d for d in rules.rules if d.rule_id == "N-data")
        det.hour_[:] = (local_ns("2025-06-05 09:30") - 1) // (3600 * S)
        det.count_[:] = 32_760
        det.first_[:] = False
    run_both([feed(1, "2025-06-05 09:30", 30, step_s=1), feed(1, "2025-06-05 09:30:30", 30, step_s=1)
              + feed(1, "2025-06-05 10:01", 5)], prepare)


def test_series_off_steps_n_data_in_rounds():
    series, rounds = both()
    assert all(isinstance(d, DataQuality) and d.series for _, ds in series._whole for d in ds)
    assert not any(d.series for _, ds in rounds._groups for d in ds)


PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                         HealthCheck.data_too_large])
STARTS = ["2025-06-05 09:00", "2025-06-05 09:59", "2025-06-05 23:58", "2025-06-06 00:00:20"]
STEPS = [0, 1, 20, 60, 60, 60, 60, 300, 900, 3600, 5400]


@st.composite
def health_feeds(draw):
    """Arrival-ordered rows of noise and gas devices with gaps (under and over an hour), repeated times,
    NaNs, flags other than N in runs, cut into batches anywhere, some rows held back into a later batch."""
    start = local_ns(draw(st.sampled_from(STARTS)))
    rows = []
    for s in draw(st.lists(st.sampled_from(NOISE + GAS), min_size=1, max_size=4, unique=True)):
        t = start + draw(st.sampled_from([0, 1, 30, 60])) * S
        q = 0
        for _ in range(draw(st.integers(1, 120))):
            t += draw(st.sampled_from(STEPS)) * S
            if draw(st.integers(0, 5)) == 0:  # flags come in runs
                q = draw(st.sampled_from([0, 0, 2, 4]))
            v = draw(st.sampled_from([50.3, 50.3, 50.3, NAN]))
            rows.append((s, t, {"p" if s in GAS else "leq": v}, q))
    rows.sort(key=lambda r: r[1])
    return late_and_cut(draw, rows)


@PROPS
@given(batches=health_feeds())
def test_series_equals_rounds_property(batches):
    run_both(batches)


def test_state_arrays_compared_are_the_rules():
    """same_state compares every state array of N-data (so the equality above covers them all)."""
    from detectors.snapshot import capture

    series, _ = both()
    names = set(capture(series).pieces["rule:N-data"].arrays)
    assert names >= {"hour_", "count_", "first_", "vdr_", "bad_since_", "level_"}
    assert np.all(series.rules[0].hour_ == -1)
