"""load_config reuses a valid Config only while the directory's files, the cwd and the overrides are unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from config import ConfigError, load_config

CASE = Path(__file__).parent / "broken" / "influx_bad_url"


@pytest.fixture
def cfg_dir(tmp_path):
    shutil.copy(CASE / "inventory.yaml", tmp_path / "inventory.yaml")
    text = (CASE / "connections.yaml").read_text().replace(":80860", ":8086")
    (tmp_path / "connections.yaml").write_text(text)
    return tmp_path


def test_an_unchanged_directory_gives_the_same_config(cfg_dir):
    assert load_config(cfg_dir, env={}) is load_config(cfg_dir, env={})


def test_an_edit_of_the_same_size_in_the_same_tick_is_seen(cfg_dir):
    path = cfg_dir / "connections.yaml"
    assert load_config(cfg_dir, env={}).connections.mqtt.port == 1883
    path.write_text(path.read_text().replace("port: 1883", "port: 1884"))
    assert load_config(cfg_dir, env={}).connections.mqtt.port == 1884


def test_an_override_is_part_of_the_key(cfg_dir):
    assert load_config(cfg_dir, env={}).connections.mqtt.port == 1883
    assert load_config(cfg_dir, env={"CITYWATCH_MQTT_PORT": "1999"}).connections.mqtt.port == 1999


def test_a_file_added_later_is_seen(cfg_dir):
    load_config(cfg_dir, env={})
    (cfg_dir / "extra.yaml").write_text("colour: red\n")
    with pytest.raises(ConfigError) as info:
        load_config(cfg_dir, env={})
    assert [p.path for p in info.value.problems] == ["colour"]


def test_a_broken_config_fails_every_time(cfg_dir):
    (cfg_dir / "extra.yaml").write_text("colour: red\n")
    for _ in range(2):
        with pytest.raises(ConfigError):
            load_config(cfg_dir, env={})
