"""Configs and readings for the detector tests: small inventories built from the shipped YAML."""

from __future__ import annotations

import datetime as dt
import functools

import numpy as np

from config import load_config
from config.model import Config
from core import ReadingBatch

SHANGHAI = dt.timezone(dt.timedelta(hours=8))


@functools.lru_cache(maxsize=1)
def shipped_dict() -> dict:
    return load_config().model_dump(by_alias=True)


def make_config(rules: list[dict] | None = None, devices: list[dict] | None = None, sites: list[dict] | None = None,
                **sections) -> Config:
    """The shipped config with its rules, devices or sites replaced, and sections patched (deep merge)."""
    d = shipped_dict()
    d = {k: (v.copy() if isinstance(v, dict) else list(v) if isinstance(v, list) else v) for k, v in d.items()}
    if rules is not None:
        d["rules"] = rules
    if devices is not None:
        d["devices"] = devices
    if sites is not None:
        d["sites"] = sites
    for name, patch in sections.items():
        d[name] = _merge(d[name], patch)
    return Config.model_validate(d)


def _merge(base, patch):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return patch


EXAM_SITE = (24.45830, 118.08110)  # EX-XM1 in the shipped time_rules.yaml

TEST_SITES = [
    {"id": "SM-2025-101", "name": "permit site", "district": "Siming", "lat": 24.51477, "lon": 118.03771},
    {"id": "HL-2025-102", "name": "plain site", "district": "Huli", "lat": 24.45966, "lon": 118.20532},
    {"id": "EX-NEAR", "name": "next to the exam site", "district": "Siming", "lat": 24.45830 + 0.001, "lon": 118.08110},
    {"id": "GS-1", "name": "gas point", "district": "Huli", "lat": 24.5, "lon": 118.1, "kind": "gas_network"},
]

TEST_DEVICES = [
    {"id": "N-PERMIT", "kind": "noise", "site": "SM-2025-101", "report_interval_s": 60},
    {"id": "N-PLAIN", "kind": "noise", "site": "HL-2025-102", "report_interval_s": 60},
    {"id": "N-EXAM", "kind": "noise", "site": "EX-NEAR", "report_interval_s": 60},
    {"id": "G-LOW", "kind": "gas", "site": "GS-1", "report_interval_s": 900, "sample_interval_s": 60,
     "pressure_class": "low", "set_pressure_kpa": 2.5, "mop_kpa": 3.5, "full_scale_kpa": 10.0},
    {"id": "G-MED", "kind": "gas", "site": "GS-1", "report_interval_s": 900, "sample_interval_s": 60,
     "pressure_class": "medium_a", "set_pressure_kpa": 300.0, "mop_kpa": 400.0, "full_scale_kpa": 600.0},
]


def small_config(rules: list[dict], **sections) -> Config:
    return make_config(rules=rules, devices=TEST_DEVICES, sites=TEST_SITES, **sections)


def local_ns(text: str) -> int:
    """UTC ns of a local (Asia/Shanghai) time written 'YYYY-MM-DD HH:MM[:SS]'."""
    t = dt.datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)
    return int(t.timestamp()) * 1_000_000_000


def batch(rows: list[tuple], cfg: Config) -> ReadingBatch:
    """Rows (device_id, ts_ns, {field: value}, flag letter or None) -> ReadingBatch."""
    from core import FLAG_CODES

    names = sorted({k for r in rows for k in r[2]})
    return ReadingBatch(
        np.array([cfg.device_index(r[0]) for r in rows], np.int32),
        np.array([r[1] for r in rows], np.int64),
        {k: np.array([r[2].get(k, np.nan) for r in rows], np.float64) for k in names},
        np.array([FLAG_CODES.index(r[3]) if len(r) > 3 and r[3] else 0 for r in rows], np.uint8),
    )


def series(device: str, start_ns: int, values: list[dict], step_s: int = 60, flag: str | None = None) -> list[tuple]:
    return [(device, start_ns + i * step_s * 1_000_000_000, v, flag) for i, v in enumerate(values)]


def rows_of(dets, rule_id: str | None = None) -> list[dict]:
    recs = dets.sorted().records()
    return [r for r in recs if rule_id is None or r["rule_id"] == rule_id]


# ----- for the series-vs-rounds tests (test_*_series.py) -----------------------------------------------

def cut(rows: list, *at: int) -> list[list]:
    """`rows` cut into batches at the given positions (empty batches dropped)."""
    edges = [0, *at, len(rows)]
    return [rows[a:b] for a, b in zip(edges[:-1], edges[1:]) if b > a]


def by_time(*feeds: list) -> list:
    """The rows of several feeds merged in event-time order (row[1])."""
    return sorted((r for f in feeds for r in f), key=lambda r: r[1])


def late_and_cut(draw, rows: list) -> list[list]:
    """For a hypothesis composite: up to 4 of the time-ordered `rows` held back to a last batch (late
    readings), the rest cut into up to 5 batches anywhere."""
    from hypothesis import strategies as st

    late = set(draw(st.lists(st.integers(0, len(rows) - 1), max_size=4, unique=True)))
    held = [r for i, r in enumerate(rows) if i in late]
    rest = [r for i, r in enumerate(rows) if i not in late]
    cuts = sorted(draw(st.lists(st.integers(0, len(rest)), max_size=4)))
    return [b for b in [*([rest[a:b] for a, b in zip([0, *cuts], [*cuts, len(rest)])]), held] if b]


def feed_both(a, b, batches: list[list], convert, same_detections, same_state) -> list:
    """Feed each batch (rows, made a ReadingBatch by `convert`) to rule sets `a` and `b`, checking after each
    that their detections (`same_detections(x, y)`) and states (`same_state(a, b)`) agree; `a`'s detections."""
    found = []
    for rows in batches:
        x, y = a.process(convert(rows)), b.process(convert(rows))
        same_detections(x, y)
        same_state(a, b)
        found.append(x)
    return found
