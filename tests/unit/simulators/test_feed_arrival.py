"""The simulated city day as the collector receives it (messages in publish order: each device's report
carries its samples since the last one, the devices' reports interleaved) gives every shipped rule the
same detections however the stream is cut into batches: one message a batch, 2,000 messages a batch, cut
at random. This is what lets a day replayed at any speed raise the same alerts (DESIGN.md, event time):
the collector's batches follow the wall clock, so a paced replay and a fast one cut the same messages in
different places. A cut that changed a verdict once made the paced and the fast replay of
tests/integration/test_simulate_pipeline.py raise different G-flatline alerts (peers reporting hourly)."""

from __future__ import annotations

import numpy as np
import pytest

from core import Detections, ReadingBatch
from detectors.registry import RuleSet
from ingest.decoder import Decoder

pytestmark = pytest.mark.slow


def detections(cfg, batches: list[ReadingBatch], edges: list[int]) -> list[tuple]:
    rules = RuleSet.from_config(cfg)
    found = Detections.concat([rules.process(ReadingBatch.concat(batches[a:b]))
                               for a, b in zip(edges[:-1], edges[1:]) if b > a])
    return [(r["rule_id"], r["sensor"], r["ts_ns"], r["severity"], round(float(r["value"]), 9))
            for r in found.sorted().records()]


def test_any_cut_of_the_arrival_ordered_day_gives_the_same_detections(cfg, city_feed):
    decoder = Decoder(cfg)
    batches = []
    for m in city_feed:   # in publish order, as the broker delivers them
        batch, _ = decoder.decode_many([(m.topic, m.payload, m.t_ms * 1_000_000)])
        batches.append(batch)
    n = len(batches)
    coarse = detections(cfg, batches, list(range(0, n, 2000)) + [n])
    rules = {d[0] for d in coarse}
    assert {"N-day", "G-highhigh", "G-flatline", "Batt"} <= rules, rules
    assert detections(cfg, batches, list(range(n + 1))) == coarse           # one message a batch
    rng = np.random.default_rng(7)
    for parts in (50, 1500):
        cuts = np.sort(rng.choice(np.arange(1, n), parts, replace=False)).tolist()
        assert detections(cfg, batches, [0, *cuts, n]) == coarse, parts
