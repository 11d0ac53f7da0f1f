"""Sink types that reach people: WeCom and DingTalk group robots, email over SMTP, SMS through an HTTP gateway.

Each is one member of `alerting.sinks`' discriminated union (config/alerting.py). Secrets (robot keys,
signing secrets, SMTP passwords, gateway tokens) are only named here by their `*_env` variable.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.base import KeyProblem, Strict

Language = Literal["zh-CN", "en"]
_ENV = r"^[A-Z_][A-Z0-9_]*$"


class _Channel(Strict):
    # Notices per second this sink may send; more wait in its queue (never dropped).
    rate_per_s: float = Field(1.0, gt=0, le=100000)
    # The language of the shipped templates (alerts/templates/<channel>.<language>.j2).
    language: Language = "zh-CN"
    # A Jinja2 template file of your own (relative to the project root) for the message (email: the
    # plain-text part) instead of the shipped one.
    template: str | None = None
    timeout_s: float = Field(5.0, gt=0, le=120)


class WecomSink(_Channel):
    """WeCom (企业微信) group robot: POST {url}?key=<key> with a markdown message."""

    type: Literal["wecom"]
    url: str = Field("https://qyapi.weixin.qq.com/cgi-bin/webhook/send", pattern=r"^https?://")
    key_env: str = Field(pattern=_ENV)  # the variable holding the robot's key (the webhook URL's key=)


class DingtalkSink(_Channel):
    """DingTalk (钉钉) custom robot: POST {url}?access_token=<token> with a markdown message, signed."""

    type: Literal["dingtalk"]
    url: str = Field("https://oapi.dingtalk.com/robot/send", pattern=r"^https?://")
    token_env: str = Field(pattern=_ENV)  # the variable holding the robot's access_token
    # The variable holding the robot's signing secret ("加签", SEC...): each request carries
    # &timestamp=<ms>&sign=<base64 HMAC-SHA256(secret, "<ms>\n<secret>")>. None: unsigned robot.
    secret_env: str | None = Field(None, pattern=_ENV)
    mention: bool = True

    def warnings(self) -> list[tuple[str, str]]:
        if not self.secret_env:
            return [("secret_env", "not set: the robot is called without a signature; DingTalk robots "
                                   "should use 加签 (a signing secret) so a leaked token alone cannot post")]
        return []


class EmailSink(_Channel):
    """Email over SMTP: a text/plain and a text/html part, one thread per alert."""

    type: Literal["email"]
    host: str = Field(min_length=1)
    port: int = Field(587, ge=1, le=65535)
    # starttls: plain connection upgraded with STARTTLS (port 587); tls: TLS from the start (port 465);
    # plain: no encryption, only for a relay on this machine or a trusted network.
    security: Literal["starttls", "tls", "plain"] = "starttls"
    username: str | None = None
    password_env: str | None = Field(None, pattern=_ENV)
    # A PEM file of CA certificates to trust for starttls/tls (relative to the project root), for a relay
    # with a private CA; default the system's trust store. The host name is always checked.
    ca_file: str | None = None
    sender: str = Field(pattern=r"^[^@\s]+@[^@\s]+$", alias="from")
    # Addresses of a plain route (a team receiver mails the person on duty instead).
    to: list[str] = []

    @model_validator(mode="after")
    def _auth_pair(self) -> EmailSink:
        if (self.username is None) != (self.password_env is None):
            raise KeyProblem("password_env", "username and password_env go together (got only one)")
        return self

    def warnings(self) -> list[tuple[str, str]]:
        from config.alerting import _loopback

        if self.security == "plain" and not _loopback(self.host):
            return [("security", f"plain SMTP to {self.host}, which is not this machine: mail and any "
                                 "password cross the network unencrypted; use starttls or tls")]
        return []


class SmsAuth(Strict):
    # token: header <header>: <prefix><token>; hmac: header <header>: hex HMAC-SHA256(secret, "<t>.<body>")
    # with the unix time t in header <timestamp_header>.
    kind: Literal["token", "hmac", "none"] = "token"
    header: str = Field("Authorization", min_length=1)
    prefix: str = ""  # e.g. "Bearer " for a token
    secret_env: str | None = Field(None, pattern=_ENV)
    timestamp_header: str = Field("X-Timestamp", min_length=1)

    @model_validator(mode="after")
    def _secret(self) -> SmsAuth:
        if self.kind != "none" and not self.secret_env:
            raise KeyProblem("secret_env", f"auth kind {self.kind} needs secret_env, the variable holding it")
        return self


class SmsSink(_Channel):
    """SMS through an HTTP gateway, described here: where, how signed, what body, what says accepted."""

    type: Literal["sms"]
    url: str = Field(pattern=r"^https?://")
    method: Literal["POST", "PUT"] = "POST"
    auth: SmsAuth = SmsAuth(kind="none")
    # A Jinja2 template of the JSON request body; it sees `to` (the number), `text` (the rendered
    # message) and the notice's fields. The default sends {"to": ..., "text": ...}.
    body_template: str = '{"to": {{ to | tojson }}, "text": {{ text | tojson }}}'
    content_type: str = "application/json"
    # The response is JSON; the gateway accepted the message when the value at this dotted path equals
    # `accepted_value` (compared as text). Any other value is a refusal (not retried), 5xx/429 a retry.
    accepted_field: str = Field("code", min_length=1)
    accepted_value: str = "0"
    # Values of accepted_field that mean "try later" (the gateway's own rate-limit codes).
    retry_values: list[str] = []
    to: list[str] = []  # numbers of a plain route (a team receiver texts the person on duty instead)


CHANNEL_TYPES = ("wecom", "dingtalk", "email", "sms")
