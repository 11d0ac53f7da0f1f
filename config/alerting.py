"""Alert routing: sinks, the routing tree, grouping, escalation, inhibition and quiet windows."""

from __future__ import annotations

import ipaddress
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator, model_validator

from config.base import Severity, Strict, Window
from config.channels import DingtalkSink, EmailSink, SmsSink, WecomSink

Category = Literal["noise", "gas", "device", "data"]


class SinkBase(Strict):
    # Notices per second this sink may send; more wait in its queue (never dropped).
    rate_per_s: float = Field(50.0, gt=0, le=100000)


class MqttSink(SinkBase):
    type: Literal["mqtt"]
    topic_prefix: str = Field("city/xm/alerts", pattern=r"^[^#+]+$")
    qos: Literal[0, 1, 2] = 1
    timeout_s: float = Field(5.0, gt=0, le=120)


class WebhookSink(SinkBase):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    # The variable holding the HMAC key of the `X-Citywatch-Signature: t=<unix>,v1=<hmac>` header
    # (alerts/sinks/webhook.py); None sends unsigned notices, which check-config warns about.
    secret_env: str | None = None
    timeout_s: float = Field(5.0, gt=0, le=120)
    # A Jinja2 template of the JSON body (alerts/notice_text.py: the notice's fields and `text`);
    # None posts the notice payload as it is.
    body_template: str | None = None

    def warnings(self) -> list[tuple[str, str]]:
        """(key, message) for a valid but unsafe sink: unsigned, or plain http off this machine."""
        out = []
        if not self.secret_env:
            out.append(("secret_env", "not set: notices are sent unsigned, and a receiver cannot tell them "
                                      "from forged or replayed ones; set secret_env to the variable holding "
                                      "an HMAC key"))
        parts = urlsplit(self.url)
        if parts.scheme == "http" and not _loopback(parts.hostname or ""):
            out.append(("url", f"plain http to {parts.hostname}, which is not this machine: notices cross the "
                               f"network unencrypted; use https://"))
        return out


def _loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class InfluxSink(SinkBase):
    type: Literal["influx"]
    measurement: str = "alerts"


class TerminalSink(SinkBase):
    type: Literal["terminal"]


Sink = Annotated[MqttSink | WebhookSink | InfluxSink | TerminalSink | WecomSink | DingtalkSink | EmailSink | SmsSink,
                 Field(discriminator="type")]


class Match(Strict):
    category: list[Category] | None = None
    severity: list[Severity] | None = None
    site: list[str] | None = None
    district: list[str] | None = None
    rule: list[str] | None = None
    # Escalation level names (alerting.escalation.levels); level 0 is the first name.
    level: list[str] | None = None


class Route(Strict):
    match: Match = Match()
    receivers: list[str] = []
    group_by: list[Literal["site_id", "device_id", "rule_id", "category", "district", "severity"]] | None = None
    # Bounded: a typo of a unit (1000w) would hold or space out notices for years.
    group_wait_s: float | None = Field(None, ge=0, le=3600)
    group_interval_s: float | None = Field(None, ge=0, le=86400)
    repeat_interval_s: float | None = Field(None, ge=0, le=30 * 86400)
    continue_: bool = Field(False, alias="continue")
    routes: list[Route] = []


class Escalation(Strict):
    red_s: float = Field(300, gt=0, le=86400)
    orange_s: float = Field(900, gt=0, le=86400)
    yellow_s: float = Field(3600, gt=0, le=86400)
    levels: list[str] = Field(["duty_officer", "section_chief", "bureau_leader"], min_length=1)


class Inhibit(Strict):
    # A source mutes its targets only while really active, and a device-health source never mutes a red
    # gas alarm (alerts/muting.py): a safety rule, deliberately not configurable here.
    source_rule: list[str] = Field(min_length=1)
    target_rule: list[str] = Field(min_length=1)
    equal: list[Literal["site_id", "device_id"]] = Field(min_length=1)


class Retry(Strict):
    initial_s: float = Field(1.0, gt=0, le=3600)
    max_s: float = Field(60.0, gt=0, le=86400)

    @model_validator(mode="after")
    def _order(self) -> Retry:
        if self.max_s < self.initial_s:
            raise ValueError(f"max_s ({self.max_s}) must not be below initial_s ({self.initial_s})")
        return self


class QuietWindow(Strict):
    id: str
    windows: list[Window] = Field(min_length=1)
    match: Match = Match()


class Operator(Strict):
    # A duty officer's account: the broker user name (and console login) the officer authenticates as.
    # Commands are accepted only on `command_topic/<username>` (the broker's ACL lets only this account
    # write there) and are recorded with this account as their author, never with a name from the payload.
    username: str = Field(pattern=r"^[a-z][a-z0-9_.-]{0,63}$")
    name: str = Field(min_length=1, max_length=80)  # shown beside acks and silences, e.g. "Duty officer Lin"


class Alerting(Strict):
    sinks: dict[str, Sink] = {}
    route: Route = Route(receivers=[])
    escalation: Escalation = Escalation()
    inhibit: list[Inhibit] = []
    quiet_windows: list[QuietWindow] = []
    flap_window_s: float = Field(3600, gt=0, le=86400)
    flap_max_transitions: int = Field(6, ge=2)
    retry: Retry = Retry()
    recovered_clear_after_s: float = Field(300, ge=0, le=86400)
    mqtt_client_id: str = Field("citywatch-alerts", min_length=1, max_length=64)
    store_path: str = "var/alerts.sqlite"
    # Resolved alerts (with their notices), ended silences and applied commands older than this are
    # deleted from the store, checked once an hour; open alerts and unsent notices are never deleted.
    retention_days: float = Field(90, gt=0, le=3650)
    # The detectors' state (rolling windows, CUSUM sums, hysteresis levels, the learned gas profile),
    # written atomically this often and at stop, read at start (detectors/snapshot.py).
    detector_state_path: str = Field("var/detector_state.npz", min_length=1)
    detector_state_save_s: float = Field(60, ge=1, le=86400)
    # The detectors evaluate at most this many readings of one device per step (its oldest first) and
    # keep the rest queued for the next steps, beside everyone else's new readings: one device's long
    # back-fill costs the others at most one such step of latency (citywatch/pipeline.py).
    detect_step_rows_per_device: int = Field(32, ge=1, le=100_000)
    # While few readings wait (citywatch.pipeline.STEP_COALESCE_ROWS), a detector step starts no sooner than
    # this many ms after the last one started, so light load takes fewer, larger steps (each step pays the
    # rules' fixed cost): less CPU per reading, at most this much more alert latency. 0 (the default): step at
    # once (measured: the detector thread's CPU fell, whole workers' within the noise, p99 at light load tripled).
    detect_step_min_interval_ms: float = Field(0, ge=0, le=1000)
    command_topic: str = Field("city/xm/alerts/cmd", pattern=r"^[^#+]+$")
    # Who may send commands (ack, silence, unsilence); usernames unique and distinct from device ids.
    operators: list[Operator] = []
    # The longest silence a command may set (seconds); a longer one is refused, never stored.
    silence_max_s: float = Field(30 * 86400, ge=60, le=366 * 86400)
    # The result of each MQTT command (ok or the error) is published here, and to the command's MQTT 5
    # response topic when it names one; never under command_topic (the listener would read it back).
    command_reply_topic: str = Field("city/xm/alerts/replies", pattern=r"^[^#+]+$")
    # The console's base URL; notices link to <console_url>/alerts/<alert_id> when it is set.
    console_url: str | None = Field(None, pattern=r"^https?://")

    @field_validator("command_reply_topic")
    @classmethod
    def _reply_outside_commands(cls, v: str, info: ValidationInfo) -> str:
        cmd = (info.data.get("command_topic") or "").rstrip("/")
        reply = v.rstrip("/")
        if cmd and (reply == cmd or reply.startswith(cmd + "/")):
            raise ValueError(f"must not be under command_topic {cmd!r}: the listener would read its own replies")
        return v

    @field_validator("operators")
    @classmethod
    def _operators_unique(cls, v: list[Operator]) -> list[Operator]:
        seen: set[str] = set()
        for op in v:
            if op.username in seen:
                raise ValueError(f"operator {op.username!r} is listed twice")
            seen.add(op.username)
        return v

    @model_validator(mode="after")
    def _levels_known(self) -> Alerting:
        known = set(self.escalation.levels)

        def walk(route: Route, path: str) -> None:
            for level in route.match.level or []:
                if level not in known:
                    raise ValueError(f"{path}.match.level: unknown escalation level {level!r}"
                                     f" (escalation.levels: {', '.join(self.escalation.levels)})")
            for i, child in enumerate(route.routes):
                walk(child, f"{path}.routes[{i}]")

        walk(self.route, "route")
        return self
