"""CITYWATCH_* environment overrides of connection settings, and their errors when a value is bad."""

from __future__ import annotations

import pytest

from config import DEFAULT_CONFIG_DIR, ConfigError, load_config
from config.loader import ENV_OVERRIDES


def _problems(env: dict) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(DEFAULT_CONFIG_DIR, env=env)
    return [str(p) for p in info.value.problems]


def test_mqtt_host_and_port_come_from_the_environment():
    cfg = load_config(DEFAULT_CONFIG_DIR, env={"CITYWATCH_MQTT_HOST": "10.1.2.3", "CITYWATCH_MQTT_PORT": "18830"})
    assert (cfg.connections.mqtt.host, cfg.connections.mqtt.port) == ("10.1.2.3", 18830)


def test_influx_url_comes_from_the_environment():
    cfg = load_config(DEFAULT_CONFIG_DIR, env={"CITYWATCH_INFLUX_URL": "https://influx.example:8443"})
    assert cfg.connections.influx.url == "https://influx.example:8443"


def test_username_database_and_api_overrides():
    cfg = load_config(
        DEFAULT_CONFIG_DIR,
        env={"CITYWATCH_MQTT_USERNAME": "tester", "CITYWATCH_INFLUX_DATABASE": "other"},
    )
    assert cfg.connections.mqtt.username == "tester"
    assert cfg.connections.influx.database == "other"


def test_without_overrides_the_yaml_values_stand():
    cfg = load_config(DEFAULT_CONFIG_DIR, env={})
    assert (cfg.connections.mqtt.host, cfg.connections.mqtt.port) == ("127.0.0.1", 1883)
    assert cfg.connections.influx.url == "http://127.0.0.1:8086"


def test_an_empty_variable_is_ignored():
    cfg = load_config(DEFAULT_CONFIG_DIR, env={"CITYWATCH_MQTT_PORT": "", "CITYWATCH_MQTT_HOST": ""})
    assert (cfg.connections.mqtt.host, cfg.connections.mqtt.port) == ("127.0.0.1", 1883)


def test_the_process_environment_is_used_by_default(monkeypatch):
    monkeypatch.setenv("CITYWATCH_MQTT_PORT", "2883")
    assert load_config(DEFAULT_CONFIG_DIR).connections.mqtt.port == 2883


def test_a_port_that_is_not_a_number():
    assert _problems({"CITYWATCH_MQTT_PORT": "18x3"}) == [
        "$CITYWATCH_MQTT_PORT: connections.mqtt.port: must be a whole number (got '18x3')"
    ]


def test_a_port_out_of_range():
    assert _problems({"CITYWATCH_MQTT_PORT": "70000"}) == [
        "$CITYWATCH_MQTT_PORT: connections.mqtt.port: must be between 1 and 65535 (got 70000)"
    ]


def test_an_influx_url_with_a_bad_port():
    assert _problems({"CITYWATCH_INFLUX_URL": "http://127.0.0.1:99999"}) == [
        "$CITYWATCH_INFLUX_URL: connections.influx.url: must have a port between 1 and 65535"
        " (got 'http://127.0.0.1:99999')"
    ]


def test_an_influx_url_without_scheme():
    assert _problems({"CITYWATCH_INFLUX_URL": "127.0.0.1:8086"}) == [
        "$CITYWATCH_INFLUX_URL: connections.influx.url: must start with http:// or https:// (got '127.0.0.1:8086')"
    ]


def test_an_unknown_influx_api():
    assert _problems({"CITYWATCH_INFLUX_API": "v3"}) == [
        "$CITYWATCH_INFLUX_API: connections.influx.api: must be one of v1, v2 (got 'v3')"
    ]


def test_env_and_yaml_problems_are_reported_together(tmp_path):
    (tmp_path / "inventory.yaml").write_text((DEFAULT_CONFIG_DIR / "inventory.yaml").read_text())
    (tmp_path / "connections.yaml").write_text("connections:\n  mqtt:\n    keepalive_s: 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path, env={"CITYWATCH_MQTT_PORT": "0"})
    lines = [str(p) for p in info.value.problems]
    assert lines[0] == "$CITYWATCH_MQTT_PORT: connections.mqtt.port: must be between 1 and 65535 (got 0)"
    assert lines[1].endswith("connections.yaml:3: connections.mqtt.keepalive_s: must be between 5 and 3600 seconds (got 1)")


def test_line_of_an_overridden_key_names_the_variable():
    cfg = load_config(DEFAULT_CONFIG_DIR, env={"CITYWATCH_MQTT_PORT": "1884"})
    assert cfg.line_of("connections", "mqtt", "port") == ("$CITYWATCH_MQTT_PORT", None)


def test_every_documented_override_exists():
    text = (DEFAULT_CONFIG_DIR / "connections.yaml").read_text()
    for var in ENV_OVERRIDES:
        assert var in text, f"{var} is not documented in connections.yaml"
