"""The Prometheus endpoint never stops the service: a port in use is one error line, and the endpoint
stays off (issue 17); `citywatch status` words the detection figures of a self-metrics point."""

from __future__ import annotations

import logging
import socket

from citywatch.commands.status import detection_lines
from citywatch.prometheus import PrometheusEndpoint


def test_a_port_in_use_is_logged_not_raised(caplog):
    caplog.set_level(logging.ERROR, "citywatch.prometheus")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ep = PrometheusEndpoint(service=None, host="127.0.0.1", port=port)
        assert ep.start() is False
        ep.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith(f"Prometheus endpoint not started on 127.0.0.1:{port}: ")
    assert "ingest.metrics_http" in lines[0]


def test_status_words_the_detection_backlog_tick_and_alert_latency():
    row = {"detect_rows_queued": 12_345, "detect_oldest_age_s": 14.2, "detect_event_lag_s": 61.0,
           "detect_steps": 70, "detect_deferred_steps": 60, "tick_runs": 600, "tick_late": 3, "tick_skipped": 9,
           "alert_notices": 4, "alert_latency_count": 3, "alert_latency_p99_le_s": 0.25}
    assert detection_lines(row) == [
        ("detection: BEHIND (over 10 s): 12,345 readings queued, oldest handed over 14.2 s ago, event-time lag "
         "61.0 s; 70 steps, 60 of them left readings for later"),
        "alert tick: 600 runs, 3 late, 9 skipped",
        "alert notices: 4; firing latency p99 <= 0.25 s over 3 firing notices",
    ]
    assert detection_lines({"spool_records": 0}) == []  # a collector without detection
