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


def test_each_influx_replica_is_a_labelled_sample_and_the_primary_is_not():
    from prometheus_client import CollectorRegistry
    from prometheus_client.exposition import generate_latest

    from citywatch.prometheus import replica_families

    gauges = {"spool_records": 3, "influx_ok": 1,  # the primary's: not a replica's
              "replica_dr_spool_records": 7, "replica_dr_influx_ok": 0, "replica_dr_rows_written": 120,
              "replica_dc_2_spool_records": 0, "replica_dc_2_spool_age_s": 0.0, "replica_dc_2_write_errors": 4,
              "replica_dr_spool_bytes": None}  # not known yet: left out

    class Fams:
        def collect(self):
            return replica_families(gauges)

    reg = CollectorRegistry()
    reg.register(Fams())
    text = generate_latest(reg).decode()
    samples = sorted(line for line in text.splitlines() if line and not line.startswith("#"))
    assert samples == [
        'citywatch_replica_influxdb_up{replica="dr"} 0.0',
        'citywatch_replica_rows_written_total{replica="dr"} 120.0',
        'citywatch_replica_spool_oldest_age_seconds{replica="dc_2"} 0.0',
        'citywatch_replica_spool_records{replica="dc_2"} 0.0',
        'citywatch_replica_spool_records{replica="dr"} 7.0',
        'citywatch_replica_write_errors_total{replica="dc_2"} 4.0',
    ]
    assert replica_families({"spool_records": 3, "influx_ok": 1}) == []
