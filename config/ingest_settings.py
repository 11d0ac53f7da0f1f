"""Collector settings: batching, spool, dead-letter store, validation limits."""

from __future__ import annotations

from pydantic import Field

from config.base import Strict


class IngestSettings(Strict):
    batch_max_rows: int = Field(5000, gt=0, le=1_000_000)
    batch_max_age_ms: int = Field(200, gt=0, le=60_000)
    spool_dir: str = "var/spool"
    spool_max_mb: float = Field(512, gt=0)
    deadletter_dir: str = "var/deadletter"
    deadletter_topic: str = "city/xm/deadletter"
    deadletter_max_payload_bytes: int = Field(65536, gt=0)
    deadletter_file_max_mb: float = Field(64, gt=0)
    deadletter_files_kept: int = Field(10, gt=0)
    max_payload_bytes: int = Field(1_048_576, gt=0)
    future_skew_s: int = Field(300, ge=0)
    backfill_max_age_s: int = Field(7 * 86400, gt=0)
    metrics_interval_s: float = Field(5, gt=0)
