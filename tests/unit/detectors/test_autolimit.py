"""`limit: auto` (issue 16 item 4): limits resolved per sensor from each sensor's training scores, by a
quantile or a false-alarm rate per sensor-day; the resolution, the rate grammar, the rules' behaviour
and the lines check-config and detect print."""

from __future__ import annotations

import math

import numpy as np
import pytest

from config.errors import ConfigError
from detectors.autolimit import parse_far, planned_lines, resolve_limit, resolved_lines, training_quantile
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import TEST_DEVICES, TEST_SITES, local_ns, make_config
from tests.unit.detectors.test_conformance import to_batch

MIN = 60 * 10**9


@pytest.mark.parametrize("text,per_day", [
    ("1/day", 1.0), ("2/week", 2 / 7), ("0.5/h", 12.0), ("3 / hour", 72.0), ("1e-1/d", 0.1), (4, 4.0), (0.25, 0.25),
])
def test_far_grammar(text, per_day):
    assert parse_far(text) == pytest.approx(per_day)


@pytest.mark.parametrize("text,message", [
    ("1/fortnight", "must be a rate like 1/day, 2/week or 0.5/h (got '1/fortnight')"),
    ("day", "must be a rate like 1/day, 2/week or 0.5/h (got 'day')"),
    ("0/day", "must be a positive rate (got '0/day')"),
    (-1, "must be a positive rate (got -1)"),
    (True, "must be a rate like 1/day, 2/week or 0.5/h (got True)"),
])
def test_far_grammar_refusals(text, message):
    with pytest.raises(ValueError) as exc:
        parse_far(text)
    assert str(exc.value) == message


def test_resolve_limit_table():
    s = np.arange(1000, dtype=float)
    assert resolve_limit(s, 0.9) == pytest.approx(np.quantile(s, 0.9))        # 100 above: empirical
    assert resolve_limit(s, 0.99) == pytest.approx(np.quantile(s, 0.99))      # 10 above: still empirical
    assert resolve_limit([math.inf, math.nan], 0.99) == math.inf                # no finite score: never alarms
    assert resolve_limit(np.zeros(50), 0.999) == 0.0                            # a constant signal
    assert resolve_limit(np.r_[np.zeros(50), [math.inf] * 5], 0.9) == 0.0       # infinities take no part


def test_resolve_limit_extrapolates_an_exponential_tail():
    """1,000 Exp(1) scores and q = 1 - 1e-4: far beyond the data (0.1 exceedances expected); the fitted
    tail gives about ln(1e4) = 9.2, where the sample's maximum is near ln(1000) = 6.9."""
    rng = np.random.default_rng(5)
    lims = [resolve_limit(rng.exponential(1.0, 1000), 1 - 1e-4) for _ in range(20)]
    assert np.median(lims) == pytest.approx(math.log(1e4), rel=0.1)


def test_training_quantile_from_far_and_the_window_span():
    class P:
        limit_quantile = None
        far = 1.0
    # 1,440 readings a minute apart: 1,440 readings per day, so q = 1 - 1/1440.
    assert training_quantile(P, 1440, 1439 * MIN) == pytest.approx(1 - 1 / 1440)
    P.far = 2.0   # readings every 5 minutes: 288 a day
    assert training_quantile(P, 288, 287 * 5 * MIN) == pytest.approx(1 - 2 / 288)


def cfg_for(**rule):
    return make_config(rules=[{"id": "R", **rule}], devices=TEST_DEVICES, sites=TEST_SITES)


def feed(values_by_sensor: dict[int, np.ndarray], start="2025-06-02 00:00", step=MIN):
    t0 = local_ns(start)
    rows = [(s, t0 + i * step, {"v": float(v)}, 0) for s, vals in values_by_sensor.items() for i, v in enumerate(vals)]
    return sorted(rows, key=lambda r: r[1])


def onsets(dets, sensor) -> int:
    sev = [r["severity"] for r in dets.sorted().records() if r["sensor"] == sensor]
    return sum(1 for a, b in zip(["clear"] + sev, sev) if a == "clear" and b != "clear")


@pytest.mark.parametrize("rtype,keys", [
    ("robust_z", {"window": 60, "min_count": 30}),
    ("ewma", {"warmup": 60, "lam": 0.2}),
    ("cusum", {"warmup": 60}),
])
def test_far_one_a_day_gives_about_one_alarm_a_day_per_sensor(rtype, keys):
    """Ten days of one-minute noise (Gaussian on one sensor, heavy-tailed t(3) on another): a day of
    training, then about one alarm onset per sensor-day; each sensor gets its own limit, the heavy-tailed
    one the higher, and a fixed limit (the detector's default) is far off for it."""
    rng = np.random.default_rng(11)
    n = 10 * 1440
    vals = {0: rng.normal(0, 1, n), 1: rng.standard_t(3, n)}
    cfg = cfg_for(type=rtype, field="v", limit="auto", far="1/day", limit_train=1440, **keys)
    rs = RuleSet.from_config(cfg)
    dets = rs.process(to_batch(feed(vals)))
    first = local_ns("2025-06-02 00:00") + 1440 * MIN
    assert all(t >= first for t in dets.ts_ns.tolist())   # the training day raises nothing
    det = rs.rules[0]
    lim = det.auto_lim_[[0, 1]]
    assert np.isfinite(lim).all() and lim[1] > lim[0]
    for s in (0, 1):
        per_day = onsets(dets, s) / 9
        assert 0.1 <= per_day <= 5, (rtype, s, per_day)


def test_a_spike_after_training_is_caught_and_one_during_training_is_not():
    rng = np.random.default_rng(3)
    v = rng.normal(0, 1, 600)
    v[100] += 30   # during training (the first 200 scored readings after min_count)
    v[500] += 30
    cfg = cfg_for(type="robust_z", field="v", window=30, min_count=10, limit="auto", limit_quantile=0.999,
                  limit_train=200)
    dets = RuleSet.from_config(cfg).process(to_batch(feed({0: v})))
    hit = [r for r in dets.records() if r["severity"] != "clear"]
    t0 = local_ns("2025-06-02 00:00")
    assert [(r["ts_ns"] - t0) // MIN for r in hit] == [500]
    assert hit[0]["limit"] == pytest.approx(hit[0]["context"]["limit_auto"])


@pytest.mark.slow
def test_hotelling_auto_limit_is_in_t2_units():
    rng = np.random.default_rng(4)
    n = 400
    a = rng.normal(0, 1, n)
    rows = [(0, local_ns("2025-06-02 00:00") + i * MIN, {"leq": 60 + a[i], "lmax": 70 + a[i] + rng.normal(0, 0.3),
                                                          "v": rng.normal(0, 1)}, 0) for i in range(n)]
    rows.append((0, rows[-1][1] + MIN, {"leq": 70.0, "lmax": 60.0, "v": 0.0}, 0))   # leq and lmax disagree
    cfg = cfg_for(type="hotelling_t2", fields=["leq", "lmax", "v"], warmup=50, limit="auto", limit_quantile=0.99,
                  limit_train=200)
    rs = RuleSet.from_config(cfg)
    dets = rs.process(to_batch(rows))
    det = rs.rules[0]
    last = [r for r in dets.records() if r["ts_ns"] == rows[-1][1]]
    assert last and last[0]["severity"] == "yellow"
    assert last[0]["limit"] == pytest.approx(det.auto_lim_[0] * det.limit)
    assert last[0]["value"] > last[0]["limit"]


@pytest.mark.parametrize("rule,message", [
    ({"type": "robust_z", "field": "v", "limit": "auto"},
     "config: rules[0]: limit: auto needs exactly one of far (false alarms per sensor-day, e.g. 1/day) or limit_quantile (e.g. 0.999) "
     "(got neither)"),
    ({"type": "robust_z", "field": "v", "limit": "auto", "far": "1/day", "limit_quantile": 0.99},
     "config: rules[0]: limit: auto needs exactly one of far (false alarms per sensor-day, e.g. 1/day) or limit_quantile (e.g. 0.999) "
     "(got far, limit_quantile)"),
    ({"type": "ewma", "field": "v", "far": "1/day"}, "config: rules[0]: far applies only with limit: auto"),
    ({"type": "cusum", "field": "v", "limit": "auto", "far": "1/day", "h": 4.0},
     "config: rules[0]: h and limit: auto exclude each other (auto resolves the limit h sets)"),
    ({"type": "cusum", "field": "v", "limit": "auto", "far": "1/day", "after_alarm": "reset"},
     "config: rules[0]: limit: auto goes with after_alarm: hold only (reset restarts S at the limit h, so its scores depend on h)"),
    ({"type": "robust_z", "field": "v", "limit": "auto", "far": "1/fortnight"},
     "config: rules[0].far: must be a rate like 1/day, 2/week or 0.5/h (got '1/fortnight')"),
    ({"type": "robust_z", "field": "v", "limit": "high"}, "config: rules[0].limit: must be one of auto (got 'high')"),
])
def test_config_errors(rule, message):
    with pytest.raises(ConfigError) as exc:
        RuleSet.from_config(cfg_for(**rule))
    assert str(exc.value) == message


def test_check_config_and_detect_lines():
    cfg = cfg_for(type="robust_z", field="v", limit="auto", far="2/day", limit_train=50)
    assert planned_lines(cfg) == [
        "  rule R: limit auto: far 2/day of each sensor's first 50 scored readings; resolved per sensor when its "
        "training window is full"]
    rs = RuleSet.from_config(cfg)
    rng = np.random.default_rng(1)
    rs.process(to_batch(feed({0: rng.normal(0, 1, 100), 1: rng.normal(0, 1, 30)})))
    lines = resolved_lines(rs)
    lim = rs.rules[0].auto_lim_[0]
    assert lines == [
        "rule R: limit auto: far 2/day of each sensor's first 50 scored readings: resolved for 1 of 2 sensor(s) "
        f"with scores (1 still training), limit min {lim:.4g} median {lim:.4g} max {lim:.4g}",
        f"rule R: limit per sensor: N-PERMIT={lim:.4g}"]
    assert planned_lines(cfg_for(type="robust_z", field="v")) == []


def test_detect_prints_the_resolved_limits_on_stderr(tmp_path, monkeypatch, capsys):
    from tests.unit.detectors.test_detect_any_csv import run_detect

    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - {id: Z, type: robust_z, field: value, flags: any, window: 10, min_count: 5, limit: auto,"
        " limit_quantile: 0.99, limit_train: 20}\n")
    rng = np.random.default_rng(8)
    lines = ["ts,device_id,value"] + [f"2025-06-01T{i // 60:02d}:{i % 60:02d}:00Z,E{d},{rng.normal():.3f}"
                                      for i in range(60) for d in (1, 2)]
    (tmp_path / "f.csv").write_text("\n".join(lines) + "\n")
    assert run_detect(["f.csv", "--rules", "r.yaml", "--kind", "generic", "--no-progress"]) == 0
    err = [x for x in capsys.readouterr().err.splitlines() if "rule Z" in x]
    assert len(err) == 2
    assert err[0].startswith("citywatch detect: rule Z: limit auto: quantile 0.99 of each sensor's first 20 scored "
                             "readings: resolved for 2 of 2 sensor(s) with scores (0 still training), limit min ")
    assert err[1].startswith("citywatch detect: rule Z: limit per sensor: E1=")


def test_training_and_resolved_limits_survive_a_snapshot(tmp_path):
    """The training buffer and limits are detector state (`auto_*_`): a restart mid-feed resumes them."""
    from core import Detections
    from detectors import snapshot
    from tests.unit.detectors.test_conformance import assert_same

    cfg = cfg_for(type="robust_z", field="v", limit="auto", far="2/day", limit_train=50)
    rng = np.random.default_rng(1)
    rows = feed({0: rng.normal(0, 1, 300), 1: rng.normal(0, 2, 300)})
    whole = RuleSet.from_config(cfg).process(to_batch(rows))
    for k in (40, 150):   # while training, and after the limits resolved
        first = RuleSet.from_config(cfg)
        part = first.process(to_batch(rows[:k]))
        snapshot.save(first, tmp_path / "s.npz")
        again = RuleSet.from_config(cfg)
        snapshot.load(again, tmp_path / "s.npz")
        assert_same(whole, Detections.concat([part, again.process(to_batch(rows[k:]))]))
