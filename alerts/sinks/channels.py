"""Builds the people-facing sinks (WeCom, DingTalk, email, SMS, team receivers) from the config, with
their secrets from the environment, and checks their templates and the roster for `check-config`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alerts.model import Notice
from alerts.notice_text import (
    BODY_FIELDS,
    CHANNEL_PARTS,
    LANGUAGES,
    Renderer,
    TemplateProblem,
    compile_source,
    render,
)
from config.channels import DingtalkSink as DingtalkSpec
from config.channels import EmailSink as EmailSpec
from config.channels import SmsSink as SmsSpec
from config.channels import WecomSink as WecomSpec

if TYPE_CHECKING:
    from alerts.sinks.base import PersonSink, Sink
    from alerts.sinks.dingtalk import DingtalkSink
    from alerts.sinks.mail import EmailSink
    from alerts.sinks.sms import SmsSink
    from alerts.sinks.team import TeamSink
    from alerts.sinks.wecom import WecomSink
    from config.errors import ConfigProblem
    from config.model import Config
    from config.oncall import Person

    ChannelSink = WecomSink | DingtalkSink | EmailSink | SmsSink

ChannelSpec = WecomSpec | DingtalkSpec | EmailSpec | SmsSpec  # the config of a sink that reaches people

# A sample payload for template checks and `notify test`: every field a template may use is filled.
SAMPLE_PAYLOAD: dict[str, Any] = {
    "idempotency_key": "TEST.sample:1", "alert_id": "TEST.sample", "seq": 1, "transition": "test",
    "ts": "2026-01-01T00:00:00.000Z", "rule_id": "G-highhigh", "category": "gas", "severity": "red",
    "site": {"id": "GS-001", "name": "示例站点", "address": "厦门市思明区示例路1号", "district": "思明区"},
    "device": {"id": "GAS-001"}, "metric": "p", "unit": "kPa", "value": 412.5, "limit": 400.0,
    "peak_value": 415.0, "start_ts": "2026-01-01T00:00:00.000Z", "duration_s": 300.0, "ack": None,
    "escalation_level": 0, "escalation_name": "duty_officer",
}


def _secret(env: Mapping[str, str], name: str, key: str, var: str) -> str:
    value = env.get(var)
    if value is None:
        raise ValueError(f"alerting.sinks.{name}.{key}: environment variable {var} is not set")
    return value


def _optional_secret(env: Mapping[str, str], name: str, key: str, var: str | None) -> str | None:
    """None when the sink names no variable; a named variable must be set (ValueError)."""
    return None if var is None else _secret(env, name, key, var)


def renderer_for(cfg: Config, spec: ChannelSpec, channel: str) -> Renderer:
    custom = cfg.resolve_path(spec.template) if spec.template else None
    return Renderer(channel, spec.language, custom, cfg.alerting.console_url, cfg.oncall.timezone)


class _Multi:
    """A channel's renderers in every language: a person's language wins over the sink's."""

    def __init__(self, cfg: Config, spec: ChannelSpec, channel: str) -> None:
        self.default = renderer_for(cfg, spec, channel)
        self.by_lang: dict[str, Renderer] = {spec.language: self.default}
        self.cfg, self.spec, self.channel = cfg, spec, channel

    def get(self, language: str | None) -> Renderer:
        lang = language or self.spec.language
        if lang not in self.by_lang:
            self.by_lang[lang] = Renderer(self.channel, lang, None, self.cfg.alerting.console_url,
                                          self.cfg.oncall.timezone)
        return self.by_lang[lang]


class _PersonLanguage:
    """Wraps a channel sink so that a notice to a person is rendered in that person's language."""

    def __init__(self, sink: ChannelSink, multi: _Multi) -> None:
        self.sink, self.multi = sink, multi
        # The channel's own worker and team receivers' workers share this sink: one send at a time.
        self.lock = threading.Lock()

    def send(self, notice: Notice, person: Person | None = None) -> str:
        with self.lock:
            self.sink.renderer = self.multi.get(person.language if person is not None else None)
            return self.sink.send(notice, person)

    def close(self) -> None:
        self.sink.close()

    def __getattr__(self, item: str) -> Any:
        return getattr(self.sink, item)


def build_channel(cfg: Config, name: str, spec: ChannelSpec, env: Mapping[str, str]) -> _PersonLanguage:
    """One WeCom, DingTalk, email or SMS sink; ValueError names a missing environment variable."""
    multi = _Multi(cfg, spec, spec.type)
    r = multi.default
    sink: ChannelSink
    if spec.type == "wecom":
        from alerts.sinks.wecom import WecomSink

        sink = WecomSink(spec.url, _secret(env, name, "key_env", spec.key_env), r, spec.timeout_s, name)
    elif spec.type == "dingtalk":
        from alerts.sinks.dingtalk import DingtalkSink

        sink = DingtalkSink(spec.url, _secret(env, name, "token_env", spec.token_env),
                            _optional_secret(env, name, "secret_env", spec.secret_env), r, spec.timeout_s, spec.mention, name)
    elif spec.type == "email":
        import ssl

        from alerts.sinks.mail import EmailSink

        ctx = ssl.create_default_context(cafile=str(cfg.resolve_path(spec.ca_file)) if spec.ca_file else None)
        sink = EmailSink(spec.host, spec.port, spec.security, spec.sender, spec.to, r, spec.username,
                         _optional_secret(env, name, "password_env", spec.password_env), spec.timeout_s, name, ctx)
    else:
        from alerts.sinks.sms import SmsSink

        sink = SmsSink(spec, r, _optional_secret(env, name, "auth.secret_env", spec.auth.secret_env), name)
    return _PersonLanguage(sink, multi)


def build_teams(cfg: Config, sinks: Mapping[str, Sink]) -> dict[str, TeamSink]:
    """One `team:<id>` receiver per on-call team, over the channel sinks it names."""
    from alerts.sinks.team import TeamSink

    out: dict[str, TeamSink] = {}
    for team in cfg.oncall.teams:
        # A channel naming no sink, or a sink not of its channel's type, is a check-config problem
        # (check_roster); here it is left out, so that a config whose alerting section was replaced (tests, a
        # reload in progress) still builds, and a team never calls a sink that cannot reach a person.
        chans: dict[str, PersonSink] = {}
        for kind, name in team.sinks.items():
            sink, spec = sinks.get(name), cfg.alerting.sinks.get(name)
            if isinstance(sink, _PersonLanguage) and spec is not None and spec.type == kind:
                chans[kind] = sink
        out[f"team:{team.id}"] = TeamSink(cfg.oncall, team.id, chans)
    return out


def webhook_body(cfg: Config, name: str, source: str) -> Callable[[Notice], bytes]:
    """body(notice) -> bytes of a webhook's `body_template` (fields, and `text`, the short form)."""
    template = compile_source(source, f"alerting.sinks.{name}.body_template", known=BODY_FIELDS)
    renderer = Renderer("webhook", "zh-CN", None, cfg.alerting.console_url, cfg.oncall.timezone)

    def body(notice: Notice) -> bytes:
        values = renderer.values(notice.payload)
        text = render(renderer.templates["sms"], values)
        return render(template, {**values, "text": text, "to": ""}).encode("utf-8")

    return body


def _problem(where: str, path: str, message: str) -> ConfigProblem:
    from config.errors import ConfigProblem

    file, _, line = where.rpartition(":")
    if file and line.isdigit():
        return ConfigProblem(file, int(line), path, message)
    return ConfigProblem(where, None, path, message)


def check_templates(cfg: Config) -> list[ConfigProblem]:
    """Every template problem (ConfigProblem, printed `file:line: path: message`): the shipped templates,
    a sink's own `template` file, `body_template`s (syntax, unknown fields, a body that is not JSON)."""
    from config.yamlsrc import locate

    lines = getattr(cfg, "_lines", None) or {}
    out: list[ConfigProblem] = []
    for channel in CHANNEL_PARTS:
        for lang in LANGUAGES:
            try:
                Renderer(channel, lang).render(SAMPLE_PAYLOAD)
            except TemplateProblem as exc:
                out.append(_problem(exc.where, "", exc.message))
    for name, spec in cfg.alerting.sinks.items():
        body_src = getattr(spec, "body_template", None)
        if isinstance(spec, ChannelSpec) and spec.template:
            try:
                Renderer(spec.type, spec.language, Path(cfg.resolve_path(spec.template))).render(SAMPLE_PAYLOAD)
            except TemplateProblem as exc:
                out.append(_problem(exc.where, "", exc.message))
        if body_src is not None:
            path = f"alerting.sinks.{name}.body_template"
            file, line = locate(lines, ("alerting", "sinks", name, "body_template"))
            where = f"{file}:{line}" if line else file
            try:
                t = compile_source(body_src, path, known=BODY_FIELDS)
                rendered = render(t, {**Renderer("webhook").values(SAMPLE_PAYLOAD), "text": "t", "to": "1"})
                json.loads(rendered)
            except TemplateProblem as exc:
                # The YAML line of the key; the template's own line is in the message.
                tline = exc.where.rpartition(":")[2]
                at = f" (template line {tline})" if tline.isdigit() else ""
                out.append(_problem(where, path, exc.message + at))
            except ValueError as exc:
                out.append(_problem(where, path, f"the body is not JSON for a sample notice: {exc}"))
    return out


def check_roster(cfg: Config) -> tuple[list[ConfigProblem], list[str]]:
    """(problems, warning lines) of the on-call roster: a team naming a sink that does not exist or is
    not of its channel's type; the hours of the week in which a team's first level has nobody on duty."""
    from alerts.roster import coverage_gaps
    from config.yamlsrc import locate

    lines = getattr(cfg, "_lines", None) or {}
    problems: list[ConfigProblem] = []
    warnings: list[str] = []
    for t, team in enumerate(cfg.oncall.teams):
        for kind, sink_name in team.sinks.items():
            spec = cfg.alerting.sinks.get(sink_name)
            file, line = locate(lines, ("oncall", "teams", t, "sinks", kind))
            where = f"{file}:{line}" if line else file
            path = f"oncall.teams[{t}].sinks.{kind}"
            if spec is None:
                problems.append(_problem(where, path, f"unknown sink (got {sink_name!r})"))
            elif spec.type != kind:
                problems.append(_problem(where, path, f"sink {sink_name!r} is of type {spec.type}, not {kind}"))
        gaps = coverage_gaps(cfg.oncall, team)
        if gaps:
            file, line = locate(lines, ("oncall", "teams", t, "id"))
            where = f"{file}:{line}" if line else file
            warnings.append(f"{where}: warning: oncall.teams[{t}]: team {team.id} has nobody on duty at level 0 "
                            f"in {', '.join(gaps)}")
    return problems, warnings
