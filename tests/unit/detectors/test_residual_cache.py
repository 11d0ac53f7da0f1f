"""The cached models of pca_residual and group_residual: with `fit: train` the model is fixed after
training, so each sensor (group) is decomposed once and its later readings (buckets) are scored by matrix
products; a changed covariance or set of judged members recomputes it; the cache is no state (a restored
snapshot rebuilds it) and never changes a finding (the per-reading reference agrees)."""

from __future__ import annotations

import numpy as np

from detectors import residual, snapshot
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import batch, local_ns, series, small_config
from tests.unit.detectors.reference import ReferenceRuleSet
from tests.unit.detectors.test_conformance import assert_same
from tests.unit.detectors.test_group_t2 import config, minutes, rows_for
from tests.unit.detectors.test_residual import RULE as PCA
from tests.unit.detectors.test_residual import minutes as pca_minutes
from tests.unit.detectors.test_residual import shifted

MIN = 60 * 10**9
GROUP = {"id": "GR", "type": "group_residual", "kind": "noise", "field": "leq", "group_by": "site", "warmup": 60}


def counting(monkeypatch, name: str) -> list[int]:
    """Rows passed to each call of residual.`name` (the eigendecomposition)."""
    calls: list[int] = []
    real = getattr(residual, name)

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(len(out[-1]))
        return out

    monkeypatch.setattr(residual, name, spy)
    return calls


def pca_rows(n: int):
    values = pca_minutes(n)
    values[150] = shifted(values[150], lmax=8.0)
    return series("N-PLAIN", local_ns("2025-06-05 10:00"), values)


def test_pca_residual_decomposes_once_after_training(monkeypatch):
    calls = counting(monkeypatch, "residual_model")
    cfg = small_config([PCA])
    rows = pca_rows(200)
    rs = RuleSet.from_config(cfg)
    found = rs.process(batch(rows, cfg))
    assert_same(found, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    assert (found.severity > 0).any()          # reading 150 flags, through the cached model
    assert calls == [1]                        # 80 judged readings, one eigendecomposition
    assert not any("_model" in k for k in snapshot_state(rs))   # a cache, not state


def test_pca_residual_online_recomputes_as_the_model_learns(monkeypatch):
    calls = counting(monkeypatch, "residual_model")
    cfg = small_config([dict(PCA, fit="online", lam=0.05)])
    rows = pca_rows(160)
    found = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(found, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    # Each learned reading changes the model; the flagged reading 150 is not learned, so 151 reuses it.
    assert len(calls) == 39


def snapshot_state(rs) -> list[str]:
    return [name for key, obj in snapshot._pieces(rs) for name in snapshot._describe(key, obj, {})[2]]


def test_a_restored_snapshot_rebuilds_the_cache(tmp_path):
    cfg = small_config([PCA])
    rows = pca_rows(200)
    whole = RuleSet.from_config(cfg).process(batch(rows, cfg))
    first = RuleSet.from_config(cfg)
    head = first.process(batch(rows[:140], cfg))
    snapshot.save(first, tmp_path / "s.npz")
    second = RuleSet.from_config(cfg)
    snapshot.load(second, tmp_path / "s.npz")
    tail = second.process(batch(rows[140:], cfg))
    from core import Detections

    assert_same(Detections.concat([head, tail]), whole)


def test_group_residual_train_fixes_the_model_and_decomposes_per_member_set(monkeypatch):
    calls = counting(monkeypatch, "masked_model")
    rule = dict(GROUP, fit="train")
    cfg = config(rule)
    values = minutes(200)
    values["N-B"][150] += 8.0
    rows = rows_for(values)
    del rows[3 * 170 + 2]                      # N-C misses minute 170: judged on N-A and N-B
    rs = RuleSet.from_config(cfg)
    found = rs.process(batch(rows, cfg))
    assert_same(found, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    assert any(c["top_device"] == "N-B" for c, s in zip(found.context, found.severity) if s > 0)
    gr = rs.rules[0]
    cov = gr.cov_.copy()
    later = [(d, t + 200 * MIN, {"leq": v["leq"] + 0.5}, f) for d, t, v, f in rows_for(minutes(30, seed=2))]
    rs.process(batch(later, cfg))
    assert np.array_equal(gr.cov_, cov)        # fixed after the warm-up
    # One decomposition once all three are warm, one for the bucket without N-C, one when it is back.
    assert [c for c in calls if c] == [1, 1, 1]


def test_group_residual_online_stays_as_it_was():
    values = minutes(200)
    values["N-C"][120] -= 9.0
    cfg = config(GROUP)
    rows = rows_for(values)
    found = RuleSet.from_config(cfg).process(batch(rows, cfg))
    assert_same(found, ReferenceRuleSet(cfg).process(batch(rows, cfg)))
    assert RuleSet.from_config(cfg).rules[0].window == "60 s buckets, ewm 100 buckets"
    assert RuleSet.from_config(config(dict(GROUP, fit="train"))).rules[0].window == "60 s buckets, first 60 buckets"
