"""pydantic's validation errors as config problems: each error's location walked through the schema to
the key path the user wrote (union tags left out), and its message in the config's words: ranges with
the key's unit, "did you mean" for keys and enum values, never a secret's value."""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from config.base import KeyProblem
from config.durations import duration_problem, is_duration_key
from config.errors import ConfigProblem, did_you_mean, show
from config.model import Config
from config.yamlsrc import Lines, problem_at

_TYPE_WORDS = {
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "int_parsing": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "string_type": "must be text",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be a mapping",
    "model_type": "must be a mapping",
    "model_attributes_type": "must be a mapping",
    "date_type": "must be a date written YYYY-MM-DD",
    "date_parsing": "must be a date written YYYY-MM-DD",
    "date_from_datetime_parsing": "must be a date written YYYY-MM-DD",
    "finite_number": "must be a finite number",
}


def problems_from_validation(exc: ValidationError, model: type[BaseModel], base: tuple[Any, ...], lines: Lines) -> list[ConfigProblem]:
    """Turn a pydantic ValidationError of `model` (validated at key path `base`) into problems."""
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        field_path, owner, field, at = resolve_location(model, loc)
        is_model = bool(models_in(at))
        blamed = getattr((err.get("ctx") or {}).get("error"), "key", None)
        if isinstance(blamed, tuple):
            # A model validator blamed one of the model's keys (config.base.KeyProblem).
            field_path, field = field_path + blamed, blamed[-1] if isinstance(blamed[-1], str) else field
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # Blame the tag key itself (`type`), not the whole mapping.
            field_path += (str((err.get("ctx") or {}).get("discriminator", "type")).strip("'"),)
        path = base + field_path
        message = _message(err, owner, field, path, is_model)
        out.append(problem_at(lines, path, message))
    return out


def _message(err: ErrorDetails, owner: Any, field: str | None, path: tuple[Any, ...], is_model: bool = False) -> str:
    """The text of one pydantic error; `is_model` when the failing value is a whole mapping (model validator)."""
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    got = f" (got {show(value)})"
    key = str(path[-1]) if path else ""
    if kind == "cross_check":
        return str(ctx.get("message", err.get("msg", "")))
    if kind == "missing":
        if owner is Config:
            return "required section is missing; no YAML file in this directory gives it"
        return "required key is missing"
    if kind == "extra_forbidden":
        names = field_names(owner)
        what = "unknown section" if owner is Config else "unknown key"
        hint = did_you_mean(key, names)
        if not hint and names:
            hint = f"; expected one of {', '.join(sorted(names))}" if len(names) <= 12 else ""
        return what + hint
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return _range_text(owner, field, ctx) + _unit(key) + got
    if kind in _TYPE_WORDS:
        why = duration_problem(value) if is_duration_key(key) else None
        return (why or _TYPE_WORDS[kind]) + got
    if kind == "literal_error":
        options = [o.strip().strip("'") for o in str(ctx.get("expected", "")).replace(" or ", ", ").split(",")]
        return f"must be one of {', '.join(options)}{did_you_mean(str(value), options)}" + got
    if kind == "value_error":
        error = ctx.get("error")
        msg = getattr(error, "message", None) or str(err.get("msg", "")).removeprefix("Value error, ")
        if "(got " in msg or is_model or isinstance(error, KeyProblem):
            return msg  # a model validator's input is the whole mapping: not worth echoing
        return msg + got
    if kind == "string_pattern_mismatch":
        if key.endswith("_env"):
            # Never echo it: a value here that is not a variable name is most likely the secret itself.
            return (
                "must name an environment variable (letters, digits and '_'), not hold the secret itself"
                f" (got {len(str(value))} characters, not shown)"
            )
        return "has characters that are not allowed (use letters, digits, '_', '-', '.')" + got
    if kind == "string_too_short":
        return "must not be empty" + got
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters" + got
    if kind == "too_short":
        return "must not be empty" if not value else f"must have at least {ctx.get('min_length')} items" + got
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} items" + got
    if kind == "union_tag_invalid":
        tags = [t.strip().strip("'") for t in str(ctx.get("expected_tags", "")).split(",")]
        tag = str(ctx.get("tag"))
        return f"must be one of {', '.join(tags)}{did_you_mean(tag, tags)} (got {show(tag)})"
    if kind == "union_tag_not_found":
        return "required key is missing"
    return str(err.get("msg", kind)) + ("" if isinstance(value, (dict, list)) else got)


# Units named by a key's suffix (STYLE: keys carry their units), spelled out in range messages.
_UNITS = {"_s": "seconds", "_ms": "milliseconds", "_m": "metres", "_db": "dB", "_kpa": "kPa", "_v": "V",
          "_pct": "%", "_mb": "MB", "_bytes": "bytes"}


def _unit(key: str) -> str:
    for suffix, unit in _UNITS.items():
        if key.endswith(suffix):
            return " " + unit
    return ""


def _range_text(owner: Any, field: str | None, ctx: dict[str, Any]) -> str:
    lo = hi = None
    lo_open = hi_open = False
    info = owner.model_fields.get(field) if owner is not None and field else None
    for meta in (info.metadata if info else []):
        for attr, is_lo, open_ in (("ge", True, False), ("gt", True, True), ("le", False, False), ("lt", False, True)):
            v = getattr(meta, attr, None)
            if v is not None:
                if is_lo:
                    lo, lo_open = v, open_
                else:
                    hi, hi_open = v, open_
    if lo is None and hi is None:
        for attr, is_lo, open_ in (("ge", True, False), ("gt", True, True), ("le", False, False), ("lt", False, True)):
            if attr in ctx:
                if is_lo:
                    lo, lo_open = ctx[attr], open_
                else:
                    hi, hi_open = ctx[attr], open_
    if lo is not None and hi is not None:
        if not lo_open and not hi_open:
            return f"must be between {lo:g} and {hi:g}"
        return f"must be {'above' if lo_open else 'at least'} {lo:g} and {'below' if hi_open else 'at most'} {hi:g}"
    if lo is not None:
        return f"must be {'above' if lo_open else 'at least'} {lo:g}"
    return f"must be {'below' if hi_open else 'at most'} {hi:g}"


def field_names(owner: Any) -> list[str]:
    """The keys of a model as written in YAML (aliases), [] for anything else."""
    if owner is None or not hasattr(owner, "model_fields"):
        return []
    return [info.alias or name for name, info in owner.model_fields.items()]


def resolve_location(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any, str | None, Any]:
    """Walk pydantic's error location through the schema.

    Returns the user-facing key path (without union tags), the model owning the last key, that
    key's field name, and the type expected at the location.
    """
    path: list[Any] = []
    current: Any = model
    owner: Any = None
    field: str | None = None
    for part in loc:
        candidates = models_in(current)
        if isinstance(part, int):
            path.append(part)
            current = _item_type(current)
            continue
        # A discriminated union puts the tag value in the location: select that member, keep no key.
        tagged = [m for m in candidates if tag_of(m) == part]
        if tagged and not any(part in _by_alias(m) for m in candidates):
            current = tagged[0]
            continue
        value_type = _dict_value_type(current)
        if value_type is not None:
            path.append(part)  # a key of a user-named mapping (a sink name)
            current = value_type
            continue
        path.append(part)
        target = next((m for m in candidates if part in _by_alias(m)), None)
        if target is None:
            owner, field, current = (candidates[0] if candidates else None), None, None
            continue
        owner = target
        field = _by_alias(target)[part]
        current = target.model_fields[field].annotation
    return tuple(path), owner, field, current


def _dict_value_type(tp: Any) -> Any:
    for t in _unwrap(tp):
        if typing.get_origin(t) is dict:
            return typing.get_args(t)[1]
    return None


def _by_alias(model: Any) -> dict[str, str]:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return {}
    return {(info.alias or name): name for name, info in model.model_fields.items()}


def tag_of(model: Any) -> str | None:
    """The `type` tag of a member of a discriminated union (a sink type), or None."""
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
        args = typing.get_args(model.model_fields["type"].annotation)
        return args[0] if len(args) == 1 else None
    return None


def _unwrap(tp: Any) -> list[Any]:
    """All member types of an annotation, through Optional, Union and Annotated."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(tp):
            out += _unwrap(arg)
        return out
    return [tp]


def models_in(tp: Any) -> list[type[BaseModel]]:
    """The pydantic models among the member types of an annotation."""
    return [t for t in _unwrap(tp) if isinstance(t, type) and issubclass(t, BaseModel)]


def _item_type(tp: Any) -> Any:
    for t in _unwrap(tp):
        if typing.get_origin(t) in (list, tuple):
            return typing.get_args(t)[0]
    return None
