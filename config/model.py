"""The root of the configuration: every section, merged from the YAML files of one directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, PrivateAttr

from config.alerting import Alerting
from config.base import Strict
from config.connections import Connections
from config.console_settings import ConsoleSettings
from config.ingest_settings import IngestSettings
from config.inventory import Device, Site
from config.oncall import OnCall
from config.rules import RuleSpec
from config.thresholds import Gas, Noise, Offline
from config.time_rules import TimeRules
from config.yamlsrc import Lines, locate


class Config(Strict):
    """A validated configuration. Devices keep their YAML order: that order is the dense sensor index."""

    connections: Connections = Connections()
    ingest: IngestSettings = IngestSettings()
    sites: list[Site] = Field(min_length=1)
    devices: list[Device] = Field(min_length=1)
    noise: Noise = Noise()
    gas: Gas = Gas()
    offline: Offline = Offline()
    time: TimeRules = TimeRules()
    alerting: Alerting = Alerting()
    rules: list[RuleSpec] = []
    console: ConsoleSettings = ConsoleSettings()
    oncall: OnCall = OnCall()

    _dir: Path = PrivateAttr(default=Path("."))
    _lines: Lines = PrivateAttr(default_factory=dict)
    _site_by_id: dict[str, Site] = PrivateAttr(default_factory=dict)
    _device_by_id: dict[str, Device] = PrivateAttr(default_factory=dict)
    _device_by_mn: dict[str, Device] = PrivateAttr(default_factory=dict)
    _index: dict[str, int] = PrivateAttr(default_factory=dict)

    def model_post_init(self, __context: Any) -> None:
        self._site_by_id = {s.id: s for s in self.sites}
        self._device_by_id = {d.id: d for d in self.devices}
        self._device_by_mn = {d.mn_or_id: d for d in self.devices}
        self._index = {d.id: i for i, d in enumerate(self.devices)}

    @property
    def base_dir(self) -> Path:
        """The directory the YAML was read from; relative paths in the config are resolved against its parent."""
        return self._dir

    def site(self, site_id: str) -> Site | None:
        return self._site_by_id.get(site_id)

    def device(self, device_id: str) -> Device | None:
        return self._device_by_id.get(device_id)

    def device_by_mn(self, mn: str) -> Device | None:
        return self._device_by_mn.get(mn)

    def device_index(self, device_id: str) -> int:
        """Dense sensor index of a device (its position in the inventory); KeyError if unknown."""
        return self._index[device_id]

    @property
    def device_ids(self) -> list[str]:
        return [d.id for d in self.devices]

    def line_of(self, *path: Any) -> tuple[str, int | None]:
        """(file, line) where a key path was written, for errors raised after loading (rule params)."""
        return locate(self._lines, tuple(path))

    def resolve_path(self, value: str) -> Path:
        """A path from the config (spool_dir, store_path): absolute as is, else relative to the project root."""
        p = Path(value)
        return p if p.is_absolute() else (self._dir.parent / p).resolve()
