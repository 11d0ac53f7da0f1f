"""Sinks: one module per way a notice leaves the service, and `build_sinks`, which builds the configured
ones (alerting.sinks) with connection settings and secrets from the environment.

base.py     the contract (`Sink`, `SinkError`, `retryable_status`); retry, rate limits and dedup are
            alerts/dispatch.py, written once
mqtt.py     MQTT notices and the retained active-alert state      webhook.py  signed JSON POST
influx.py   the InfluxDB `alerts` measurement                      terminal.py a line per notice
wecom.py, dingtalk.py, mail.py, sms.py   channels that reach people (built by channels.py, which also
            checks their templates and the roster)
robot_http.py  the one HTTP exchange of every HTTP sink (no redirects followed, answers read up to 64 KiB)
            and the robots' and the SMS gateway's JSON POST
team.py     `team:<id>` receivers: the people on duty, over a team's channel sinks
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from alerts.sinks.base import Sink, SinkError
from config.channels import DingtalkSink as DingtalkSpec
from config.channels import EmailSink as EmailSpec
from config.channels import SmsSink as SmsSpec
from config.channels import WecomSink as WecomSpec

if TYPE_CHECKING:
    from config.model import Config

__all__ = ["Sink", "SinkError", "build_sinks", "sink_rates"]


def build_sinks(cfg: Config, env: dict[str, str] | None = None) -> dict[str, Sink]:
    """One sink object per `alerting.sinks` entry. Connects lazily (MQTT in its own loop thread)."""
    env = dict(os.environ) if env is None else env
    out: dict[str, Sink] = {}
    for name, spec in cfg.alerting.sinks.items():
        # Each sink module is imported when a sink of its type is configured (paho, rich: only if used).
        if spec.type == "mqtt":
            from alerts.sinks.mqtt import MqttSink

            m, cl = cfg.connections.mqtt, cfg.connections.cluster
            out[name] = MqttSink(
                m.host, m.port, f"{cfg.alerting.mqtt_client_id}-{name}"[:64], m.username,
                env.get(m.password_env) if m.password_env else None, spec.topic_prefix, spec.qos,
                spec.timeout_s, m.protocol, m.tls,
                # Partitioned mode: fail over across the cluster's nodes, as the collector does.
                hosts=cl.hosts() if cl.mode == "partitioned" and cl.nodes else None,
            )
        elif spec.type == "webhook":
            from alerts.sinks.webhook import WebhookSink

            secret = env.get(spec.secret_env) if spec.secret_env else None
            if spec.secret_env and secret is None:
                raise ValueError(f"alerting.sinks.{name}.secret_env: environment variable {spec.secret_env} is not set")
            body = None
            if spec.body_template is not None:
                from alerts.sinks.channels import webhook_body

                body = webhook_body(cfg, name, spec.body_template)
            out[name] = WebhookSink(spec.url, secret.encode() if secret else None, spec.timeout_s, body=body)
        elif spec.type == "influx":
            from alerts.sinks.influx import InfluxSink

            i = cfg.connections.influx
            user, password = i.credentials(env) or (None, None)
            out[name] = InfluxSink(i.url, i.database or "citywatch", spec.measurement, i.timeout_s, user, password)
        elif isinstance(spec, (WecomSpec, DingtalkSpec, EmailSpec, SmsSpec)):  # the sinks that reach people
            from alerts.sinks.channels import build_channel

            out[name] = build_channel(cfg, name, spec, env)
        else:
            from alerts.sinks.terminal import TerminalSink

            out[name] = TerminalSink()
    if cfg.oncall.teams:
        from alerts.sinks.channels import build_teams

        out.update(build_teams(cfg, out))
    return out


def sink_rates(cfg: Config) -> dict[str, float]:
    return {name: spec.rate_per_s for name, spec in cfg.alerting.sinks.items()}
