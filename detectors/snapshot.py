"""Detector state that survives a restart (a snapshot file) and a config reload (in memory): every rule's
and shared component's state arrays, each with a fingerprint of what it means, restored only where
that meaning is unchanged, device by device.

A piece is one rule (`rule:<id>`) or one shared component (`shared:<kinds>:<name>`). Its fingerprint
has a device-independent part (class, rule id and parameters, the config sections it reads, scalar
settings, ring geometry) and per-device settings (every per-sensor array the detector derived from the
inventory: limits, set points, intervals). State is copied by device id, never by position, for the
devices that are in both the snapshot and the inventory with equal per-device settings; everything else
starts fresh. A rule's state is only as good as the shared state it was computed from, so a rule is
restored for a device only where its shared components (rolling Leq store, L90 background, gas
profile) were restored for that device too.

State is what the detector contract says it is (detectors/base.py): numpy attributes ending in `_`,
per sensor on axis 0, plus the arrays of a `SlotRing` attribute and the few scalars in `RUNTIME_SCALARS`.
A state array that is not per sensor is restored only when the device list is unchanged.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from detectors.gas import GasProfile
from detectors.rolling import SlotRing

log = logging.getLogger(__name__)

FORMAT = "citywatch-detector-state"
VERSION = 1
# Attributes that are state but do not end in `_` (Deadman: the first time the rule set saw).
RUNTIME_SCALARS = ("start_ns",)
# Attributes that say where a detector runs, not what its state means (device ids say that).
_PLACEMENT = {"inv", "group", "sensors", "n", "rule_id", "shared"}
# Config sections' per-site/per-device overrides reach detectors only through the Inventory's per-sensor
# arrays (limits, set points), which are per-device settings here: leaving them out of the
# device-independent part keeps one device's override from resetting every device.
_PER_DEVICE_KEYS = {"overrides"}


class SnapshotError(Exception):
    """A snapshot file that cannot be used (missing, truncated, corrupt, another format version)."""


@dataclass
class Piece:
    """The state of one rule or shared component with what it means.

    fp: device-independent fingerprint; devices: device ids in local order; dev_fp: (n, k) uint8 bytes of
    the per-device settings; arrays: state name -> array; scalars: RUNTIME_SCALARS present;
    needs: keys of the shared components the state was computed from."""

    key: str
    fp: str
    devices: list[str]
    dev_fp: np.ndarray
    arrays: dict[str, np.ndarray]
    scalars: dict = field(default_factory=dict)
    needs: tuple[str, ...] = ()


@dataclass
class Snapshot:
    pieces: dict[str, Piece]
    watermark_ns: int | None = None
    saved_ns: int = 0


@dataclass
class PieceResult:
    key: str
    devices: list[str]
    restored: np.ndarray            # bool per device (local order)
    reason: str | None = None       # why the whole piece started fresh
    device_reasons: dict = field(default_factory=dict)  # reason -> device ids that started fresh


@dataclass
class LoadReport:
    """What a load or a reload restored and what started fresh, and why.

    source: the snapshot file, or "reload"; error: why no snapshot could be used (everything fresh)."""

    source: str
    error: str | None = None
    pieces: dict[str, PieceResult] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def rule_results(self):
        return [r for k, r in self.pieces.items() if k.startswith("rule:")]

    def kept(self) -> set[tuple[str, str]]:
        """(rule id, device id) of every rule device whose state was restored."""
        out: set[tuple[str, str]] = set()
        for r in self.rule_results():
            rid = r.key[5:]
            out.update((rid, d) for d in np.asarray(r.devices, object)[r.restored])
        return out

    def reset(self) -> set:
        """Rule ids whose state started fresh for all of their devices, and (rule id, device id) keys
        of the devices that started fresh in rules restored for others (for AlertEngine.reload)."""
        out: set = set()
        for r in self.rule_results():
            rid = r.key[5:]
            if r.reason is not None or (len(r.devices) and not r.restored.any()):
                out.add(rid)
            elif not r.restored.all():
                out.update((rid, d) for d in np.asarray(r.devices, object)[~r.restored])
        return out

    def lines(self) -> list[str]:
        """One log line per outcome: what was restored, then each reason something started fresh."""
        if self.error is not None:
            return [f"detector state starts fresh: {self.error}"]
        whole: dict[str, list[str]] = {}
        devs: dict[str, tuple[set, set]] = {}
        full = part = 0
        for r in self.pieces.values():
            if r.reason is not None:
                whole.setdefault(r.reason, []).append(r.key)
                continue
            if r.restored.all():
                full += 1
            else:
                part += 1
            for reason, ids in r.device_reasons.items():
                ds, keys = devs.setdefault(reason, (set(), set()))
                ds.update(ids)
                keys.add(r.key)
        out = [f"detector state restored from {self.source}: {full} of {len(self.pieces)} rules and shared"
               f" components whole" + (f", {part} for some of their devices" if part else "")]
        for reason, names in sorted(whole.items()):
            out.append(f"detector state starts fresh for {', '.join(sorted(names))}: {reason}")
        for reason, (ds, keys) in sorted(devs.items()):
            out.append(f"detector state starts fresh for {len(ds)} device(s) ({', '.join(sorted(ds)[:5])}"
                       f"{', ...' if len(ds) > 5 else ''}) in {', '.join(sorted(keys))}: {reason}")
        return out


# ----- describing a rule set ------------------------------------------------------------------------

def _pieces(ruleset) -> list[tuple[str, object]]:
    """(key, object), shared components first (rules depend on them)."""
    out = [(f"shared:{'+'.join(kinds)}:{name}", comp)
           for kinds, comps in ruleset.shared.items() for name, comp in comps.items()]
    return out + [(f"rule:{d.rule_id}", d) for d in ruleset.rules]


def _materialize(obj) -> None:
    """Create lazily built state (NoiseEnergy's ring) now, so a snapshot can hold it and a fresh rule
    set can take it; the rule set is complete, so it is the ring the first reading would create."""
    if "ring" in vars(obj) and obj.ring is None and callable(getattr(obj, "_ring", None)):
        obj._ring()


def _json_default(v):
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, BaseModel):
        return _dump(v)
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    if isinstance(v, np.ndarray):
        return hashlib.blake2b(np.ascontiguousarray(v).tobytes(), digest_size=16).hexdigest() + str(v.dtype) + str(v.shape)
    return type(v).__name__  # an object we cannot describe: only its type counts


def _dump(model: BaseModel) -> dict:
    d = model.model_dump(mode="json")
    return {k: v for k, v in d.items() if k not in _PER_DEVICE_KEYS}


def _per_device(arr: np.ndarray, n: int) -> np.ndarray | None:
    """The array as (n, bytes) when it holds one value (or row) per sensor, else None."""
    if n == 0 or arr.ndim == 0 or arr.dtype.hasobject:
        return None
    if arr.shape[0] == n and (arr.ndim == 1 or arr.shape[-1] != n):
        a = arr
    elif arr.ndim >= 2 and arr.shape[-1] == n and arr.shape[0] != n:
        a = np.moveaxis(arr, -1, 0)
    else:
        return None  # not per sensor, or (n, n): ambiguous, so it counts as a whole
    return np.ascontiguousarray(a).reshape(n, -1).view(np.uint8).reshape(n, -1)


def _describe(key: str, obj, comps: dict[int, str]) -> tuple[str, np.ndarray, dict, dict, tuple]:
    """(fp, dev_fp, state arrays, scalars, needs) of a live rule or component."""
    _materialize(obj)
    n = len(obj.group)
    settings: dict = {"class": f"{type(obj).__module__}.{type(obj).__qualname__}"}
    per_dev: list[tuple[str, np.ndarray]] = []
    state: dict[str, np.ndarray] = {}
    scalars: dict = {}
    needs: list[str] = []
    seen: set[int] = set()
    if isinstance(obj, GasProfile):
        # The profile's meaning: local hour-of-week means of one device's pressure at one set point.
        # min_weeks and the sample interval change only when a bin counts as learned, not the means.
        cfg = obj.inv.cfg
        settings["tz"] = cfg.time.timezone
        per_dev.append(("p_set", obj.inv.p_set[obj.group.global_index]))
        per_dev.append(("pressure_class", np.array(
            [str(cfg.devices[i].pressure_class) for i in obj.group.global_index], "U32")))
        items = sorted((k, v) for k, v in vars(obj).items() if k.endswith("_"))
    else:
        items = sorted(vars(obj).items())
    for name, v in items:
        if name.endswith("_"):
            if isinstance(v, np.ndarray) and id(v) not in seen:
                seen.add(id(v))
                state[name] = v
            continue
        if name in RUNTIME_SCALARS:
            scalars[name] = None if v is None else v.item() if isinstance(v, np.generic) else v
            continue
        if name in _PLACEMENT or name.startswith("_"):
            continue
        if id(v) in comps:
            needs.append(comps[id(v)])
            continue
        if isinstance(v, SlotRing):
            settings[name] = {"slot_s": v.slot_s, "slots": v.slots, "base": v.base, "dtype": str(v.val_.dtype)}
            for sub in ("val_", "key_"):
                arr = getattr(v, sub)
                if id(arr) not in seen:
                    seen.add(id(arr))
                    state[f"{name}.{sub}"] = arr
            continue
        if name == "params" and isinstance(v, BaseModel):
            settings[name] = v.model_dump(mode="json")
        elif isinstance(v, BaseModel):
            settings[name] = _dump(v)
        elif isinstance(v, np.ndarray) and _per_device(v, n) is not None:
            per_dev.append((name, v))
        else:
            settings[name] = v
    cols = []
    for name, v in per_dev:
        b = _per_device(v, n)
        if b is None:  # no devices: nothing per device
            settings[name] = v
            continue
        settings.setdefault("per_device", []).append([name, str(v.dtype), b.shape[1]])
        cols.append(b)
    dev_fp = np.concatenate(cols, axis=1) if cols else np.zeros((n, 0), np.uint8)
    settings["state"] = sorted([k, str(a.dtype), list(a.shape[1:])] for k, a in state.items())
    text = json.dumps([key, settings], sort_keys=True, default=_json_default)
    fp = hashlib.blake2b(text.encode(), digest_size=20).hexdigest()
    return fp, dev_fp, state, scalars, tuple(sorted(needs))


def _device_ids(ruleset, obj) -> list[str]:
    ids = ruleset.inv.ids
    return [ids[i] for i in obj.group.global_index]


def capture(ruleset, copy: bool = True) -> Snapshot:
    """The state of every rule and shared component of `ruleset` with its fingerprint.

    copy=False shares the live arrays (for a reload, where the old rule set is dropped right after);
    copy=True copies them, so the snapshot can be written while the rule set goes on."""
    comps = {id(c): k for k, c in _pieces(ruleset) if not k.startswith("rule:")}
    pieces = {}
    for key, obj in _pieces(ruleset):
        fp, dev_fp, state, scalars, needs = _describe(key, obj, comps)
        if copy:
            state = {k: a.copy() for k, a in state.items()}
        pieces[key] = Piece(key, fp, _device_ids(ruleset, obj), dev_fp, state, scalars, needs)
    return Snapshot(pieces, ruleset.watermark_ns, time.time_ns())


# ----- restoring ----------------------------------------------------------------------------------

def _match(old_ids: list[str], new_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(positions in new, positions in old) of the device ids present in both."""
    if not old_ids or not new_ids:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    old = np.asarray(old_ids, str)
    new = np.asarray(new_ids, str)
    order = np.argsort(old, kind="stable")
    srt = old[order]
    at = np.minimum(np.searchsorted(srt, new), len(srt) - 1)
    hit = srt[at] == new
    return np.flatnonzero(hit), order[at[hit]]


def restore(ruleset, snap: Snapshot, source: str = "reload") -> LoadReport:
    """Copy the state of `snap` into `ruleset` wherever it still means the same (see the module doc).

    Pieces and devices that do not match keep the fresh state they were built with. Never raises for a
    mismatch; the report says what was restored and why the rest starts fresh."""
    report = LoadReport(source)
    comps = {id(c): k for k, c in _pieces(ruleset) if not k.startswith("rule:")}
    kept_ids: dict[str, set] = {}
    for key, obj in _pieces(ruleset):
        fp, dev_fp, state, scalars, needs = _describe(key, obj, comps)
        devices = _device_ids(ruleset, obj)
        res = PieceResult(key, devices, np.zeros(len(devices), bool))
        report.pieces[key] = res
        old = snap.pieces.get(key)
        if old is None:
            res.reason = "not in the snapshot (new)"
        elif old.fp != fp:
            res.reason = "type, parameters or settings changed"
        elif not _layout_ok(old, state, len(old.devices), len(devices)) or old.dev_fp.shape[1:] != dev_fp.shape[1:]:
            res.reason = "its state layout changed"
        if res.reason is not None:
            kept_ids[key] = set()
            continue
        assert old is not None  # else res.reason is set
        new_idx, old_idx = _match(old.devices, devices)
        same = np.all(old.dev_fp[old_idx] == dev_fp[new_idx], axis=1) if len(new_idx) else np.zeros(0, bool)
        ok = np.zeros(len(devices), bool)
        ok[new_idx[same]] = True
        fresh: dict[str, list[str]] = {}
        missing = np.ones(len(devices), bool)
        missing[new_idx] = False
        if missing.any():
            fresh["new device (not in the snapshot)"] = [devices[i] for i in np.flatnonzero(missing)]
        if not same.all():
            fresh["device settings changed (limits, set pressure, class or interval)"] = [
                devices[i] for i in new_idx[~same]]
        for need in needs:
            got = np.isin(np.asarray(devices, str), np.asarray(sorted(kept_ids.get(need, ())), str))
            lost = ok & ~got
            if lost.any():
                fresh[f"{need.split(':')[-1]} it reads started fresh"] = [devices[i] for i in np.flatnonzero(lost)]
            ok &= got
        whole = [k for k, a in state.items() if a.shape[:1] != (len(devices),)]
        if whole and (old.devices != devices or not ok.all()):
            res.reason = "its state is not per device and the devices changed"
            kept_ids[key] = set()
            continue
        sel_new = np.flatnonzero(ok)
        pos = np.empty(len(devices), np.intp)
        pos[new_idx] = old_idx
        sel_old = pos[sel_new]
        for name, arr in state.items():
            src = old.arrays[name]
            if name in whole:
                arr[...] = src
            elif len(sel_new):
                arr[sel_new] = src[sel_old]
        if len(sel_new) or not devices:
            for name, v in old.scalars.items():
                if name in scalars and v is not None:
                    cur = getattr(obj, name)
                    setattr(obj, name, v if cur is None else min(cur, v))
        res.restored = ok
        res.device_reasons = fresh
        kept_ids[key] = {devices[i] for i in sel_new}
    if snap.watermark_ns is not None:
        ruleset.watermark_ns = max(ruleset.watermark_ns or snap.watermark_ns, snap.watermark_ns)
    return report


def _layout_ok(old: Piece, state: dict, n_old: int, n_new: int) -> bool:
    if set(old.arrays) != set(state) or old.dev_fp.shape[0] != n_old:
        return False
    for name, arr in state.items():
        src = old.arrays[name]
        if src.dtype != arr.dtype or src.ndim != arr.ndim:
            return False
        per_sensor = arr.shape[:1] == (n_new,) and src.shape[:1] == (n_old,)
        if src.shape[1:] != arr.shape[1:] or (not per_sensor and src.shape != arr.shape):
            return False
    return True


def transfer(old_ruleset, new_ruleset) -> LoadReport:
    """A reload: the new rule set takes over the old one's state wherever it means the same."""
    return restore(new_ruleset, capture(old_ruleset, copy=False), "reload")


def active_keys(ruleset) -> set[tuple[str, str]]:
    """(rule id, device id) of every rule device whose condition is active (hysteresis level above 0)."""
    ids = ruleset.inv.ids
    out: set[tuple[str, str]] = set()
    for d in ruleset.rules:
        level = getattr(d, "level_", None)
        if isinstance(level, np.ndarray) and level.shape == (d.n,):
            out.update((d.rule_id, ids[i]) for i in d.sensors[np.flatnonzero(level)])
    return out


# ----- the file -----------------------------------------------------------------------------------

def write(snap: Snapshot, path: str | os.PathLike) -> int:
    """Write a snapshot atomically (temp file, fsync, rename); returns its size in bytes. Raises OSError."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    pieces = []
    device_sets: dict[tuple, int] = {}
    for i, p in enumerate(snap.pieces.values()):
        ds = device_sets.setdefault(tuple(p.devices), len(device_sets))
        names = {}
        for j, (name, arr) in enumerate(p.arrays.items()):
            names[name] = f"p{i}_{j}"
            arrays[names[name]] = arr
        arrays[f"p{i}_dev"] = p.dev_fp
        pieces.append({"key": p.key, "fp": p.fp, "devices": ds, "arrays": names, "dev_fp": f"p{i}_dev",
                       "scalars": p.scalars, "needs": list(p.needs)})
    manifest = {"format": FORMAT, "version": VERSION, "saved_ns": snap.saved_ns,
                "watermark_ns": snap.watermark_ns, "device_sets": [list(d) for d in device_sets],
                "pieces": pieces}
    arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), np.uint8)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)  # type: ignore[arg-type]  # numpy stubs: **kwds could be allow_pickle
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # the rename itself is durable only once the directory is synced
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass
    return path.stat().st_size


def read(path: str | os.PathLike) -> Snapshot:
    """Read a snapshot file. Raises SnapshotError saying why it cannot be used."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SnapshotError(f"no snapshot at {path}") from None
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            manifest = json.loads(bytes(z["manifest"]).decode())
            if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
                raise SnapshotError(f"{path} is not a citywatch detector snapshot")
            if manifest.get("version") != VERSION:
                raise SnapshotError(f"{path} has snapshot format version {manifest.get('version')!r};"
                                    f" this version reads {VERSION}")
            sets = manifest["device_sets"]
            pieces = {}
            for p in manifest["pieces"]:
                arrays = {name: z[member] for name, member in p["arrays"].items()}
                devices = [str(d) for d in sets[p["devices"]]]
                dev_fp = z[p["dev_fp"]]
                if dev_fp.dtype != np.uint8 or dev_fp.ndim != 2 or dev_fp.shape[0] != len(devices):
                    raise ValueError(f"piece {p['key']!r}: device settings do not match its {len(devices)} devices")
                pieces[p["key"]] = Piece(p["key"], str(p["fp"]), devices, dev_fp, arrays, dict(p["scalars"]),
                                         tuple(p["needs"]))
            return Snapshot(pieces, manifest.get("watermark_ns"), int(manifest.get("saved_ns") or 0))
    except SnapshotError:
        raise
    except Exception as exc:  # zipfile, numpy and json errors of a damaged file: never fatal
        raise SnapshotError(f"{path} is truncated or corrupt ({type(exc).__name__}: {exc})") from None


def save(ruleset, path: str | os.PathLike) -> int:
    """Write the state of `ruleset` to `path` atomically; returns the file size. Raises OSError."""
    return write(capture(ruleset, copy=False), path)


def load(ruleset, path: str | os.PathLike) -> LoadReport:
    """Restore what a snapshot file holds into a freshly built `ruleset`. Never raises for a missing,
    truncated, corrupt or foreign file: the report's `error` says why everything started fresh."""
    try:
        snap = read(path)
    except SnapshotError as exc:
        return LoadReport(str(path), error=str(exc))
    return restore(ruleset, snap, str(path))


def log_report(report: LoadReport) -> None:
    for line in report.lines():
        log.info("%s", line)
