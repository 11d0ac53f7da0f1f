"""Shared building blocks of the config schema: the strict base model, times of day, windows, severities.

`Strict` also makes cross-field checks run when a sibling key fails: pydantic skips a model's "after"
validators as soon as one field is invalid, which would hide every cross-field problem of that model
until the first one is fixed. Here they run on the keys that did validate, so one load reports all.
"""

from __future__ import annotations

import datetime as dt
import re
import types
import typing
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from config.durations import is_duration_key, seconds_value

Severity = Literal["red", "orange", "yellow", "blue"]
SEVERITY_RANK = {"blue": 1, "yellow": 2, "orange": 3, "red": 4}

_HHMM = re.compile(r"^([0-9]{2}):([0-9]{2})$")


class KeyProblem(ValueError):
    """Raised by a model validator to blame one key of the model rather than the whole mapping.

    The loader points the error (and its line) at `key`; `message` should end with the value received.
    """

    def __init__(self, key: str | tuple[Any, ...], message: str) -> None:
        super().__init__(message)
        self.key = (key,) if isinstance(key, str) else tuple(key)
        self.message = message


def raise_problems(model: BaseModel, problems: list[KeyProblem]) -> None:
    """Raise every problem a model validator found at once, each at its own key (pydantic keeps only
    the first exception of a validator, and stops at the first validator that raises)."""
    if problems:
        raise ValidationError.from_exception_data(type(model).__name__, [
            InitErrorDetails(type=PydanticCustomError("cross_check", "{message}", {"message": p.message}),
                             loc=p.key, input=None)
            for p in problems
        ])


# (model class, field name) -> TypeAdapter, built on first use: only the error path needs them.
_FIELD_ADAPTERS: dict[tuple[type, str], TypeAdapter[Any]] = {}


class Strict(BaseModel):
    """Base of every config model: unknown keys are errors, no silent type coercion, immutable, and no `.inf` or
    `.nan` (an infinite for_s was taken, then stopped the alert engine at start with an OverflowError)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _durations(cls, data: Any) -> Any:
        return _with_durations(cls, data)

    @model_validator(mode="wrap")
    @classmethod
    def _cross_checks_despite_field_errors(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(data)
        except ValidationError as exc:
            extra = _partial_checks(cls, data, exc)
            if not extra:
                raise
            raise ValidationError.from_exception_data(cls.__name__, _reraisable(exc) + extra) from None


def _with_durations(cls: type[BaseModel], data: Any) -> Any:
    """Every key that carries seconds (`*_s`, here and in the detectors' own keys) also takes a duration in
    the one grammar of config.durations: `clear_for_s: 2m` is 120. A text that is not one is left as it is:
    the key's type check refuses it, and the loader says what a duration is."""
    if not isinstance(data, dict):
        return data
    keys = _duration_keys(cls)
    if not keys or not any(k in data and isinstance(data[k], str) for k in keys):
        return data
    out = dict(data)
    for key, whole in keys.items():
        if isinstance(out.get(key), str):
            out[key] = seconds_value(out[key], whole)
    return out


# Model class -> {YAML key of a `*_s` field: whether it holds whole seconds (int, not float)}.
_DURATION_KEYS: dict[type, dict[str, bool]] = {}


def _duration_keys(cls: type[BaseModel]) -> dict[str, bool]:
    keys = _DURATION_KEYS.get(cls)
    if keys is None:
        keys = {}
        for name, info in cls.model_fields.items():
            if is_duration_key(name):
                members = _members(info.annotation)
                if int in members or float in members:
                    keys[info.alias or name] = int in members and float not in members
        _DURATION_KEYS[cls] = keys
    return keys


def _members(tp: Any) -> list[Any]:
    """The member types of an annotation through Optional and Union (`int | None` -> [int, NoneType])."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _members(a)]
    if typing.get_origin(tp) is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    return [tp]


def _partial_checks(cls: type[BaseModel], data: Any, exc: ValidationError) -> list[InitErrorDetails]:
    """Run `cls`'s after-validators on the keys of `data` that validated; their problems as error details."""
    validators = [
        d.func for d in cls.__pydantic_decorators__.model_validators.values() if d.info.mode == "after"
    ]
    if not validators or not isinstance(data, dict):
        return []
    errors = exc.errors(include_url=False)
    if any(not e["loc"] for e in errors):
        return []  # the model's own validators already ran and failed: nothing is hidden
    failed = {e["loc"][0] for e in errors}
    data = _with_durations(cls, data)
    values: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        key = info.alias or name
        if key in failed:
            continue
        if key in data:
            try:
                values[name] = _adapter(cls, name).validate_python(data[key])
            except (ValidationError, TypeError, ValueError):
                continue
        elif not info.is_required():
            values[name] = info.get_default(call_default_factory=True)
    try:
        partial = cls.model_construct(**values)  # runs model_post_init, which may need a failed key
    except Exception:  # noqa: BLE001 - then the checks cannot run; the failed keys are reported
        return []
    for name in set(partial.__dict__) - set(values):
        del partial.__dict__[name]  # a failed key with a default must not be checked as its default
    out: list[InitErrorDetails] = []
    for func in validators:
        try:
            func(partial)
        except ValidationError as several:  # raise_problems: each problem at its own key
            out += _reraisable(several)
        except (ValueError, AssertionError) as problem:
            blamed = getattr(problem, "key", None)  # a KeyProblem's key path
            message = getattr(problem, "message", None) or str(problem)
            out.append(
                InitErrorDetails(
                    type=PydanticCustomError("cross_check", "{message}", {"message": message}),
                    loc=tuple(blamed) if blamed else (),
                    input=data.get(blamed[0]) if blamed else data,
                )
            )
        except Exception:  # noqa: BLE001 - most often AttributeError: the check needs a key that failed,
            continue  # and that key's own error is reported; a check that cannot run on partial data is skipped
    return out


def _adapter(cls: type[BaseModel], name: str) -> TypeAdapter[Any]:
    adapter = _FIELD_ADAPTERS.get((cls, name))
    if adapter is None:
        info = cls.model_fields[name]
        annotated: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        try:
            adapter = TypeAdapter(annotated, config=ConfigDict(strict=True))
        except Exception:  # a model type carries its own config and refuses another one
            adapter = TypeAdapter(annotated)
        _FIELD_ADAPTERS[(cls, name)] = adapter
    return adapter


def _reraisable(exc: ValidationError) -> list[InitErrorDetails]:
    """The errors of `exc` in a form ValidationError.from_exception_data accepts, type and context kept."""
    out = []
    for e in exc.errors(include_url=False):
        ctx = dict(e.get("ctx") or {})
        ctx.setdefault("message", e["msg"])
        out.append(
            InitErrorDetails(
                type=PydanticCustomError(e["type"], "{message}", ctx),
                loc=e["loc"],
                input=e.get("input"),
            )
        )
    return out


def _time_of_day(value: Any) -> str:
    # Checked before pydantic's own str check so that `start: 1200` gets the same clear message.
    m = _HHMM.match(value) if isinstance(value, str) else None
    if not m or not isinstance(value, str):
        raise ValueError('must be a time of day written "HH:MM" (quote it in YAML)')
    hh, mm = int(m.group(1)), int(m.group(2))
    if not (hh < 24 and mm < 60) and (hh, mm) != (24, 0):
        raise ValueError("must be a time of day between 00:00 and 24:00")
    return value


TimeOfDay = Annotated[str, BeforeValidator(_time_of_day)]

_YMD = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _date(value: Any) -> dt.date:
    # YAML reads 2025-06-22 as a date and "2025-06-22" as text; engineers should not need to know which.
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        return value
    if isinstance(value, str) and _YMD.match(value):
        try:
            return dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError("is not a calendar date") from None
    raise ValueError("must be a date written YYYY-MM-DD")


Date = Annotated[dt.date, BeforeValidator(_date)]


def minutes(hhmm: str) -> int:
    """Minutes after midnight of an `HH:MM` string (`24:00` -> 1440)."""
    h, m = hhmm.split(":")
    return int(h) * 60 + int(m)


class Window(Strict):
    """A daily window in local time; `end` before `start` means it runs past midnight (22:00-06:00)."""

    start: TimeOfDay
    end: TimeOfDay

    @model_validator(mode="after")
    def _not_empty(self) -> Window:
        if minutes(self.start) % 1440 == minutes(self.end) % 1440:
            raise KeyProblem("end", f"window is empty: end must differ from start {self.start!r} (got {self.end!r})")
        return self

    def spans(self) -> list[tuple[int, int]]:
        """The window as half-open minute ranges within one day, split at midnight."""
        s, e = minutes(self.start), minutes(self.end)
        if s < e:
            return [(s, e)]
        return [(s, 1440), (0, e)] if e > 0 else [(s, 1440)]

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


def overlapping(windows: list[Window]) -> tuple[int, int] | None:
    """Indexes (i, j) of the first two windows that overlap, or None."""
    for i, a in enumerate(windows):
        for j in range(i + 1, len(windows)):
            if windows_overlap(a, windows[j]):
                return i, j
    return None


def windows_overlap(a: Window, b: Window) -> bool:
    """True when two daily windows share at least one minute."""
    return any(s1 < e2 and s2 < e1 for s1, e1 in a.spans() for s2, e2 in b.spans())
