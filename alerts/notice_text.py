"""Notice text for people: the fields a template sees, and Jinja2 templates rendered in a sandbox.

Shipped templates live in alerts/templates/<channel>.<language>.j2 (zh-CN default, en); a sink may name
its own file. Templates run in `jinja2.sandbox.SandboxedEnvironment` with StrictUndefined: a field that
does not exist is an error (check-config reports it with file:line), and attribute tricks such as
`''.__class__.__mro__` are refused by the sandbox.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import jinja2
from jinja2 import nodes
from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_DIR = Path(__file__).resolve().parent / "templates"
LANGUAGES = ("zh-CN", "en")
# The parts each channel renders; email has a subject, a text and an HTML part.
CHANNEL_PARTS = {
    "wecom": ("wecom",),
    "dingtalk": ("dingtalk",),
    "email": ("email_subject", "email_text", "email_html"),
    "sms": ("sms",),
    "webhook": ("sms",),  # `text` of a webhook body template: the short form
}

MAIN_PART = {"wecom": "wecom", "dingtalk": "dingtalk", "email": "email_text", "sms": "sms"}

SEVERITY_WORDS = {
    "zh-CN": {"red": "红色", "orange": "橙色", "yellow": "黄色", "blue": "蓝色", "clear": "已解除"},
    "en": {"red": "Red", "orange": "Orange", "yellow": "Yellow", "blue": "Blue", "clear": "Clear"},
}
TRANSITION_WORDS = {
    "zh-CN": {"firing": "告警", "severity": "级别变化", "escalated": "升级", "repeat": "提醒",
              "acknowledged": "已确认", "flapping": "频繁变化", "resolved": "已恢复", "test": "测试"},
    "en": {"firing": "Alert", "severity": "Severity changed", "escalated": "Escalated", "repeat": "Reminder",
           "acknowledged": "Acknowledged", "flapping": "Flapping", "resolved": "Resolved", "test": "Test"},
}
RULE_WORDS = {
    "zh-CN": {
        "N-day": "昼间施工噪声超标", "N-night": "夜间施工噪声超标", "N-night-max": "夜间噪声最大声级超标",
        "N-prohibited": "禁止时段施工噪声", "N-exam": "考试期间噪声超标", "N-pre": "施工噪声预警",
        "N-data": "噪声数据质量异常", "G-high": "燃气压力偏高", "G-highhigh": "燃气压力超高",
        "G-low": "燃气压力偏低", "G-rupture": "燃气管道疑似破裂", "G-leak": "燃气疑似泄漏",
        "G-flatline": "燃气压力数据停滞", "G-range": "燃气传感器量程异常", "Batt": "设备电量低",
        "Offline": "设备离线",
    },
    "en": {
        "N-day": "Daytime construction noise over the limit", "N-night": "Night construction noise over the limit",
        "N-night-max": "Night maximum noise level over the limit", "N-prohibited": "Noise in prohibited hours",
        "N-exam": "Noise during an exam period", "N-pre": "Construction noise pre-warning",
        "N-data": "Noise data quality", "G-high": "Gas pressure high", "G-highhigh": "Gas pressure very high",
        "G-low": "Gas pressure low", "G-rupture": "Suspected gas pipe rupture", "G-leak": "Suspected gas leak",
        "G-flatline": "Gas pressure readings stuck", "G-range": "Gas sensor out of range",
        "Batt": "Device battery low", "Offline": "Device offline",
    },
}

# Every field a template may use (check-config refuses others); `text` only in body templates.
FIELDS = (
    "transition", "transition_word", "is_resolved", "is_escalated", "is_test", "severity", "severity_word",
    "rule_id", "rule_name", "site_id", "site_name", "site_address", "district", "device_id", "metric",
    "value", "limit", "peak_value", "unit", "since", "duration", "ack_by", "escalation_level",
    "escalation_name", "person", "link", "alert_id", "key", "language",
)
BODY_FIELDS = FIELDS + ("text", "to")


class TemplateProblem(ValueError):
    """A template that cannot be used: `where` is file:line, `message` says why."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")
        self.where = where
        self.message = message


def environment(autoescape: bool = False) -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=jinja2.StrictUndefined, autoescape=autoescape,
                                keep_trailing_newline=False, trim_blocks=True, lstrip_blocks=True)


_ENVS = {False: environment(False), True: environment(True)}


def _duration(seconds: float, language: str) -> str:
    s = int(max(0, seconds))
    h, m = divmod(s // 60, 60)
    if language == "zh-CN":
        return (f"{h}小时" if h else "") + f"{m}分钟" if (h or m) else f"{s}秒"
    return (f"{h} h " if h else "") + f"{m} min" if (h or m) else f"{s} s"


def _num(v: object) -> str:
    if v is None:
        return "-"
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


def fields(payload: dict[str, Any], language: str = "zh-CN", console_url: str | None = None, person: str | None = None,
           timezone: str = "Asia/Shanghai") -> dict[str, Any]:
    """The template fields of a notice payload (alerts/engine.py `_payload`), words in `language`."""
    lang = language if language in LANGUAGES else "zh-CN"
    tz = ZoneInfo(timezone)
    site = payload.get("site") or {}
    device = payload.get("device") or {}
    start = payload.get("start_ts")
    since = (dt.datetime.fromisoformat(start.replace("Z", "+00:00")).astimezone(tz).strftime("%Y-%m-%d %H:%M")
             if start else "-")
    ack = payload.get("ack") or {}
    rule = payload.get("rule_id", "")
    transition = payload.get("transition", "firing")
    return {
        "transition": transition,
        "transition_word": TRANSITION_WORDS[lang].get(transition, transition),
        "is_resolved": transition == "resolved",
        "is_escalated": transition == "escalated",
        "is_test": transition == "test",
        "severity": payload.get("severity", ""),
        "severity_word": SEVERITY_WORDS[lang].get(payload.get("severity", ""), payload.get("severity", "")),
        "rule_id": rule,
        "rule_name": RULE_WORDS[lang].get(rule, rule),
        "site_id": site.get("id", ""),
        "site_name": site.get("name", site.get("id", "")),
        "site_address": site.get("address", ""),
        "district": site.get("district", ""),
        "device_id": device.get("id", ""),
        "metric": payload.get("metric") or "",
        "value": _num(payload.get("value")),
        "limit": _num(payload.get("limit")),
        "peak_value": _num(payload.get("peak_value")),
        "unit": payload.get("unit") or "",
        "since": since,
        "duration": _duration(float(payload.get("duration_s") or 0), lang),
        "ack_by": ack.get("name") or ack.get("by") or "",
        "escalation_level": payload.get("escalation_level", 0),
        "escalation_name": payload.get("escalation_name") or "",
        "person": person or "",
        "link": f"{console_url.rstrip('/')}/alerts/{payload.get('alert_id', '')}" if console_url else "",
        "alert_id": payload.get("alert_id", ""),
        "key": payload.get("idempotency_key", ""),
        "language": lang,
    }


def shipped_path(part: str, language: str) -> Path:
    suffix = ".html" if part == "email_html" else ""
    return TEMPLATE_DIR / f"{part}.{language}{suffix}.j2"


def load(part: str, language: str, custom: Path | None = None) -> jinja2.Template:
    """A compiled template: `custom` (a file of the user's) or the shipped one. Raises TemplateProblem."""
    path = custom or shipped_path(part, language)
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateProblem(str(path), f"cannot read template: {exc.strerror}") from None
    return compile_source(source, str(path), html=part == "email_html")


def compile_source(source: str, name: str, html: bool = False, known: tuple[str, ...] = FIELDS) -> jinja2.Template:
    """Compile a template after checking its syntax and that it uses only `known` fields.
    Raises TemplateProblem with `name:line`."""
    env = _ENVS[html]
    try:
        tree = env.parse(source, name=name)
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateProblem(f"{name}:{exc.lineno}", f"template syntax error: {exc.message}") from None
    assigned = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
    for n in tree.find_all(nodes.Name):
        if n.ctx == "load" and n.name not in known and n.name not in assigned:
            raise TemplateProblem(f"{name}:{n.lineno}", f"unknown field {n.name!r} (fields: {', '.join(known)})")
    return env.from_string(source)


def render(template: jinja2.Template, values: dict[str, Any]) -> str:
    """Render in the sandbox; a refused operation or undefined value raises TemplateProblem."""
    try:
        return template.render(**values).strip()
    except jinja2.exceptions.SecurityError as exc:
        raise TemplateProblem(template.name or "<template>", f"refused by the sandbox: {exc}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateProblem(template.name or "<template>", f"undefined: {exc.message}") from None


class Renderer:
    """Renders one channel's parts in one language (or the sink's own template for its main part)."""

    def __init__(self, channel: str, language: str = "zh-CN", custom: Path | None = None,
                 console_url: str | None = None, timezone: str = "Asia/Shanghai"):
        self.channel = channel
        self.language = language
        self.console_url = console_url
        self.timezone = timezone
        # A sink's own template replaces its main part: the message, or for email the plain-text part.
        main = MAIN_PART.get(channel)
        self.templates = {p: load(p, language, custom if p == main else None) for p in CHANNEL_PARTS[channel]}

    def values(self, payload: dict[str, Any], person: str | None = None, language: str | None = None) -> dict[str, Any]:
        return fields(payload, language or self.language, self.console_url, person, self.timezone)

    def render(self, payload: dict[str, Any], person: str | None = None) -> dict[str, str]:
        values = self.values(payload, person)
        return {part: render(t, values) for part, t in self.templates.items()}
