"""Connection settings: the MQTT broker and InfluxDB (secrets come only from environment variables)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from config.base import Strict


class Tls(Strict):
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False


class Reconnect(Strict):
    min_delay_s: float = Field(1.0, gt=0, le=600)
    max_delay_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _order(self) -> "Reconnect":
        if self.max_delay_s < self.min_delay_s:
            raise ValueError(f"max_delay_s ({self.max_delay_s}) must not be below min_delay_s ({self.min_delay_s})")
        return self


class Mqtt(Strict):
    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["mqtt5", "mqtt311"] = "mqtt5"
    client_id: str = Field("citywatch-collector", min_length=1, max_length=64)
    username: str | None = None
    password_env: str | None = "CITYWATCH_MQTT_PASSWORD"
    keepalive_s: int = Field(30, ge=5, le=3600)
    session_expiry_s: int = Field(7 * 86400, ge=0)
    tls: Tls = Tls()
    reconnect: Reconnect = Reconnect()


class Influx(Strict):
    api: Literal["v1", "v2"] = "v1"
    url: str = "http://127.0.0.1:8086"
    # v1: database (and optional user); v2: bucket, org and token.
    database: str | None = "citywatch"
    username_env: str | None = None
    password_env: str | None = None
    bucket: str | None = None
    org: str | None = None
    token_env: str | None = None
    timeout_s: float = Field(10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _api_fields(self) -> "Influx":
        if not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url must start with http:// or https:// (got {self.url!r})")
        if self.api == "v1" and not self.database:
            raise ValueError("api v1 needs database")
        if self.api == "v2" and not (self.bucket and self.org):
            raise ValueError("api v2 needs bucket and org (and token_env for the token)")
        return self


class Connections(Strict):
    mqtt: Mqtt = Mqtt()
    influx: Influx = Influx()
