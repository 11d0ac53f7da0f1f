"""Operator commands (ack, silence, unsilence) as plain dicts, from the terminal or the MQTT command topic.

Wire format (JSON): {"action": "ack", "alert_id": "...", "by": "operator name", "note": "..."}
{"action": "silence", "matchers": {"site_id": "..."} or ["site_id=..."], "by": "...", "comment": "...",
 "expires_s": 7200}  (or "expires": "2h"; optional "id")   {"action": "unsilence", "silence_id": "...", "by": "..."}
"""

from __future__ import annotations

import re

from alerts.muting import parse_matchers

ACTIONS = ("ack", "silence", "unsilence")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `2h`, `1d`, `1w` -> seconds. Raises ValueError."""
    m = _DURATION.match(str(text))
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"duration {text!r} must be a positive number with an optional unit s, m, h, d or w")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def validate(cmd) -> dict:
    """A normalized copy of a command; raises ValueError with a message for the operator."""
    if not isinstance(cmd, dict):
        raise ValueError("a command must be a JSON object")
    action = cmd.get("action")
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    by = cmd.get("by")
    if not isinstance(by, str) or not by.strip():
        raise ValueError("by: the operator's name is required")
    out = {"action": action, "by": by.strip()}
    if action == "ack":
        if not isinstance(cmd.get("alert_id"), str) or not cmd["alert_id"]:
            raise ValueError("alert_id is required")
        out["alert_id"] = cmd["alert_id"]
        out["note"] = str(cmd.get("note") or "")
    elif action == "silence":
        matchers = cmd.get("matchers")
        if isinstance(matchers, dict):
            matchers = [f"{k}={v}" for k, v in matchers.items()]
        if not isinstance(matchers, list):
            raise ValueError("matchers must be a mapping or a list of key=value")
        out["matchers"] = parse_matchers([str(m) for m in matchers])
        comment = cmd.get("comment")
        if not isinstance(comment, str) or not comment.strip():
            raise ValueError("comment is required: say why the alerts are silenced")
        out["comment"] = comment.strip()
        if "expires_s" in cmd:
            v = cmd["expires_s"]
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v <= 0:
                raise ValueError("expires_s must be a positive number of seconds")
            out["expires_s"] = float(v)
        elif "expires" in cmd:
            out["expires_s"] = parse_duration(cmd["expires"])
        else:
            raise ValueError("expires (e.g. 2h) or expires_s is required")
        if cmd.get("id") is not None:
            out["id"] = str(cmd["id"])
    else:
        if not isinstance(cmd.get("silence_id"), str) or not cmd["silence_id"]:
            raise ValueError("silence_id is required")
        out["silence_id"] = cmd["silence_id"]
    return out
