"""Alert onsets and spans (issue 16, item 3) and one flag per input row, duplicates included (item 7):
`detectors.episodes` and `citywatch detect --flags row|onset|span`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from citywatch.cli import main
from config import DEFAULT_CONFIG_DIR
from detectors.episodes import DistinctTimes, episodes, row_flags
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import batch, local_ns, series, small_config

NAN = float("nan")
RULE = {"id": "T", "type": "threshold", "field": "v", "levels": [{"above": 5.0, "severity": "yellow"}]}


def run(values, rules=(RULE,)):
    cfg = small_config(list(rules))
    rows = series("G-MED", local_ns("2025-06-05 09:00"), [{"v": x} for x in values])
    b = batch(rows, cfg)
    return RuleSet.from_config(cfg).process(b), b


@pytest.mark.parametrize("mode, expected", [
    ("row", [0, 1, 0, 1, 0, 1, 1, 0]),     # a detection of severity blue or above at the row
    ("onset", [0, 1, 0, 0, 0, 1, 0, 0]),   # where an episode starts: once per episode
    ("span", [0, 1, 1, 1, 0, 1, 1, 0]),    # inside an episode: the missing reading too, not the clear
])
def test_flag_modes(mode, expected):
    dets, b = run([1, 9, NAN, 9, 1, 9, 9, 1])
    assert row_flags(dets, b.sensor, b.ts_ns, mode).astype(int).tolist() == expected


def test_episodes_of_two_rules_are_apart():
    hi = {"id": "H", "type": "threshold", "field": "v", "levels": [{"above": 8.0, "severity": "orange"}]}
    dets, b = run([1, 6, 9, 6, 1, 9, 1], rules=(RULE, hi))
    ep = episodes(dets)
    got = sorted((r, int((t - b.ts_ns[0]) // 60_000_000_000), int((e - b.ts_ns[0]) // 60_000_000_000), int(top))
                 for r, t, e, top in zip(ep.rule_id, ep.onset_ts, ep.end_ts, ep.top))
    # (rule, onset minute, end minute (the clear row), highest severity: 2 yellow, 3 orange)
    assert got == [("H", 2, 3, 3), ("H", 5, 6, 3), ("T", 1, 4, 2), ("T", 5, 6, 2)]
    assert row_flags(dets, b.sensor, b.ts_ns, "onset").astype(int).tolist() == [0, 1, 1, 0, 0, 1, 0]


def test_episode_still_active_at_the_end_spans_to_the_end():
    dets, b = run([1, 9, 9, NAN])
    assert episodes(dets).end_ts.tolist() == [np.iinfo(np.int64).max]
    assert row_flags(dets, b.sensor, b.ts_ns, "span").astype(int).tolist() == [0, 1, 1, 1]


def test_unknown_rows_are_never_flagged_and_an_unknown_mode_is_refused():
    dets, b = run([9, 9])
    s = np.r_[b.sensor, -1]
    t = np.r_[b.ts_ns, b.ts_ns[0]]
    for mode in ("row", "onset", "span"):
        assert not row_flags(dets, s, t, mode)[-1]
    with pytest.raises(ValueError, match="unknown flag mode 'peak': choose from row, onset, span"):
        row_flags(dets, s, t, "peak")


def test_distinct_times_within_and_across_chunks():
    ms = 1_000_000
    d = DistinctTimes(3)
    got = d.apply(np.array([0, 0, 1, 0, -1, -1, 0]), np.array([5, 5, 5, 6, 5, 5, 5]) * ms)
    assert (got - np.array([5, 5, 5, 6, 5, 5, 5]) * ms).tolist() == [0, 1, 0, 0, 0, 0, 2]
    # The next chunk repeats sensor 0's latest time (6 ms) and sensor 1's (5 ms): their counts go on.
    got = d.apply(np.array([0, 1, 1, 2]), np.array([6, 5, 7, 7]) * ms)
    assert (got - np.array([6, 5, 7, 7]) * ms).tolist() == [1, 1, 0, 0]


# ----- the command -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def eval_config(tmp_path_factory):
    """The shipped config with one more rule: EVAL, v above 5 (yellow)."""
    d = tmp_path_factory.mktemp("cfg") / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, d, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    with (d / "rules.yaml").open("a") as f:
        f.write("  - {id: EVAL, type: threshold, field: v, flags: any, levels: [{above: 5, severity: yellow}]}\n")
    return d


def detect_flags(tmp_path, cfg_dir, rows, *mode):
    feed = tmp_path / "feed.csv"
    feed.write_text("ts,device_id,v\n" + "".join(f"{t},XMG0001,{v}\n" for t, v in rows))
    return [str(feed), "--config", str(cfg_dir), "--rule", "EVAL", "--no-deadman", "--no-progress"], feed


def test_same_time_rows_get_their_own_flags(tmp_path, eval_config, capsys):
    """The issue's case: `00:00Z,1` / `00:00Z,9` / `00:01Z,1` under "above 5" printed 1 1 0."""
    args, _ = detect_flags(tmp_path, eval_config, [("2025-06-05T00:00:00Z", 1), ("2025-06-05T00:00:00Z", 9),
                                                   ("2025-06-05T00:01:00Z", 1)])
    assert main(["detect", *args, "--flags"]) == 0
    assert capsys.readouterr().out.split() == ["0", "1", "0"]


@pytest.mark.parametrize("mode, expected", [
    ([], "0 1 1 0 1 0"), (["row"], "0 1 1 0 1 0"), (["onset"], "0 1 0 0 1 0"), (["span"], "0 1 1 0 1 0"),
])
def test_detect_flags_modes(tmp_path, eval_config, capsys, mode, expected):
    rows = [(f"2025-06-05T00:0{i}:00Z", v) for i, v in enumerate([1, 9, 9, 1, 9, 1])]
    args, _ = detect_flags(tmp_path, eval_config, rows)
    assert main(["detect", *args, "--flags", *mode]) == 0
    assert capsys.readouterr().out.split() == expected.split()
    # The mode may be left out before the input file, too.
    assert main(["detect", "--flags", *args]) == 0
    assert capsys.readouterr().out.split() == ["0", "1", "1", "0", "1", "0"]
