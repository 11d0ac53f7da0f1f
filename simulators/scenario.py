"""Scenario files: which devices a simulated city day runs, from when, with which seed and which faults.

A scenario is YAML over the config's inventory (see `simulators/scenarios/city_day.yaml` for every key,
documented). Loading checks every reference against the inventory and the rule ids of `rules.yaml`, and
reports every problem as `file:line: path: message`, like the config loader.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from config import durations
from config.base import SEVERITY_RANK, Strict
from config.errors import ConfigError, ConfigProblem, did_you_mean, path_text
from config.model import Config
from config.pydantic_errors import problems_from_validation
from config.yamlsrc import parse_yaml
from core.timefmt import iso_utc_ms
from simulators.faults import FAULT_TYPES, FaultType


def parse_duration(text: str | int | float) -> float:
    """Seconds in a duration written `90m`, `24h`, `30s`, `2d`, `2w` (a bare number is seconds; zero is
    allowed): the one grammar of config.durations. Raises ValueError on anything else."""
    return durations.parse_duration(text, positive=False)


class FaultSpec(Strict):
    """One injected fault as written in the scenario."""

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    type: str
    device: str
    # "HH:MM" (on the scenario's first day, or the next day when earlier than the scenario's start time)
    # or a full local "YYYY-MM-DDTHH:MM".
    start: str
    duration: str
    params: dict[str, Any] = {}
    rules: list[str] | None = None          # expected rules; default: the fault type's
    allowed: list[str] | None = None        # rules that may also fire without counting as false alerts
    severity: Literal["blue", "yellow", "orange", "red"] | None = None
    note: str = ""

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in FAULT_TYPES:
            raise ValueError(f"unknown fault type {value!r}{did_you_mean(value, FAULT_TYPES)} "
                             f"(known: {', '.join(FAULT_TYPES)})")
        return value

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        if parse_duration(value) <= 0:  # a fault of no length was taken and injected nothing
            raise ValueError(f"a fault lasts longer than 0 s, got {value!r}")
        return value


# A scenario's feed is built in memory (7 days: 175 MB); longer runs are several scenarios.
MAX_SCENARIO_S = 31 * 86400


class WorkSpec(Strict):
    """Sites whose crews work by day (S1); every other noise device hears only background (S2)."""

    sites: list[str] = []
    # Crews stop before each prohibited window so the rolling Leq has decayed when the window opens.
    windows: list[list[str]] = [["07:00", "11:50"], ["14:40", "21:30"]]
    leq_db: float = Field(63.5, ge=40, le=90)


class ScenarioSpec(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    seed: int = Field(ge=0, lt=2**63)
    start: str                              # local date-time "YYYY-MM-DDTHH:MM" in the config's time zone
    duration: str = "24h"
    # Fault-free days published (as fast as possible) before `start`, so that rules which learn a
    # time-of-week profile (G-leak, G-rupture: gas.profile.min_weeks) judge the scenario day against it.
    history: str = "0s"
    devices: list[str] | Literal["all"] = "all"
    work: WorkSpec = WorkSpec()
    faults: list[FaultSpec] = []

    @field_validator("duration")
    @classmethod
    def _duration(cls, value: str) -> str:
        seconds = parse_duration(value)
        if seconds <= 0:
            raise ValueError("duration must be positive")
        if seconds > MAX_SCENARIO_S:
            raise ValueError(f"duration must be at most 31d (the feed is built in memory; run several scenarios), "
                             f"got {value!r}")
        return value

    @field_validator("start")
    @classmethod
    def _start(cls, value: str) -> str:
        try:
            when = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"start must be a local date-time YYYY-MM-DDTHH:MM, got {value!r}") from None
        if when.tzinfo is not None:  # the offset was dropped without a word and the config's zone used instead
            raise ValueError(f"must be written without a UTC offset: it is local time in the config's time zone "
                             f"(time.timezone), got {value!r}")
        if not 2000 <= when.year <= 2100:
            raise ValueError(f"must be a date from 2000 to 2100, got {value!r}")
        return value

    @field_validator("history")
    @classmethod
    def _history(cls, value: str) -> str:
        parse_duration(value)
        return value


@dataclass(frozen=True)
class Fault:
    """A fault resolved against the scenario: UTC times in ms, expected rules, severity."""

    id: str
    type: FaultType
    device: str
    site: str
    start_ms: int
    end_ms: int
    params: dict[str, Any]
    rules: tuple[str, ...]
    allowed: tuple[str, ...]
    severity: str | None
    note: str

    def truth_record(self) -> dict[str, Any]:
        """The ground-truth JSONL record of this fault."""
        return {
            "id": self.id, "type": self.type.code, "name": self.type.name, "device": self.device, "site": self.site,
            "start": iso_utc_ms(self.start_ms), "end": iso_utc_ms(self.end_ms),
            "rules": list(self.rules), "allowed": list(self.allowed), "severity": self.severity, "note": self.note,
        }


@dataclass(frozen=True)
class Scenario:
    """A loaded scenario: times in UTC ms, devices in inventory order, faults resolved."""

    name: str
    seed: int
    start_ms: int
    end_ms: int
    tz: zoneinfo.ZoneInfo
    devices: tuple[str, ...]
    work_sites: frozenset[str]
    work_windows: tuple[tuple[int, int], ...]     # minutes after local midnight, half-open
    work_leq_db: float
    faults: tuple[Fault, ...]
    source: str
    history_ms: int = 0

    def with_duration(self, seconds: float) -> Scenario:
        """The same scenario cut (or extended) to `seconds` of simulated time."""
        if seconds <= 0:
            raise ValueError(f"duration must be positive (got {seconds:g} s)")
        end = self.start_ms + int(round(seconds * 1000))
        faults = tuple(f for f in self.faults if f.start_ms < end)
        return dataclasses.replace(self, end_ms=end, faults=faults)

    def with_history(self, seconds: float) -> Scenario:
        """The same scenario with `seconds` of fault-free history before its start."""
        return dataclasses.replace(self, history_ms=int(round(seconds * 1000)))

    def history(self) -> Scenario | None:
        """The fault-free history before the start as a scenario of its own (None when there is none)."""
        if self.history_ms <= 0:
            return None
        return dataclasses.replace(self, start_ms=self.start_ms - self.history_ms, end_ms=self.start_ms,
                                   faults=(), history_ms=0)

    def faults_of(self, device: str) -> list[Fault]:
        return [f for f in self.faults if f.device == device]


def _hhmm(text: str) -> int:
    h, m = text.split(":")
    return int(h) * 60 + int(m)


def load_scenario(path: str | Path, cfg: Config) -> Scenario:
    """Read and check a scenario file against the config `cfg`.

    Raises ConfigError listing every problem (file, line, key path, message).
    """
    path = Path(path)
    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem(name, None, "", f"cannot read: {exc}")]) from None
    doc, problems = parse_yaml(text, name)
    if doc is None:
        raise ConfigError(problems)
    lines: dict[tuple[Any, ...], tuple[str, int | None]] = {p: (name, ln) for p, ln in doc.lines.items()}

    def problem(p: tuple[Any, ...], message: str) -> ConfigProblem:
        return ConfigProblem(name, lines.get(p, (name, None))[1], path_text(p), message)

    data = doc.data
    if not isinstance(data, dict) or set(data) != {"scenario"}:
        raise ConfigError(problems + [ConfigProblem(name, 1, "", "the file must hold one top-level key `scenario`")])
    try:
        spec = ScenarioSpec.model_validate(data["scenario"])
    except ValidationError as exc:
        raise ConfigError(problems + problems_from_validation(exc, ScenarioSpec, ("scenario",), lines)) from None

    tz = zoneinfo.ZoneInfo(cfg.time.timezone)
    start_local = dt.datetime.fromisoformat(spec.start).replace(tzinfo=tz)
    start_ms = int(start_local.timestamp() * 1000)
    end_ms = start_ms + int(parse_duration(spec.duration) * 1000)
    rule_ids = {r.id for r in cfg.rules}

    if spec.devices == "all":
        devices = tuple(cfg.device_ids)
    else:
        wanted = set(spec.devices)
        for i, d in enumerate(spec.devices):
            if cfg.device(d) is None:
                problems.append(problem(("scenario", "devices", i), f"unknown device {d!r}{did_you_mean(d, cfg.device_ids)}"))
        devices = tuple(d for d in cfg.device_ids if d in wanted)
    site_ids = [s.id for s in cfg.sites]
    for i, s in enumerate(spec.work.sites):
        if cfg.site(s) is None:
            problems.append(problem(("scenario", "work", "sites", i), f"unknown site {s!r}{did_you_mean(s, site_ids)}"))
    windows = []
    for i, pair in enumerate(spec.work.windows):
        try:
            a, b = pair
            wa, wb = _hhmm(a), _hhmm(b)
            if not (0 <= wa < wb <= 1440):
                raise ValueError
            windows.append((wa, wb))
        except ValueError:
            problems.append(problem(("scenario", "work", "windows", i),
                                    f"must be [HH:MM, HH:MM] with start before end, got {pair}"))

    faults = []
    seen_ids: set[str] = set()
    for i, f in enumerate(spec.faults):
        base = ("scenario", "faults", i)
        if f.id in seen_ids:
            problems.append(problem(base + ("id",), f"duplicate fault id {f.id!r}"))
        seen_ids.add(f.id)
        ftype = FAULT_TYPES[f.type]
        device = cfg.device(f.device)
        if device is None:
            problems.append(problem(base + ("device",), f"unknown device {f.device!r}{did_you_mean(f.device, cfg.device_ids)}"))
            continue
        if device.id not in devices:
            problems.append(problem(base + ("device",), f"device {f.device!r} is not among the scenario's devices"))
        if ftype.kind not in ("any", device.kind):
            problems.append(problem(base + ("type",), f"fault {f.type} ({ftype.name}) applies to {ftype.kind} devices; {f.device} is {device.kind}"))
        if ftype.protocol and device.protocol != ftype.protocol and f.params.get("mode", "crc") in ("crc", "length"):
            problems.append(problem(base + ("type",), f"fault {f.type} with mode crc/length needs a {ftype.protocol} device; {f.device} speaks {device.protocol}"))
        unknown = sorted(set(f.params) - set(ftype.params))
        for k in unknown:
            problems.append(problem(base + ("params", k), f"unknown parameter{did_you_mean(k, ftype.params)} (known: {', '.join(sorted(ftype.params)) or 'none'})"))
        rules = tuple(f.rules) if f.rules is not None else ftype.rules
        allowed = tuple(f.allowed) if f.allowed is not None else ftype.allowed
        for key, ids in (("rules", rules), ("allowed", allowed)):
            for j, r in enumerate(ids):
                if rule_ids and r not in rule_ids:
                    problems.append(problem(base + (key, j), f"unknown rule {r!r}{did_you_mean(r, rule_ids)}"))
        try:
            fstart = _fault_start(f.start, start_local, tz)
        except ValueError as exc:
            problems.append(problem(base + ("start",), str(exc)))
            continue
        fstart_ms = int(fstart.timestamp() * 1000)
        fend_ms = fstart_ms + int(parse_duration(f.duration) * 1000)
        if not (start_ms <= fstart_ms < end_ms):
            problems.append(problem(base + ("start",), f"{f.start} is outside the scenario ({spec.start} + {spec.duration})"))
        elif fend_ms > end_ms:  # it was cut at the scenario's end without a word, and scored as if whole
            problems.append(problem(base + ("duration",), f"{f.duration} from {f.start} ends after the scenario "
                                    f"({spec.start} + {spec.duration}): shorten the fault or lengthen the scenario"))
        severity = f.severity if f.severity is not None else ftype.severity
        if severity is not None and severity not in SEVERITY_RANK:
            problems.append(problem(base + ("severity",), f"unknown severity {severity!r}"))
        # device.site is None only for a generic device (no site); truth records write a missing site as "".
        faults.append(Fault(f.id, ftype, device.id, device.site or "", fstart_ms, min(fend_ms, end_ms), dict(f.params),
                            rules, allowed, severity if rules else None, f.note))
    if problems:
        raise ConfigError(problems)
    return Scenario(spec.name, spec.seed, start_ms, end_ms, tz, devices, frozenset(spec.work.sites), tuple(windows),
                    spec.work.leq_db, tuple(faults), name, int(parse_duration(spec.history) * 1000))


def _fault_start(text: str, start_local: dt.datetime, tz: zoneinfo.ZoneInfo) -> dt.datetime:
    if re.fullmatch(r"\d{2}:\d{2}", text):
        h, m = int(text[:2]), int(text[3:])
        if h > 23 or m > 59:
            raise ValueError(f"must be HH:MM or YYYY-MM-DDTHH:MM, got {text!r}")
        t = start_local.replace(hour=h, minute=m, second=0, microsecond=0)
        # An HH:MM earlier than the scenario's start time means the next day (a day from 06:00 runs to 06:00).
        return t if t >= start_local else t + dt.timedelta(days=1)
    try:
        return dt.datetime.fromisoformat(text).replace(tzinfo=tz)
    except ValueError:
        raise ValueError(f"must be HH:MM or YYYY-MM-DDTHH:MM, got {text!r}") from None
