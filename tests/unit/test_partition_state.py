"""`--partitions auto`: a partition's detector state, cut from the worker's snapshot and restored on another
worker, without servers (the object store round trip runs in tests/integration/test_cluster_auto.py)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from citywatch.cluster import partition_of
from citywatch.partition_state import MAGIC, PartitionState, cut, from_bytes, partition_devices, split_alerts, to_bytes
from config import load_config
from detectors import snapshot
from detectors.registry import RuleSet

CFG = load_config()
TOTAL = 4


def per_device_piece(snap):
    """A piece with per-device float state, and the name of one such array."""
    for p in snap.pieces.values():
        for name, a in p.arrays.items():
            if a.dtype.kind == "f" and a.shape[:1] == (len(p.devices),) and len(p.devices) > 3:
                return p, name
    raise AssertionError("the shipped rules hold no per-device float state: this test needs one to move")


def test_every_device_in_exactly_one_partition():
    parts = [partition_devices(CFG, k, TOTAL) for k in range(TOTAL)]
    assert sum(len(p) for p in parts) == len(CFG.devices)
    assert set().union(*parts) == {d.id for d in CFG.devices}
    gas = CFG.devices[[d.kind for d in CFG.devices].index("gas")]
    assert gas.id in parts[partition_of(gas.site, TOTAL)]


def test_a_partition_s_state_moves_to_another_worker_and_only_it():
    old, new = RuleSet.from_config(CFG), RuleSet.from_config(CFG)
    snap = snapshot.capture(old)
    piece, name = per_device_piece(snap)
    k = next(k for k in range(TOTAL) if partition_devices(CFG, k, TOTAL) & set(piece.devices))
    mine = partition_devices(CFG, k, TOTAL)
    arr = snapshot.capture(old, copy=False).pieces[piece.key].arrays[name]  # the live array
    arr[...] = 42.0  # the old worker's detectors have seen something for every device
    part = cut(snapshot.capture(old), mine)
    assert set(part.pieces[piece.key].devices) == mine & set(piece.devices)
    alerts = {"version": 1, "alerts": [{"alert_id": "G-high.X.1", "device_id": sorted(mine)[0], "seq": 2}],
              "flips": [], "notices": []}
    back, got_alerts = from_bytes(to_bytes(part, alerts))
    assert back.pieces.keys() == part.pieces.keys()
    assert got_alerts == alerts  # the partition's open alerts travel in the same object
    old_format, none = from_bytes(to_bytes(part)[len(MAGIC) + 8 + 2:])  # an object saved before alerts moved
    assert old_format.pieces.keys() == part.pieces.keys() and none is None
    report = snapshot.restore(new, back, source=f"partition {k}")
    got = snapshot.capture(new).pieces[piece.key]
    for i, dev in enumerate(got.devices):
        value = got.arrays[name][i]
        if dev in mine:
            assert np.all(value == 42.0), dev
        else:  # another partition's device: the taker's own state stays
            assert not np.all(value == 42.0), dev
    assert report.pieces[piece.key].restored.sum() == len(mine & set(piece.devices))


def test_a_partition_s_alerts_are_split_from_the_worker_s():
    alerts = {"version": 1, "alerts": [{"alert_id": "a1", "device_id": "d1"}, {"alert_id": "a2", "device_id": "d2"}],
              "flips": [["N-day", "d1", [1]], ["N-day", "d2", [2]]],
              "notices": [{"alert_id": "a2", "key": "a2:1", "payload": {"device": {"id": "d2"}}}]}
    assert split_alerts(alerts, {"d2"}) == {"version": 1, "alerts": [{"alert_id": "a2", "device_id": "d2"}],
                                            "flips": [["N-day", "d2", [2]]], "notices": alerts["notices"]}
    assert split_alerts(alerts, {"d1"})["notices"] == []


def test_nothing_saved_leaves_the_state_alone():
    pipeline = SimpleNamespace(_lock=threading.RLock(), rules=RuleSet.from_config(CFG))
    state = PartitionState(pipeline, CFG.model_copy(update={"connections": CFG.connections.model_copy(
        update={"cluster": CFG.connections.cluster.model_copy(update={"partitions": TOTAL})})}))
    assert sorted(state.devices) == list(range(TOTAL))
    with pytest.raises(snapshot.SnapshotError):
        from_bytes(b"not a snapshot")
