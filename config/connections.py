"""Connection settings: the MQTT broker and InfluxDB (secrets come only from environment variables)."""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Mapping
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from config.base import KeyProblem, Strict, raise_problems

# A `*_env` key names an environment variable; anything else there is probably the secret itself.
ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class Tls(Strict):
    enabled: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    @model_validator(mode="after")
    def _pair(self) -> Tls:
        # A client certificate is useless without its key, and the other way round.
        if (self.cert_file is None) != (self.key_file is None):
            missing = "key_file" if self.key_file is None else "cert_file"
            given = "cert_file" if missing == "key_file" else "key_file"
            raise KeyProblem(given, f"needs {missing} as well (mutual TLS takes both)")
        return self


class Reconnect(Strict):
    min_delay_s: float = Field(1.0, gt=0, le=600)
    max_delay_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _order(self) -> Reconnect:
        if self.max_delay_s < self.min_delay_s:
            raise KeyProblem("max_delay_s", f"must not be below min_delay_s {self.min_delay_s:g} (got {self.max_delay_s:g})")
        return self


class Mqtt(Strict):
    host: str = Field("127.0.0.1", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    protocol: Literal["mqtt5", "mqtt311"] = "mqtt5"
    client_id: str = Field("citywatch-collector", min_length=1, max_length=64)
    username: str | None = None
    password_env: str | None = Field("CITYWATCH_MQTT_PASSWORD", pattern=ENV_NAME)
    keepalive_s: int = Field(30, ge=5, le=3600)
    session_expiry_s: int = Field(7 * 86400, ge=0)
    tls: Tls = Tls()
    reconnect: Reconnect = Reconnect()


class Influx(Strict):
    api: Literal["v1", "v2"] = "v1"
    url: str = "http://127.0.0.1:8086"
    # v1: database and the account (basic auth, user name and password from these variables); v2: bucket, org, token.
    database: str | None = "citywatch"
    username_env: str | None = Field("CITYWATCH_INFLUX_USERNAME", pattern=ENV_NAME)
    password_env: str | None = Field("CITYWATCH_INFLUX_PASSWORD", pattern=ENV_NAME)
    bucket: str | None = None
    org: str | None = None
    token_env: str | None = Field(None, pattern=ENV_NAME)
    timeout_s: float = Field(10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _url(self) -> Influx:
        problem = _url_problem(self.url)
        if problem:
            raise KeyProblem("url", f"{problem} (got {self.url!r})")
        return self

    def credentials(self, env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
        """The v1 account as (user name, password) from the variables `username_env` / `password_env` of
        `env` (default os.environ), or None when the user name variable is unset or empty: the requests then
        go without credentials, which only a server with authentication off accepts."""
        env = os.environ if env is None else env
        user = env.get(self.username_env) if self.username_env else None
        if not user:
            return None
        password = env.get(self.password_env) if self.password_env else None
        return user, password or ""

    def place(self) -> tuple[str, str, str]:
        """(url without a trailing slash, api, database or org/bucket): where the readings land."""
        where = (self.database or "") if self.api == "v1" else f"{self.org}/{self.bucket}"
        return self.url.rstrip("/"), self.api, where

    @model_validator(mode="after")
    def _api_fields(self) -> Influx:
        if self.api == "v1" and not self.database:
            raise KeyProblem("database", "is required when api is v1 (got nothing)")
        if self.api == "v2":
            for key in ("bucket", "org"):
                if not getattr(self, key):
                    raise KeyProblem(key, "is required when api is v2 (got nothing)")
        return self


class InfluxReplica(Influx):
    """One more InfluxDB that every reading is written to (`connections.influx_replicas`), with its own spool
    (`<ingest.spool_dir>/replicas/<name>/`); the same keys as `connections.influx`, plus its name."""

    # Names its spool directory, its drain thread, its log lines and its self-metrics (replica_<name>_*).
    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z][a-z0-9_]{0,31}", value):
            raise ValueError("must be 1 to 32 of a-z, 0-9 and _, starting with a letter (it names the replica's "
                             "spool directory and self-metrics)")
        return value


def basic_auth(credentials: tuple[str, str] | None) -> dict[str, str]:
    """The HTTP header of InfluxDB v1 basic auth for (user name, password), {} for None.

    A header rather than the `u`/`p` query parameters, so that passwords stay out of URLs, proxy logs and
    error messages that quote a URL.
    """
    if not credentials:
        return {}
    token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode("ascii")
    return {"Authorization": f"Basic {token}"}


def _url_problem(url: str) -> str | None:
    """Why `url` is not a usable InfluxDB base URL, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "must start with http:// or https://"
    if not parts.hostname:
        return "must name a host, e.g. http://127.0.0.1:8086"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        return "must have a port between 1 and 65535"
    return None


class Cluster(Strict):
    """Partitioned mode (README "Cluster mode"): the broker is a NATS cluster whose MQTT listeners route each
    device topic to a partition topic `cw/p/<k>/...`; each `citywatch run --partitions ...` owns some of them."""

    mode: Literal["single", "partitioned"] = "single"
    partitions: int = Field(6, ge=1, le=256)
    # host:port of each node's MQTT listener, in failover order (CITYWATCH_CLUSTER_NODES: comma-separated).
    nodes: list[str] = []
    # host:port of each node's NATS client listener (CITYWATCH_CLUSTER_NATS): `--partitions auto` keeps its
    # partition leases in the cluster's JetStream key-value store through them (citywatch/partition_lease.py).
    nats: list[str] = []
    # `--partitions auto`: a worker's leases (and its membership) expire this long after its last renewal; a
    # dead worker's partitions are taken over within about this plus one renewal period (lease_ttl_s / 4).
    lease_ttl_s: float = Field(10.0, ge=2, le=300)

    @field_validator("nodes", "nats", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _nodes(self) -> Cluster:
        for i, node in enumerate(self.nodes):
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise KeyProblem(("nodes", i), f"must be host:port with a port between 1 and 65535 (got {node!r})")
        for i, node in enumerate(self.nats):
            host, _, port = node.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise KeyProblem(("nats", i), f"must be host:port with a port between 1 and 65535 (got {node!r})")
        if self.mode == "partitioned" and not self.nodes:
            raise KeyProblem("nodes", "must list the MQTT listeners (host:port) of the cluster's nodes when mode is "
                             "partitioned (got nothing)")
        return self

    def hosts(self) -> list[tuple[str, int]]:
        """The nodes as (host, port) pairs, in failover order."""
        return [(h, int(p)) for h, _, p in (n.rpartition(":") for n in self.nodes)]

    def nats_urls(self) -> list[str]:
        """The NATS client listeners as `nats://host:port` URLs (for the partition leases)."""
        return [f"nats://{n}" for n in self.nats]


class Connections(Strict):
    mqtt: Mqtt = Mqtt()
    influx: Influx = Influx()
    # More InfluxDB targets (README "Several InfluxDB targets"): a reading is acked once every target has it
    # or has it in that target's own spool.
    influx_replicas: list[InfluxReplica] = []
    cluster: Cluster = Cluster()

    @model_validator(mode="after")
    def _replicas(self) -> Connections:
        problems: list[KeyProblem] = []
        names: dict[str, int] = {}
        places: dict[tuple[str, str, str], str] = {self.influx.place(): "connections.influx"}
        for i, rep in enumerate(self.influx_replicas):
            if rep.name in names:
                problems.append(KeyProblem(("influx_replicas", i, "name"), f"is already the name of "
                                           f"influx_replicas[{names[rep.name]}] (got {rep.name!r})"))
            else:
                names[rep.name] = i
            where = rep.place()
            if where in places:
                # Two targets on one database would not survive the loss of its machine: it is no replica.
                what = "database" if rep.api == "v1" else "bucket"
                problems.append(KeyProblem(("influx_replicas", i, "url"), f"writes to the same {what} as "
                                           f"{places[where]}; give it another url or {what} (got {rep.url!r})"))
            else:
                places[where] = f"influx_replicas[{i}]"
        raise_problems(self, problems)
        return self

    @model_validator(mode="after")
    def _cluster_protocol(self) -> Connections:
        # NATS speaks MQTT 3.1.1 only: an MQTT 5 CONNECT is refused by every node.
        if self.cluster.mode == "partitioned" and self.mqtt.protocol != "mqtt311":
            raise KeyProblem(("mqtt", "protocol"), "must be mqtt311 when cluster.mode is partitioned (the NATS "
                             f"cluster speaks MQTT 3.1.1 only; got {self.mqtt.protocol})")
        return self
