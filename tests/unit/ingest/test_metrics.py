"""Self-metrics render as valid line protocol with every counter, gauges and one point per dead-letter reason."""

from __future__ import annotations

from ingest.metrics import COUNTERS, IngestMetrics


def test_snapshot_lines():
    m = IngestMetrics()
    m.add("messages_received", 3)
    m.deadletter("invalid_json", 2)
    m.set_gauge("spool_bytes", 10)
    m.set_gauge("spool_age_s", 1.5)
    m.write_latency(0.01)
    lines = m.to_lines(m.snapshot(), "cw 1", now_ns=42, host="h").decode().splitlines()
    assert lines[0].startswith("citywatch_internal,host=h,client_id=cw\\ 1,kind=collector ")
    assert "messages_received=3i" in lines[0] and "deadletter_records=2i" in lines[0]
    assert "spool_bytes=10i" in lines[0] and "spool_age_s=1.5" in lines[0] and "write_latency_ms_max=10.0" in lines[0]
    assert all(f"{c}=" in lines[0] for c in COUNTERS)
    assert lines[1] == "citywatch_internal,host=h,client_id=cw\\ 1,kind=deadletter,reason=invalid_json records=2i 42"
    # Latencies are per interval: the next snapshot has none.
    assert "write_latency" not in m.to_lines(m.snapshot(), "c", now_ns=1, host="h").decode()
