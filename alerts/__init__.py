"""Alerts: detections become alert lifecycles, routed, grouped, muted and sent once per transition.

`AlertEngine` (engine.py) is the entry point; the lifecycle (lifecycle.py), routing, muting and grouping
it uses are functions of their inputs and an injected clock, without I/O. `AlertStore` keeps state in
SQLite before any notice leaves, and `Dispatcher` sends notices through the sinks of the `sinks` package
(mqtt, webhook, influx, terminal, and the channels that reach people).
"""

from alerts.engine import AlertEngine
from alerts.model import Alert, Notice
from alerts.sinks.base import Sink, SinkError
from alerts.store import AlertStore

__all__ = ["AlertEngine", "Alert", "Notice", "Sink", "SinkError", "AlertStore"]
