"""Load every YAML file of a config directory, validate all of it at once, and report every problem."""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from config.errors import ConfigError, ConfigProblem, did_you_mean, path_text, show
from config.model import Config
from config.yamlsrc import parse_yaml

DEFAULT_CONFIG_DIR = Path(__file__).resolve().parent

# Keys that would hold a secret: they must come from the environment (`<key>_env` names the variable).
SECRET_KEYS = {"password", "token", "secret", "api_key", "apikey", "private_key", "hmac_secret"}

# Environment variables that override connection settings, as operators and containers expect.
ENV_OVERRIDES: dict[str, tuple[tuple[str, ...], type]] = {
    "CITYWATCH_MQTT_HOST": (("connections", "mqtt", "host"), str),
    "CITYWATCH_MQTT_PORT": (("connections", "mqtt", "port"), int),
    "CITYWATCH_MQTT_USERNAME": (("connections", "mqtt", "username"), str),
    "CITYWATCH_INFLUX_URL": (("connections", "influx", "url"), str),
    "CITYWATCH_INFLUX_DATABASE": (("connections", "influx", "database"), str),
    "CITYWATCH_INFLUX_API": (("connections", "influx", "api"), str),
}

# Lines: path tuple -> (file, line). A path's first element is the top-level key.
Lines = dict[tuple, tuple[str, int | None]]


def load_config(directory: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> Config:
    """Read and validate every `*.yaml` file in `directory` (default: the shipped `config/`).

    `env` replaces `os.environ` for the CITYWATCH_* overrides (tests pass their own).
    Raises ConfigError with every problem found, each with file, line and key path.
    """
    directory = Path(directory) if directory is not None else DEFAULT_CONFIG_DIR
    env = dict(os.environ) if env is None else env
    problems: list[ConfigProblem] = []
    if not directory.is_dir():
        raise ConfigError([ConfigProblem(str(directory), None, "", "not a directory")])
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    if not files:
        raise ConfigError([ConfigProblem(str(directory), None, "", "no *.yaml files in this directory")])

    root: dict[str, Any] = {}
    lines: Lines = {}
    for path in files:
        name = _display(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(ConfigProblem(name, None, "", f"cannot read: {exc}"))
            continue
        doc, found = parse_yaml(text, name)
        problems += found
        if doc is None:
            continue
        if not isinstance(doc.data, dict):
            problems.append(ConfigProblem(name, 1, "", f"must be a mapping of sections, got {show(doc.data)}"))
            continue
        for key, value in doc.data.items():
            key = str(key)
            if key in root:
                first = lines[(key,)]
                problems.append(
                    ConfigProblem(name, doc.lines.get((key,)), key, f"section already given in {first[0]}:{first[1]}")
                )
                continue
            root[key] = value
        for p, line in doc.lines.items():
            if p and p[0] in root and lines.get((p[0],), (name,))[0] == name:
                lines[p] = (name, line)

    secret_paths = _find_secrets(root, (), lines, problems)
    _apply_env(root, env, lines)
    config = None
    try:
        config = Config.model_validate(root)
    except ValidationError as exc:
        problems += [p for p in problems_from_validation(exc, Config, (), lines) if p.path not in secret_paths]
    problems += _cross_references(root, lines)
    if problems:
        raise ConfigError(problems)
    config._dir = directory.resolve()
    config._lines = lines
    return config


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def locate(lines: Lines, path: tuple) -> tuple[str, int | None]:
    """The (file, line) of a key path, or of its nearest written parent."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return ("config", None)


def _problem(lines: Lines, path: tuple, message: str) -> ConfigProblem:
    file, line = locate(lines, path)
    return ConfigProblem(file, line, path_text(path), message)


def _find_secrets(node: Any, path: tuple, lines: Lines, problems: list) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            sub = path + (key,)
            if str(key).lower() in SECRET_KEYS:
                problems.append(
                    _problem(
                        lines,
                        sub,
                        f"secrets must not be written in YAML; put it in an environment variable and name it with"
                        f" '{key}_env'",
                    )
                )
                found.add(path_text(sub))
            else:
                found |= _find_secrets(value, sub, lines, problems)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found |= _find_secrets(value, path + (i,), lines, problems)
    return found


def _apply_env(root: dict, env: dict[str, str], lines: Lines) -> None:
    for var, (path, kind) in ENV_OVERRIDES.items():
        if var not in env or env[var] == "":
            continue
        raw = env[var]
        value: Any = raw
        if kind is int:
            try:
                value = int(raw)
            except ValueError:
                value = raw  # left as text so validation reports it against the variable
        node = root
        for key in path[:-1]:
            child = node.get(key)
            if not isinstance(child, dict):
                child = {}
                node[key] = child
            node = child
        node[path[-1]] = value
        lines[path] = (f"${var}", None)


# ----- pydantic errors -> problems ---------------------------------------------------------------

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


def problems_from_validation(exc: ValidationError, model: type[BaseModel], base: tuple, lines: Lines) -> list[ConfigProblem]:
    """Turn a pydantic ValidationError of `model` (validated at key path `base`) into problems."""
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        field_path, owner, field = _resolve(model, loc)
        path = base + field_path
        message = _message(err, owner, field, path)
        out.append(_problem(lines, path, message))
    return out


def _message(err: dict, owner: Any, field: str | None, path: tuple) -> str:
    kind = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    got = f" (got {show(value)})"
    if kind == "missing":
        return "required key is missing"
    if kind == "extra_forbidden":
        names = _field_names(owner)
        return f"unknown key{did_you_mean(str(path[-1]), names)}" + ("" if names else "")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return _range_text(owner, field, ctx) + got
    if kind in _TYPE_WORDS:
        return _TYPE_WORDS[kind] + got
    if kind == "literal_error":
        expected = ctx.get("expected", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
        return f"must be one of {expected}{did_you_mean(str(value), options)}" + got
    if kind == "value_error":
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        return msg + ("" if isinstance(value, (dict, list)) or repr(value) in msg else got)
    if kind == "string_pattern_mismatch":
        return "has characters that are not allowed (use letters, digits, '_', '-', '.')" + got
    if kind == "string_too_short":
        return "must not be empty" + got
    if kind == "too_short":
        return "must not be empty" if not value else err["msg"].lower()
    if kind == "union_tag_invalid":
        return f"type must be one of {ctx.get('expected_tags')}{did_you_mean(str(ctx.get('tag')), str(ctx.get('expected_tags','')).replace(chr(39),'').split(', '))}" + f" (got {show(ctx.get('tag'))})"
    if kind == "union_tag_not_found":
        return f"required key '{ctx.get('discriminator', 'type').strip(chr(39))}' is missing"
    return str(err.get("msg", kind)) + ("" if isinstance(value, (dict, list)) else got)


def _range_text(owner: Any, field: str | None, ctx: dict) -> str:
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


def _field_names(owner: Any) -> list[str]:
    if owner is None or not hasattr(owner, "model_fields"):
        return []
    return [info.alias or name for name, info in owner.model_fields.items()]


def _resolve(model: type[BaseModel], loc: tuple) -> tuple[tuple, Any, str | None]:
    """Walk pydantic's error location through the schema.

    Returns the user-facing key path (without union tags), the model owning the last key, and
    that key's field name.
    """
    path: list = []
    current: Any = model
    owner: Any = None
    field: str | None = None
    for part in loc:
        candidates = _models_in(current)
        if isinstance(part, int):
            path.append(part)
            current = _item_type(current)
            continue
        # A discriminated union puts the tag value in the location: select that member, keep no key.
        tagged = [m for m in candidates if _tag_of(m) == part]
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
    return tuple(path), owner, field


def _dict_value_type(tp: Any) -> Any:
    for t in _unwrap(tp):
        if typing.get_origin(t) is dict:
            return typing.get_args(t)[1]
    return None


def _by_alias(model: Any) -> dict[str, str]:
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        return {}
    return {(info.alias or name): name for name, info in model.model_fields.items()}


def _tag_of(model: Any) -> str | None:
    if isinstance(model, type) and issubclass(model, BaseModel) and "type" in model.model_fields:
        args = typing.get_args(model.model_fields["type"].annotation)
        return args[0] if len(args) == 1 else None
    return None


def _unwrap(tp: Any) -> list:
    """All member types of an annotation, through Optional, Union and Annotated."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        out = []
        for arg in typing.get_args(tp):
            out += _unwrap(arg)
        return out
    return [tp]


def _models_in(tp: Any) -> list:
    return [t for t in _unwrap(tp) if isinstance(t, type) and issubclass(t, BaseModel)]


def _item_type(tp: Any) -> Any:
    for t in _unwrap(tp):
        if typing.get_origin(t) in (list, tuple):
            return typing.get_args(t)[0]
    return None


# ----- cross references ---------------------------------------------------------------------------


def _items(root: dict, key: str) -> list[tuple[int, dict]]:
    value = root.get(key)
    if not isinstance(value, list):
        return []
    return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)]


def _cross_references(root: dict, lines: Lines) -> list[ConfigProblem]:
    out: list[ConfigProblem] = []
    site_ids: dict[str, int] = {}
    for i, site in _items(root, "sites"):
        sid = site.get("id")
        if isinstance(sid, str):
            if sid in site_ids:
                out.append(_problem(lines, ("sites", i, "id"), f"duplicate site id {sid!r} (also sites[{site_ids[sid]}])"))
            else:
                site_ids[sid] = i
    device_ids: dict[str, int] = {}
    mns: dict[str, int] = {}
    for i, dev in _items(root, "devices"):
        did = dev.get("id")
        if isinstance(did, str):
            if did in device_ids:
                out.append(
                    _problem(lines, ("devices", i, "id"), f"duplicate device id {did!r} (also devices[{device_ids[did]}])")
                )
            else:
                device_ids[did] = i
            mn = dev.get("mn") if isinstance(dev.get("mn"), str) else did
            if mn in mns and mns[mn] != device_ids.get(did):
                out.append(_problem(lines, ("devices", i, "mn"), f"HJ 212 MN {mn!r} is already used by devices[{mns[mn]}]"))
            mns.setdefault(mn, i)
        site = dev.get("site")
        if isinstance(site, str) and site not in site_ids:
            out.append(
                _problem(lines, ("devices", i, "site"), f"unknown site {site!r}{did_you_mean(site, site_ids)}")
            )
    time = root.get("time") if isinstance(root.get("time"), dict) else {}
    for i, permit in _items(time, "permits"):
        site = permit.get("site")
        if isinstance(site, str) and site not in site_ids:
            out.append(
                _problem(lines, ("time", "permits", i, "site"), f"unknown site {site!r}{did_you_mean(site, site_ids)}")
            )
    for section in ("noise", "gas"):
        sec = root.get(section) if isinstance(root.get(section), dict) else {}
        for i, ov in _items(sec, "overrides"):
            for key, known in (("site", site_ids), ("device", device_ids)):
                ref = ov.get(key)
                if isinstance(ref, str) and ref not in known:
                    out.append(
                        _problem(
                            lines, (section, "overrides", i, key), f"unknown {key} {ref!r}{did_you_mean(ref, known)}"
                        )
                    )
    rule_ids: dict[str, int] = {}
    for i, rule in _items(root, "rules"):
        rid = rule.get("id")
        if isinstance(rid, str):
            if rid in rule_ids:
                out.append(_problem(lines, ("rules", i, "id"), f"duplicate rule id {rid!r} (also rules[{rule_ids[rid]}])"))
            rule_ids.setdefault(rid, i)
    alerting = root.get("alerting") if isinstance(root.get("alerting"), dict) else {}
    sinks = alerting.get("sinks") if isinstance(alerting.get("sinks"), dict) else {}
    route = alerting.get("route")
    if isinstance(route, dict):
        out += _check_route(route, ("alerting", "route"), sinks, lines)
    return out


def _check_route(route: dict, path: tuple, sinks: dict, lines: Lines) -> list[ConfigProblem]:
    out = []
    receivers = route.get("receivers")
    if isinstance(receivers, list):
        for j, name in enumerate(receivers):
            if isinstance(name, str) and name not in sinks:
                out.append(
                    _problem(lines, path + ("receivers", j), f"unknown sink {name!r}{did_you_mean(name, sinks)}")
                )
    children = route.get("routes")
    if isinstance(children, list):
        for j, child in enumerate(children):
            if isinstance(child, dict):
                out += _check_route(child, path + ("routes", j), sinks, lines)
    return out
