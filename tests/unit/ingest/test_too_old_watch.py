"""A wall-clock service fed simulated or replayed readings refuses them as ts_too_old: it says so once, with
the fix, and then at most once per period (issue 12)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from ingest.pipeline import TooOldWatch


def _rec(device: str, rows: int):
    return SimpleNamespace(reason="ts_too_old", rows_by_reason={"ts_too_old": rows}, device_id=device)


def test_most_readings_refused_as_too_old_is_said_once_per_period(caplog):
    now = [0.0]
    watch = TooOldWatch(min_refused=100, every_s=3600, clock=lambda: now[0], logger=logging.getLogger("t12"))
    with caplog.at_level(logging.WARNING, "t12"):
        assert not watch.observe([_rec("XM0001NOISE", 60)], accepted=0, max_age_s=604800)   # not yet 100
        assert watch.observe([_rec("XM0001NOISE", 60)], accepted=0, max_age_s=604800)
        now[0] = 60.0
        assert not watch.observe([_rec("XM0001NOISE", 500)], accepted=0, max_age_s=604800)  # within the hour
        now[0] = 3700.0
        assert watch.observe([_rec("XM0002NOISE", 500)], accepted=0, max_age_s=604800)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert "most readings are refused as ts_too_old (120 refused, 0 accepted; most from XM0001NOISE (120))" in lines[0]
    assert "CITYWATCH_CLOCK=event" in lines[0]


def test_a_few_late_readings_beside_many_good_ones_are_not_reported():
    watch = TooOldWatch(min_refused=100, clock=lambda: 0.0)
    assert not watch.observe([_rec("XMG0001", 150)], accepted=10_000, max_age_s=604800)
    assert not watch.observe([SimpleNamespace(reason="invalid_json", rows_by_reason=None, device_id="X")], 0, 1)
