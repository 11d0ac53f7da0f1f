"""Failover of one paho MQTT client across the nodes of a broker cluster (README "Cluster mode"): after a failed
or lost connection, paho's own reconnect goes to the next node; every node serves the same sessions."""

from __future__ import annotations

from typing import Any


class NodeRotation:
    """The (host, port) of the cluster's MQTT listeners, in failover order, and the one in use.

    Call `advance(client)` from paho's on_connect_fail and from on_disconnect after a lost connection: paho's
    `host` setter refuses while a lost connection is not yet closed, which is exactly when those run, so the
    two attributes paho's reconnect reads are set directly. One node: nothing moves. Raises ValueError for
    no nodes."""

    def __init__(self, hosts: list[tuple[str, int]]) -> None:
        if not hosts:
            raise ValueError("NodeRotation: no nodes")
        self.hosts = list(hosts)
        self.index = 0

    @property
    def current(self) -> tuple[str, int]:
        return self.hosts[self.index]

    def advance(self, client: Any) -> None:
        if len(self.hosts) > 1:
            self.index = (self.index + 1) % len(self.hosts)
            client._host, client._port = self.hosts[self.index]

    def describe(self) -> str:
        """`host:port` of every node, comma-separated (for log lines)."""
        return ", ".join(f"{h}:{p}" for h, p in self.hosts)
