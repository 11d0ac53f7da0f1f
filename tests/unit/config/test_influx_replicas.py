"""`connections.influx_replicas`: more InfluxDB targets, each checked like `connections.influx`, uniquely named
and writing somewhere else than every other target (the error texts are pinned: they are user interface)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from citywatch.service import replica_spool_dir
from config import ConfigError, load_config
from config.loader import DEFAULT_CONFIG_DIR


def _config_with(tmp_path: Path, replicas: str) -> Path:
    """A copy of the shipped config whose `influx_replicas: []` is replaced by `replicas` (YAML lines)."""
    dst = tmp_path / "config"
    dst.mkdir()
    for f in DEFAULT_CONFIG_DIR.glob("*.yaml"):
        shutil.copy(f, dst / f.name)
    text = (dst / "connections.yaml").read_text()
    assert text.count("  influx_replicas: []") == 1
    (dst / "connections.yaml").write_text(text.replace("  influx_replicas: []", "  influx_replicas:\n" + replicas))
    return dst


def _problems(directory: Path) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(directory, env={})
    # file:line: key: message, with the file relative to the config directory
    return [str(p).replace(str(directory) + "/", "") for p in info.value.problems]


def test_shipped_config_has_no_replica():
    assert load_config(DEFAULT_CONFIG_DIR, env={}).connections.influx_replicas == []


def test_replicas_load_with_the_keys_and_defaults_of_influx(tmp_path):
    d = _config_with(tmp_path, """\
    - name: dr
      url: http://10.0.0.2:8086
      username_env: DR_USER
    - {name: cloud, api: v2, url: "https://eu.example.com", org: xm, bucket: citywatch, token_env: CLOUD_TOKEN}
""")
    cfg = load_config(d, env={})
    dr, cloud = cfg.connections.influx_replicas
    assert (dr.name, dr.api, dr.database, dr.username_env, dr.password_env, dr.timeout_s) == (
        "dr", "v1", "citywatch", "DR_USER", "CITYWATCH_INFLUX_PASSWORD", 10.0)
    assert (cloud.name, cloud.api, cloud.org, cloud.bucket, cloud.token_env) == ("cloud", "v2", "xm", "citywatch",
                                                                                  "CLOUD_TOKEN")
    assert replica_spool_dir(cfg, "dr") == cfg.resolve_path(cfg.ingest.spool_dir) / "replicas" / "dr"


def test_each_replica_is_checked_like_influx(tmp_path):
    d = _config_with(tmp_path, """\
    - name: Bad-Name
      url: http://10.0.0.3:8086
      colour: red
    - name: cloud
      api: v2
      url: https://x.example:443
      org: xm
    - url: http://10.0.0.4:8086
    - name: nohost
      url: ftp://10.0.0.5
""")
    start = (d / "connections.yaml").read_text().splitlines().index("  influx_replicas:") + 1
    assert _problems(d) == [
        f"connections.yaml:{start + 1}: connections.influx_replicas[0].name: must be 1 to 32 of a-z, 0-9 and _, "
        "starting with a letter (it names the replica's spool directory and self-metrics) (got 'Bad-Name')",
        f"connections.yaml:{start + 3}: connections.influx_replicas[0].colour: unknown key; expected one of api, "
        "bucket, database, name, org, password_env, timeout_s, token_env, url, username_env",
        f"connections.yaml:{start + 4}: connections.influx_replicas[1].bucket: is required when api is v2 "
        "(got nothing)",
        f"connections.yaml:{start + 8}: connections.influx_replicas[2].name: required key is missing",
        f"connections.yaml:{start + 10}: connections.influx_replicas[3].url: must start with http:// or https:// "
        "(got 'ftp://10.0.0.5')",
    ]


def test_replicas_are_named_once_and_write_somewhere_else(tmp_path):
    d = _config_with(tmp_path, """\
    - name: dr
      url: http://10.0.0.2:8086
    - name: dr
      url: http://10.0.0.3:8086
    - name: same_as_primary
      url: http://127.0.0.1:8086/
    - name: same_as_dr
      url: http://10.0.0.2:8086
    - name: other_database
      url: http://10.0.0.2:8086
      database: citywatch_copy
""")
    start = (d / "connections.yaml").read_text().splitlines().index("  influx_replicas:") + 1
    assert _problems(d) == [
        f"connections.yaml:{start + 3}: connections.influx_replicas[1].name: is already the name of "
        "influx_replicas[0] (got 'dr')",
        f"connections.yaml:{start + 6}: connections.influx_replicas[2].url: writes to the same database as "
        "connections.influx; give it another url or database (got 'http://127.0.0.1:8086/')",
        f"connections.yaml:{start + 8}: connections.influx_replicas[3].url: writes to the same database as "
        "influx_replicas[0]; give it another url or database (got 'http://10.0.0.2:8086')",
    ]
