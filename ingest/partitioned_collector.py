"""Partitioned mode's collector: one MqttCollector per owned partition, each with its own persistent session.

It offers the MqttCollector surface the service uses (start, pause, stop, ack, publish, connected, client), so
the pipeline, dead letters, spool, InfluxDB writes and detectors are those of single mode (README "Cluster mode").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

from ingest.collector import PARTITION_PREFIX, AckToken, Message, MqttCollector

if TYPE_CHECKING:
    from config.connections import Cluster, Mqtt
    from ingest.metrics import IngestMetrics

__all__ = ["PARTITION_PREFIX", "PartitionedCollector"]


class PartitionedCollector:
    """Receives the partition topics `cw/p/<k>/#` of `partitions` from the cluster's MQTT listeners.

    mqtt: connections.mqtt (client_id is the base of each partition's session id `<client_id>-p<k>`, protocol
    mqtt311); cluster: connections.cluster (nodes, in failover order); partitions: the owned partitions, each
    below cluster.partitions. Acks go back to the client (session) the message came on.
    """

    def __init__(self, mqtt_cfg: Mqtt, cluster: Cluster, partitions: tuple[int, ...], password: str | None,
                 sink: Callable[[Message], None], metrics: IngestMetrics | None = None) -> None:
        if not partitions:
            raise ValueError("a partitioned collector needs at least one partition")
        hosts = cluster.hosts()
        self.cfg = mqtt_cfg
        self.partitions = partitions
        self.collectors = {k: MqttCollector(mqtt_cfg, password, sink, metrics=metrics, partition=k, hosts=hosts)
                           for k in partitions}
        self._first = self.collectors[partitions[0]]

    @property
    def client(self) -> mqtt.Client:
        """The first partition's client, for the service's own publishes (its announcement)."""
        return self._first.client

    @property
    def connected(self) -> bool:
        return all(c.connected for c in self.collectors.values())

    def start(self) -> None:
        for c in self.collectors.values():
            c.start()

    def wait_connected(self, timeout_s: float) -> bool:
        return all(c.wait_connected(timeout_s) for c in self.collectors.values())

    def pause(self) -> None:
        for c in self.collectors.values():
            c.pause()

    def stop(self) -> None:
        for c in self.collectors.values():
            c.stop()

    def ack(self, tokens: list[AckToken]) -> int:
        """Ack each token on the session it came from, in the order given; returns the number of acks sent."""
        by_source: dict[int, list[AckToken]] = {}
        for t in tokens:
            by_source.setdefault(t.source, []).append(t)
        return sum(self.collectors[k].ack(ts) for k, ts in by_source.items() if k in self.collectors)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish through the first partition's client that is connected (dead letters, replies)."""
        target = next((c for c in self.collectors.values() if c.connected), self._first)
        target.publish(topic, payload, qos)
