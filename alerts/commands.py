"""Operator commands (ack, silence, unsilence): parsed and validated, with every value bounded, before
anything is stored or applied.

Wire format (JSON, at most MAX_PAYLOAD_BYTES, nested at most MAX_DEPTH deep):
  {"action": "ack", "alert_id": "...", "note": "..."}
  {"action": "silence", "matchers": {"site_id": "..."} or ["site_id=..."], "comment": "...",
   "expires": "2h"  (or "expires_s": 7200), "id": "..." (optional)}
  {"action": "unsilence", "silence_id": "..."}
The author is never taken from the payload: it is the broker account the command came from (the topic
`command_topic/<username>`, see alerts/command_listener.py) or, for the terminal, the local login
(`local:<login>`). A payload may still carry `"by"`, but only if it names its own author (the account's
username or display name): a `by` that disagrees is refused, so a forged name is seen, not recorded.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, get_args

from alerts.muting import MATCHER_KEYS
from config import durations as _durations
from config.alerting import Category
from core.severity import SEVERITY_NAMES

if TYPE_CHECKING:
    from config.model import Config

ACTIONS = ("ack", "silence", "unsilence")
MAX_PAYLOAD_BYTES = 8192  # a real command is a few hundred bytes
MAX_DEPTH = 8  # command -> matchers -> value is 3 deep
MAX_TEXT = 500  # note, comment
MAX_MATCHERS = 8
MAX_LABEL_VALUE = 200
# Keys each action accepts; `by` is accepted everywhere but only as a check of the author (see above).
KEYS = {
    "ack": ("action", "alert_id", "by", "note"),
    "silence": ("action", "by", "comment", "expires", "expires_s", "id", "matchers"),
    "unsilence": ("action", "by", "silence_id"),
}
_ALERT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,199}$")  # alert_id_for: rule.device.stampZ
_SILENCE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Author:
    """Who a command acts for: a broker account (`lin`) or a local login (`local:alice`), with the name
    shown beside it (`Duty officer Lin`)."""

    account: str
    name: str


def local_author(login: str) -> Author:
    """The author of a command typed at the terminal: what the store file's permissions authenticate."""
    return Author(f"local:{login}", login)


def operator_author(cfg: Config, username: str) -> Author | None:
    """The configured operator with this broker username (alerting.operators), or None."""
    for op in cfg.alerting.operators:
        if op.username == username:
            return Author(op.username, op.name)
    return None


def author_allowed(cfg: Config, author: Author) -> str | None:
    """Why `author` may not act under `cfg` (None: it may). Local logins and console logins always may; a
    broker account only while it is a configured operator."""
    if author.account.startswith("local:") and len(author.account) > len("local:"):
        return None
    # A console login (console:<login>): the console wrote it to the store's inbox after checking the
    # user's password and operator role; like local:, the store file's permissions authenticate the writer.
    if author.account.startswith("console:") and len(author.account) > len("console:"):
        return None
    if operator_author(cfg, author.account) is not None:
        return None
    return f"{_show(author.account)} is not an operator (alerting.operators)"


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `2h`, `1d`, `1w` -> seconds, positive (at most 9 digits, 6 decimals): the one
    grammar of config.durations. Raises ValueError."""
    return _durations.parse_duration(str(text), positive=True)


format_duration = _durations.format_duration


def parse_payload(payload: bytes | bytearray | str) -> Any:
    """The JSON value of an MQTT payload, bounded in size and depth. Raises ValueError."""
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "replace")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"payload: {len(payload)} bytes, at most {MAX_PAYLOAD_BYTES}")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"payload: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValueError(f"payload: nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"payload: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if _depth(value) > MAX_DEPTH:
        raise ValueError(f"payload: nested deeper than {MAX_DEPTH} levels")
    return value


def validate(cmd: Any, cfg: Config, author: Author | None = None) -> dict[str, Any]:
    """A normalized copy of a command, every value bounded and every label known to `cfg`.

    cmd:    the parsed command (any JSON-ish value; see `parse_payload`)
    cfg:    the loaded config: sites, devices, rules, `alerting.silence_max_s`
    author: who sends it; a `by` in the command must then name this author
    Returns {"action", ...} without `by` (the author is kept beside the command, not in it).
    Raises ValueError with a message for the operator, and nothing else.
    """
    if not isinstance(cmd, dict):
        raise ValueError(f"a command must be a JSON object, got {_kind(cmd)}")
    action = cmd.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise ValueError(f"action: must be one of {', '.join(ACTIONS)}, got {_show(action)}{_hint(action, ACTIONS)}")
    keys = KEYS[action]
    for k in cmd:
        if k not in keys:
            raise ValueError(f"{_show(k)}: unknown key for {action}{_hint(k, keys)}; keys: {', '.join(keys)}")
    if "by" in cmd:
        _check_by(cmd["by"], author)
    out: dict[str, Any] = {"action": action}
    if action == "ack":
        out["alert_id"] = _id(cmd, "alert_id", _ALERT_ID, "an alert id (letters, digits, . _ : -, at most 200)")
        out["note"] = _text(cmd, "note", required=False)
    elif action == "silence":
        out["matchers"] = _matchers(cmd.get("matchers"), cfg)
        out["comment"] = _text(cmd, "comment", required=True, why="say why the alerts are silenced")
        out["expires_s"] = _expires(cmd, cfg.alerting.silence_max_s)
        if cmd.get("id") is not None:
            out["id"] = _id(cmd, "id", _SILENCE_ID, "a silence id (letters, digits, . _ -, at most 64)")
    else:
        out["silence_id"] = _id(cmd, "silence_id", _SILENCE_ID, "a silence id (letters, digits, . _ -, at most 64)")
    return out


def record_form(value: Any, limit: int = MAX_PAYLOAD_BYTES) -> str:
    """What the store keeps of a refused command: its JSON (or repr), cut to `limit` characters.
    Never raises, whatever the value (nesting, NaN, keys that are not strings)."""
    try:
        if isinstance(value, (bytes, bytearray)):
            text = bytes(value[: limit + 1]).decode("utf-8", "replace")
            return json.dumps({"raw": text[:limit]})
        text = json.dumps(value, sort_keys=True, default=repr)
        if len(text) <= limit:
            return text
        return json.dumps({"raw": text[:limit]})
    except Exception:  # noqa: BLE001 - anything unrepresentable is recorded as such
        try:
            return json.dumps({"raw": repr(value)[:limit]})
        except Exception:  # noqa: BLE001 - e.g. RecursionError in repr of a self-nested value
            return json.dumps({"raw": f"<unrepresentable {type(value).__name__}>"})


# ----- the parts ------------------------------------------------------------------------------------

def _check_by(by: Any, author: Author | None) -> None:
    if not isinstance(by, str) or len(by) > MAX_LABEL_VALUE:
        raise ValueError(f"by: must be text of at most {MAX_LABEL_VALUE} characters, got {_show(by)}")
    if author is None:
        return
    accepted = {author.account.casefold(), author.name.strip().casefold()}
    for prefix in ("local:", "console:"):
        if author.account.startswith(prefix):
            accepted.add(author.account[len(prefix):].casefold())
    if by.strip().casefold() not in accepted:
        raise ValueError(f"by: this command's author is {author.account!r} ({author.name}), taken from where it "
                         f"was sent; got {_show(by)}: leave by out")


def _id(cmd: dict[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    v = cmd.get(key)
    if v is None or v == "":
        raise ValueError(f"{key}: required")
    if not isinstance(v, str) or not pattern.match(v):
        raise ValueError(f"{key}: must be {what}, got {_show(v)}")
    return v


def _text(cmd: dict[str, Any], key: str, required: bool, why: str = "") -> str:
    v = cmd.get(key)
    if v is None or (isinstance(v, str) and not v.strip()):
        if required:
            raise ValueError(f"{key}: required: {why}")
        return ""
    if not isinstance(v, str):
        raise ValueError(f"{key}: must be text, got {_kind(v)}")
    v = v.strip()
    if len(v) > MAX_TEXT:
        raise ValueError(f"{key}: at most {MAX_TEXT} characters, got {len(v)}")
    return v


def _expires(cmd: dict[str, Any], max_s: float) -> float:
    limit = f"{_number(max_s)} s ({format_duration(max_s)}, alerting.silence_max_s)"
    if "expires_s" in cmd and "expires" in cmd:
        raise ValueError("expires, expires_s: give one of them, not both")
    if "expires_s" in cmd:
        v = cmd["expires_s"]
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError(f"expires_s: must be a number of seconds, got {_kind(v)}")
        try:
            v = float(v)  # an int too large for a float raises OverflowError
        except OverflowError:
            v = math.inf
        if not math.isfinite(v) or v <= 0:
            raise ValueError(f"expires_s: must be a finite number of seconds > 0, got {_show(v)}")
        if v > max_s:
            raise ValueError(f"expires_s: at most {limit}, got {_number(v)}")
        return v
    if "expires" in cmd:
        text = cmd["expires"]
        if not isinstance(text, str):
            raise ValueError(f"expires: must be a duration such as 2h, got {_kind(text)}")
        try:
            v = parse_duration(text)
        except ValueError as exc:
            raise ValueError(f"expires: {exc}") from None
        if v > max_s:
            raise ValueError(f"expires: at most {limit}, got {_show(text)}")
        return v
    raise ValueError("expires: required (e.g. \"expires\": \"2h\", or \"expires_s\": 7200)")


def _matchers(raw: Any, cfg: Config) -> dict[str, str]:
    if raw is None:
        raise ValueError("matchers: required: a mapping {label: value} or a list of \"label=value\"")
    if isinstance(raw, dict):
        items = list(raw.items())
    elif isinstance(raw, list):
        items = []
        for m in raw[: MAX_MATCHERS + 1]:
            if not isinstance(m, str):
                raise ValueError(f"matchers: each must be written \"label=value\", got {_kind(m)}")
            key, sep, value = m.partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(f"matchers: {_show(m)} must be written label=value")
            items.append((key.strip(), value.strip()))
    else:
        raise ValueError(f"matchers: must be a mapping or a list of \"label=value\", got {_kind(raw)}")
    if not items:
        raise ValueError("matchers: at least one is required (a silence of everything is not allowed)")
    if len(raw) > MAX_MATCHERS:
        raise ValueError(f"matchers: at most {MAX_MATCHERS}, got {len(raw)}")
    known = _known_values(cfg)
    aliases = _aliases(cfg)
    out: dict[str, str] = {}
    for key, value in items:
        if not isinstance(key, str) or key not in MATCHER_KEYS:
            raise ValueError(f"matchers: unknown label {_show(key)}{_hint(key, MATCHER_KEYS)}; "
                             f"labels: {', '.join(MATCHER_KEYS)}")
        if key in out:
            raise ValueError(f"matchers.{key}: given twice")
        if not isinstance(value, str) or not value.strip() or len(value) > MAX_LABEL_VALUE:
            raise ValueError(f"matchers.{key}: must be text of 1 to {MAX_LABEL_VALUE} characters, got {_show(value)}")
        value = value.strip()
        if key == "alert_id":
            if not _ALERT_ID.match(value):
                raise ValueError(f"matchers.alert_id: not an alert id, got {_show(value)}")
        elif value not in known[key][1]:
            # A site by its name, a device by its HJ 212 MN: what the board shows, and what officers say.
            alias = aliases.get(key, {}).get(value.casefold())
            if alias is None:
                what, values = known[key]
                raise ValueError(f"matchers.{key}: unknown {what} {_show(value)}"
                                 f"{_hint(value, values) or _hint(value, _alias_names(cfg, key))}")
            value = alias
        out[key] = value
    return out


def _known_values(cfg: Config) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Per matcher label, what it names and the values the config knows (sorted, for stable hints)."""
    return {
        "rule_id": ("rule", tuple(sorted(r.id for r in cfg.rules))),
        "device_id": ("device", tuple(sorted(d.id for d in cfg.devices))),
        "site_id": ("site", tuple(sorted(s.id for s in cfg.sites))),
        "district": ("district", tuple(sorted({s.district for s in cfg.sites}))),
        "category": ("category", get_args(Category)),
        "severity": ("severity", tuple(v for k, v in sorted(SEVERITY_NAMES.items()) if k > 0)),
    }


def _aliases(cfg: Config) -> dict[str, dict[str, str]]:
    """Other names a matcher value may be given by, per label: alias (casefolded) -> the id stored on
    alerts. site_id: the site's name (when no other site has it); device_id: the device's HJ 212 MN."""
    names: dict[str, list[str]] = {}
    for s in cfg.sites:
        names.setdefault(s.name.strip().casefold(), []).append(s.id)
    return {
        "site_id": {n: ids[0] for n, ids in names.items() if len(ids) == 1},
        "device_id": {d.mn_or_id.casefold(): d.id for d in cfg.devices},
    }


def _alias_names(cfg: Config, key: str) -> tuple[str, ...]:
    """The aliases of a label as written in the config (for "did you mean")."""
    if key == "site_id":
        return tuple(sorted(s.name for s in cfg.sites))
    if key == "device_id":
        return tuple(sorted(d.mn for d in cfg.devices if d.mn))
    return ()


# "Did you mean" is for typos: values longer than this get no hint, and candidates are screened with difflib's
# cheap upper bounds first (as get_close_matches does), so a refused command costs little against any inventory
# (a random 200-character device id against 10,000 devices took a second, under the alert engine's lock).
HINT_MAX_LEN = 64


def _hint(value: Any, choices: Iterable[str]) -> str:
    if not isinstance(value, str) or len(value) > HINT_MAX_LEN:
        return ""
    best, best_score = None, 0.6  # difflib.get_close_matches' cutoff; ties go to the first in sorted order
    folded = value.casefold()
    s = difflib.SequenceMatcher()
    s.set_seq2(value)  # the value's index is built once, each candidate compared against it
    for c in sorted(choices):
        if c.casefold() == folded:
            return f" (did you mean {c!r}?)"
        s.set_seq1(c)
        if s.real_quick_ratio() > best_score and s.quick_ratio() > best_score:
            score = s.ratio()
            if score > best_score:
                best, best_score = c, score
    return f" (did you mean {best!r}?)" if best else ""


def _show(v: Any) -> str:
    """A value for an error message, at most ~60 characters."""
    try:
        r = repr(v)
    except Exception:  # noqa: BLE001
        r = f"<{type(v).__name__}>"
    return r if len(r) <= 60 else r[:57] + "..."


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "text", bool: "true/false", type(None): "null"}.get(
        type(v), "a number" if isinstance(v, (int, float)) else type(v).__name__)


def _number(v: float) -> str:
    return str(int(v)) if v == int(v) and abs(v) < 1e15 else f"{v:g}"


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"payload: {name} is not a JSON number")


def _depth(value: Any) -> int:
    """Nesting depth of a parsed JSON value, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        if isinstance(v, (dict, list)):
            deepest = max(deepest, d)
            if d > MAX_DEPTH:
                return d
            stack.extend((x, d + 1) for x in (v.values() if isinstance(v, dict) else v))
    return deepest
