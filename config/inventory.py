"""The inventory: sites (construction sites, gas stations) and the devices that report from them."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.base import KeyProblem, Strict
from config.errors import show

# GB 50028-2006 Table 6.1.6, gauge pressure in kPa: (lower bound exclusive, upper bound inclusive).
PRESSURE_CLASSES_KPA: dict[str, tuple[float, float]] = {
    "low": (-1e9, 10.0),
    "medium_b": (10.0, 200.0),
    "medium_a": (200.0, 400.0),
    "subhigh_b": (400.0, 800.0),
    "subhigh_a": (800.0, 1600.0),
    "high_b": (1600.0, 2500.0),
    "high_a": (2500.0, 4000.0),
}
PressureClass = Literal["low", "medium_b", "medium_a", "subhigh_b", "subhigh_a", "high_b", "high_a"]

_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class Site(Strict):
    id: str = Field(pattern=_ID)
    name: str = Field(min_length=1)
    address: str = ""
    district: str = Field(min_length=1)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    crs: Literal["WGS84", "GCJ02"] = "WGS84"
    kind: Literal["construction", "gas_station", "gas_network"] = "construction"
    # The site's surveyed background level (GB 12523 background correction, detectors/background.py).
    background_db: float | None = Field(None, ge=25, le=140)


class Device(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
    # generic: any numeric series (a benchmark's, a machine's) with no noise or gas meaning; only the
    # generic detector types judge it, and it needs no site. Offline (`citywatch detect`) only: the
    # service's ingest knows noise monitors and gas sensors.
    kind: Literal["noise", "gas", "generic"]
    site: str | None = None  # required for noise and gas devices
    report_interval_s: int = Field(gt=0, le=86400)
    # How the device reports: JSON batches on its data topic, or raw HJ 212 frames on city/xm/hj212/{mn}.
    protocol: Literal["json", "hj212"] = "json"
    mn: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]{1,64}$")
    sample_interval_s: int | None = Field(None, gt=0, le=86400)
    # Gas only (kPa gauge).
    pressure_class: PressureClass | None = None
    set_pressure_kpa: float | None = Field(None, gt=0)
    mop_kpa: float | None = Field(None, gt=0)
    full_scale_kpa: float | None = Field(None, gt=0)

    @model_validator(mode="after")
    def _site(self) -> Device:
        if self.site is None and self.kind != "generic":
            raise KeyProblem("site", f"required key is missing (a {self.kind} device belongs to a site; only a "
                             "generic device may have none)")
        return self

    @model_validator(mode="after")
    def _gas_fields(self) -> Device:
        gas_keys = ("pressure_class", "set_pressure_kpa", "mop_kpa", "full_scale_kpa")
        if self.kind != "gas":
            given = [k for k in gas_keys if getattr(self, k) is not None]
            if given:
                raise KeyProblem(given[0], f"only applies to gas devices; this device's kind is {self.kind!r} (got {show(getattr(self, given[0]))})")
            return self
        missing = [k for k in gas_keys if getattr(self, k) is None]
        pclass, set_kpa, mop, full = self.pressure_class, self.set_pressure_kpa, self.mop_kpa, self.full_scale_kpa
        if missing or pclass is None or set_kpa is None or mop is None or full is None:  # (the same test, for mypy)
            raise KeyProblem(missing[0], f"required key is missing (a gas device needs {', '.join(missing)})")
        lo, hi = PRESSURE_CLASSES_KPA[pclass]
        if not (lo < set_kpa <= hi):
            raise KeyProblem(
                "set_pressure_kpa",
                f"must lie inside pressure_class {pclass} ({_class_range(lo, hi)}) (got {set_kpa:g})",
            )
        if mop < set_kpa:
            raise KeyProblem("mop_kpa", f"must not be below set_pressure_kpa {set_kpa:g} (got {mop:g})")
        if mop > hi:  # G-highhigh fires at MOP: a low-pressure (10 kPa) main with MOP 350 would never alarm
            raise KeyProblem("mop_kpa", f"must not exceed pressure_class {pclass}'s upper bound {hi:g} kPa "
                             f"({_class_range(lo, hi)}) (got {mop:g})")
        if full < mop:
            raise KeyProblem("full_scale_kpa", f"must not be below mop_kpa {mop:g} (got {full:g})")
        return self

    @model_validator(mode="after")
    def _intervals(self) -> Device:
        if self.sample_interval_s and self.sample_interval_s > self.report_interval_s:
            raise KeyProblem(
                "sample_interval_s",
                f"must not exceed report_interval_s {self.report_interval_s} (got {self.sample_interval_s})",
            )
        return self

    @property
    def mn_or_id(self) -> str:
        """The HJ 212 MN this device uses (its id unless `mn` says otherwise)."""
        return self.mn or self.id

    @property
    def sample_s(self) -> int:
        """Seconds between samples (the report interval when samples are not batched)."""
        return self.sample_interval_s or self.report_interval_s


def _class_range(lo: float, hi: float) -> str:
    return f"p < {hi:g} kPa" if lo < -1e8 else f"{lo:g} < p <= {hi:g} kPa"
