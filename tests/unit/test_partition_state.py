"""`--partitions auto`: a partition's detector state, cut from the worker's snapshot and restored on another
worker, without servers (the object store round trip runs in tests/integration/test_cluster_auto.py)."""

from __future__ import annotations

import json
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from citywatch.cluster import partition_of
from citywatch.partition_state import (
    MAGIC,
    PartitionState,
    cut,
    from_bytes,
    newer_alerts,
    partition_devices,
    split_alerts,
    to_bytes,
)
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


# ----- the alerts' save before their notices (AlertEngine.hold_until_saved) ----------------------------------

class FakeKV:
    """The alerts bucket: records each put with what the sink had received by then; `fail` makes puts raise."""

    def __init__(self, sink, fail: bool = False, hang: bool = False):
        self.sink, self.fail, self.hang = sink, fail, hang
        self.puts: list[tuple[str, dict, int]] = []

    async def put(self, key, data):
        if self.fail:
            raise TimeoutError("no response from stream")
        if self.hang:  # a cluster that takes the write and never answers
            import asyncio

            await asyncio.Event().wait()
        self.puts.append((key, json.loads(data), len(self.sink.notices)))

    async def delete(self, key):
        pass


def held_state(tmp_path, fail: bool = False, hang: bool = False, partitions: int = 1):
    """A PartitionState over a real AlertEngine owning every device (in `partitions` partitions), its alerts
    bucket a FakeKV."""
    import asyncio

    from tests.unit.alerts.helpers import make_cfg, make_engine

    cfg = make_cfg(rules=[{"id": "N-day", "type": "noise_day_limit", "kind": "noise", "clear_for_s": 60}])
    engine, sink = make_engine(tmp_path, cfg)
    cfg = cfg.model_copy(update={"connections": cfg.connections.model_copy(
        update={"cluster": cfg.connections.cluster.model_copy(update={"partitions": partitions})})})
    state = PartitionState(SimpleNamespace(engine=engine, counters={}), cfg)
    state.kv, state._kv_io, state.owned = FakeKV(sink, fail, hang), asyncio.Lock(), set(range(partitions))
    engine.hold_until_saved = True
    return state, engine, sink


def test_a_transition_s_notice_waits_until_its_alert_is_saved(tmp_path):
    import asyncio

    from tests.unit.alerts.helpers import det

    state, engine, sink = held_state(tmp_path)
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    assert not engine.flush(0.3) or sink.notices == []  # held: nothing reaches the sink before the save
    assert sink.notices == []
    asyncio.run(state.save_alerts([0]))
    assert engine.flush(5)
    (key, saved, sent_before), = state.kv.puts
    assert key == "a.0" and sent_before == 0  # written before any notice went out
    (alert,) = saved["alerts"]
    assert [n["key"] for n in saved["notices"]] == [f"{alert['alert_id']}:1"]  # a taker re-sends it under its key
    assert [(n.key, n.transition) for n in sink.notices] == [(f"{alert['alert_id']}:1", "firing")]
    engine.stop()


def test_a_save_of_several_partitions_writes_each_its_own_alerts_before_its_notices_go(tmp_path):
    """One export of the engine's alerts for every partition saved, cut per partition: each `a.<k>` holds its
    own devices' alerts and notices only, and a partition's held notices go once its own write is done."""
    import asyncio

    from tests.unit.alerts.helpers import det

    state, engine, sink = held_state(tmp_path, partitions=TOTAL)
    devices = engine.cfg.devices
    part = {d: k for k in range(TOTAL) for d in partition_devices(engine.cfg, k, TOTAL)}
    ids = [d.id for d in devices]
    first: dict[int, int] = {}   # one noise device of each partition that has one
    for i, d in enumerate(devices):
        if d.kind == "noise":
            first.setdefault(part[d.id], i)
    assert len(first) >= 2, first
    engine.process(det([(i, 0, "N-day", "yellow", 72) for i in first.values()]))
    assert not engine.flush(0.3) or sink.notices == []
    assert sink.notices == []
    asyncio.run(state.save_alerts(sorted(first)))
    assert engine.flush(5)
    assert [key for key, _, _ in state.kv.puts] == [f"a.{k}" for k in sorted(first)]
    for j, (key, saved, sent_before) in enumerate(state.kv.puts):
        k = int(key[2:])
        assert [a["device_id"] for a in saved["alerts"]] == [ids[first[k]]]
        assert [n["payload"]["device"]["id"] for n in saved["notices"]] == [ids[first[k]]]
        assert sent_before <= j   # at most the notices of the partitions written before it
    assert sorted(n.payload["device"]["id"] for n in sink.notices) == sorted(ids[i] for i in first.values())
    engine.stop()


def test_a_failed_save_still_lets_the_notice_go(tmp_path):
    import asyncio

    from tests.unit.alerts.helpers import det

    state, engine, sink = held_state(tmp_path, fail=True)
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    asyncio.run(state.save_alerts([0]))
    assert engine.flush(5)
    assert [n.transition for n in sink.notices] == ["firing"]
    assert state.counts["save_errors"] == 1
    engine.stop()


def test_a_save_the_cluster_never_answers_delays_the_notice_by_the_timeout_only(tmp_path, monkeypatch):
    import asyncio

    from citywatch import partition_state
    from tests.unit.alerts.helpers import det

    monkeypatch.setattr(partition_state, "ALERTS_SAVE_TIMEOUT_S", 0.2)
    state, engine, sink = held_state(tmp_path, hang=True)
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    asyncio.run(asyncio.wait_for(state.save_alerts([0]), 30))  # returns: the hung write is given up
    assert engine.flush(5)
    assert [n.transition for n in sink.notices] == ["firing"]
    assert state.counts["save_errors"] == 1
    engine.stop()


def test_notices_of_a_partition_not_owned_are_not_held_back(tmp_path):
    import asyncio

    from tests.unit.alerts.helpers import det

    state, engine, sink = held_state(tmp_path)
    state.owned = set()  # given up meanwhile
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    asyncio.run(state.save_alerts([0]))
    assert engine.flush(5)
    assert state.kv.puts == [] and [n.transition for n in sink.notices] == ["firing"]
    engine.stop()


def test_the_newer_alert_copy_wins():
    kv = {"saved_ns": 20, "alerts": ["kv"]}
    obj = {"saved_ns": 10, "alerts": ["object"]}
    assert newer_alerts(kv, obj, 0) is kv
    assert newer_alerts({**kv, "saved_ns": 5}, obj, 0) is obj
    assert newer_alerts(None, obj, 0) is obj and newer_alerts(kv, None, 0) is kv
    assert newer_alerts(kv, {"alerts": ["old object"]}, 30)["alerts"] == ["old object"]  # its snapshot's time


def test_a_reload_moves_ownership_with_the_inventory():
    cfg = CFG.model_copy(update={"connections": CFG.connections.model_copy(
        update={"cluster": CFG.connections.cluster.model_copy(update={"partitions": TOTAL})})})
    owned_calls: list[set[str]] = []
    state = PartitionState(SimpleNamespace(engine=SimpleNamespace(set_owned=lambda d: owned_calls.append(set(d)))), cfg)
    json_devs = [d for d in cfg.devices if d.protocol != "hj212" and d.site]
    k = partition_of(json_devs[0].site, TOTAL)
    state.owned = {k}
    other_site = next(d.site for d in json_devs if partition_of(d.site, TOTAL) != k)
    moved = next(d for d in json_devs if partition_of(d.site, TOTAL) == k and d.id != json_devs[0].id)
    added = json_devs[0].model_copy(update={"id": "ZZ-NEW-0001"})  # on a site of partition k
    devices = [d.model_copy(update={"site": other_site}) if d.id == moved.id else d for d in cfg.devices] + [added]
    state.reconfigure(cfg.model_copy(update={"devices": devices}))
    (owned,) = owned_calls
    assert added.id in owned and moved.id not in owned and json_devs[0].id in owned
    assert owned == partition_devices(cfg.model_copy(update={"devices": devices}), k, TOTAL)
    assert state._partition[moved.id] == partition_of(other_site, TOTAL)


class FakeStore:
    """The detector-state object store: records each put with what the sink had received by then."""

    def __init__(self, sink):
        self.sink = sink
        self.puts: list[tuple[str, int]] = []

    async def put(self, name, data):
        self.puts.append((name, len(self.sink.notices)))
        return SimpleNamespace(size=len(data))


def test_a_hand_over_writes_the_partition_before_its_held_notices_go(tmp_path):
    import asyncio

    from detectors.snapshot import Snapshot
    from tests.unit.alerts.helpers import det

    state, engine, sink = held_state(tmp_path)
    engine.set_owned({d.id for d in engine.cfg.devices})
    state.pipeline.hand_over = lambda devices: (Snapshot({}, 0, 0), engine.release_alerts(devices))
    state.store, state._io = FakeStore(sink), asyncio.Lock()
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    # While the partition is being handed over, an alerts save does not let its notices go ...
    state._leaving, state.owned = {0}, set()
    asyncio.run(state.save_alerts([0]))
    assert engine.flush(0.3) and sink.notices == [] and state.kv.puts == []
    # ... the hand-over writes the partition (the alert and its notice in it), then they go.
    state._leaving, state.owned = set(), {0}
    asyncio.run(state.give_up(0, save=True))
    assert engine.flush(5)
    assert state.store.puts == [("p0", 0)]
    assert [n.transition for n in sink.notices] == ["firing"] and state.owned == set() and state._leaving == set()
    engine.stop()
