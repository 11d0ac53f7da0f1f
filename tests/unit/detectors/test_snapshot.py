"""Detector snapshots: state saved and loaded continues as if never interrupted, is mapped by device id,
restored only where a rule's meaning is unchanged, and an unusable file only means a fresh start."""

from __future__ import annotations

import logging
import zipfile

import numpy as np
import pytest

from detectors import snapshot
from detectors.registry import RuleSet
from tests.unit.detectors.helpers import TEST_SITES, batch, local_ns, make_config, rows_of

H = 3600 * 10**9
START = local_ns("2025-06-02 00:00")  # a Monday


def gas_dev(id_: str, set_kpa: float = 300.0) -> dict:
    # Hourly samples: one reading per hour of the week teaches the profile in one week (min_weeks: 1).
    return {"id": id_, "kind": "gas", "site": "GS-1", "report_interval_s": 3600, "sample_interval_s": 3600,
            "pressure_class": "medium_a", "set_pressure_kpa": set_kpa, "mop_kpa": 400.0, "full_scale_kpa": 600.0}


def noise_dev(id_: str, site: str = "HL-2025-102") -> dict:
    return {"id": id_, "kind": "noise", "site": site, "report_interval_s": 60}


DEVICES = [noise_dev("N-A"), noise_dev("N-B", "SM-2025-101"), gas_dev("G-A"), gas_dev("G-B"), gas_dev("G-C")]
RULES = [
    {"id": "N-day", "type": "noise_day_limit", "kind": "noise", "window_s": 600},
    {"id": "N-pre", "type": "noise_pre_warning", "kind": "noise"},
    {"id": "N-data", "type": "noise_data_quality", "kind": "noise"},
    {"id": "G-low", "type": "gas_low", "kind": "gas"},
    {"id": "G-rupture", "type": "gas_rupture", "kind": "gas"},
    {"id": "G-leak", "type": "gas_leak_cusum", "kind": "gas"},
    {"id": "C-p", "type": "cusum", "kind": "gas", "field": "p", "warmup": 24, "h": 4},
    {"id": "T-leq", "type": "threshold", "kind": "noise", "field": "leq",
     "levels": [{"above": 72, "severity": "yellow"}], "hysteresis": 3},
    {"id": "Offline", "type": "deadman"},
]


def config(rules=RULES, devices=DEVICES):
    return make_config(rules=rules, devices=devices, sites=TEST_SITES,
                       gas={"profile": {"min_weeks": 1}, "cusum": {"warmup": 3}})


def gas_rows(dev: str, seed: int, days: int = 9, leak_from_h=None, low_at_h=None) -> list[tuple]:
    """Hourly pressure on a 300 kPa main with a morning demand sag; optionally a leak losing 1.5 kPa an
    hour, and a G-low episode that ends inside the hysteresis band (the level is held)."""
    h = np.arange(days * 24)
    p = 300.0 - 12.0 * np.exp(-0.5 * ((h % 24 - 8.0) / 1.0) ** 2) + np.random.default_rng(seed).normal(0, 0.3, len(h))
    if leak_from_h is not None:
        on = h >= leak_from_h
        p[on] -= 1.5 * (h[on] - leak_from_h)
    if low_at_h is not None:
        p[(h >= low_at_h) & (h < low_at_h + 3)] = 250.0
        p[(h >= low_at_h + 3) & (h < low_at_h + 6)] = 257.0
    return [(dev, START + int(i) * H, {"p": float(x), "batt_v": 3.6}, None) for i, x in zip(h, p)]


def noise_rows(dev: str, day: int, loud_from_h: float) -> list[tuple]:
    """09:00-13:00 of a day: 60 dB, an hour at 76 dB, then an hour at 69.5 dB (inside the hysteresis)."""
    out = []
    for m in range(9 * 60, 13 * 60):
        hh = m / 60
        leq = 76.0 if loud_from_h <= hh < loud_from_h + 1 else 69.5 if hh < loud_from_h + 2 and hh >= loud_from_h else 60.0
        out.append((dev, START + day * 24 * H + m * 60 * 10**9, {"leq": leq, "l90": 50.0, "lmax": leq + 5}, None))
    return out


def all_rows() -> list[tuple]:
    rows = gas_rows("G-A", 1) + gas_rows("G-B", 2, leak_from_h=8 * 24 + 2, low_at_h=7 * 24 + 12) + gas_rows("G-C", 3)
    rows += noise_rows("N-A", 8, 10.0) + noise_rows("N-B", 8, 10.5)
    return sorted(rows, key=lambda r: r[1])


def batches(rows, cfg, hours: int = 2) -> list[tuple[int, object]]:
    """(end time, batch) of consecutive `hours`-long slices, as a service would see them."""
    out, t, end = [], START, max(r[1] for r in rows)
    while t <= end:
        part = [r for r in rows if t <= r[1] < t + hours * H]
        if part:
            out.append((t + hours * H, batch(part, cfg)))
        t += hours * H
    return out


def run(rs: RuleSet, parts, cfg) -> list[dict]:
    """Detections of a run over batches (with the deadman advanced after each), with device ids."""
    found = []
    for end, b in parts:
        found += rows_of(rs.process(b))
        found += rows_of(rs.advance(end))
    for r in found:
        r["device"] = cfg.devices[r.pop("sensor")].id
    return found


def by_device(rs: RuleSet, key: str, attr: str) -> dict[str, np.ndarray]:
    obj = next(o for k, o in snapshot._pieces(rs) if k == key)
    return {rs.inv.ids[g]: getattr(obj, attr)[i] for i, g in enumerate(obj.group.global_index)}


PROFILE = "shared:gas:gas_profile"


@pytest.fixture(scope="module")
def feed():
    cfg = config()
    return cfg, batches(all_rows(), cfg)


@pytest.mark.slow
@pytest.mark.parametrize("split_h", [100, 185, 203])
def test_saved_and_loaded_state_continues_as_one_rule_set(feed, tmp_path, split_h):
    cfg, parts = feed
    k = next(i for i, (end, _) in enumerate(parts) if end >= START + split_h * H)
    whole = RuleSet.from_config(cfg)
    run(whole, parts[:k], cfg)
    expected = run(whole, parts[k:], cfg)
    first = RuleSet.from_config(cfg)
    run(first, parts[:k], cfg)
    snapshot.save(first, tmp_path / "state.npz")
    second = RuleSet.from_config(cfg)
    report = snapshot.load(second, tmp_path / "state.npz")
    assert report.ok and report.reset() == set()
    assert all(r.restored.all() for r in report.pieces.values())
    got = run(second, parts[k:], cfg)
    assert repr(got) == repr(expected)
    # The state mattered: a rule set that starts fresh at the split finds something else.
    fresh = run(RuleSet.from_config(cfg), parts[k:], cfg)
    assert repr(fresh) != repr(expected)


def test_the_split_points_hold_the_state_the_round_trip_must_carry(feed):
    cfg, parts = feed
    rs = RuleSet.from_config(cfg)
    found = run(rs, parts, cfg)
    rules = {r["rule_id"] for r in found if r["severity"] != "clear"}
    assert {"N-day", "N-pre", "T-leq", "G-low", "G-leak", "G-rupture", "C-p"} <= rules
    assert (by_device(rs, PROFILE, "count_")["G-A"] >= 1).all()  # the profile is learned everywhere


def test_an_inventory_change_keeps_the_state_of_the_devices_that_stayed(feed, tmp_path):
    cfg, parts = feed
    old = RuleSet.from_config(cfg)
    run(old, parts[:95], cfg)
    snapshot.save(old, tmp_path / "state.npz")
    # G-A removed, G-D added, the order shuffled (gas before noise, G-C before G-B).
    devices = [gas_dev("G-D"), gas_dev("G-C"), noise_dev("N-B", "SM-2025-101"), gas_dev("G-B"), noise_dev("N-A")]
    cfg2 = config(devices=devices)
    new = RuleSet.from_config(cfg2)
    report = snapshot.load(new, tmp_path / "state.npz")
    assert report.ok
    before, after = by_device(old, PROFILE, "mean_"), by_device(new, PROFILE, "mean_")
    for dev in ("G-B", "G-C"):
        assert np.array_equal(after[dev], before[dev]) and before[dev].any()
    assert not after["G-D"].any() and not by_device(new, PROFILE, "count_")["G-D"].any()
    prof = report.pieces[PROFILE]
    assert dict(zip(prof.devices, prof.restored)) == {"G-D": False, "G-C": True, "G-B": True}
    assert prof.device_reasons == {"new device (not in the snapshot)": ["G-D"]}
    assert ("G-leak", "G-D") in report.reset() and ("G-leak", "G-B") in report.kept()
    # Both go on exactly as the old rule set would for the devices that stayed.
    rest = [r for r in all_rows() if r[1] >= parts[95][0] - 2 * H and r[0] in ("G-B", "G-C", "N-A", "N-B")]
    got = run(new, batches(rest, cfg2), cfg2)
    want = run(old, batches(rest, cfg), cfg)
    key = lambda r: (r["ts_ns"], r["rule_id"], r["device"])  # noqa: E731
    strip = [r for r in want if r["rule_id"] != "Offline"]
    assert repr(sorted((r for r in got if r["rule_id"] != "Offline"), key=key)) == repr(sorted(strip, key=key))


def test_a_changed_set_pressure_resets_that_devices_profile_only(feed, tmp_path):
    cfg, parts = feed
    old = RuleSet.from_config(cfg)
    run(old, parts[:95], cfg)
    snapshot.save(old, tmp_path / "state.npz")
    devices = [d if d["id"] != "G-C" else gas_dev("G-C", 350.0) for d in DEVICES]
    new = RuleSet.from_config(config(devices=devices))
    report = snapshot.load(new, tmp_path / "state.npz")
    prof = report.pieces[PROFILE]
    assert dict(zip(prof.devices, prof.restored)) == {"G-A": True, "G-B": True, "G-C": False}
    assert not by_device(new, PROFILE, "mean_")["G-C"].any()
    assert np.array_equal(by_device(new, PROFILE, "mean_")["G-A"], by_device(old, PROFILE, "mean_")["G-A"])
    # Rules that read the profile follow it; the noise rules are untouched.
    assert ("G-leak", "G-C") in report.reset() and ("G-rupture", "G-C") in report.reset()
    assert not any(isinstance(k, str) for k in report.reset())


def test_a_changed_rule_parameter_resets_that_rule_only(feed, tmp_path):
    cfg, parts = feed
    old = RuleSet.from_config(cfg)
    run(old, parts[:93], cfg)   # G-B's G-low level is held (inside the hysteresis band)
    assert by_device(old, "rule:G-low", "level_")["G-B"] > 0
    snapshot.save(old, tmp_path / "state.npz")
    rules = [dict(r, hysteresis_pct=3) if r["id"] == "G-low" else r for r in RULES]
    new = RuleSet.from_config(config(rules=rules))
    report = snapshot.load(new, tmp_path / "state.npz")
    assert report.reset() == {"G-low"}
    assert report.pieces["rule:G-low"].reason == "type, parameters or settings changed"
    assert by_device(new, "rule:G-low", "level_")["G-B"] == 0
    for key, attr in (("rule:G-leak", "var_"), ("rule:C-p", "mean_"), ("rule:Offline", "last_"), (PROFILE, "mean_")):
        assert repr(by_device(new, key, attr)) == repr(by_device(old, key, attr))
    assert new.rules[-1].start_ns == old.rules[-1].start_ns is not None


def test_a_changed_config_section_resets_the_rules_that_read_it(feed, tmp_path):
    cfg, parts = feed
    old = RuleSet.from_config(cfg)
    run(old, parts[:95], cfg)
    snapshot.save(old, tmp_path / "state.npz")
    new_cfg = make_config(rules=RULES, devices=DEVICES, sites=TEST_SITES,
                          gas={"profile": {"min_weeks": 2}, "cusum": {"warmup": 3}})
    report = snapshot.load(RuleSet.from_config(new_cfg), tmp_path / "state.npz")
    # min_weeks decides when a profile hour counts as learned, not what it holds: the profile stays.
    assert report.pieces[PROFILE].restored.all()
    assert report.reset() == {"G-low", "G-rupture", "G-leak"}


def _truncate(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p):
    """One flipped byte inside the largest member's data (a byte at a fixed file offset may land in a
    local header's zip64 extra field, which zipfile ignores: that damages nothing)."""
    data = bytearray(p.read_bytes())
    with zipfile.ZipFile(p) as z:
        info = max(z.infolist(), key=lambda i: i.compress_size)
    h = info.header_offset
    name_len, extra_len = int.from_bytes(data[h + 26:h + 28], "little"), int.from_bytes(data[h + 28:h + 30], "little")
    data[h + 30 + name_len + extra_len + info.compress_size // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def _text(p):
    p.write_text("not a snapshot\n")


def _npy(p):
    with open(p, "wb") as f:
        np.save(f, np.arange(3))


def _empty_member(p):
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("manifest.npy", b"")


def _other_format(p):
    with open(p, "wb") as f:
        np.savez(f, manifest=np.frombuffer(b'{"format": "something else"}', np.uint8))


@pytest.mark.parametrize("damage, reason", [
    (None, "no snapshot at "),
    (_truncate, "is truncated or corrupt"),
    (_flip, "is truncated or corrupt"),
    (_text, "is truncated or corrupt"),
    (_npy, "is truncated or corrupt"),
    (_empty_member, "is truncated or corrupt"),
    (_other_format, "is not a citywatch detector snapshot"),
])
def test_an_unusable_file_means_a_fresh_start_with_a_reason(feed, tmp_path, damage, reason):
    cfg, parts = feed
    path = tmp_path / "state.npz"
    if damage is not None:
        old = RuleSet.from_config(cfg)
        run(old, parts[:95], cfg)
        snapshot.save(old, path)
        damage(path)
    new = RuleSet.from_config(cfg)
    report = snapshot.load(new, path)
    assert not report.ok and reason in report.error
    assert report.lines() == [f"detector state starts fresh: {report.error}"]
    assert not by_device(new, PROFILE, "count_")["G-A"].any()


def test_a_snapshot_of_another_format_version_is_not_read(feed, tmp_path, monkeypatch):
    cfg, parts = feed
    old = RuleSet.from_config(cfg)
    run(old, parts[:10], cfg)
    monkeypatch.setattr(snapshot, "VERSION", 99)
    snapshot.save(old, tmp_path / "state.npz")
    monkeypatch.undo()
    report = snapshot.load(RuleSet.from_config(cfg), tmp_path / "state.npz")
    assert report.error == f"{tmp_path / 'state.npz'} has snapshot format version 99; this version reads 1"


def test_the_lazily_built_leq_ring_is_saved_and_restored(tmp_path):
    cfg = config()
    unused = RuleSet.from_config(cfg)
    energy = unused.shared[("noise",)]["noise_energy"]
    assert energy.ring is None
    snapshot.save(unused, tmp_path / "empty.npz")   # before any reading: nothing lost, nothing broken
    assert snapshot.load(RuleSet.from_config(cfg), tmp_path / "empty.npz").reset() == set()
    used = RuleSet.from_config(cfg)
    used.process(batch(noise_rows("N-A", 8, 10.0)[:30], cfg))
    snapshot.save(used, tmp_path / "state.npz")
    new = RuleSet.from_config(cfg)
    assert new.shared[("noise",)]["noise_energy"].ring is None
    snapshot.load(new, tmp_path / "state.npz")
    ring = new.shared[("noise",)]["noise_energy"].ring
    assert ring is not None and np.array_equal(ring.val_, used.shared[("noise",)]["noise_energy"].ring.val_)


def test_saving_replaces_the_file_atomically(feed, tmp_path):
    cfg, parts = feed
    rs = RuleSet.from_config(cfg)
    path = tmp_path / "sub" / "state.npz"
    snapshot.save(rs, path)
    run(rs, parts[:5], cfg)
    size = snapshot.save(rs, path)
    assert [p.name for p in path.parent.iterdir()] == ["state.npz"] and size == path.stat().st_size
    with np.load(path, allow_pickle=False) as z:   # plain arrays: nothing is pickled
        assert "manifest" in z.files


def test_reload_takes_over_the_state_in_memory(feed):
    cfg, parts = feed
    old = RuleSet.from_config(cfg)
    run(old, parts[:93], cfg)
    rules = [dict(r, hysteresis_pct=3) if r["id"] == "G-low" else r for r in RULES]
    new = RuleSet.from_config(config(rules=rules))
    report = snapshot.transfer(old, new)
    assert report.source == "reload" and report.reset() == {"G-low"}
    assert by_device(new, "rule:N-data", "count_") == by_device(old, "rule:N-data", "count_")
    assert np.array_equal(by_device(new, PROFILE, "mean_")["G-B"], by_device(old, PROFILE, "mean_")["G-B"])


def test_the_log_says_what_was_restored_one_line_per_reason(feed, tmp_path, caplog):
    cfg, parts = feed
    old = RuleSet.from_config(cfg)
    run(old, parts[:95], cfg)
    snapshot.save(old, tmp_path / "state.npz")
    devices = [gas_dev("G-D"), gas_dev("G-E"), *[d for d in DEVICES if d["id"] != "G-A"]]
    rules = [dict(r, h=5) if r["id"] == "C-p" else r for r in RULES] + [{"id": "Batt", "type": "battery"}]
    new = RuleSet.from_config(config(rules=rules, devices=devices))
    with caplog.at_level(logging.INFO, logger="detectors.snapshot"):
        snapshot.log_report(snapshot.load(new, tmp_path / "state.npz"))
    assert [r.getMessage().replace(str(tmp_path), "TMP") for r in caplog.records] == [
        "detector state restored from TMP/state.npz: 6 of 13 rules and shared components whole, 5 for some of"
        " their devices",
        "detector state starts fresh for rule:Batt: not in the snapshot (new)",
        "detector state starts fresh for rule:C-p: type, parameters or settings changed",
        "detector state starts fresh for 2 device(s) (G-D, G-E) in rule:G-leak, rule:G-low, rule:G-rupture,"
        " rule:Offline, shared:gas:gas_profile: new device (not in the snapshot)",
    ]
