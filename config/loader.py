"""Load every YAML file of a config directory, validate all of it at once, and report every problem."""

from __future__ import annotations

import hashlib
import os
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from config.base import KeyProblem
from config.durations import duration_problem, is_duration_key
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
    "CITYWATCH_CLOCK": (("ingest", "clock"), str),
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

    cache_key = _cache_key(directory, files, env)
    cached = _CACHE.get(cache_key) if cache_key else None
    if cached is not None:
        return cached

    unreadable = False  # a file could not be read or parsed: the sections it holds are unknown
    root: dict[str, Any] = {}
    # A section no file gives is blamed on the directory itself.
    lines: Lines = {(): (_display(directory).rstrip("/") + "/", None)}
    for path in files:
        name = _display(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(ConfigProblem(name, None, "", f"cannot read: {exc}"))
            unreadable = True
            continue
        doc, found = parse_yaml(text, name)
        problems += found
        if doc is None:
            unreadable = unreadable or bool(found) and found[0].message.startswith("YAML syntax error")
            continue
        if not isinstance(doc.data, dict):
            problems.append(
                ConfigProblem(name, 1, "", f"must be a mapping of sections such as 'devices:' (got {show(doc.data)})")
            )
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
    if config is not None:
        problems += _gas_levels_under_mop(config, lines)
    if unreadable:
        # The "missing" section is most likely in the file that could not be parsed: say that once, there.
        problems = [p for p in problems if not p.message.startswith("required section is missing")]
    if problems:
        raise ConfigError(problems)
    config._dir = directory.resolve()
    config._lines = lines
    if cache_key:
        _CACHE[cache_key] = config
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    return config


# Valid configs by (directory, working directory, each file's name and content, env overrides).
# Tests and reloads load the same unchanged directory often; a Config is frozen, so sharing it is safe.
# Content, not mtime: two writes within one clock tick would otherwise return a stale config.
_CACHE: dict[tuple, Config] = {}
_CACHE_SIZE = 16


def _cache_key(directory: Path, files: list[Path], env: dict[str, str]) -> tuple | None:
    try:
        digests = tuple((p.name, hashlib.blake2b(p.read_bytes(), digest_size=16).digest()) for p in files)
    except OSError:
        return None
    return (str(directory.resolve()), os.getcwd(), digests, tuple(env.get(v) for v in ENV_OVERRIDES))


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
    return lines.get((), ("config", None))


def _problem(lines: Lines, path: tuple, message: str) -> ConfigProblem:
    file, line = locate(lines, path)
    return ConfigProblem(file, line, path_text(path), message)


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return not k.endswith("_env") and (k in SECRET_KEYS or k.endswith(("_password", "_token", "_secret")))


def _find_secrets(node: Any, path: tuple, lines: Lines, problems: list) -> set[str]:
    """Report every key that holds a secret (never echoing its value); return their key paths."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            sub = path + (key,)
            if _is_secret_key(str(key)):
                problems.append(
                    _problem(
                        lines,
                        sub,
                        "a secret must not be written in YAML; put it in an environment variable and give"
                        f" that variable's name in {_env_key_for(sub, node)}",
                    )
                )
                found.add(path_text(sub))
            else:
                found |= _find_secrets(value, sub, lines, problems)
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found |= _find_secrets(value, path + (i,), lines, problems)
    return found


def _env_key_for(path: tuple, parent: dict) -> str:
    """The `*_env` key that should name the variable instead of the secret at `path` (in mapping `parent`)."""
    models = _models_in(_resolve(Config, path[:-1])[3])
    tagged = [m for m in models if _tag_of(m) is not None and _tag_of(m) == parent.get("type")]
    owner = tagged[0] if tagged else (models[0] if len(models) == 1 else None)
    names = [n for n in _field_names(owner) if n.endswith("_env")]
    wanted = f"{path[-1]}_env"
    if wanted in names:
        return f"'{wanted}'"
    if len(names) == 1:
        return f"'{names[0]}'"
    return "this section's '*_env' key" if names else "a '*_env' key (see the comments of this file)"


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
        field_path, owner, field, at = _resolve(model, loc)
        is_model = bool(_models_in(at))
        blamed = getattr((err.get("ctx") or {}).get("error"), "key", None)
        if isinstance(blamed, tuple):
            # A model validator blamed one of the model's keys (config.base.KeyProblem).
            field_path, field = field_path + blamed, blamed[-1] if isinstance(blamed[-1], str) else field
        elif err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            # Blame the tag key itself (`type`), not the whole mapping.
            field_path += (str((err.get("ctx") or {}).get("discriminator", "type")).strip("'"),)
        path = base + field_path
        message = _message(err, owner, field, path, is_model)
        out.append(_problem(lines, path, message))
    return out


def _message(err: dict, owner: Any, field: str | None, path: tuple, is_model: bool = False) -> str:
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
        names = _field_names(owner)
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


def _resolve(model: type[BaseModel], loc: tuple) -> tuple[tuple, Any, str | None, Any]:
    """Walk pydantic's error location through the schema.

    Returns the user-facing key path (without union tags), the model owning the last key, that
    key's field name, and the type expected at the location.
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

# Broker user names of the service's own accounts (citywatch.localstack): no operator may take one.
RESERVED_BROKER_USERS = {"citywatch": "service (collector)", "tester": "tester", "console": "web console"}


def _items(root: dict, key: str) -> list[tuple[int, dict]]:
    value = root.get(key)
    if not isinstance(value, list):
        return []
    return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)]


def _cross_references(root: dict, lines: Lines) -> list[ConfigProblem]:
    """Checks across sections and list items: unique ids, and every reference names something that exists.

    Works on the raw data so that it runs even when validation failed elsewhere; values of the wrong
    type are skipped here (validation reports them).
    """
    out: list[ConfigProblem] = []
    site_ids = _unique_ids(root, "sites", "site", lines, out)
    device_ids = _unique_ids(root, "devices", "device", lines, out)
    districts = {s["district"] for _, s in _items(root, "sites") if isinstance(s.get("district"), str)}

    # HJ 212 frames name their device by MN only: two devices with one MN would mix their readings.
    mns: dict[str, int] = {}
    for i, dev in _items(root, "devices"):
        did = dev.get("id")
        if not isinstance(did, str) or device_ids.get(did) != i:
            continue  # a duplicate id is reported as such
        mn = dev.get("mn") if isinstance(dev.get("mn"), str) else did
        if mn in mns:
            j = mns[mn]
            other = root["devices"][j].get("id")
            key = ("devices", i, "mn") if "mn" in dev else ("devices", i, "id")
            whose = "" if "mn" in dev else " (its id, as it gives no mn)"
            out.append(
                _problem(lines, key, f"HJ 212 MN{whose} is already used by devices[{j}] {other!r}"
                         f" ({_where(lines, ('devices', j), key)}) (got {mn!r})")
            )
        else:
            mns[mn] = i
    for i, dev in _items(root, "devices"):
        _ref(out, lines, ("devices", i, "site"), dev.get("site"), "site", site_ids)

    time = root.get("time") if isinstance(root.get("time"), dict) else {}
    for i, permit in _items(time, "permits"):
        _ref(out, lines, ("time", "permits", i, "site"), permit.get("site"), "site", site_ids)
    for section in ("noise", "gas"):
        sec = root.get(section) if isinstance(root.get(section), dict) else {}
        for i, ov in _items(sec, "overrides"):
            _ref(out, lines, (section, "overrides", i, "site"), ov.get("site"), "site", site_ids)
            _ref(out, lines, (section, "overrides", i, "device"), ov.get("device"), "device", device_ids)

    rule_ids = _unique_ids(root, "rules", "rule", lines, out)
    alerting = root.get("alerting") if isinstance(root.get("alerting"), dict) else {}
    sinks = alerting.get("sinks") if isinstance(alerting.get("sinks"), dict) else {}
    # A route may name an on-call team (`team:<id>`, alerts/roster.py) as it names a sink.
    oncall = root.get("oncall") if isinstance(root.get("oncall"), dict) else {}
    teams = {f"team:{t['id']}": None for _, t in _items(oncall, "teams") if isinstance(t.get("id"), str)}
    known = {"sink": {**sinks, **teams}, "rule": rule_ids, "site": site_ids, "district": districts}
    route = alerting.get("route")
    if isinstance(route, dict):
        out += _check_route(route, ("alerting", "route"), known, lines)
    for i, inhibit in _items(alerting, "inhibit"):
        for key in ("source_rule", "target_rule"):
            _refs(out, lines, ("alerting", "inhibit", i, key), inhibit.get(key), "rule", rule_ids)
    for i, quiet in _items(alerting, "quiet_windows"):
        match = quiet.get("match")
        if isinstance(match, dict):
            out += _check_match(match, ("alerting", "quiet_windows", i, "match"), known, lines)
    # An operator's broker account must be its own: one user name per account in the generated ACL, and a
    # device authenticates as its id, so an operator named like a device would share that device's grants.
    taken = {str(d).casefold(): f"device {d!r}" for d in device_ids}
    taken.update({u.casefold(): f"the {role} account" for u, role in RESERVED_BROKER_USERS.items()})
    for i, op in _items(alerting, "operators"):
        name = op.get("username")
        if isinstance(name, str) and name.casefold() in taken:
            out.append(_problem(lines, ("alerting", "operators", i, "username"),
                                f"must not be the broker user name of {taken[name.casefold()]} (got {name!r})"))
    return out


def _gas_levels_under_mop(config: Config, lines: Lines) -> list[ConfigProblem]:
    """G-high (rel_high x set pressure, yellow) must lie below G-highhigh (at most the MOP, red) on every
    gas device, or the red alarm comes first. Blames the rel_high key in force (a class default or an
    override), once, with the devices it breaks."""
    g = config.gas
    hit: dict[tuple, list[tuple[str, float, float, float]]] = {}
    for d in config.devices:
        if d.kind != "gas":
            continue
        key: tuple = ("gas", "rel_high", "low" if d.pressure_class == "low" else "medium")
        rel = g.rel_high.low if d.pressure_class == "low" else g.rel_high.medium
        for i, o in sorted(enumerate(g.overrides), key=lambda io: io[1].device is not None):
            if o.rel_high is not None and ((d.site == o.site) if o.site else (d.id == o.device)):
                key, rel = ("gas", "overrides", i, "rel_high"), o.rel_high
        if rel * d.set_pressure_kpa >= d.mop_kpa:
            src = path_text(key)
            if key not in lines:  # the default is in force: the device's MOP is the value to look at
                key = ("devices", config.device_index(d.id), "mop_kpa")
            hit.setdefault(key, []).append((d.id, rel, d.set_pressure_kpa, d.mop_kpa, src))
    out = []
    for key, devs in hit.items():
        dev, rel, p_set, mop, src = devs[0]
        if key[0] == "devices":
            out.append(_problem(lines, key, f"must be above the G-high limit {rel:g} x set_pressure_kpa {p_set:g} = "
                                f"{rel * p_set:.4g} kPa ({src}): G-highhigh (red, at most the MOP) would come "
                                f"before G-high (got {mop:g})"))
            continue
        more = f" and {len(devs) - 1} more gas device(s)" if len(devs) > 1 else ""
        out.append(_problem(lines, key, f"G-high limit {rel:g} x set_pressure_kpa {p_set:g} = {rel * p_set:.4g} kPa "
                            f"is not below mop_kpa {mop:g} of device {dev!r}{more}: G-highhigh (red, at most the MOP) "
                            f"would come before G-high (got {rel:g})"))
    return out


class _Incomplete(dict):
    """Ids of a list in which some item has no usable id: references to it are not checked, since
    the missing id may be the one referenced (that item's own problem is reported)."""

    def __contains__(self, key: object) -> bool:
        return True


def _unique_ids(root: dict, section: str, what: str, lines: Lines, out: list) -> dict[str, int]:
    """Map id -> index of the items of list `section`; report the second and later uses of an id."""
    ids: dict[str, int] = {}
    value = root.get(section)
    complete = isinstance(value, list) and all(isinstance(v, dict) and isinstance(v.get("id"), str) for v in value)
    for i, item in _items(root, section):
        ident = item.get("id")
        if not isinstance(ident, str):
            continue
        if ident in ids:
            j = ids[ident]
            out.append(
                _problem(lines, (section, i, "id"), f"duplicate {what} id; already used by {section}[{j}]"
                         f" ({_where(lines, (section, j), (section, i))}) (got {ident!r})")
            )
        else:
            ids[ident] = i
    if section not in root:
        # A required section that is missing is reported as such; do not add "unknown" for every reference.
        return _Incomplete() if Config.model_fields[section].is_required() else ids
    return ids if complete else _Incomplete(ids)


def _where(lines: Lines, path: tuple, near: tuple) -> str:
    """Where `path` was written, said briefly when it is in the same file as `near`."""
    file, line = locate(lines, path)
    if line and file == locate(lines, near)[0]:
        return f"line {line}"
    return f"{file}:{line}" if line else file


def _ref(out: list, lines: Lines, path: tuple, ref: Any, what: str, known: Any) -> None:
    if isinstance(ref, str) and ref not in known:
        out.append(_problem(lines, path, f"unknown {what}{did_you_mean(ref, known)} (got {ref!r})"))


def _refs(out: list, lines: Lines, path: tuple, refs: Any, what: str, known: Any) -> None:
    if isinstance(refs, list):
        for j, ref in enumerate(refs):
            _ref(out, lines, path + (j,), ref, what, known)


def _check_route(route: dict, path: tuple, known: dict, lines: Lines) -> list[ConfigProblem]:
    out: list[ConfigProblem] = []
    _refs(out, lines, path + ("receivers",), route.get("receivers"), "sink", known["sink"])
    match = route.get("match")
    if isinstance(match, dict):
        out += _check_match(match, path + ("match",), known, lines)
    children = route.get("routes")
    if isinstance(children, list):
        for j, child in enumerate(children):
            if isinstance(child, dict):
                out += _check_route(child, path + ("routes", j), known, lines)
    return out


def _check_match(match: dict, path: tuple, known: dict, lines: Lines) -> list[ConfigProblem]:
    out: list[ConfigProblem] = []
    for key in ("rule", "site", "district"):
        _refs(out, lines, path + (key,), match.get(key), key, known[key])
    return out
