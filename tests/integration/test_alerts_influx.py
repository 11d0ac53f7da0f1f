"""The InfluxDB sink writes every transition to the `alerts` measurement of a real InfluxDB 1.x."""

from __future__ import annotations

import pytest

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.sinks import build_sinks
from alerts.store import AlertStore
from config.connections import Connections
from tests.unit.alerts.helpers import det, make_cfg

pytestmark = pytest.mark.integration


def test_every_transition_is_a_point(tmp_path, influx):
    cfg = make_cfg({"sinks": {"audit": {"type": "influx", "measurement": "alerts"}},
                    "route": {"receivers": ["audit"], "group_interval_s": 0}})
    cfg = cfg.model_copy(update={"connections": Connections.model_validate(
        {"influx": {"url": influx.url, "database": influx.database}})})
    sinks = build_sinks(cfg, influx.env())
    store = AlertStore(tmp_path / "alerts.sqlite")
    engine = AlertEngine(cfg, store, sinks, dispatcher=Dispatcher(sinks, store, 0.05, 0.2))
    engine.process(det([(0, 0, "N-day", "yellow", 72), (0, 60, "N-day", "orange", 76), (0, 120, "N-day", "clear", 60)]))
    assert engine.flush(20)
    engine.stop()
    assert store.delivery_counts() == {"sent": 3}
    rows = influx.query('SELECT "key", "value", "transition", "severity" FROM "alerts"')
    values = rows[0]["series"][0]["values"] if rows and rows[0].get("series") else []
    assert [(v[3], v[4]) for v in values] == [("firing", "yellow"), ("severity", "orange"), ("resolved", "orange")]
    assert [v[1].rsplit(":", 1)[1] for v in values] == ["1", "2", "3"]
