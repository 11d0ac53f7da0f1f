"""Collector settings: batching, spool, dead-letter store, validation limits."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from config.base import Strict


class MetricsHttp(Strict):
    """The Prometheus endpoint of the self-metrics (`GET http://host:port/metrics`)."""

    enabled: bool = True
    # Loopback by default: the endpoint has no authentication; expose it beyond the host on purpose only.
    host: str = "127.0.0.1"
    port: int = Field(9464, ge=0, le=65535)  # 0: any free port (logged at start)


class IngestSettings(Strict):
    batch_max_rows: int = Field(5000, gt=0, le=1_000_000)
    batch_max_age_ms: int = Field(200, gt=0, le=60_000)
    spool_dir: str = "var/spool"
    spool_max_mb: float = Field(512, gt=0)
    # influxdb (default): acked once InfluxDB took the batch (the spool only while it is slow or down).
    # spool: a batch's messages are acked once it is fsynced into the local spool (group commit: whatever
    # was decoded while the previous fsync ran goes in the next one), and a drain thread writes the spool to
    # InfluxDB in order, several records per write: for an MQTT 3.1.1 collector behind a small in-flight
    # window; measured with the MQTT 5 collector (Receive Maximum 20,000) it gained no throughput and cost
    # alert latency (README "Throughput"). Both ack only what survives kill -9.
    ack_after: Literal["spool", "influxdb"] = "influxdb"
    deadletter_dir: str = "var/deadletter"
    deadletter_topic: str = "city/xm/deadletter"
    deadletter_max_payload_bytes: int = Field(65536, gt=0)
    deadletter_file_max_mb: float = Field(64, gt=0)
    deadletter_files_kept: int = Field(10, gt=0)
    # Bounds of the dead-letter store (issue 10): one record per refused message, listing at most
    # deadletter_rows_listed refused rows (the rest are counted by reason); each device (device-less records:
    # each reason) may store deadletter_device_budget_mb per deadletter_budget_period_s, the excess is counted.
    deadletter_rows_listed: int = Field(100, ge=1, le=100_000)
    deadletter_device_budget_mb: float = Field(1, gt=0)
    deadletter_budget_period_s: float = Field(3600, gt=0)
    # At least 1 KiB: a 60-sample batch is ~3 KB; 10 bytes was taken and would refuse every message as oversize.
    max_payload_bytes: int = Field(1_048_576, ge=1024)
    # A status payload is one word or a small object: larger ones are refused as oversize, unparsed.
    status_max_payload_bytes: int = Field(4096, gt=0)
    future_skew_s: int = Field(300, ge=0)
    backfill_max_age_s: int = Field(7 * 86400, gt=0)
    metrics_interval_s: float = Field(5, gt=0)
    metrics_http: MetricsHttp = MetricsHttp()
    # wall: live operation; event times are checked against the receive time (future_skew_s,
    # backfill_max_age_s) and time-driven rules (deadman) run on the wall clock.
    # event: simulation and replay of recorded feeds; event times are not compared with the wall clock
    # (only the 2001-01-01 floor and the seconds-vs-ms check apply) and time-driven rules run on the
    # event-time watermark, so a day replayed at 1000x raises the alerts of the day lived.
    clock: Literal["wall", "event"] = "wall"
    # HJ 212 data flags whose rows go to the dead-letter store (reason hj212_flag) instead of InfluxDB.
    # Rows with other flags are stored with their flag as quality (only N counts for compliance).
    refuse_flags: list[Literal["N", "F", "M", "S", "D", "C", "T", "B"]] = ["D", "M"]

    @field_validator("refuse_flags")
    @classmethod
    def _not_normal(cls, flags: list[str]) -> list[str]:
        if "N" in flags:
            raise ValueError("must not list N, the flag of normal data (every reading would be refused)")
        return flags
