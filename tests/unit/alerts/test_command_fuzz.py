"""Fuzzing operator commands (hypothesis): validation raises only ValueError, the engine's submit_command
never raises, and start + tick over a command table of fuzzed raw rows never raise and mark every row."""

from __future__ import annotations

import atexit
import json
import math
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alerts import commands
from alerts.commands import Author
from tests.unit.alerts.helpers import AUTHORS, at, base_cfg, det, make_engine

CFG = base_cfg()
LIN = Author("lin", "Duty officer Lin")
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# JSON-ish values, with what json.loads lets through by default (NaN, Infinity) and Python extras a
# caller might hand in (huge ints, tuples, bytes).
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10 ** 300, max_value=10 ** 400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40), st.binary(max_size=10),
)
jsonish = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.tuples(inner, inner),
    st.dictionaries(st.text(max_size=12), inner, max_size=5)), max_leaves=25)

KEYS = sorted({k for ks in commands.KEYS.values() for k in ks} | {"expire", "matcher", "note ", "alert"})
NEAR_VALUES = st.one_of(
    jsonish, st.sampled_from(["ack", "silence", "unsilence", "silense", "", " ", "2h", "999999999w", "1e300", "inf",
                              "-1h", "0s", "30d", "31d", "site_id=SM-2025-101", "category=gas", "colour=red", "lin",
                              "G-highhigh", "XMG0003", "a" * 600]),
    st.sampled_from([math.inf, -math.inf, math.nan, 1e300, 0, -1, 2592000, 2592001, 10 ** 400]),
    st.lists(st.sampled_from(["category=gas", "site_id=SM-2025-101", "rule_id=G-highhigh", "severity=red",
                              "district=Siming", "bad", "=x", "x=", "device_id=XMG0003"]), max_size=10),
    st.dictionaries(st.sampled_from(["category", "site_id", "rule_id", "severity", "district", "device_id",
                                     "alert_id", "colour"]),
                    st.one_of(st.sampled_from(["gas", "SM-2025-101", "G-highhigh", "red", "Siming", "XMG0003", "x"]),
                              jsonish), max_size=10),
)
# Commands one edit away from a valid one: a key added, dropped or given an odd value.
near_miss = st.builds(
    lambda action, extra, drop: {**{k: v for k, v in {
        "action": action, "alert_id": "G-highhigh.XMG0002.20250601T143000000Z", "matchers": {"category": "gas"},
        "comment": "works", "expires": "2h", "silence_id": "s1"}.items() if k not in drop}, **extra},
    st.sampled_from(commands.ACTIONS),
    st.dictionaries(st.sampled_from(KEYS), NEAR_VALUES, max_size=3),
    st.sets(st.sampled_from(["action", "alert_id", "matchers", "comment", "expires", "silence_id"]), max_size=2),
)


@SETTINGS
@given(st.one_of(jsonish, near_miss))
def test_validate_raises_only_value_error(cmd):
    try:
        out = commands.validate(cmd, CFG, LIN)
    except ValueError as exc:
        assert str(exc) and len(str(exc)) < 700  # a message for a person, bounded whatever came in
        return
    # what validates is bounded: finite positive expiry within the maximum, known labels, short text
    assert out["action"] in commands.ACTIONS and "by" not in out
    if out["action"] == "silence":
        assert 0 < out["expires_s"] <= CFG.alerting.silence_max_s
        assert 1 <= len(out["matchers"]) <= commands.MAX_MATCHERS
        assert len(out["comment"]) <= commands.MAX_TEXT
    json.dumps(out, allow_nan=False)  # storable as it is


@SETTINGS
@given(st.one_of(st.binary(max_size=300), st.text(max_size=300),
                 near_miss.map(lambda c: json.dumps(c, default=repr)),
                 st.integers(1, 12000).map(lambda n: b"[" * n), st.integers(1, 12000).map(lambda n: b" " * n)))
def test_parse_payload_raises_only_value_error(payload):
    try:
        commands.parse_payload(payload)
    except ValueError:
        pass


_ENGINE = {}


def _engine():
    """One engine for all examples (an engine per example would be slow): commands pile up in its store."""
    if "e" not in _ENGINE:
        d = Path(tempfile.mkdtemp(prefix="cmdfuzz"))
        atexit.register(shutil.rmtree, d, True)  # the store of the shared engine, gone with the test run
        engine, _ = make_engine(d)
        engine.process(det([(0, 0, "N-day", "red", 90)]))
        _ENGINE["e"] = engine
    return _ENGINE["e"]


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(jsonish, near_miss, near_miss.map(lambda c: json.dumps(c, default=repr).encode()), st.binary(max_size=64)),
       st.sampled_from([AUTHORS["li"], Author("XMG0003", "x"), None, Author("local:root", "root")]))
def test_submit_command_never_raises(cmd, author):
    engine = _engine()
    result = engine.submit_command("fuzz", cmd, author)
    assert result.startswith("ok") or result.startswith("error: ")
    assert not result.startswith("error: internal"), result
    engine.tick()


raw_cells = st.one_of(st.none(), st.integers(-2 ** 63, 2 ** 63 - 1), st.floats(allow_nan=False), st.text(max_size=60),
                      st.binary(max_size=20), near_miss.map(lambda c: json.dumps(c, default=repr)))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(raw_cells, raw_cells, raw_cells, raw_cells), min_size=1, max_size=8))
def test_start_and_tick_over_fuzzed_raw_rows(rows):
    """Rows written straight into the SQLite command table (source, body, author, author_name): start and
    tick never raise, and every row ends applied or failed with a result."""
    with tempfile.TemporaryDirectory() as d:
        engine, sink = make_engine(Path(d))
        engine.process(det([(0, 0, "N-day", "red", 90)]))
        engine.stop()
        db = sqlite3.connect(str(Path(d) / "alerts.sqlite"))
        db.executemany("INSERT INTO commands (received_at, source, body, author, author_name) VALUES (?,?,?,?,?)",
                       [(time.time(), s, b if b is not None else "null", a, n) for s, b, a, n in rows])
        db.commit()
        db.close()
        engine, sink = make_engine(Path(d))
        engine.start()
        engine.tick(at(400))  # escalation still runs
        got = engine.store.command_rows(100)
        assert len(got) == len(rows)
        assert all(r["status"] in ("applied", "failed") and r["result"] and r["applied_at"] for r in got), got
        assert engine.store.unapplied_commands() == []
        engine.flush(5)
        assert "escalated" in sink.transitions()
        engine.stop()
