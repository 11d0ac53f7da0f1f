"""The early exits that cut a small detection step's fixed cost change nothing: a rule whose rows all stay at
level 0 (`_stays_quiet`), a rule with no candidate row and no active level (`_no_candidates`), and a group
or shared component with no rows of its kinds in a step (`_absent`) give the same detections, contexts and
state, step after step, as the full paths they skip."""

from __future__ import annotations

import numpy as np
import pytest

import detectors.base as base
import detectors.registry as registry
from detectors.registry import RuleSet
from detectors.snapshot import capture
from tests.unit.detectors.helpers import TEST_DEVICES, TEST_SITES, batch, local_ns, make_config

M = 60 * 1_000_000_000


def feed() -> list[tuple]:
    """An hour across 22:00 (day -> night) of the shipped rules' devices, one reading a minute each: a noise
    site loud over the day and night limits (Lmax red at night) then quiet again, one just over the night
    limit, gas high then low then normal, one flagged row; in event-time order."""
    t0 = local_ns("2025-06-10 21:30")
    rows = []
    for i in range(60):
        t = t0 + i * M
        loud = 10 <= i < 45
        rows.append(("N-PLAIN", t, {"leq": 72.0 if loud else 50.0, "lmax": 90.0 if loud else 60.0,
                                    "lmin": 45.0, "l90": 48.0}, "F" if i == 20 else None))
        rows.append(("N-EXAM", t, {"leq": 58.0 + (i % 3) * 0.1, "lmax": 66.0, "lmin": 50.0, "l90": 52.0}, None))
        rows.append(("N-PERMIT", t, {"leq": 45.0, "lmax": 55.0, "lmin": 40.0, "l90": 42.0}, None))
        rows.append(("G-LOW", t, {"p": 3.6 if 15 <= i < 25 else 2.5 + 0.001 * (i % 5)}, None))
        rows.append(("G-MED", t, {"p": 200.0 if 30 <= i < 38 else 300.0 + 0.1 * (i % 4)}, None))
    return rows


def small_steps(rows: list[tuple]) -> list[list[tuple]]:
    """The feed cut into steps of 1, 2, 3, 1, 2, 3, ... readings (a worker's steps at a low rate)."""
    out, a, k = [], 0, 0
    while a < len(rows):
        n = 1 + k % 3
        out.append(rows[a:a + n])
        a, k = a + n, k + 1
    return out


def run(cfg, steps, series: bool) -> tuple[list, list]:
    """(records of each step's detections, state of every rule and shared component after each step)."""
    rs = RuleSet.from_config(cfg, series=series)
    found, states = [], []
    for rows in steps:
        found.append(rs.process(batch(rows, cfg)).records())
        states.append({k: (p.arrays, p.scalars) for k, p in capture(rs).pieces.items()})
    return found, states


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        (sa, ca), (sb, cb) = a[key], b[key]
        assert sa.keys() == sb.keys(), key
        for name in sa:
            assert sa[name].dtype == sb[name].dtype, (key, name)
            assert np.array_equal(sa[name], sb[name], equal_nan=sa[name].dtype.kind == "f"), (key, name)
        assert ca == cb, key


@pytest.mark.parametrize("series", [True, False], ids=["whole", "rounds"])
def test_early_exits_give_the_same_detections_and_state_as_the_full_paths(monkeypatch, series):
    cfg = make_config(devices=TEST_DEVICES, sites=TEST_SITES)  # the shipped rules
    steps = small_steps(feed())
    taken = {"quiet": 0, "no_candidates": 0, "absent": 0}

    def counted(name, fn):
        def call(*args):
            hit = fn(*args)
            taken[name] += bool(hit)
            return hit
        return call

    with monkeypatch.context() as m:  # the full paths: every early exit off
        m.setattr(base, "_stays_quiet", lambda *a: False)
        m.setattr(base, "_no_candidates", lambda *a: False)
        m.setattr(registry, "_absent", lambda *a: False)
        full_found, full_states = run(cfg, steps, series)
    with monkeypatch.context() as m:
        m.setattr(base, "_stays_quiet", counted("quiet", base._stays_quiet))
        m.setattr(base, "_no_candidates", counted("no_candidates", base._no_candidates))
        m.setattr(registry, "_absent", counted("absent", registry._absent))
        found, states = run(cfg, steps, series)
    # Not vacuous: alarms were raised and cleared, and every early exit was taken.
    rules = {(r["rule_id"], r["severity"] != "clear") for f in full_found for r in f}
    assert {("N-night", True), ("N-night-max", True), ("N-day", True), ("G-high", True), ("G-low", True)} <= rules
    assert any(r["severity"] == "clear" for f in full_found for r in f)
    assert taken["quiet"] and taken["absent"] and (taken["no_candidates"] or not series)
    for i, (a, b) in enumerate(zip(full_found, found)):
        assert a == b, f"step {i}"  # rows, values, limits, scores and contexts
    for a, b in zip(full_states, states):
        assert_same_state(a, b)
