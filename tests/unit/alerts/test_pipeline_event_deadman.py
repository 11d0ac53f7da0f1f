"""The deadman in event time (issue 12): a device is judged by its own reports and the feed's progress as the
rows arrived, so the Offline alerts do not depend on how arrivals are grouped into detector batches, a device
whose messages merely trail other devices' (within the reorder slack) is never called offline, and an Offline
starts when the silence crossed the limit."""

from __future__ import annotations

import numpy as np
import pytest

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.model import alert_id_for
from alerts.store import AlertStore
from citywatch.pipeline import EVENT_REORDER_SLACK_S, DetectionPipeline
from config import load_config
from core import ReadingBatch
from tests.unit.alerts.helpers import T0, NoScheduler, RecordingSink, S, write_config

ALERTS = """
alerting:
  sinks: {rec: {type: terminal}}
  route: {receivers: [rec], group_wait_s: 0, group_interval_s: 0}
  store_path: STORE
  detector_state_path: STATE
"""
RULES = "rules:\n  - {id: Offline, type: deadman, kind: any}\n"



def _pipeline(tmp_path, tag, env=None):
    d = write_config(tmp_path / tag, ALERTS.replace("STORE", str(tmp_path / f"{tag}.sqlite"))
                                         .replace("STATE", str(tmp_path / f"{tag}.npz")), RULES)
    ingest = d / "ingest.yaml"
    ingest.write_text(ingest.read_text().replace("  clock: wall", "  clock: event", 1))
    cfg = load_config(d, {})
    sink = RecordingSink()
    store = AlertStore(tmp_path / f"{tag}.sqlite")
    # Every device goes offline: some 200 notices, which the default 50/s rate limit would spread over 3 s.
    dispatcher = Dispatcher({"rec": sink}, store, 0.01, 0.02, rates={"rec": 1e6})
    engine = AlertEngine(cfg, store, {"rec": sink}, dispatcher=dispatcher, env=env or {})
    pipe = DetectionPipeline(cfg, {}, d, listen=False, engine=engine, threaded=False)
    pipe.start(scheduler=NoScheduler())
    return cfg, pipe, sink


def _feed(cfg, pipe):
    """Arrivals (ReadingBatch per message, in arrival order): every device once at T0; then A reports every
    R for 10 R, falls silent for 10 R and sends the held rows in one late back-fill; C reports every R / 2;
    B reports just inside its limit (every after - 20 s) but each of its messages arrives behind C's newer
    readings by half the reorder slack, so that on arrival it looks 10 s past its limit."""
    gas = [i for i, dev in enumerate(cfg.devices) if dev.kind == "gas"]
    a, b, c = gas[0], gas[1], gas[2]
    dm = next(r for r in pipe.rules.rules if r.rule_id == "Offline")
    after_a, after_b = float(dm.after_s[dm._local[a]]), float(dm.after_s[dm._local[b]])
    r_s = int(after_a // 4)
    lag_ns = int(EVENT_REORDER_SLACK_S / 2 * S)
    every = np.arange(pipe.rules.n_sensors)
    msgs = [(T0, 0, ReadingBatch(every, np.full(len(every), T0), {"p": np.full(len(every), 2.0)}))]
    end = T0 + 20 * r_s * S
    for k in range(1, 41):   # C, on time
        t = T0 + k * r_s * S // 2
        msgs.append((t, 1, ReadingBatch([c], [t], {"p": [2.0]})))
    for k in range(1, 11):   # A until its gap
        t = T0 + k * r_s * S
        msgs.append((t, 2, ReadingBatch([a], [t], {"p": [2.0]})))
    ts = T0 + np.arange(11, 21) * r_s * S   # A's back-fill: everything held since 10 R, in one message
    msgs.append((end, 2, ReadingBatch(np.full(10, a), ts, {"p": np.full(10, 2.0)})))
    step_b = int((after_b - 20) * S)
    for t in range(T0 + step_b, end, step_b):   # B, arriving late
        msgs.append((t + lag_ns, 3, ReadingBatch([b], [t], {"p": [2.0]})))
    msgs.sort(key=lambda m: m[:2])
    return a, b, after_a, r_s, [m for _, _, m in msgs]


def _offline(cfg, sink):
    return sorted({n.alert_id for n in sink.notices if n.alert_id.startswith("Offline.") and n.transition == "firing"})


@pytest.mark.slow
def test_offline_in_event_time_does_not_depend_on_batching_or_in_flight_lag(tmp_path):
    results = []
    for tag, group in (("one_by_one", 1), ("in_threes", 3), ("all_at_once", 10_000)):
        cfg, pipe, sink = _pipeline(tmp_path, tag)
        try:
            a, b, after_a, r_s, msgs = _feed(cfg, pipe)
            for i in range(0, len(msgs), group):
                pipe.on_batch(ReadingBatch.concat(msgs[i:i + group]))
            pipe.tick()
            pipe.engine.flush(5)
            assert pipe.counters["errors"] == 0
            results.append(_offline(cfg, sink))
        finally:
            pipe.stop()
    assert results[0] == results[1] == results[2]
    ids = results[0]
    dev_a, dev_b = cfg.devices[a].id, cfg.devices[b].id
    # A: one Offline, from its last report before the gap + its limit (not from whenever a batch ended).
    start_a = T0 + 10 * r_s * S + int(after_a * S)
    assert [x for x in ids if f".{dev_a}." in x] == [alert_id_for("Offline", dev_a, start_a)]
    # B trails the feed by less than the slack: never offline.
    assert not [x for x in ids if f".{dev_b}." in x]


def test_notices_carry_the_run_id(tmp_path):
    cfg, pipe, sink = _pipeline(tmp_path, "run", env={"CITYWATCH_RUN_ID": "speed10"})
    try:
        *_, msgs = _feed(cfg, pipe)
        pipe.on_batch(ReadingBatch.concat(msgs))
        pipe.engine.flush(5)
        assert sink.notices and {n.payload.get("run_id") for n in sink.notices} == {"speed10"}
    finally:
        pipe.stop()


def test_the_service_slack_covers_the_publishers_reorder_window():
    from simulators.publisher import REORDER_WINDOW_MS
    assert EVENT_REORDER_SLACK_S * 1000 > REORDER_WINDOW_MS
