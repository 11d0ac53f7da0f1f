"""GB 12523-2011 background correction of N-day / N-night (issue 16 item 9): the correction table, the
rules' behaviour with it (opt-in, default off), and the vectorized rules against the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import Detections
from detectors.background import gb12523_correct, gb12523_correct_one
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import TEST_DEVICES, TEST_SITES, batch, local_ns, make_config, rows_of, series
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import FAST, assert_same, feeds, to_batch

NAN = float("nan")

TABLE = [
    # (measured, background, corrected, valid, correction): GB 12523-2011 Table 2 after rounding the difference
    (70.0, 50.0, 70.0, True, 0.0),     # 20 dB: no correction
    (70.0, 59.4, 70.0, True, 0.0),     # 10.6 rounds to 11: over 10, no correction
    (70.0, 59.5, 69.0, True, -1.0),    # 10.5 rounds to 10 (a half to even, GB/T 8170): -1
    (70.0, 60.0, 69.0, True, -1.0),    # 10: -1
    (70.0, 64.0, 69.0, True, -1.0),    # 6: -1
    (70.0, 64.5, 69.0, True, -1.0),    # 5.5 rounds to 6: -1
    (70.0, 65.0, 68.0, True, -2.0),    # 5: -2
    (70.0, 66.0, 68.0, True, -2.0),    # 4: -2
    (70.0, 66.5, 68.0, True, -2.0),    # 3.5 rounds to 4: -2
    (70.0, 67.0, 67.0, True, -3.0),    # 3: -3
    (70.0, 67.4, 67.0, True, -3.0),    # 2.6 rounds to 3: -3
    (70.0, 67.5, NAN, False, NAN),     # 2.5 rounds to 2: not valid for assessment
    (70.0, 68.0, NAN, False, NAN),     # 2
    (70.0, 72.0, NAN, False, NAN),     # background above the measurement
    (70.0, NAN, 70.0, True, 0.0),      # background unknown: as measured
    (NAN, 50.0, NAN, False, NAN),      # no measurement
]


@pytest.mark.parametrize("measured,background,corrected,valid,corr", TABLE)
def test_gb12523_correction_table(measured, background, corrected, valid, corr):
    got = gb12523_correct(np.array([measured]), np.array([background]))
    one = gb12523_correct_one(measured, background)
    for c, v, k in (tuple(float(a[0]) if a.dtype != bool else bool(a[0]) for a in got), one):
        assert v is valid
        assert (math.isnan(c) and math.isnan(corrected)) or c == corrected
        assert (math.isnan(k) and math.isnan(corr)) or k == corr


DAY = local_ns("2025-06-03 09:00")  # a Tuesday, day period: N-day's limit 70 at the plain site


def config(correction: str | None = "gb12523", site_background: float | None = None, **keys):
    rule = {"id": "N-day", "type": "noise_day_limit", **keys}
    if correction is not None:
        rule["background_correction"] = correction
    sites = [dict(s) for s in TEST_SITES]
    if site_background is not None:
        next(s for s in sites if s["id"] == "HL-2025-102")["background_db"] = site_background
    return make_config(rules=[rule], devices=TEST_DEVICES, sites=sites)


def run(cfg, values, start=DAY):
    return rows_of(RuleSet.from_config(cfg).process(batch(series("N-PLAIN", start, values), cfg)))


BEHAVIOUR = [
    # (what, correction, site background, leq, l90, alarm severity or None, value judged)
    ("background far below: no correction", "gb12523", None, 72.0, 50.0, "yellow", 72.0),
    ("4 dB above background: -2 dB, down to the limit: no alarm", "gb12523", None, 72.0, 68.0, None, None),
    ("8 dB above background: -1 dB, still above", "gb12523", None, 72.0, 64.0, "yellow", 71.0),
    ("within 3 dB of the background: not judged, no alarm", "gb12523", None, 72.0, 70.5, None, None),
    ("default off: judged as measured (today's behaviour)", None, None, 72.0, 70.5, "yellow", 72.0),
    ("off said explicitly", "off", None, 72.0, 68.0, "yellow", 72.0),
    ("the site's surveyed background wins over the L90", "gb12523", 60.0, 72.0, 70.5, "yellow", 72.0),
    ("the site's background 5.4 dB below: -2 dB", "gb12523", 67.0, 72.4, 40.0, "yellow", 70.4),
    ("the site's background 5.5 dB below: rounds to 6, -1 dB", "gb12523", 67.0, 72.5, 40.0, "yellow", 71.5),
]


@pytest.mark.parametrize("what,correction,site_bg,leq,l90,sev,value", BEHAVIOUR, ids=[b[0] for b in BEHAVIOUR])
def test_n_day_with_background_correction(what, correction, site_bg, leq, l90, sev, value):
    found = run(config(correction, site_bg), [{"leq": leq, "l90": l90}] * 30)
    if sev is None:
        assert found == [], what
        return
    assert found and {r["severity"] for r in found} == {sev}, what
    assert found[0]["value"] == pytest.approx(value)
    ctx = found[0]["context"]
    if correction == "gb12523":
        bg = site_bg if site_bg is not None else l90
        assert ctx["measured_db"] == pytest.approx(leq) and ctx["background_db"] == pytest.approx(bg)
        assert ctx["corrected_db"] == pytest.approx(value)
        assert ctx["correction_db"] == pytest.approx(value - leq)
        assert ctx["background_source"] == ("site" if site_bg is not None else "l90")
    else:
        assert "measured_db" not in ctx


def test_an_invalid_reading_neither_raises_nor_clears():
    """An alarm on a loud hour, then readings within 3 dB of the background: not valid for assessment,
    so the alarm is not cleared by them (without correction the same quiet readings clear it)."""
    loud = [{"leq": 74.0, "l90": 50.0}] * 10
    quiet = [{"leq": 50.0, "l90": 49.0}] * 10
    # A 1-minute window: the level judged is each minute's own Leq.
    cfg, cfg_plain = config(window_s=60), config(None, window_s=60)
    found = run(cfg, loud + quiet)
    assert [r["severity"] for r in found] == ["yellow"] * 10   # the quiet minutes are not judged
    plain = run(cfg_plain, loud + quiet)
    assert [r["severity"] for r in plain] == ["yellow"] * 10 + ["clear"]


def _sites_with_background():
    sites = [dict(s) for s in TEST_SITES]
    sites[0]["background_db"] = 55.0   # the permit site's monitor uses a surveyed background
    return sites


@pytest.mark.parametrize("rtype", ["noise_day_limit", "noise_night_limit"])
@FAST
@given(rows=feeds(), cut=st.floats(0, 1))
def test_corrected_rules_equal_reference_and_any_split(rtype, rows, cut):
    cfg = make_config(rules=[{"id": "R", "type": rtype, "background_correction": "gb12523"}], devices=TEST_DEVICES,
                      sites=_sites_with_background(), noise={"min_coverage": 0.5})
    whole = RuleSet.from_config(cfg).process(to_batch(rows))
    assert_same(whole, ReferenceRuleSet(cfg).process(to_batch(rows)))
    ordered = sorted(rows, key=lambda r: r[1])
    k = int(cut * len(ordered))
    rs = RuleSet.from_config(cfg)
    assert_same(whole, Detections.concat([rs.process(to_batch(ordered[:k])), rs.process(to_batch(ordered[k:]))]))


def test_unknown_correction_mode_is_a_config_error():
    from config.errors import ConfigError

    with pytest.raises(ConfigError) as exc:
        RuleSet.from_config(config("gb3096"))
    assert "background_correction" in str(exc.value)
