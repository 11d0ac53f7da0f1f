"""Event-wise scoring of detector onsets (citywatch.evaluation): window matching, delays, false alarms per
sensor-day, and the edge cases (overlapping windows, an onset before a window, no labels)."""

from __future__ import annotations

import numpy as np
import pytest

from citywatch.evaluation import (
    LabelWindow,
    Span,
    format_table,
    onsets_by_series,
    score_onsets,
    windows_from_rows,
)

M = 60 * 1_000_000_000      # one minute in ns
DAY = 1440 * M
SPAN_A = [Span("A", 0, DAY)]


def W(start_min, end_min, kind="anomaly", wid=None, series="A"):
    return LabelWindow(series, start_min * M, end_min * M, kind, wid or f"{series}{start_min}")


# (case, onsets (series -> minutes), windows, windows scored, detected, false alarms, delays in minutes)
CASES = [
    ("onset inside the window", {"A": [105]}, [W(100, 200)], 1, 1, 0, [5]),
    ("onset at the window's start: delay 0", {"A": [100]}, [W(100, 200)], 1, 1, 0, [0]),
    ("onset at the window's end: ends are inclusive", {"A": [200]}, [W(100, 200)], 1, 1, 0, [100]),
    ("onset before the window: a false alarm, the window missed", {"A": [90]}, [W(100, 200)], 1, 0, 1, []),
    ("onset just after the window: a false alarm", {"A": [201]}, [W(100, 200)], 1, 0, 1, []),
    ("onset before and inside: one of each", {"A": [90, 150]}, [W(100, 200)], 1, 1, 1, [50]),
    ("repeated onsets in one window: detected once, delay from the first", {"A": [160, 120, 190]},
     [W(100, 200)], 1, 1, 0, [20]),
    ("overlapping windows, an onset in the overlap detects both", {"A": [150]},
     [W(100, 200, wid="w1"), W(140, 300, wid="w2")], 2, 2, 0, [50, 10]),
    ("overlapping windows, an onset in the first only", {"A": [110]},
     [W(100, 200, wid="w1"), W(140, 300, wid="w2")], 2, 1, 0, [10]),
    ("overlapping windows, later onsets detect the second", {"A": [110, 250]},
     [W(100, 200, wid="w1"), W(140, 300, wid="w2")], 2, 2, 0, [10, 110]),
    ("an onset in an ignore window counts neither way", {"A": [150]}, [W(100, 200, "ignore")], 0, 0, 0, []),
    ("an anomaly window inside an ignore window", {"A": [150, 250]},
     [W(100, 400, "ignore", "i"), W(140, 160, wid="a")], 1, 1, 0, [10]),
    ("no labels: every onset is a false alarm", {"A": [10, 20]}, [], 0, 0, 2, []),
    ("no labels, no onsets", {}, [], 0, 0, 0, []),
    ("no onsets: the window is missed", {}, [W(100, 200)], 1, 0, 0, []),
    ("another series' onset at the window's time does not detect it", {"A": [], "B": [150]},
     [W(100, 200)], 1, 0, 0, []),  # B has no span here: its onsets are dropped
    ("onsets outside the span (training rows) are dropped", {"A": [-30, DAY // M + 1]}, [W(100, 200)], 1, 0, 0, []),
    ("a window wholly in the training rows is not scored", {"A": [-30]}, [W(-60, -10)], 0, 0, 0, []),
    ("a window overlapping the span's start is scored", {"A": [5]}, [W(-60, 10)], 1, 1, 0, [65]),
]


@pytest.mark.parametrize("case, onsets, windows, n_windows, detected, false_alarms, delays",
                         CASES, ids=[c[0] for c in CASES])
def test_event_matching(case, onsets, windows, n_windows, detected, false_alarms, delays):
    s = score_onsets({k: [m * M for m in v] for k, v in onsets.items()}, windows, SPAN_A)
    assert len(s.windows) == n_windows
    assert s.n_detected == detected
    assert len(s.false_alarms) == false_alarms
    assert s.delays_s == [d * 60.0 for d in delays]


def test_precision_recall_f1_and_false_alarms_per_sensor_day():
    spans = [Span("A", 0, 2 * DAY), Span("B", 0, 2 * DAY)]
    windows = [W(100, 200, wid="a1"), W(1000, 1100, wid="a2"), W(100, 200, wid="b1", series="B"),
               W(500, 600, wid="b2", series="B")]
    onsets = {"A": [150 * M, 2800 * M], "B": [120 * M, 2000 * M, 2500 * M, 2600 * M]}
    s = score_onsets(onsets, windows, spans)
    # detected a1, b1; missed a2, b2; false alarms: A 2800, B 2000/2500/2600
    assert (s.n_detected, len(s.false_alarms)) == (2, 4)
    assert s.precision == pytest.approx(2 / 6)
    assert s.recall == pytest.approx(0.5)
    assert s.f1 == pytest.approx(2 * (1 / 3) * 0.5 / (1 / 3 + 0.5))
    assert s.sensor_days == pytest.approx(4.0)
    assert s.false_per_sensor_day == pytest.approx(1.0)
    assert s.delay_median_s == pytest.approx(np.median([50 * 60, 20 * 60]))
    assert [w.id for w in s.missed] == ["a2", "b2"]
    assert s.summary()["missed"] == ["a2", "b2"]


@pytest.mark.parametrize("onsets, windows, precision, recall, f1", [
    ({}, [], None, None, None),                       # nothing to count: undefined, not 0 or 1
    ({"A": [10 * M]}, [], 0.0, None, None),           # no labels: precision 0, recall undefined
    ({}, [W(100, 200)], None, 0.0, None),             # silent detector: recall 0, precision undefined
    ({"A": [10 * M]}, [W(100, 200)], 0.0, 0.0, 0.0),  # wrong everywhere: F1 0
    ({"A": [150 * M]}, [W(100, 200)], 1.0, 1.0, 1.0),
])
def test_undefined_ratios_are_none(onsets, windows, precision, recall, f1):
    s = score_onsets(onsets, windows, SPAN_A)
    assert (s.precision, s.recall, s.f1) == (precision, recall, f1)


def test_late_s_lets_an_onset_after_the_end_detect():
    w = [W(100, 200)]
    assert score_onsets({"A": [210 * M]}, w, SPAN_A).n_detected == 0
    s = score_onsets({"A": [210 * M]}, w, SPAN_A, late_s=600)
    assert (s.n_detected, len(s.false_alarms), s.delays_s) == (1, 0, [110 * 60.0])


def test_series_without_a_span_is_not_scored_and_zero_days_give_none():
    s = score_onsets({"B": [5 * M]}, [W(0, 10, series="B")], SPAN_A)
    assert (len(s.windows), s.onsets, len(s.false_alarms)) == (0, 0, 0)
    # With a span of its own, another series' onset at a window's time is a false alarm of that series.
    s = score_onsets({"B": [150 * M]}, [W(100, 200)], SPAN_A + [Span("B", 0, DAY)])
    assert (s.n_detected, s.false_alarms) == (0, [("B", 150 * M)])
    s = score_onsets({"A": [0]}, [], [Span("A", 0, 0)])
    assert len(s.false_alarms) == 1 and s.false_per_sensor_day is None


@pytest.mark.parametrize("call, message", [
    (lambda: score_onsets({}, [], SPAN_A, late_s=-1), "late_s must be 0 or more"),
    (lambda: score_onsets({}, [], SPAN_A * 2), "two spans for series 'A'"),
    (lambda: score_onsets({}, [W(1, 2, wid="x"), W(3, 4, wid="x")], SPAN_A), "duplicate label window id(s): x"),
    (lambda: LabelWindow("A", 10, 5, id="w"), "label window w: end before start"),
    (lambda: LabelWindow("A", 1, 5, "maybe", "w"), "kind must be one of anomaly, ignore (got 'maybe')"),
    (lambda: Span("A", 10, 5), "span of A: end before start"),
    (lambda: onsets_by_series(["A"], [1, 2], [0, 1]), "1 series ids, 2 times and 2 flags"),
    (lambda: windows_from_rows("A", [1, 2], [1]), "2 times and 1 labels"),
    (lambda: windows_from_rows("A", [2, 1], [1, 1]), "rows must be in time order"),
])
def test_bad_input_is_refused_with_a_clear_message(call, message):
    with pytest.raises(ValueError) as exc:
        call()
    assert message in str(exc.value)


def test_onsets_by_series_from_flags():
    out = onsets_by_series(["A", "B", "A", "B", "A"], [1, 2, 3, 4, 5], [1, 0, 0, 1, 1])
    assert {k: v.tolist() for k, v in out.items()} == {"A": [1, 5], "B": [4]}
    assert onsets_by_series([], [], []) == {}


@pytest.mark.parametrize("labels, expected", [
    ([0, 0, 0], []),
    ([1, 1, 1], [(0, 2)]),
    ([0, 1, 1, 0, 0, 1], [(1, 2), (5, 5)]),
    ([1, 0, 1], [(0, 0), (2, 2)]),
    ([], []),
])
def test_windows_from_row_labels(labels, expected):
    ts = np.arange(len(labels), dtype=np.int64) * M
    ws = windows_from_rows("S", ts, np.array(labels, np.int8), prefix="x:")
    assert [(w.start_ns // M, w.end_ns // M) for w in ws] == expected
    assert [w.id for w in ws] == [f"x:S#{k + 1}" for k in range(len(expected))]


def test_table_shows_dashes_for_undefined_values():
    s = score_onsets({}, [], SPAN_A)
    text = format_table([("sim", "cusum", s)])
    assert text.splitlines()[0].startswith("| feed | detector | windows |")
    assert text.splitlines()[2] == "| sim | cusum | 0 | 0 | 0 | - | - | - | 0.00 | - |"
    s = score_onsets({"A": [150 * M, 600 * M]}, [W(100, 200)], SPAN_A)
    assert text.count("\n") == 2
    assert format_table([("sim", "x", s)]).splitlines()[2] == "| sim | x | 1 | 1 | 1 | 0.50 | 1.00 | 0.67 | 1.00 | 50.0 min |"
