"""Partitioned mode's collector: one MqttCollector per owned partition, each with its own persistent session.

It offers the MqttCollector surface the service uses (start, pause, stop, ack, publish, connected, client), so
the pipeline, dead letters, spool, InfluxDB writes and detectors are those of single mode (README "Cluster mode").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import paho.mqtt.client as mqtt

from ingest.collector import PARTITION_PREFIX, AckToken, Message, MqttCollector

if TYPE_CHECKING:
    from config.connections import Cluster, Mqtt
    from ingest.metrics import IngestMetrics

__all__ = ["PARTITION_PREFIX", "PartitionedCollector"]

# Room for one client's reconnects (each one a connection generation) before the next client's range.
GENERATIONS_PER_CLIENT = 1_000_000


class PartitionedCollector:
    """Receives the partition topics `cw/p/<k>/#` of `partitions` from the cluster's MQTT listeners.

    mqtt: connections.mqtt (client_id is the base of each partition's session id `<client_id>-p<k>`, protocol
    mqtt311); cluster: connections.cluster (nodes, in failover order); partitions: the owned partitions, each
    below cluster.partitions; dynamic: `--partitions auto`: start with `partitions` (may be none) and let the
    partition leases `add` and `remove` them (citywatch/partition_lease.py). Acks go back to the client
    (session) the message came on; acks for a partition given up meanwhile are dropped (its next owner gets
    those messages again from the session, and they land once: same series and timestamp).
    """

    def __init__(self, mqtt_cfg: Mqtt, cluster: Cluster, partitions: tuple[int, ...], password: str | None,
                 sink: Callable[[Message], None], metrics: IngestMetrics | None = None, dynamic: bool = False) -> None:
        if not partitions and not dynamic:
            raise ValueError("a partitioned collector needs at least one partition")
        self.cfg = mqtt_cfg
        self._hosts = cluster.hosts()
        self._password, self._sink, self._metrics = password, sink, metrics
        self._lock = threading.Lock()
        self._started = False
        self._incarnation = 0
        self.collectors: dict[int, MqttCollector] = {k: self._make(k) for k in partitions}

    def _make(self, k: int) -> MqttCollector:
        c = MqttCollector(self.cfg, self._password, self._sink, metrics=self._metrics, partition=k,
                          hosts=self._hosts)
        # A partition given up and taken again gets a new client whose connection generations never repeat
        # the old one's: a late ack token of the old connection must not ack a packet id of the new one.
        self._incarnation += 1
        c._generation = self._incarnation * GENERATIONS_PER_CLIENT
        return c

    @property
    def partitions(self) -> tuple[int, ...]:
        return tuple(sorted(self.collectors))

    @property
    def client(self) -> mqtt.Client | None:
        """The lowest partition's client, for the service's own publishes (its announcement); None with none."""
        first = self._first()
        return first.client if first is not None else None

    def _first(self) -> MqttCollector | None:
        collectors = self.collectors
        return collectors[min(collectors)] if collectors else None

    @property
    def connected(self) -> bool:
        return all(c.connected for c in list(self.collectors.values()))

    def start(self) -> None:
        with self._lock:
            self._started = True
            for c in self.collectors.values():
                c.start()

    def wait_connected(self, timeout_s: float) -> bool:
        return all(c.wait_connected(timeout_s) for c in list(self.collectors.values()))

    def pause(self) -> None:
        with self._lock:
            self._started = False
            for c in self.collectors.values():
                c.pause()

    def stop(self) -> None:
        with self._lock:
            self._started = False
            for c in self.collectors.values():
                c.stop()

    def add(self, k: int) -> None:
        """Serve partition k from now on: open its session (`<client_id>-p<k>`; the broker hands over what is
        queued there). Nothing happens once the collector is paused or stopped."""
        with self._lock:
            if k in self.collectors or not self._started:
                return
            c = self._make(k)
            c.start()
            # A new dict, never mutated in place: ack() and publish() read it from other threads unlocked.
            self.collectors = {**self.collectors, k: c}

    def remove(self, k: int, flush_s: float = 0.0) -> None:
        """Stop serving partition k: take no new messages, let the pipeline ack what it holds for up to
        `flush_s` seconds (what is left unacked goes to the partition's next owner), then disconnect."""
        c = self.collectors.get(k)
        if c is None:
            return
        c.pause()
        if flush_s > 0:
            time.sleep(flush_s)
        with self._lock:
            self.collectors = {j: x for j, x in self.collectors.items() if j != k}
        c.stop()

    def ack(self, tokens: list[AckToken]) -> int:
        """Ack each token on the session it came from, in the order given; returns the number of acks sent."""
        collectors = self.collectors
        by_source: dict[int, list[AckToken]] = {}
        for t in tokens:
            by_source.setdefault(t.source, []).append(t)
        return sum(collectors[k].ack(ts) for k, ts in by_source.items() if k in collectors)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        """Publish through the first partition's client that is connected (dead letters, replies)."""
        collectors = list(self.collectors.values())
        target = next((c for c in collectors if c.connected), collectors[0] if collectors else None)
        if target is not None:
            target.publish(topic, payload, qos)
