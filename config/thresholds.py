"""Default thresholds per kind (domain.md section 5) and their per-site / per-device overrides."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from config.base import SEVERITY_RANK, KeyProblem, Severity, Strict, raise_problems
from config.errors import path_text


class NoiseLimits(Strict):
    day_db: float = Field(70.0, ge=20, le=140)
    night_db: float = Field(55.0, ge=20, le=140)
    night_lmax_over_db: float = Field(15.0, ge=0, le=60)
    indoor_offset_db: float = Field(10.0, ge=0, le=40)

    @model_validator(mode="after")
    def _night_stricter(self) -> NoiseLimits:
        if self.night_db > self.day_db:
            raise KeyProblem("night_db", f"must not be above day_db {self.day_db:g}: the night limit is the stricter "
                             f"one (GB 12523: 70 by day, 55 at night) (got {self.night_db:g})")
        return self


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

    @model_validator(mode="after")
    def _night_stricter(self) -> ExamNoise:
        if self.class1_night_db > self.class1_day_db:
            raise KeyProblem("class1_night_db", f"must not be above class1_day_db {self.class1_day_db:g}: the night "
                             f"limit is the stricter one (GB 3096 class 1: 55 by day, 45 at night) "
                             f"(got {self.class1_night_db:g})")
        return self


class DataQuality(Strict):
    min_vdr: float = Field(0.75, ge=0, le=1)
    bad_flag_for_s: int = Field(900, gt=0)


class NoiseOverride(Strict):
    site: str | None = None
    device: str | None = None
    limits: NoiseLimitsOverride = NoiseLimitsOverride()

    @model_validator(mode="after")
    def _one_target(self) -> NoiseOverride:
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

    @model_validator(mode="after")
    def _limit_orders(self) -> Noise:
        # Limit orders that hold whatever the values: a config that breaks one raises alerts in the wrong
        # order or not at all. Each problem blames the key most likely to be the slip and names the other.
        lim, out = self.limits, []
        if self.exam.class1_day_db > lim.day_db:
            out.append(KeyProblem(("exam", "class1_day_db"), f"must not be above limits.day_db {lim.day_db:g}: exam "
                                  f"periods apply stricter limits, never laxer (got {self.exam.class1_day_db:g})"))
        if self.exam.class1_night_db > lim.night_db:
            out.append(KeyProblem(("exam", "class1_night_db"), f"must not be above limits.night_db {lim.night_db:g}: "
                                  f"exam periods apply stricter limits, never laxer (got {self.exam.class1_night_db:g})"))
        if self.prohibited.floor_db > lim.day_db:
            out.append(KeyProblem(("prohibited", "floor_db"), f"must not be above limits.day_db {lim.day_db:g}: work "
                                  "in a prohibited window that breaks even the day limit would not count as suspected "
                                  f"illegal work (got {self.prohibited.floor_db:g})"))
        orange = lim.night_db + lim.night_lmax_over_db
        if self.night_lmax_red_db <= orange:
            out.append(KeyProblem("night_lmax_red_db", f"must be above the orange night Lmax limit {orange:g} "
                                  "(limits.night_db + limits.night_lmax_over_db): red would come before orange "
                                  f"(got {self.night_lmax_red_db:g})"))
        if self.hysteresis_db >= self.day_orange_over_db:
            out.append(KeyProblem("hysteresis_db", f"must be smaller than day_orange_over_db {self.day_orange_over_db:g} "
                                  "(the gap between the yellow and orange day levels): an orange alert could not step "
                                  f"down to yellow (got {self.hysteresis_db:g})"))
        for i, o in enumerate(self.overrides):
            day = o.limits.day_db if o.limits.day_db is not None else lim.day_db
            night = o.limits.night_db if o.limits.night_db is not None else lim.night_db
            if night <= day:
                continue
            if o.limits.night_db is not None:
                src = "" if o.limits.day_db is not None else " (noise.limits)"
                out.append(KeyProblem(("overrides", i, "limits", "night_db"), f"must not be above day_db {day:g}{src}: "
                                      f"the night limit is the stricter one (got {night:g})"))
            else:
                out.append(KeyProblem(("overrides", i, "limits", "day_db"), f"must not be below night_db {night:g} "
                                      f"(noise.limits): the night limit is the stricter one (got {day:g})"))
        raise_problems(self, out)
        return self


class RelHigh(Strict):
    low: float = Field(1.20, gt=1, le=5)
    medium: float = Field(1.10, gt=1, le=5)


class LowLevel(Strict):
    below: float = Field(gt=0, lt=1)
    severity: Severity


def low_levels_problem(levels: list[LowLevel], key: tuple[Any, ...]) -> KeyProblem | None:
    """G-low levels go down in order, each more severe than the one above it (0.85 yellow, 0.70 orange,
    0.50 red): the first level out of order, blamed at `key` + (index, field)."""
    for i in range(1, len(levels)):
        prev, cur = levels[i - 1], levels[i]
        if cur.below >= prev.below:
            return KeyProblem(key + (i, "below"), f"must be below {path_text(key + (i - 1, 'below'))} {prev.below:g}: "
                              f"levels go down in order, the lowest last (got {cur.below:g})")
        if SEVERITY_RANK[cur.severity] <= SEVERITY_RANK[prev.severity]:
            return KeyProblem(key + (i, "severity"), f"must be more severe than {path_text(key + (i - 1, 'severity'))} "
                              f"{prev.severity}: a lower pressure is a worse level (got {cur.severity!r})")
    return None


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
    # How late a peer's report may reach the service after its report time and still be in the peers'
    # window: the window ends the peers' longest report interval plus this before the reading's slot.
    peer_latency_s: int = Field(60, ge=0, le=3600)

    @model_validator(mode="after")
    def _scopes(self) -> Flatline:
        if len(set(self.peer_scopes)) != len(self.peer_scopes):
            raise KeyProblem("peer_scopes", f"must not repeat a scope (got {self.peer_scopes})")
        return self


class Battery(Strict):
    yellow_v: float = Field(3.3, ge=2.0, le=4.0)
    orange_v: float = Field(3.1, ge=2.0, le=4.0)

    @model_validator(mode="after")
    def _order(self) -> Battery:
        if self.orange_v >= self.yellow_v:  # equal: yellow would never show on its own
            raise ValueError(f"orange_v ({self.orange_v}) must be below yellow_v ({self.yellow_v})")
        return self


class GasOverride(Strict):
    site: str | None = None
    device: str | None = None
    rel_high: float | None = Field(None, gt=1, le=5)
    rel_low: list[LowLevel] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> GasOverride:
        if (self.site is None) == (self.device is None):
            raise ValueError("an override names exactly one of site or device")
        return self

    @model_validator(mode="after")
    def _low_order(self) -> GasOverride:
        if self.rel_low is not None and not self.rel_low:
            raise KeyProblem("rel_low", "must name at least one level, or be left out to use gas.rel_low: an empty list "
                             "would turn G-low off here (got [])")
        problem = low_levels_problem(self.rel_low or [], ("rel_low",))
        if problem:
            raise problem
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

    @model_validator(mode="after")
    def _level_orders(self) -> Gas:
        out = []
        # An empty list took the rule off without a word (rel_low) or crashed it (rupture): remove the rule from
        # rules.yaml to turn it off.
        for key in ("rel_low", "rupture"):
            if not getattr(self, key):
                out.append(KeyProblem(key, "must name at least one level (to turn the rule off, remove it from "
                                      "rules.yaml) (got [])"))
        for i in range(1, len(self.rupture)):
            prev, cur = self.rupture[i - 1], self.rupture[i]
            if cur.drop_pct <= prev.drop_pct:
                out.append(KeyProblem(("rupture", i, "drop_pct"), f"must be above rupture[{i - 1}].drop_pct "
                                      f"{prev.drop_pct:g}: levels go up in order, the largest drop last (got {cur.drop_pct:g})"))
            elif SEVERITY_RANK[cur.severity] <= SEVERITY_RANK[prev.severity]:
                out.append(KeyProblem(("rupture", i, "severity"), f"must be more severe than rupture[{i - 1}].severity "
                                      f"{prev.severity}: a larger drop is a worse level (got {cur.severity!r})"))
        problem = low_levels_problem(self.rel_low, ("rel_low",))
        if problem:
            out.append(problem)
        # A pressure alert clears (or steps down a level) only hysteresis_pct back inside its limit: wider
        # than the gap to the next level, a red G-low could never step down to orange, a G-high never clear
        # above set pressure.
        gaps = [((self.rel_high.medium - 1) * 100, "the gap between set pressure and rel_high.medium "
                 f"{self.rel_high.medium:g}"),
                ((self.rel_high.low - 1) * 100, f"the gap between set pressure and rel_high.low {self.rel_high.low:g}")]
        if problem is None:
            for a, b in zip(self.rel_low, self.rel_low[1:]):
                gaps.append(((a.below - b.below) * 100, f"the gap between the rel_low levels {a.below:g} and {b.below:g}"))
        gap, what = min(gaps, key=lambda g: g[0])
        if self.hysteresis_pct >= round(gap, 9):
            out.append(KeyProblem("hysteresis_pct", f"must be smaller than {what} ({gap:.3g} % of set pressure) "
                                  f"(got {self.hysteresis_pct:g})"))
        raise_problems(self, out)
        return self


class Offline(Strict):
    interval_factor: float = Field(2.0, ge=1, le=100)
    grace_s: int = Field(300, ge=0, le=86400)  # 1000w took Offline off for every device
    orange_after_s: int = Field(86400, gt=0, le=30 * 86400)
