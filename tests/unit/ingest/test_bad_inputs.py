"""The bad-input catalogue as a table test: each payload yields exactly its reason codes, never an exception."""

from __future__ import annotations

import time

import pytest

from config import load_config
from ingest.deadletter import records_for
from ingest.decoder import REASONS, Decoder
from tests.unit.ingest.bad_inputs import catalogue

CFG = load_config("config")
NOW_MS = int(time.time() * 1000)
CASES = catalogue(NOW_MS, CFG.ingest.max_payload_bytes)


def test_the_catalogue_is_large_and_covers_distinct_reasons():
    assert len(CASES) >= 25
    assert len({c.name for c in CASES}) == len(CASES)
    reasons = {r for c in CASES for r in c.reasons}
    assert len(reasons) >= 25
    assert reasons <= set(REASONS)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_yields_its_reason(case):
    decoded = Decoder(CFG).decode(case.topic, case.payload, NOW_MS * 1_000_000)
    assert sorted(r.reason for r in decoded.rejects) == case.reasons, [(r.reason, r.detail) for r in decoded.rejects]
    assert len(decoded.batch) == case.landed
    for r in decoded.rejects:
        assert r.detail, r
    records = records_for(decoded, case.topic, case.payload, NOW_MS * 1_000_000, CFG.ingest.deadletter_max_payload_bytes)
    # One record per refused message: the payload once, every reject accounted (listed rows or the reason).
    assert len(records) == (1 if decoded.rejects else 0)
    assert [reason for rec in records for reason in rec.reasons()] == [r.reason for r in decoded.rejects]
    for rec in records:
        assert rec.topic == case.topic
        assert rec.payload_bytes == len(case.payload)
        rec.to_json()  # strict JSON even for NaN rows
