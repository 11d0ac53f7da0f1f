"""`citywatch check-config [DIR]`: validate the YAML of a config directory and summarise it."""

from __future__ import annotations

import os
import sys
from collections import Counter

from config import ConfigError, load_config
from config.errors import ConfigProblem

# Exit codes: 0 the config is valid (warnings, if any, printed on stderr), 1 it has problems (each printed
# on stderr), 2 the arguments name two different directories.
EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2


def register(sub) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a config directory; list every problem with file and line",
        description="Validate every *.yaml in DIR at once. Prints each problem on stderr as "
        "'file:line: key.path: message (got X)' and exits 1, or prints a summary and exits 0 (after "
        "'file:line: warning: key.path: message' lines on stderr for valid but unsafe settings). "
        "CITYWATCH_MQTT_HOST, CITYWATCH_MQTT_PORT, CITYWATCH_INFLUX_URL (and the other CITYWATCH_* "
        "overrides) are applied and checked as the service would.",
    )
    p.add_argument("dir", nargs="?", default=None, help="config directory (default: the shipped config/)")
    p.add_argument("--config", default=None, metavar="DIR",
                   help="the same as DIR, as the other commands take it (give one of them, or both the same)")
    p.set_defaults(func=_run)


def extra_checks(cfg) -> list[ConfigProblem]:
    """Checks that need other packages: each detector validates its own rule keys."""
    from alerts.sinks.channels import check_roster, check_templates
    from detectors.registry import check_rules

    return list(check_rules(cfg)) + check_templates(cfg) + check_roster(cfg)[0]


def _report(problems: list[ConfigProblem]) -> int:
    for problem in problems:
        print(problem, file=sys.stderr)
    n = len(problems)
    print(f"{n} problem{'s' if n != 1 else ''} found", file=sys.stderr)
    return EXIT_PROBLEMS


def _run(args) -> int:
    if args.dir and args.config and os.path.realpath(args.dir) != os.path.realpath(args.config):
        print(f"citywatch check-config: DIR {args.dir} and --config {args.config} name different directories; "
              "give one of them", file=sys.stderr)
        return EXIT_USAGE
    try:
        cfg = load_config(args.dir or args.config)
    except ConfigError as exc:
        return _report(exc.problems)
    problems = extra_checks(cfg)
    if problems:
        return _report(sorted(set(problems), key=lambda p: (p.file, p.line or 0, p.path, p.message)))
    for line in warnings(cfg):
        print(line, file=sys.stderr)
    for line in summary(cfg):
        print(line)
    return EXIT_OK


def warnings(cfg) -> list[str]:
    """Valid but unsafe settings, one line each: `file:line: warning: key.path: message`. A webhook sink
    without secret_env (unsigned notices), or with a plain-http URL to another host. `citywatch run` logs
    the same lines at start."""
    from config.yamlsrc import locate

    lines = getattr(cfg, "_lines", None) or {}
    out = []
    for name, sink in cfg.alerting.sinks.items():
        for key, message in (sink.warnings() if hasattr(sink, "warnings") else []):
            path = ("alerting", "sinks", name, key)
            file, line = locate(lines, path)
            where = f"{file}:{line}" if line else file
            out.append(f"{where}: warning: {'.'.join(path)}: {message}")
    from alerts.sinks.channels import check_roster

    out += check_roster(cfg)[1]  # hours in which an on-call team has nobody on duty
    out += unrouted_severities(cfg)
    return out


def unrouted_severities(cfg) -> list[str]:
    """A warning for each severity no alert of which reaches any sink, whatever its site, district, rule and
    category: the routing tree sends it nowhere (`route.receivers: []` with a child route for red alerts only
    left yellow and orange alerts unheard, without a word)."""
    from typing import get_args

    from alerts.routing import receivers_of, route
    from config.alerting import Category
    from config.yamlsrc import locate

    sites = [(s.id, s.district) for s in cfg.sites] or [("", "")]
    rules = [r.id for r in cfg.rules if r.enabled] or [""]
    out = []
    for severity in ("blue", "yellow", "orange", "red"):
        heard = any(receivers_of(route(cfg.alerting.route, {
            "severity": severity, "category": category, "site_id": site, "district": district, "rule_id": rule,
            "level": ""})) for category in get_args(Category) for site, district in sites for rule in rules)
        if not heard:
            file, line = locate(getattr(cfg, "_lines", None) or {}, ("alerting", "route"))
            where = f"{file}:{line}" if line else file
            out.append(f"{where}: warning: alerting.route: no {severity} alert reaches any sink, whatever its "
                       "site, rule or category: give the root route receivers, or a route that matches it")
    return out


def summary(cfg) -> list[str]:
    """The lines printed for a valid config: what it holds, at a glance."""
    kinds = Counter(d.kind for d in cfg.devices)
    classes = Counter(d.pressure_class for d in cfg.devices if d.kind == "gas")
    enabled = [r.id for r in cfg.rules if r.enabled]
    out = [
        f"config OK: {cfg.base_dir}",
        f"  sites:   {len(cfg.sites)} ({len({s.district for s in cfg.sites})} districts)",
        f"  devices: {len(cfg.devices)} (" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")",
    ]
    if classes:
        out.append("  gas pressure classes: " + ", ".join(f"{k} {n}" for k, n in sorted(classes.items())))
    out += [
        f"  rules:   {len(enabled)} enabled of {len(cfg.rules)}",
        f"  time:    {cfg.time.timezone}, {len(cfg.time.permits)} permit(s), "
        f"{len(cfg.time.exam.periods)} exam period(s), {len(cfg.time.exam.sites)} exam site(s)",
        f"  alerts:  {len(cfg.alerting.sinks)} sink(s), {_count_routes(cfg.alerting.route)} route(s)",
        f"  mqtt:    {cfg.connections.mqtt.host}:{cfg.connections.mqtt.port}; "
        f"influx: {cfg.connections.influx.url} ({cfg.connections.influx.api})",
    ]
    from detectors.autolimit import planned_lines

    out += planned_lines(cfg)  # rules with `limit: auto`: what each limit resolves from
    return out


def _count_routes(route) -> int:
    return 1 + sum(_count_routes(r) for r in route.routes)
