"""Real Mosquitto and InfluxDB servers for tests: free ports, temporary directories, stopped by pid."""

from __future__ import annotations

from pathlib import Path

from citywatch.localstack import Credentials, InfluxProcess, MosquittoProcess, free_port
from config import load_config

# Extra device users the tests may publish as, beyond the shipped inventory.
TEST_DEVICES = ["TESTDEV1", "TESTDEV2"]


def shipped_device_ids() -> list[str]:
    return load_config().device_ids


class MosquittoServer(MosquittoProcess):
    """Mosquitto with the project's auth, generated ACL, persistence and limits, on a free port.

    `credentials`: collector / tester (user, password) pairs, `operators` {user: password} (the shipped
    config's alerting.operators; `credentials.operator` is the account `operator`) and `devices` {id: password};
    `credentials_path`: the same as JSON (the format of `.stack/credentials.json`).
    cfg: the config the ACL is generated from (default: the shipped one).
    """

    def __init__(self, directory: Path, port: int | None = None, device_ids: list[str] | None = None,
                 persistence: bool = True, cfg=None):
        cfg = cfg if cfg is not None else load_config()
        creds = Credentials.generate((device_ids or cfg.device_ids) + TEST_DEVICES,
                                     [op.username for op in cfg.alerting.operators])
        super().__init__(Path(directory), port or free_port(), creds, persistence, cfg)
        self.credentials_path = self.directory / "credentials.json"
        creds.save(self.credentials_path)

    def client_args(self, who: str = "tester") -> dict:
        """Keyword arguments for `paho` username_pw_set of a role (collector/operator/tester), an operator
        user name or a device id."""
        if who in ("collector", "operator", "tester"):
            user, pw = getattr(self.credentials, who)
        elif who in self.credentials.operators:
            user, pw = who, self.credentials.operators[who]
        else:
            user, pw = who, self.credentials.devices[who]
        return {"username": user, "password": pw}


class InfluxServer(InfluxProcess):
    """InfluxDB 1.x on free ports, authentication on, with database `citywatch` and the accounts `admin` and
    `citywatch` (read/write of `citywatch` only; `username`/`password`, `env()`; `credentials_path`)."""

    def __init__(self, directory: Path, port: int | None = None, database: str = "citywatch"):
        super().__init__(Path(directory), port or free_port(), free_port(), database)


def service_env_for(mosquitto: MosquittoServer, influx: InfluxServer) -> dict[str, str]:
    """Environment variables that point a `citywatch` process at these servers as the collector."""
    user, pw = mosquitto.credentials.collector
    return {
        "CITYWATCH_MQTT_HOST": mosquitto.host,
        "CITYWATCH_MQTT_PORT": str(mosquitto.port),
        "CITYWATCH_MQTT_USERNAME": user,
        "CITYWATCH_MQTT_PASSWORD": pw,
        **influx.env(),
        "CITYWATCH_CREDENTIALS": str(mosquitto.credentials_path),
    }
