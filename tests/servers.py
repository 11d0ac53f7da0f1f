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


class SharedServerError(RuntimeError):
    """A test marked `shared_influx` tried to start, stop, kill or restart the module's shared InfluxDB."""


def _refuse(self, *args, **kwargs):
    raise SharedServerError(f"{type(self).__name__}: this server is shared by the module's tests; a test that "
                            "starts, stops, kills or restarts InfluxDB must not carry the `shared_influx` marker")


class SharedInflux(InfluxServer):
    """One test's view of the module's InfluxDB: its own fresh database (`citywatch_t<n>`, read and write
    granted to the citywatch account, dropped after the test); stop, kill and restart refused."""

    start = stop = kill = restart = _refuse

    def __init__(self, server: InfluxServer, test_no: int):
        # No super().__init__: a view writes no files and generates no accounts.
        self.__dict__.update(server.__dict__)
        self.test_no = test_no
        self.database = f"citywatch_t{test_no}"
        self.create_database(self.database)

    def drop(self) -> None:
        self.query(f'DROP DATABASE "{self.database}"', method="POST", as_admin=True)


class SharedInfluxPool:
    """A module's one InfluxDB (about 2 s to start), handed to its tests one database at a time. Mosquitto is
    not shared: it starts in a fraction of a second, and a broker of its own per test needs no cleaning of
    sessions and retained messages between tests."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.tests = 0
        self._influx: InfluxServer | None = None

    def influx(self) -> SharedInflux:
        self.tests += 1
        if self._influx is None or not self._influx.running():
            self._influx = InfluxServer(self.directory / "influxdb")
            self._influx.start()
        return SharedInflux(self._influx, self.tests)

    def close(self) -> None:
        if self._influx is not None:
            self._influx.kill()
            self._influx = None
