"""Hostile payloads through a real broker, InfluxDB and `citywatch run` (issue 10): dead letters stay bounded
(one record per message, rotation within a write, a per-device budget), a valid row survives a hostile
sibling, a huge status is refused unparsed, retained messages are processed once and clearing one is no bad
payload."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from ingest.deadletter import DeadLetterStore
from tests.integration.test_ingest_harness import (  # noqa: F401 - fixture
    GAS,
    NOISE_JSON,
    DevicePublisher,
    data_topic,
    mosquitto_pub,
    noise_payload,
    service_factory,
)

pytestmark = pytest.mark.integration

MIB = 2**20


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def bad_p_payload(rows: int) -> bytes:
    """A gas payload of `rows` samples whose p is the string "x" (40 bytes a sample)."""
    t = now_ms() - 3_600_000
    return json.dumps([{"ts": t + i, "values": {"p": "x"}} for i in range(rows)], separators=(",", ":")).encode()


def records(tmp_path: Path) -> list[dict]:
    """Every dead-letter record on disk, oldest file first."""
    out = []
    for path in DeadLetterStore(tmp_path / "var" / "deadletter").files():
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out


def wait_for(predicate, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.2)
    return predicate()


def lands(influx, device, timeout_s: float = 60.0) -> bool:
    """True once `device` has a point in InfluxDB (bounded wait)."""
    measurement, field = ("noise", "leq") if device.kind == "noise" else ("gas_pressure", "p")
    return bool(wait_for(lambda: influx.count(measurement, field, f"\"device_id\" = '{device.id}'") > 0, timeout_s))


def counter(influx, name: str) -> int:
    """The collector's latest self-metric `name` (citywatch_internal), 0 before the first report."""
    res = influx.query(f'SELECT last("{name}") FROM "citywatch_internal" WHERE "kind" = \'collector\'')
    series = (res[0].get("series") if res else None) or []
    return int(series[0]["values"][0][1] or 0) if series else 0


@pytest.mark.shared_influx
def test_4000_bad_rows_make_one_bounded_record_and_ingest_goes_on(tmp_path, mosquitto, influx, service_factory):
    file_max = 0.125 * MIB
    svc = service_factory(deadletter_file_max_mb=0.125, metrics_interval_s=1)
    bad, good = GAS[0], NOISE_JSON[0]
    payload = bad_p_payload(4000)
    assert 150_000 < len(payload) < 170_000
    pub = DevicePublisher(mosquitto, bad.id)
    pub.publish(data_topic(bad), payload)
    pub.publish(data_topic(bad), payload)  # two records of ~88 KB: more than one 128 KiB file holds
    pub.flush()
    mosquitto_pub(mosquitto, good.id, data_topic(good), noise_payload(good, [now_ms() - 5_000]))
    assert lands(influx, good), svc.log_tail()  # ingest went on for another device

    recs = records(tmp_path)
    assert len(recs) == 2, [r["reason"] for r in recs[:5]]  # one record per message, not one per row
    for rec in recs:
        assert rec["reason"] == "not_a_number" and rec["device_id"] == bad.id
        assert rec["rows_refused"] == 4000 and rec["rows_by_reason"] == {"not_a_number": 4000}
        assert len(rec["rows"]) == 100 and rec["rows"][0] == {
            "index": 0, "reason": "not_a_number", "field": "p", "detail": "p must be a number, got 'x'"}
        assert rec["payload_bytes"] == len(payload) and rec["truncated"]
    store = tmp_path / "var" / "deadletter"
    sizes = {p.name: p.stat().st_size for p in store.glob("deadletter*.jsonl")}
    # Bounded: the store holds less than the payloads themselves (it once held 316 MB for one of them) ...
    assert sum(sizes.values()) <= 2 * len(payload), sizes
    # ... and no file outgrew its limit, though both records may have come in one write.
    assert len(sizes) == 2 and max(sizes.values()) <= file_max, sizes
    assert wait_for(lambda: counter(influx, "rows_refused") == 8000, 30)
    assert svc.proc.poll() is None
    pub.close()
    assert svc.terminate() == 0


@pytest.mark.shared_influx
def test_a_flooding_device_does_not_evict_another_devices_dead_letter(tmp_path, mosquitto, influx, service_factory):
    budget = 0.25 * MIB
    svc = service_factory(deadletter_file_max_mb=0.25, deadletter_files_kept=2, deadletter_device_budget_mb=0.25,
                          metrics_interval_s=1)
    victim, flooder, marker = NOISE_JSON[1], GAS[1], NOISE_JSON[2]
    mosquitto_pub(mosquitto, victim.id, data_topic(victim), b'{"samples": [')
    assert wait_for(lambda: records(tmp_path), 30)
    pub = DevicePublisher(mosquitto, flooder.id)
    payload = bad_p_payload(1000)
    assert 38_000 < len(payload) < 42_000
    for _ in range(12):
        pub.publish(data_topic(flooder), payload)
    pub.flush()
    mosquitto_pub(mosquitto, marker.id, data_topic(marker), noise_payload(marker, [now_ms() - 5_000]))
    assert lands(influx, marker), svc.log_tail()  # dead letters before it are stored by then

    recs = records(tmp_path)
    assert recs[0]["device_id"] == victim.id and recs[0]["reason"] == "invalid_json"  # not evicted
    ours = [r for r in recs if r["device_id"] == flooder.id]
    stored = [r for r in ours if r["reason"] == "not_a_number"]
    [capped] = [r for r in ours if r["reason"] == "deadletter_capped"]  # said once in a record ...
    assert 1 <= len(stored) < 12 and sum(len(json.dumps(r)) for r in stored) <= budget
    assert "budget" in capped["detail"] and capped["payload_bytes"] == 0
    assert svc.log_text().count("went over its dead-letter budget") == 1  # ... and once in the log
    # The excess is counted.
    assert wait_for(lambda: counter(influx, "deadletter_dropped") == 12 - len(stored), 30), \
        counter(influx, "deadletter_dropped")
    pub.close()
    assert svc.terminate() == 0


@pytest.mark.shared_influx
def test_a_valid_row_lands_beside_a_600_deep_row(tmp_path, mosquitto, influx, service_factory):
    svc = service_factory()
    dev = GAS[2]
    t = now_ms() - 60_000
    deep = "[" * 600 + "1" + "]" * 600
    payload = (f'[{{"ts":{t},"values":{{"p":{dev.set_pressure_kpa}}}}},'
               f'{{"ts":{t + 1000},"values":{{"p":{deep}}}}}]').encode()
    mosquitto_pub(mosquitto, dev.id, data_topic(dev), payload)
    assert lands(influx, dev), svc.log_tail()
    [rec] = wait_for(lambda: records(tmp_path), 30)
    assert rec["reason"] == "too_deep" and rec["device_id"] == dev.id, rec["reason"]
    assert rec["rows"] == [{"index": 1, "reason": "too_deep", "field": "p",
                            "detail": "p nests arrays or objects more than 16 levels deep"}]
    assert influx.count("gas_pressure", "p", f"\"device_id\" = '{dev.id}'") == 1
    assert svc.terminate() == 0


@pytest.mark.shared_influx
def test_a_10_mb_status_is_refused_as_oversize_unparsed(tmp_path, mosquitto, influx, service_factory):
    svc = service_factory()
    dev = NOISE_JSON[3]
    topic = f"city/xm/noise/{dev.site}/{dev.id}/status"
    huge = b'{"status": "online", "pad": "' + b"x" * (10 * MIB) + b'"}'
    pub = DevicePublisher(mosquitto, dev.id)
    pub.publish(topic, huge)
    pub.flush()
    [rec] = wait_for(lambda: records(tmp_path), 60)
    assert rec["reason"] == "oversize" and "status_max_payload_bytes=4096" in rec["detail"], rec["detail"]
    assert rec["payload_bytes"] == len(huge) and rec["truncated"]
    store = tmp_path / "var" / "deadletter" / "deadletter.jsonl"
    assert store.stat().st_size < 100_000  # the record does not hold the 10 MB
    assert influx.count("device_status", "online", f"\"device_id\" = '{dev.id}'") == 0  # not taken as online
    pub.close()
    assert svc.terminate() == 0


def test_a_retained_message_is_processed_once_across_a_reconnect(tmp_path, mosquitto, influx, service_factory):
    svc = service_factory(metrics_interval_s=1)
    dev, marker = NOISE_JSON[4], NOISE_JSON[5]
    pub = DevicePublisher(mosquitto, dev.id)
    pub.publish(data_topic(dev), b'{"retained but broken', retain=True)
    pub.publish(data_topic(dev).replace("/data", "/status"), b"online", retain=True)
    pub.flush()
    assert wait_for(lambda: records(tmp_path), 30)
    pub.publish(data_topic(dev), noise_payload(dev, [now_ms() - 5_000]), retain=True)
    pub.flush()
    assert lands(influx, dev)
    time.sleep(0.5)  # let the acks of those messages leave (they follow the durable write)

    mosquitto.restart()  # the collector reconnects and resubscribes: the broker sends the retained ones again
    mosquitto_pub(mosquitto, marker.id, data_topic(marker), noise_payload(marker, [now_ms() - 5_000]))
    assert lands(influx, marker), svc.log_tail()
    # The data topic's retained reading and the status topic's retained status: both delivered again, counted.
    assert wait_for(lambda: counter(influx, "retained_duplicates") >= 2, 30), svc.log_tail()
    time.sleep(1.0)
    recs = records(tmp_path)
    assert [r["reason"] for r in recs] == ["invalid_json"]  # the broken one is still dead-lettered once
    assert influx.count("noise", "leq", f"\"device_id\" = '{dev.id}'") == 1
    assert counter(influx, "retained_duplicates") == 2
    pub.close()
    assert svc.terminate() == 0


@pytest.mark.shared_influx
def test_an_empty_retained_publish_is_counted_not_dead_lettered(tmp_path, mosquitto, influx, service_factory):
    svc = service_factory(metrics_interval_s=1)
    dev = NOISE_JSON[6]
    status = data_topic(dev).replace("/data", "/status")
    pub = DevicePublisher(mosquitto, dev.id)
    pub.publish(status, b"online", retain=True)
    pub.publish(data_topic(dev), noise_payload(dev, [now_ms() - 5_000]), retain=True)
    pub.flush()
    assert lands(influx, dev)
    pub.publish(status, b"", retain=True)  # clearing the retained messages
    pub.publish(data_topic(dev), b"", retain=True)
    pub.flush()
    assert wait_for(lambda: counter(influx, "retained_cleared") == 2, 30), svc.log_tail()
    pub.publish(data_topic(dev), b"")  # an empty publish that is not a clear is still a bad payload
    pub.flush()
    [rec] = wait_for(lambda: records(tmp_path), 30)
    assert rec["reason"] == "empty_payload"
    pub.close()
    assert svc.terminate() == 0
