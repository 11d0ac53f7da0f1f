"""Default thresholds per kind (domain.md section 5) and their per-site / per-device overrides."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.base import KeyProblem, Severity, Strict


class NoiseLimits(Strict):
    day_db: float = Field(70.0, ge=20, le=140)
    night_db: float = Field(55.0, ge=20, le=140)
    night_lmax_over_db: float = Field(15.0, ge=0, le=60)
    indoor_offset_db: float = Field(10.0, ge=0, le=40)


class NoiseLimitsOverride(Strict):
    day_db: float | None = Field(None, ge=20, le=140)
    night_db: float | None = Field(None, ge=20, le=140)
    night_lmax_over_db: float | None = Field(None, ge=0, le=60)


class Prohibited(Strict):
    background_margin_db: float = Field(10.0, ge=0, le=60)
    floor_db: float = Field(55.0, ge=20, le=140)
    window_s: int = Field(300, gt=0, le=7200)
    severity: Severity = "orange"


class ExamNoise(Strict):
    class1_day_db: float = Field(55.0, ge=20, le=140)
    class1_night_db: float = Field(45.0, ge=20, le=140)
    listening_margin_db: float = Field(5.0, ge=0, le=60)


class DataQuality(Strict):
    min_vdr: float = Field(0.75, ge=0, le=1)
    bad_flag_for_s: int = Field(900, gt=0)


class NoiseOverride(Strict):
    site: str | None = None
    device: str | None = None
    limits: NoiseLimitsOverride = NoiseLimitsOverride()

    @model_validator(mode="after")
    def _one_target(self) -> "NoiseOverride":
        if (self.site is None) == (self.device is None):
            raise ValueError("an override names exactly one of site or device")
        return self


class Noise(Strict):
    standard_version: str = "GB12523-2011"
    limits: NoiseLimits = NoiseLimits()
    rolling_window_s: int = Field(1200, gt=0, le=86400)
    min_coverage: float = Field(0.75, gt=0, le=1)
    day_orange_over_db: float = Field(5.0, ge=0, le=60)
    night_lmax_red_db: float = Field(85.0, ge=20, le=160)
    pre_warning_margin_db: float = Field(3.0, ge=0, le=30)
    hysteresis_db: float = Field(2.0, ge=0, le=20)
    prohibited: Prohibited = Prohibited()
    exam: ExamNoise = ExamNoise()
    data_quality: DataQuality = DataQuality()
    overrides: list[NoiseOverride] = []


class RelHigh(Strict):
    low: float = Field(1.20, gt=1, le=5)
    medium: float = Field(1.10, gt=1, le=5)


class LowLevel(Strict):
    below: float = Field(gt=0, lt=1)
    severity: Severity


class RuptureLevel(Strict):
    drop_pct: float = Field(gt=0, le=100)
    window_s: int = Field(gt=0, le=86400)
    severity: Severity


class Cusum(Strict):
    k_sigma: float = Field(0.5, ge=0, le=10)
    h_sigma: float = Field(5.0, gt=0, le=50)
    sigma_floor_pct: float = Field(0.6, gt=0, le=50)
    sigma_tau_s: int = Field(21600, gt=0, le=30 * 86400)
    warmup: int = Field(60, ge=1, le=10000)


class Profile(Strict):
    min_weeks: int = Field(2, ge=1, le=52)


class SensorRange(Strict):
    min_kpa: float = Field(-5.0, ge=-100, le=0)
    fs_factor: float = Field(1.1, ge=1, le=2)


PeerScope = Literal["site", "district", "class"]


class Flatline(Strict):
    window_s: int = Field(7200, gt=0)
    min_change_kpa: float = Field(0.0, ge=0)
    # A flat window is a stuck sensor only where the sensor should have varied over it: its peers (gas
    # sensors of the same pressure class, at the first scope below with at least min_peers others)
    # changed by more than vary_pct % of set pressure, or its learned time-of-week profile swings that much.
    peer_scopes: list[PeerScope] = Field(["site", "district", "class"], max_length=3)
    min_peers: int = Field(2, ge=1, le=1000)
    vary_pct: float = Field(1.0, gt=0, le=100)

    @model_validator(mode="after")
    def _scopes(self) -> "Flatline":
        if len(set(self.peer_scopes)) != len(self.peer_scopes):
            raise KeyProblem("peer_scopes", f"must not repeat a scope (got {self.peer_scopes})")
        return self


class Battery(Strict):
    yellow_v: float = Field(3.3, ge=2.0, le=4.0)
    orange_v: float = Field(3.1, ge=2.0, le=4.0)

    @model_validator(mode="after")
    def _order(self) -> "Battery":
        if self.orange_v > self.yellow_v:
            raise ValueError(f"orange_v ({self.orange_v}) must not exceed yellow_v ({self.yellow_v})")
        return self


class GasOverride(Strict):
    site: str | None = None
    device: str | None = None
    rel_high: float | None = Field(None, gt=1, le=5)
    rel_low: list[LowLevel] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> "GasOverride":
        if (self.site is None) == (self.device is None):
            raise ValueError("an override names exactly one of site or device")
        return self


class Gas(Strict):
    rel_high: RelHigh = RelHigh()
    rel_low: list[LowLevel] = [
        LowLevel(below=0.85, severity="yellow"),
        LowLevel(below=0.70, severity="orange"),
        LowLevel(below=0.50, severity="red"),
    ]
    rupture: list[RuptureLevel] = [
        RuptureLevel(drop_pct=5, window_s=300, severity="orange"),
        RuptureLevel(drop_pct=10, window_s=900, severity="red"),
    ]
    cusum: Cusum = Cusum()
    profile: Profile = Profile()
    range: SensorRange = SensorRange()
    flatline: Flatline = Flatline()
    battery: Battery = Battery()
    hysteresis_pct: float = Field(2.0, ge=0, le=50)
    overrides: list[GasOverride] = []


class Offline(Strict):
    interval_factor: float = Field(2.0, ge=1, le=100)
    grace_s: int = Field(300, ge=0)
    orange_after_s: int = Field(86400, gt=0)
