"""The alert store's JSON bodies: written with orjson (the engine writes every changed alert at each commit), with the
standard library's path for what orjson refuses, both giving the same document; non-finite numbers stored as null."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from alerts.model import Alert, Notice
from alerts.store import AlertStore, _body, _clean, _dumps

SITE = {"id": "XM-S01", "name": "某工地", "district": "思明区", "lat": 24.48, "lon": 118.09}


def _alert(**kw) -> Alert:
    base = dict(alert_id="G-high.XMG0001.1700000000000", rule_id="G-high", device_id="XMG0001", category="gas",
                site=dict(SITE), device={"id": "XMG0001", "pressure_class": "medium_b"}, state="firing", severity=2,
                value=0.31, limit=0.3, peak_value=0.33, started_ns=1_700_000_000_000_000_000,
                firing_ns=1_700_000_000_000_000_000, context={"window_s": 300, "samples": [1, 2.5, None]})
    base.update(kw)
    return Alert(**base)


@dataclasses.dataclass
class _Part:
    name: str
    share: float


CASES = [
    _alert(),
    _alert(value=float("nan"), limit=float("nan")),
    _alert(value=float("inf"), peak_value=float("-inf"), context={"score": float("inf"), "list": [float("nan")]}),
    _alert(context={"np": np.float64(1.25)}),  # a numpy scalar: orjson refuses it, the standard library writes it
    _alert(context={"big": 2**70}),  # beyond 64 bits: orjson refuses it
    _alert(context={"part": _Part("p", 0.5), "nested": {"b": [1, {"c": "文字"}], "a": (1, 2)}}),
    _alert(acked_by="ops1", acked_by_name="值班员 张", ack_note='said "ok"\nnew line', muted="silence:s1"),
]


@pytest.mark.parametrize("alert", CASES, ids=range(len(CASES)))
def test_the_body_is_the_standard_librarys_document_with_non_finite_numbers_as_null(alert):
    want = json.loads(json.dumps(_clean(dataclasses.asdict(alert)), sort_keys=True))
    text = _dumps(_body(alert))
    assert json.loads(text) == want
    # Valid JSON in the strict sense (no NaN or Infinity token), keys sorted as before.
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-JSON token {c} in {text}"))
    assert list(json.loads(text)) == sorted(json.loads(text))


def test_an_infinite_value_leaves_the_body_valid_json_for_sqlite_and_reads_back_as_nan(tmp_path):
    """Regression: `json.dumps` wrote `Infinity`, which SQLite's json_valid refuses, so the row was left out of the
    history columns (site, district) and of the prune's index of closed alerts (never pruned)."""
    store = AlertStore(tmp_path / "alerts.db")
    a = _alert(value=float("inf"), context={"score": float("inf")})
    store.commit([a], [])
    valid, site, district = store._db.execute(
        "SELECT json_valid(body), site_id, district FROM alerts WHERE alert_id=?", (a.alert_id,)).fetchone()
    assert (valid, site, district) == (1, "XM-S01", "思明区")
    back = store.alert(a.alert_id)
    assert back is not None and math.isnan(back.value) and back.context == {"score": None}
    assert dataclasses.replace(back, value=a.value, context=a.context) == a


def test_every_case_round_trips_through_the_store(tmp_path):
    store = AlertStore(tmp_path / "alerts.db")
    alerts = [dataclasses.replace(a, alert_id=f"{a.alert_id}.{i}") for i, a in enumerate(CASES)]
    store.commit(alerts, [(Notice(f"{a.alert_id}:1", a.alert_id, 1, "firing", a.started_ns,
                                  {"text": "燃气压力高", "value": a.value, "alert": _body(a)}), [("ops", 0)])
                          for a in alerts])
    assert store._db.execute("SELECT count(*) FROM alerts WHERE json_valid(body)").fetchone()[0] == len(alerts)
    assert store._db.execute("SELECT count(*) FROM notices WHERE json_valid(body)").fetchone()[0] == len(alerts)
    for a in alerts:
        back = store.alert(a.alert_id)
        want = json.loads(json.dumps(_clean(dataclasses.asdict(a)), sort_keys=True))
        assert json.loads(json.dumps(_clean(dataclasses.asdict(back)), sort_keys=True)) == want
    assert len(store.pending_deliveries()) == len(alerts)
