"""bench/bench_evaluation.py's plumbing: a temporary config with one rule and the evaluation device is valid
for `citywatch detect`, and its `--flags onset` output becomes onsets per device, scored event-wise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from citywatch.evaluation import LabelWindow, Span, score_onsets
from tests.bench_module import load_bench

ROOT = Path(__file__).resolve().parents[3]
M = 60 * 1_000_000_000


def _bench():
    return load_bench("bench_evaluation")


def test_one_rule_config_runs_and_its_onsets_are_scored(tmp_path):
    b = _bench()
    # Two episodes above 5 (rows 3-4 and 8), a quiet row between: two onsets, at rows 3 and 8.
    values = [1, 1, 2, 7, 8, 1, 1, 1, 9, 1]
    ts = b.UCR_T0_NS + np.arange(len(values), dtype=np.int64) * M
    path = tmp_path / "feed.csv"
    path.write_text("ts,device_id,value\n" + "".join(f"{b._iso(int(t))},{b.UCR_DEVICE},{v}\n"
                                                     for t, v in zip(ts, values)), encoding="utf-8")
    feed = b.Feed("t", path, [b.UCR_DEVICE] * len(values), ts, [], [])
    rule = {"id": "hot", "type": "threshold", "kind": "noise", "field": "value",
            "levels": [{"above": 5, "severity": "yellow"}]}
    conf = b.make_config(tmp_path, "one", [rule])
    assert "inhibit: []" in (conf / "alerts.yaml").read_text()
    onsets = b.detect_onsets(feed, conf)
    assert {k: ((v - b.UCR_T0_NS) // M).tolist() for k, v in onsets.items()} == {b.UCR_DEVICE: [3, 8]}
    window = LabelWindow(b.UCR_DEVICE, int(ts[2]), int(ts[4]), "anomaly", "w")
    s = score_onsets(onsets, [window], [Span(b.UCR_DEVICE, int(ts[1]), int(ts[-1]))])
    assert (s.n_detected, len(s.false_alarms), s.delays_s) == (1, 1, [60.0])


def test_rate_limit_is_rounded_up_above_the_training_maximum():
    b = _bench()
    assert b._round_up(16.84) == 16.9
    assert b._round_up(8.9) == 8.9
    assert b._round_up(0.012341) == 0.0124
    ts = np.arange(4, dtype=np.int64) * M
    assert b._max_rate(ts, np.array([0.0, 2.0, np.nan, 1.0])) == 2.0  # NaN skipped: 2 -> 1 over 2 minutes is 0.5


def test_sim_feed_is_labelled_and_its_training_day_is_not_scored(tmp_path):
    from config import load_config

    b = _bench()
    feed = b.build_sim(tmp_path, load_config(None))
    kinds = {w.id: w.kind for w in feed.windows}
    assert sorted(i for i, k in kinds.items() if k == "ignore") == ["F02", "F03", "F11", "F19"]  # no rule expected
    assert sum(k == "anomaly" for k in kinds.values()) == 11
    assert len(feed.spans) == 18 and all(s.days == pytest.approx(1.0) for s in feed.spans)
    first = min(feed.ts_ns)
    assert all(s.start_ns - first >= 86_400 * 10**9 - 60 * 10**9 for s in feed.spans)  # a day of training first
    header = (tmp_path / "sim_eval.csv").read_text().splitlines()[0]
    assert header == "ts,device_id,flag,leq,lmax,lmin,l10,l50,l90,p,batt_v"
    assert len(feed.ts_ns) == len((tmp_path / "sim_eval.csv").read_text().splitlines()) - 1
    assert feed.rules_of["F09"] == ("G-rupture", "G-low")
    assert [w.kind for w in b.rule_windows(feed, "G-rupture") if w.kind == "anomaly"] == ["anomaly"] * 2


def test_group_t2_groups_the_sim_feeds_gas_sensors_by_district_in_15_minute_buckets():
    """By pressure class every gas sensor of the sim feed is alone in its district (never judged); by
    district they form groups, in buckets as long as their 15-minute reports (README "Evaluation")."""
    from config import load_config
    from detectors.group import build_groups, group_keys
    from simulators.scenario import load_scenario

    b = _bench()
    cfg = load_config(None)
    feed = b.Feed("sim", ROOT / "unused.csv", [], np.zeros(0, np.int64), [], [], {}, {"leq": 1.0, "p": 1.0})
    gas = next(r for r in b.generic_rules("group_t2", {}, feed) if r["kind"] == "gas")
    assert (gas["field"], gas["group_by"], gas["bucket_s"]) == ("p", "district", 900)
    devices = [cfg.device_index(d) for d in load_scenario(b.SIM_SCENARIO, cfg).devices
               if cfg.device(d).kind == "gas"]
    assert build_groups(group_keys(cfg, devices, "district_class"), 12) == []
    assert len(build_groups(group_keys(cfg, devices, "district"), 12)) == 3
