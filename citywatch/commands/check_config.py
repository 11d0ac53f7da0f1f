"""`citywatch check-config [DIR]`: validate the YAML of a config directory and summarise it."""

from __future__ import annotations

import sys
from collections import Counter

from config import ConfigError, load_config
from config.errors import ConfigProblem


def register(sub) -> None:
    p = sub.add_parser(
        "check-config",
        help="validate a config directory; list every problem with file and line",
        description="Validate every *.yaml in DIR at once. Prints each problem as "
        "'file:line: key.path: message (got X)' and exits 1, or prints a summary and exits 0.",
    )
    p.add_argument("dir", nargs="?", default=None, help="config directory (default: the shipped config/)")
    p.set_defaults(func=_run)


def extra_checks(cfg) -> list[ConfigProblem]:
    """Checks that need other packages (detector rule parameters); empty while none are registered."""
    problems: list[ConfigProblem] = []
    try:
        from detectors.registry import check_rules  # detectors validate their own rule keys
    except ImportError:
        return problems
    problems += check_rules(cfg)
    return problems


def _run(args) -> int:
    try:
        cfg = load_config(args.dir)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
        return 1
    problems = extra_checks(cfg)
    if problems:
        for problem in sorted(set(problems), key=lambda p: (p.file, p.line or 0, p.path)):
            print(problem, file=sys.stderr)
        print(f"{len(problems)} problem(s) found", file=sys.stderr)
        return 1
    kinds = Counter(d.kind for d in cfg.devices)
    classes = Counter(d.pressure_class for d in cfg.devices if d.kind == "gas")
    print(f"config OK: {cfg.base_dir}")
    print(f"  sites:   {len(cfg.sites)} ({len({s.district for s in cfg.sites})} districts)")
    print(f"  devices: {len(cfg.devices)} (" + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")")
    if classes:
        print("  gas pressure classes: " + ", ".join(f"{k} {n}" for k, n in sorted(classes.items())))
    enabled = [r.id for r in cfg.rules if r.enabled]
    print(f"  rules:   {len(enabled)} enabled of {len(cfg.rules)}")
    print(f"  time:    {cfg.time.timezone}, {len(cfg.time.permits)} permit(s), "
          f"{len(cfg.time.exam.periods)} exam period(s), {len(cfg.time.exam.sites)} exam site(s)")
    routes = _count_routes(cfg.alerting.route)
    print(f"  alerts:  {len(cfg.alerting.sinks)} sink(s), {routes} route(s)")
    return 0


def _count_routes(route) -> int:
    return 1 + sum(_count_routes(r) for r in route.routes)
