"""One fading battery holds one Batt alert (issue 12: a slow, noisy crossing raised 7 alerts in a day).

The shipped Batt rule (detectors.device_health.Battery hysteresis_v, rules.yaml clear_for_s) runs through the real
detectors and alert engine on a day of a cell fading 3.6 -> 3.0 V with sensor noise and a transmit dip
at every report, the way simulators/gas_sensor.py fades it (fault G9)."""

from __future__ import annotations

import numpy as np
import pytest

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.store import AlertStore
from citywatch.pipeline import DetectionPipeline
from config import load_config
from core import ReadingBatch
from tests.unit.alerts.helpers import T0, RecordingSink, S, write_config

ALERTS = """
alerting:
  sinks: {rec: {type: terminal}}
  route: {receivers: [rec], group_interval_s: 0}
  store_path: STORE
"""


def fade_day(seed: int, sample_s: int = 60, report_every: int = 5, dip_v: float = 0.2, noise_v: float = 0.02):
    """(ts_s, batt_v): 24 h falling 3.6 -> 3.0 V, gaussian noise, a dip at every report; 2 decimals."""
    rng = np.random.default_rng(seed)
    t = np.arange(0, 86400, sample_s)
    v = 3.6 - 0.6 * t / 86400 + rng.normal(0, noise_v, len(t))
    v[np.arange(len(t)) % report_every == 0] -= dip_v
    return t, np.round(v, 2)


def run_day(tmp_path, rules_yaml: str | None, seed: int):
    rules = rules_yaml if rules_yaml is not None else None
    d = write_config(tmp_path / f"config{seed}", ALERTS.replace("STORE", str(tmp_path / f"a{seed}.sqlite")), rules)
    cfg = load_config(d, {})
    sink = RecordingSink()
    store = AlertStore(tmp_path / f"a{seed}.sqlite")
    # The day's notices (over a hundred, most of them the other devices' Offline) without the default 50/s
    # rate limit's wait.
    dispatcher = Dispatcher({"rec": sink}, store, 0.01, 0.02, rates={"rec": 1e6})
    engine = AlertEngine(cfg, store, {"rec": sink}, dispatcher=dispatcher)
    pipe = DetectionPipeline(cfg, {}, d, clock=None, listen=False, engine=engine)
    pipe.engine.start()
    gas = next(i for i, dev in enumerate(cfg.devices) if dev.kind == "gas")
    p_set = cfg.devices[gas].set_pressure_kpa
    t, v = fade_day(seed)
    for lo in range(0, len(t), 60):  # an hour of readings per batch, as a device back-filling would send
        sl = slice(lo, lo + 60)
        n = len(t[sl])
        pipe.on_batch(ReadingBatch(np.full(n, gas), T0 + t[sl] * S, {"p": np.full(n, p_set), "batt_v": v[sl]}))
    pipe.tick(T0 + 86400 * S)
    engine.flush(5)
    batt = [n for n in sink.notices if n.payload["rule_id"] == "Batt"]
    engine.stop()
    return batt


@pytest.mark.slow
def test_a_fading_noisy_battery_holds_one_alert_for_the_day(tmp_path):
    for seed in (1, 2, 3):
        batt = run_day(tmp_path, None, seed)  # the shipped rules.yaml and detector defaults
        firing = [n for n in batt if n.transition == "firing"]
        assert len({n.alert_id for n in firing}) == 1, [(n.alert_id, n.transition) for n in batt]
        assert not [n for n in batt if n.transition == "resolved"]
        assert batt[-1].payload["peak_severity"] == "orange"  # it went on to orange within the same alert
        # ... once: no yellow/orange see-saw at every transmit dip, no flapping
        assert [n.payload["severity"] for n in batt if n.transition == "severity"] == ["orange"]
        assert not [n for n in batt if n.transition == "flapping"]


def test_the_old_settings_split_the_same_fade_into_many_alerts(tmp_path):
    # The settings before issue 12 (hysteresis 0.05 V, no clear_for_s): the test above fails on them.
    old = "rules:\n  - {id: Batt, type: battery, kind: gas, hysteresis_v: 0.05}\n"
    batt = run_day(tmp_path, old, 1)
    assert len({n.alert_id for n in batt if n.transition == "firing"}) > 3
