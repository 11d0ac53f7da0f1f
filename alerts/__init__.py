"""Alerts: detections become alert lifecycles, routed, grouped, muted and sent once per transition.

`AlertEngine` (engine.py) is the entry point; the lifecycle, routing, muting and grouping it uses are
pure functions of their inputs and an injected clock. `AlertStore` keeps state in SQLite before any
notice leaves, and `Dispatcher` sends notices through sinks (mqtt, webhook, influx, terminal).
"""

from alerts.engine import AlertEngine
from alerts.model import Alert, Notice
from alerts.sink import Sink, SinkError
from alerts.store import AlertStore

__all__ = ["AlertEngine", "Alert", "Notice", "Sink", "SinkError", "AlertStore"]
