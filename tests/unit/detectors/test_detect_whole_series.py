"""`detect` with the deadman on cuts the feed into slices of event time, advancing the clock after each, so
silence is judged as it would have been live. A device no clock-driven rule judges (a generic series) needs no
slicing: its chunk goes to the rule set whole, with the same flags, in one call instead of one per slice."""

from __future__ import annotations

import numpy as np

from detectors.registry import RuleSet
from tests.unit.detectors.test_detect_any_csv import run_detect, work  # noqa: F401  (work: a fixture)

RULES = """\
rules:
  - {id: z, type: robust_z, field: value, window: 30, z: 3}
  - {id: e, type: ewma, field: value, lam: 0.2, width: 3}
  - {id: c, type: cusum, field: value, k: 0.5, h: 5}
"""


def _series(path, n: int = 2_000) -> None:
    rng = np.random.default_rng(7)
    v = rng.normal(10, 1, n)
    v[1200:1260] += 8  # a step the rules see
    t0 = 1_748_736_000
    path.write_text("ts,value\n" + "".join(f"{t0 + 60 * i},{x:.3f}\n" for i, x in enumerate(v)))


def test_a_generic_series_is_processed_whole_with_the_same_flags(work, capsys, monkeypatch):
    (work / "z.yaml").write_text(RULES)
    _series(work / "s.csv")
    common = ["s.csv", "--rules", "z.yaml", "--kind", "generic", "--device", "S1", "--time-column", "ts",
              "--epoch-unit", "s", "--flags", "--no-progress"]
    assert run_detect([*common, "--no-deadman"]) == 0
    alone = capsys.readouterr().out.split()
    calls: list[int] = []
    process = RuleSet.process

    def counted(self, batch):
        calls.append(len(batch))
        return process(self, batch)

    monkeypatch.setattr(RuleSet, "process", counted)
    assert run_detect(common) == 0
    with_deadman = capsys.readouterr().out.split()
    assert with_deadman == alone and "1" in alone
    # 2,000 one-minute readings: 400 slices of 300 s if sliced; whole, a call per chunk the reader hands over.
    assert sum(calls) == 2_000 and len(calls) < 10
