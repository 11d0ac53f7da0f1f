"""Alert routing: sinks, the routing tree, grouping, escalation, inhibition and quiet windows."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from config.base import Severity, Strict, Window

Category = Literal["noise", "gas", "device", "data"]


class MqttSink(Strict):
    type: Literal["mqtt"]
    topic_prefix: str = "city/xm/alerts"
    qos: Literal[0, 1, 2] = 1


class WebhookSink(Strict):
    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    secret_env: str | None = None
    timeout_s: float = Field(5.0, gt=0, le=120)


class InfluxSink(Strict):
    type: Literal["influx"]
    measurement: str = "alerts"


class TerminalSink(Strict):
    type: Literal["terminal"]


Sink = Annotated[Union[MqttSink, WebhookSink, InfluxSink, TerminalSink], Field(discriminator="type")]


class Match(Strict):
    category: list[Category] | None = None
    severity: list[Severity] | None = None
    site: list[str] | None = None
    district: list[str] | None = None
    rule: list[str] | None = None


class Route(Strict):
    match: Match = Match()
    receivers: list[str] = []
    group_by: list[Literal["site_id", "device_id", "rule_id", "category", "district", "severity"]] | None = None
    group_wait_s: float | None = Field(None, ge=0)
    group_interval_s: float | None = Field(None, ge=0)
    repeat_interval_s: float | None = Field(None, ge=0)
    continue_: bool = Field(False, alias="continue")
    routes: list["Route"] = []


class Escalation(Strict):
    red_s: float = Field(300, gt=0)
    orange_s: float = Field(900, gt=0)
    yellow_s: float = Field(3600, gt=0)
    levels: list[str] = ["duty_officer", "section_chief", "bureau_leader"]


class Inhibit(Strict):
    source_rule: list[str] = Field(min_length=1)
    target_rule: list[str] = Field(min_length=1)
    equal: list[Literal["site_id", "device_id"]] = Field(min_length=1)


class QuietWindow(Strict):
    id: str
    windows: list[Window] = Field(min_length=1)
    match: Match = Match()


class Alerting(Strict):
    sinks: dict[str, Sink] = {}
    route: Route = Route(receivers=[])
    escalation: Escalation = Escalation()
    inhibit: list[Inhibit] = []
    quiet_windows: list[QuietWindow] = []
    flap_window_s: float = Field(3600, gt=0)
    flap_max_transitions: int = Field(6, ge=2)
    store_path: str = "var/alerts.sqlite"
    command_topic: str = "city/xm/alerts/cmd"
