"""Load every YAML file of a config directory, validate all of it at once, and report every problem."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from config.errors import ConfigError, ConfigProblem, did_you_mean, path_text, show
from config.model import Config
from config.pydantic_errors import field_names, models_in, problems_from_validation, resolve_location, tag_of
from config.yamlsrc import Lines, locate, parse_yaml, problem_at

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
    "CITYWATCH_CLUSTER_NODES": (("connections", "cluster", "nodes"), str),  # comma-separated host:port
    "CITYWATCH_CLUSTER_NATS": (("connections", "cluster", "nats"), str),  # comma-separated host:port (NATS clients)
}

def load_config(directory: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
                rules_file: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate every `*.yaml` file in `directory` (default: the shipped `config/`).

    `env` replaces `os.environ` for the CITYWATCH_* overrides (tests pass their own).
    `rules_file`: a YAML file holding only `rules:` (as config/rules.yaml does) that replaces the directory's
    rules; the rest comes from the directory. A reference from the rest (an inhibit entry, a route's or quiet
    window's `match.rule`) to a rule the file does not define is then no error: it never matches.
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

    cache_key = _cache_key(directory, files + ([Path(rules_file)] if rules_file is not None else []), env)
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
            if rules_file is not None and key == "rules":
                continue  # replaced by the rules file
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

    if rules_file is not None:
        unreadable |= _read_rules_file(Path(rules_file), root, lines, problems)
    secret_paths = _find_secrets(root, (), lines, problems)
    _apply_env(root, env, lines)
    config = None
    try:
        config = Config.model_validate(root)
    except ValidationError as exc:
        problems += [p for p in problems_from_validation(exc, Config, (), lines) if p.path not in secret_paths]
    problems += _cross_references(root, lines, rules_given=rules_file is not None)
    if config is not None:
        problems += _gas_levels_under_mop(config, lines)
    if unreadable:
        # The "missing" section is most likely in the file that could not be parsed: say that once, there.
        problems = [p for p in problems if not p.message.startswith("required section is missing")]
    if problems or config is None:  # no config means validation failed, which is a problem reported
        raise ConfigError(problems)
    config._dir = directory.resolve()
    config._lines = lines
    if cache_key:
        _CACHE[cache_key] = config
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
    return config


def _read_rules_file(path: Path, root: dict[str, Any], lines: Lines, problems: list[ConfigProblem]) -> bool:
    """Put the `rules` of a rules file into `root` (load_config's `rules_file`); True if it was unreadable."""
    name = _display(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(ConfigProblem(name, None, "", f"cannot read: {getattr(exc, 'strerror', None) or exc}"))
        return True
    doc, found = parse_yaml(text, name)
    problems += found
    if doc is None:
        return bool(found) and found[0].message.startswith("YAML syntax error")
    if not isinstance(doc.data, dict) or "rules" not in doc.data:
        problems.append(ConfigProblem(name, 1, "", "a rules file must be a mapping with a 'rules:' list, as "
                                      f"config/rules.yaml (got {show(doc.data)})"))
        return False
    for key in doc.data:
        if key != "rules":
            problems.append(ConfigProblem(name, doc.lines.get((key,)), str(key), "a rules file holds only 'rules:'; "
                                          "the other sections come from the config directory (--config)"))
    root["rules"] = doc.data["rules"]
    for p, line in doc.lines.items():
        if p and p[0] == "rules":
            lines[p] = (name, line)
    return False


# Valid configs by (directory, working directory, each file's name and content, env overrides).
# Tests and reloads load the same unchanged directory often; a Config is frozen, so sharing it is safe.
# Content, not mtime: two writes within one clock tick would otherwise return a stale config.
_CACHE: dict[tuple[Any, ...], Config] = {}
_CACHE_SIZE = 16


def _cache_key(directory: Path, files: list[Path], env: dict[str, str]) -> tuple[Any, ...] | None:
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


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return not k.endswith("_env") and (k in SECRET_KEYS or k.endswith(("_password", "_token", "_secret")))


def _find_secrets(node: Any, path: tuple[Any, ...], lines: Lines, problems: list[ConfigProblem]) -> set[str]:
    """Report every key that holds a secret (never echoing its value); return their key paths."""
    found: set[str] = set()
    if isinstance(node, dict):
        for key, value in node.items():
            sub = path + (key,)
            if _is_secret_key(str(key)):
                problems.append(
                    problem_at(
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


def _env_key_for(path: tuple[Any, ...], parent: dict[str, Any]) -> str:
    """The `*_env` key that should name the variable instead of the secret at `path` (in mapping `parent`)."""
    models = models_in(resolve_location(Config, path[:-1])[3])
    tagged = [m for m in models if tag_of(m) is not None and tag_of(m) == parent.get("type")]
    owner = tagged[0] if tagged else (models[0] if len(models) == 1 else None)
    names = [n for n in field_names(owner) if n.endswith("_env")]
    wanted = f"{path[-1]}_env"
    if wanted in names:
        return f"'{wanted}'"
    if len(names) == 1:
        return f"'{names[0]}'"
    return "this section's '*_env' key" if names else "a '*_env' key (see the comments of this file)"


def _apply_env(root: dict[str, Any], env: dict[str, str], lines: Lines) -> None:
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


# ----- cross references ---------------------------------------------------------------------------

# Broker user names of the service's own accounts (citywatch.localstack): no operator may take one.
RESERVED_BROKER_USERS = {"citywatch": "service (collector)", "tester": "tester", "console": "web console"}


def _items(root: dict[str, Any], key: str) -> list[tuple[int, dict[str, Any]]]:
    value = root.get(key)
    if not isinstance(value, list):
        return []
    return [(i, v) for i, v in enumerate(value) if isinstance(v, dict)]


def _section(root: dict[str, Any], key: str) -> dict[str, Any]:
    """The mapping at `key`, or an empty one when it is missing or not a mapping (validation reports that)."""
    value = root.get(key)
    return value if isinstance(value, dict) else {}


def _cross_references(root: dict[str, Any], lines: Lines, rules_given: bool = False) -> list[ConfigProblem]:
    """Checks across sections and list items: unique ids, and every reference names something that exists.

    Works on the raw data so that it runs even when validation failed elsewhere; values of the wrong
    type are skipped here (validation reports them). rules_given: the rules came from a rules file of
    their own, so references to rules from the rest of the config are not checked (load_config).
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
        given_mn = dev.get("mn")
        mn = given_mn if isinstance(given_mn, str) else did
        if mn in mns:
            j = mns[mn]
            other = root["devices"][j].get("id")
            key = ("devices", i, "mn") if "mn" in dev else ("devices", i, "id")
            whose = "" if "mn" in dev else " (its id, as it gives no mn)"
            out.append(
                problem_at(lines, key, f"HJ 212 MN{whose} is already used by devices[{j}] {other!r}"
                         f" ({_where(lines, ('devices', j), key)}) (got {mn!r})")
            )
        else:
            mns[mn] = i
    for i, dev in _items(root, "devices"):
        _ref(out, lines, ("devices", i, "site"), dev.get("site"), "site", site_ids)

    time = _section(root, "time")
    for i, permit in _items(time, "permits"):
        _ref(out, lines, ("time", "permits", i, "site"), permit.get("site"), "site", site_ids)
    for section in ("noise", "gas"):
        sec = _section(root, section)
        for i, ov in _items(sec, "overrides"):
            _ref(out, lines, (section, "overrides", i, "site"), ov.get("site"), "site", site_ids)
            _ref(out, lines, (section, "overrides", i, "device"), ov.get("device"), "device", device_ids)

    rule_ids = _unique_ids(root, "rules", "rule", lines, out)
    if rules_given:
        rule_ids = _Incomplete(rule_ids)
    alerting = _section(root, "alerting")
    sinks = _section(alerting, "sinks")
    # A route may name an on-call team (`team:<id>`, alerts/roster.py) as it names a sink.
    oncall = _section(root, "oncall")
    teams = {f"team:{t['id']}": None for _, t in _items(oncall, "teams") if isinstance(t.get("id"), str)}
    known = {"sink": {**sinks, **teams}, "rule": rule_ids, "site": site_ids, "district": districts}
    route = alerting.get("route")
    if isinstance(route, dict):
        out += _check_route(route, ("alerting", "route"), known, lines)
    for i, inhibit in _items(alerting, "inhibit"):
        for ref_key in ("source_rule", "target_rule"):
            _refs(out, lines, ("alerting", "inhibit", i, ref_key), inhibit.get(ref_key), "rule", rule_ids)
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
            out.append(problem_at(lines, ("alerting", "operators", i, "username"),
                                f"must not be the broker user name of {taken[name.casefold()]} (got {name!r})"))
    return out


def _gas_levels_under_mop(config: Config, lines: Lines) -> list[ConfigProblem]:
    """G-high (rel_high x set pressure, yellow) must lie below G-highhigh (at most the MOP, red) on every
    gas device, or the red alarm comes first. Blames the rel_high key in force (a class default or an
    override), once, with the devices it breaks."""
    g = config.gas
    hit: dict[tuple[Any, ...], list[tuple[str, float, float, float, str]]] = {}
    for d in config.devices:
        if d.kind != "gas" or d.set_pressure_kpa is None or d.mop_kpa is None:  # a valid gas device has both
            continue
        key: tuple[Any, ...] = ("gas", "rel_high", "low" if d.pressure_class == "low" else "medium")
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
            out.append(problem_at(lines, key, f"must be above the G-high limit {rel:g} x set_pressure_kpa {p_set:g} = "
                                f"{rel * p_set:.4g} kPa ({src}): G-highhigh (red, at most the MOP) would come "
                                f"before G-high (got {mop:g})"))
            continue
        more = f" and {len(devs) - 1} more gas device(s)" if len(devs) > 1 else ""
        out.append(problem_at(lines, key, f"G-high limit {rel:g} x set_pressure_kpa {p_set:g} = {rel * p_set:.4g} kPa "
                            f"is not below mop_kpa {mop:g} of device {dev!r}{more}: G-highhigh (red, at most the MOP) "
                            f"would come before G-high (got {rel:g})"))
    return out


class _Incomplete(dict[str, int]):
    """Ids of a list in which some item has no usable id: references to it are not checked, since
    the missing id may be the one referenced (that item's own problem is reported)."""

    def __contains__(self, key: object) -> bool:
        return True


def _unique_ids(root: dict[str, Any], section: str, what: str, lines: Lines, out: list[ConfigProblem]) -> dict[str, int]:
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
                problem_at(lines, (section, i, "id"), f"duplicate {what} id; already used by {section}[{j}]"
                         f" ({_where(lines, (section, j), (section, i))}) (got {ident!r})")
            )
        else:
            ids[ident] = i
    if section not in root:
        # A required section that is missing is reported as such; do not add "unknown" for every reference.
        return _Incomplete() if Config.model_fields[section].is_required() else ids
    return ids if complete else _Incomplete(ids)


def _where(lines: Lines, path: tuple[Any, ...], near: tuple[Any, ...]) -> str:
    """Where `path` was written, said briefly when it is in the same file as `near`."""
    file, line = locate(lines, path)
    if line and file == locate(lines, near)[0]:
        return f"line {line}"
    return f"{file}:{line}" if line else file


def _ref(out: list[ConfigProblem], lines: Lines, path: tuple[Any, ...], ref: Any, what: str, known: Any) -> None:
    if isinstance(ref, str) and ref not in known:
        out.append(problem_at(lines, path, f"unknown {what}{did_you_mean(ref, known)} (got {ref!r})"))


def _refs(out: list[ConfigProblem], lines: Lines, path: tuple[Any, ...], refs: Any, what: str, known: Any) -> None:
    if isinstance(refs, list):
        for j, ref in enumerate(refs):
            _ref(out, lines, path + (j,), ref, what, known)


def _check_route(route: dict[str, Any], path: tuple[Any, ...], known: dict[str, Any], lines: Lines) -> list[ConfigProblem]:
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


def _check_match(match: dict[str, Any], path: tuple[Any, ...], known: dict[str, Any], lines: Lines) -> list[ConfigProblem]:
    out: list[ConfigProblem] = []
    for key in ("rule", "site", "district"):
        _refs(out, lines, path + (key,), match.get(key), key, known[key])
    return out
