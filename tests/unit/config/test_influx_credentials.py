"""The InfluxDB v1 account comes from CITYWATCH_INFLUX_USERNAME / CITYWATCH_INFLUX_PASSWORD by default and
is sent as an HTTP basic-auth header, never in a URL."""

from __future__ import annotations

import base64

from config import load_config
from config.connections import Influx, basic_auth
from config.loader import DEFAULT_CONFIG_DIR


def test_the_shipped_config_names_the_default_variables():
    influx = load_config(DEFAULT_CONFIG_DIR, env={}).connections.influx
    assert (influx.username_env, influx.password_env) == ("CITYWATCH_INFLUX_USERNAME", "CITYWATCH_INFLUX_PASSWORD")
    assert (Influx().username_env, Influx().password_env) == (influx.username_env, influx.password_env)


def test_credentials_come_from_the_named_variables():
    env = {"CITYWATCH_INFLUX_USERNAME": "citywatch", "CITYWATCH_INFLUX_PASSWORD": "s3cret"}
    assert Influx().credentials(env) == ("citywatch", "s3cret")
    assert Influx(username_env="MY_USER", password_env="MY_PW").credentials({"MY_USER": "u", "MY_PW": "p"}) == ("u", "p")


def test_no_user_name_means_no_credentials_and_a_missing_password_is_empty():
    assert Influx().credentials({}) is None
    assert Influx().credentials({"CITYWATCH_INFLUX_USERNAME": "", "CITYWATCH_INFLUX_PASSWORD": "x"}) is None
    assert Influx(username_env=None).credentials({"CITYWATCH_INFLUX_USERNAME": "u"}) is None
    assert Influx().credentials({"CITYWATCH_INFLUX_USERNAME": "u"}) == ("u", "")


def test_basic_auth_is_a_header():
    assert basic_auth(None) == {}
    header = basic_auth(("citywatch", "pa:ss"))
    assert list(header) == ["Authorization"]
    kind, token = header["Authorization"].split(" ")
    assert kind == "Basic" and base64.b64decode(token) == b"citywatch:pa:ss"
