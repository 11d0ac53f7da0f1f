"""The routing tree: which sinks an alert's notice goes to, and with which grouping and repeat timers.

Alertmanager's semantics (dispatch/route.go): a route matches when every key of its `match` lists the
alert's label; its children are tried in order and the first match wins unless it sets `continue`;
when no child matches, the route itself applies. Children inherit unset timers from their parent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from config.alerting import Match, Route

# Timers of the root when the YAML leaves them unset.
ROOT_DEFAULTS = {"group_wait_s": 0.0, "group_interval_s": 0.0, "repeat_interval_s": 14400.0}

_MATCH_LABEL = {"category": "category", "severity": "severity", "site": "site_id", "district": "district",
                "rule": "rule_id", "level": "level"}


@dataclass(frozen=True)
class RouteMatch:
    """A route that applies to an alert: its position in the tree and its effective settings."""

    path: str
    receivers: tuple[str, ...]
    group_by: tuple[str, ...]
    group_wait_s: float
    group_interval_s: float
    repeat_interval_s: float


def matches(match: Match, labels: dict[str, str]) -> bool:
    """True when every key set in `match` lists the alert's value of that label."""
    for key, label in _MATCH_LABEL.items():
        allowed = getattr(match, key)
        if allowed is not None and labels.get(label) not in allowed:
            return False
    return True


def route(root: Route, labels: dict[str, str]) -> list[RouteMatch]:
    """The routes that apply to an alert with these labels (at least the root)."""
    settings: dict[str, Any] = {
        "receivers": tuple(root.receivers),
        "group_by": tuple(root.group_by or ()),
        **{k: (getattr(root, k) if getattr(root, k) is not None else v) for k, v in ROOT_DEFAULTS.items()},
    }
    found = _walk(root, labels, settings, "root")
    return found or [RouteMatch("root", **settings)]


def _walk(node: Route, labels: dict[str, str], inherited: dict[str, Any], path: str) -> list[RouteMatch]:
    out: list[RouteMatch] = []
    for i, child in enumerate(node.routes):
        if not matches(child.match, labels):
            continue
        settings = dict(inherited)
        if child.receivers:
            settings["receivers"] = tuple(child.receivers)
        if child.group_by is not None:
            settings["group_by"] = tuple(child.group_by)
        for k in ROOT_DEFAULTS:
            if getattr(child, k) is not None:
                settings[k] = getattr(child, k)
        child_path = f"{path}.routes[{i}]"
        out += _walk(child, labels, settings, child_path) or [RouteMatch(child_path, **settings)]
        if not child.continue_:
            break
    return out


def receivers_of(matches_: list[RouteMatch]) -> list[str]:
    """Every sink named by the matched routes, once each, in order of first mention."""
    seen: dict[str, None] = {}
    for m in matches_:
        for r in m.receivers:
            seen.setdefault(r)
    return list(seen)
