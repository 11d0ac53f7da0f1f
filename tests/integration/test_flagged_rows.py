"""A noise monitor that flags its rows D (fault; refused by ingest.refuse_flags) through the real broker and
InfluxDB: N-data fires while it still flags D, the device is not reported offline, nothing of those rows is
stored, and the dead-letter store holds each of them (reason hj212_flag)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import pytest

from citywatch.pipeline import DetectionPipeline
from config import load_config
from ingest.deadletter import DeadLetterStore
from tests.integration.test_alerts_service import ALERTS_YAML  # MQTT sink, no grouping delay
from tests.integration.test_ingest_harness import NOISE_JSON, DevicePublisher
from tests.unit.alerts.helpers import Subscriber, write_config

pytestmark = pytest.mark.integration

# 2025-09-10 10:00 Beijing: daytime, outside the prohibited windows and the exam period.
T0_MS = int(datetime(2025, 9, 10, 2, 0, tzinfo=UTC).timestamp() * 1000)
MIN_MS = 60_000
GOOD = {"leq": 61.8, "lmax": 78.2, "lmin": 52.0, "l10": 65.1, "l50": 60.2, "l90": 55.3}
N_ROWS, D_ROWS = 3, 22  # 22 minutes of D: longer than bad_flag_for_s (900 s) and the deadman's silence limit


def message(dev, minute: int, flag: str) -> bytes:
    ts = T0_MS + minute * MIN_MS
    return json.dumps({"schema": "xm.noise.v1", "device_id": dev.id, "site_id": dev.site, "seq": minute,
                       "interval_s": 60, "samples": [{"ts": ts, "values": {**GOOD, "flag": flag}}]}).encode()


def wait(predicate, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return predicate()


@pytest.mark.parametrize("decode_processes", [1, 0], ids=["worker_process", "thread"])
def test_device_flagging_d_raises_n_data_while_it_still_flags_d(tmp_path, mosquitto, influx, service_env,
                                                                decode_processes):
    from citywatch.service import Service

    cfg_dir = write_config(tmp_path / "config", ALERTS_YAML.replace("STORE", str(tmp_path / "alerts.sqlite")))
    # Event time: readings of a past day are accepted, and alert timers and the deadman follow them. In the
    # YAML, not CITYWATCH_CLOCK: the decode worker loads the config with the process environment.
    ingest_yaml = cfg_dir / "ingest.yaml"
    ingest_yaml.write_text(ingest_yaml.read_text().replace("  clock: wall ", "  clock: event"))
    env = service_env
    cfg = load_config(cfg_dir, env=env)
    assert cfg.ingest.clock == "event" and "D" in cfg.ingest.refuse_flags
    bad_s = cfg.noise.data_quality.bad_flag_for_s
    assert D_ROWS * 60 > bad_s
    dev = NOISE_JSON[0]
    topic = f"city/xm/noise/{dev.site}/{dev.id}/data"

    sub = Subscriber(mosquitto, ["city/xm/alerts/#"])
    svc = Service(cfg, env=env, decode_processes=decode_processes)
    pipe = DetectionPipeline(cfg, env, cfg_dir, listen=False)
    svc.on_decoded(pipe.on_batch)
    pipe.start()
    svc.start()
    pub = None
    try:
        assert svc.collector.wait_connected(20)
        pub = DevicePublisher(mosquitto, dev.id)
        # Connected is not yet subscribed (the SUBACK may still be on its way): a status message that comes
        # back through the pipeline says the collector receives this device's topics.
        status = f"city/xm/noise/{dev.site}/{dev.id}/status"
        deadline = time.monotonic() + 20
        while dev.id not in svc.pipeline.device_status and time.monotonic() < deadline:
            pub.publish(status, b"online")
            time.sleep(0.2)
        assert dev.id in svc.pipeline.device_status
        for minute in range(N_ROWS):
            pub.publish(topic, message(dev, minute, "N"))
        for minute in range(N_ROWS, N_ROWS + D_ROWS):
            pub.publish(topic, message(dev, minute, "D"))
        pub.flush()

        def n_data():
            return [n for n in sub.notices() if n["rule_id"] == "N-data" and n["device"]["id"] == dev.id]

        # No N reading follows the D run: only the D rows themselves can raise it.
        assert sub.wait_for(lambda m: n_data(), 30), (sub.notices(), pipe.counters, svc.metrics.snapshot())
        [fired] = n_data()
        assert (fired["transition"], fired["severity"]) == ("firing", "yellow")
        # At the D reading where the run (counting that reading's own interval) reached bad_flag_for_s.
        first_d = T0_MS + N_ROWS * MIN_MS
        assert fired["start_ts"] == _iso(first_d + (bad_s - dev.report_interval_s) * 1000), fired
        assert fired["start_ts"] < _iso(T0_MS + (N_ROWS + D_ROWS - 1) * MIN_MS)
        # The device kept reporting (D rows are reports): never offline; no value rule judged the D rows.
        ours = [n for n in sub.notices() if n["device"]["id"] == dev.id]
        assert {n["rule_id"] for n in ours} == {"N-data"}, ours

        # The N rows are stored; none of the D rows is.
        assert wait(lambda: influx.count("noise", "leq", f"\"device_id\" = '{dev.id}'") == N_ROWS, 30)
    finally:
        if pub is not None:
            pub.close()
        assert svc.stop()
        pipe.stop()
        sub.stop()
    assert influx.count("noise", "leq", f"\"device_id\" = '{dev.id}'") == N_ROWS
    assert influx.count("noise", "leq", "\"flag\" = 'D'") == 0
    stored = influx.query(f"SELECT \"leq\" FROM \"noise\" WHERE \"device_id\" = '{dev.id}'")
    assert [v[0] for v in stored[0]["series"][0]["values"]] == [(T0_MS + m * MIN_MS) * 1_000_000 for m in range(N_ROWS)]
    # Each D row is in the dead-letter store, once, as before.
    dead = DeadLetterStore.from_config(cfg).read_all()
    assert {d["reason"] for d in dead} == {"hj212_flag"}
    assert sorted(d["row"]["ts"] for d in dead) == [T0_MS + m * MIN_MS for m in range(N_ROWS, N_ROWS + D_ROWS)]
    assert all(d["device_id"] == dev.id and d["row"]["values"]["flag"] == "D" for d in dead)


def _iso(ms: int) -> str:
    """UTC ms as the notices write times: 2025-09-10T02:17:00.000Z."""
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
