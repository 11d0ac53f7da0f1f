"""Partitioned mode's per-partition gauges on the Prometheus endpoint (citywatch.prometheus), without servers:
which partitions this worker owns, how often it took each, gave it up or lost it, and its state saves."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from citywatch.partition_lease import PartitionLeases, StaticPartitions
from citywatch.prometheus import _partition_metrics


class Only:
    def __init__(self, leases):
        self.leases = leases

    def collect(self):
        yield from _partition_metrics(self.leases)


def scrape(leases) -> str:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(Only(leases))
    return generate_latest(reg).decode()


def test_a_worker_shows_its_partitions_takeovers_and_save_ages():
    leases = PartitionLeases(["nats://127.0.0.1:1"], None, None, total=4, ttl_s=10, acquire=print, release=print,
                             worker_id="wa")
    leases.held = {1: object(), 3: object()}  # type: ignore[dict-item]
    leases.members = ("wa", "wb")
    leases.events.log += [(0.0, 1, "acquired"), (1.0, 3, "acquired"), (2.0, 3, "lost"), (3.0, 3, "acquired"),
                          (4.0, 0, "acquired"), (5.0, 0, "released")]
    text = scrape(leases)
    for line in ('citywatch_partition_owned{partition="0",worker="wa"} 0.0',
                 'citywatch_partition_owned{partition="1",worker="wa"} 1.0',
                 'citywatch_partition_owned{partition="3",worker="wa"} 1.0',
                 "citywatch_partitions_owned 2.0", "citywatch_partition_workers 2.0",
                 'citywatch_partition_acquired_total{partition="3"} 2.0',
                 'citywatch_partition_lost_total{partition="3"} 1.0',
                 'citywatch_partition_released_total{partition="0"} 1.0'):
        assert line in text, (line, text)


def test_the_state_save_age_and_counts_come_from_the_partition_state():
    from types import SimpleNamespace

    state = SimpleNamespace(metrics=lambda: {"snapshot_age_s": {1: 1.5, 3: None},
                                             "counts": {"snapshot_saves": 7, "alerts_saves": 40, "skipped_saves": 2,
                                                        "save_errors": 1}})
    leases = PartitionLeases(["nats://127.0.0.1:1"], None, None, total=4, ttl_s=10, acquire=print, release=print,
                             worker_id="wa", state=state)
    text = scrape(leases)
    assert 'citywatch_partition_state_save_age_seconds{partition="1"} 1.5' in text
    assert 'partition_state_save_age_seconds{partition="3"}' not in text  # not saved by this worker yet
    for kind, n in (("snapshot", 7), ("alerts", 40), ("skipped", 2), ("error", 1)):
        assert f'citywatch_partition_state_saves_total{{kind="{kind}"}} {float(n)}' in text


def test_static_partitions_show_as_owned():
    text = scrape(StaticPartitions((0, 2), 4, "w1"))
    assert 'citywatch_partition_owned{partition="2",worker="w1"} 1.0' in text
    assert 'citywatch_partition_owned{partition="1",worker="w1"} 0.0' in text
