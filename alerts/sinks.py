"""Builds the configured sinks (alerting.sinks) with connection settings and secrets from the environment."""

from __future__ import annotations

import os

from alerts.influx_sink import InfluxSink
from alerts.mqtt_sink import MqttSink
from alerts.sink import Sink
from alerts.terminal import TerminalSink
from alerts.webhook import WebhookSink
from config.channels import CHANNEL_TYPES


def build_sinks(cfg, env: dict[str, str] | None = None) -> dict[str, Sink]:
    """One sink object per `alerting.sinks` entry. Connects lazily (MQTT in its own loop thread)."""
    env = dict(os.environ) if env is None else env
    out: dict[str, Sink] = {}
    for name, spec in cfg.alerting.sinks.items():
        if spec.type == "mqtt":
            m = cfg.connections.mqtt
            out[name] = MqttSink(
                m.host, m.port, f"{cfg.alerting.mqtt_client_id}-{name}"[:64], m.username,
                env.get(m.password_env) if m.password_env else None, spec.topic_prefix, spec.qos,
                spec.timeout_s, m.protocol, m.tls,
            )
        elif spec.type == "webhook":
            secret = env.get(spec.secret_env) if spec.secret_env else None
            if spec.secret_env and secret is None:
                raise ValueError(f"alerting.sinks.{name}.secret_env: environment variable {spec.secret_env} is not set")
            body = None
            if spec.body_template is not None:
                from alerts.channels import webhook_body

                body = webhook_body(cfg, name, spec.body_template)
            out[name] = WebhookSink(spec.url, secret.encode() if secret else None, spec.timeout_s, body=body)
        elif spec.type == "influx":
            i = cfg.connections.influx
            user, password = i.credentials(env) or (None, None)
            out[name] = InfluxSink(i.url, i.database or "citywatch", spec.measurement, i.timeout_s, user, password)
        elif spec.type in CHANNEL_TYPES:
            from alerts.channels import build_channel

            out[name] = build_channel(cfg, name, spec, env)
        else:
            out[name] = TerminalSink()
    if cfg.oncall.teams:
        from alerts.channels import build_teams

        out.update(build_teams(cfg, out))
    return out


def sink_rates(cfg) -> dict[str, float]:
    return {name: spec.rate_per_s for name, spec in cfg.alerting.sinks.items()}
