"""Nothing is lost: collector crashes (SIGKILL), an InfluxDB outage, broker restarts and a collector that is
away while devices keep publishing. Every reading lands exactly once, counted by InfluxQL."""

from __future__ import annotations

import pytest

from ingest.spool import SpoolWriter
from tests.integration.test_ingest_harness import (  # noqa: F401 - fixture
    GAS,
    NOISE_JSON,
    Stream,
    config_copy,
    counts,
    service_factory,
    wait_counts,
)

pytestmark = pytest.mark.integration

DEVICES = [NOISE_JSON[0], NOISE_JSON[1], GAS[0], GAS[1]]


@pytest.mark.parametrize("ack_after", ["influxdb", "spool"])
def test_sigkill_mid_stream_loses_and_duplicates_nothing(ack_after, tmp_path, mosquitto, influx, service_factory):
    # With ack_after: spool, acks flow back while the drain thread writes behind them: the kills land
    # between an ack and the InfluxDB write too.
    cfg_dir = config_copy(tmp_path, ack_after=ack_after)
    svc = service_factory(cfg_dir)
    stream = Stream(mosquitto, DEVICES, messages=8000, samples_per_message=1, rate=2000).start()
    for mark in (1500, 3500, 5500):
        stream.wait_sent(mark)
        svc.kill()
        svc = service_factory(cfg_dir)
    stream.join()
    expected = stream.expected()
    assert wait_counts(influx, expected, 90) == expected
    assert svc.terminate() == 0


def test_influx_outage_is_spooled_then_drained(tmp_path, mosquitto, influx, service_factory):
    cfg_dir = config_copy(tmp_path)
    svc = service_factory(cfg_dir)
    stream = Stream(mosquitto, DEVICES, messages=3000, samples_per_message=10, rate=600).start()
    stream.wait_sent(600)
    influx.stop()
    stream.wait_sent(1500)
    # The spool holds what InfluxDB could not take; a crash now must not lose it either.
    spool_dir = tmp_path / "var" / "spool"
    assert SpoolWriter.inspect(spool_dir).records > 0
    svc.kill()
    svc = service_factory(cfg_dir)
    stream.wait_sent(2200)
    influx.start()
    stream.join()
    expected = stream.expected()
    assert wait_counts(influx, expected, 120) == expected
    assert svc.terminate() == 0
    assert SpoolWriter.inspect(spool_dir).records == 0


def test_broker_restart_keeps_session_and_queued_messages(tmp_path, mosquitto, influx, service_factory):
    cfg_dir = config_copy(tmp_path)
    svc = service_factory(cfg_dir)
    # A restart in the middle of a live stream.
    stream = Stream(mosquitto, DEVICES, messages=4000, samples_per_message=1, rate=1500).start()
    stream.wait_sent(1500)
    mosquitto.restart()
    stream.join()
    expected = stream.expected()
    assert wait_counts(influx, expected, 90) == expected
    # Messages queued for the collector's session while it is down survive a broker restart.
    svc.kill()
    queued = Stream(mosquitto, DEVICES, messages=3000, samples_per_message=1, t0_ms=stream.t0_ms - 3_600_000).start()
    queued.join()
    mosquitto.restart()
    svc = service_factory(cfg_dir)
    more = queued.expected()
    expected = (expected[0] + more[0], expected[1] + more[1])
    assert wait_counts(influx, expected, 90) == expected
    assert svc.terminate() == 0


def test_collector_away_while_devices_publish_50000_readings(tmp_path, mosquitto, influx, service_factory):
    cfg_dir = config_copy(tmp_path)
    svc = service_factory(cfg_dir)  # creates the persistent session and its subscriptions
    assert svc.terminate() == 0
    stream = Stream(mosquitto, DEVICES, messages=50_000, samples_per_message=1).start()
    stream.join(300)
    assert counts(influx) == (0, 0)
    svc = service_factory(cfg_dir)
    expected = stream.expected()
    assert sum(expected) == 50_000
    assert wait_counts(influx, expected, 180) == expected
    assert svc.terminate() == 0


def test_full_spool_stops_acking_and_the_broker_keeps_the_rest(tmp_path, mosquitto, influx, service_factory):
    # A spool of about 20 kB: a few batches. With InfluxDB down it fills, and the collector stops acking.
    cfg_dir = config_copy(tmp_path, spool_max_mb=0.02, batch_max_rows=100)
    svc = service_factory(cfg_dir)
    influx.stop()
    stream = Stream(mosquitto, DEVICES, messages=4000, samples_per_message=1, rate=4000).start()
    stream.join()
    assert svc.wait_log("spool full", 30)
    spooled = SpoolWriter.inspect(tmp_path / "var" / "spool")
    # The bound holds, except that an empty spool always takes one record (else a batch larger than the
    # bound could never be made durable): 100 rows of line protocol are about 21 kB, over 0.02 MiB.
    assert spooled.bytes <= 0.02 * 2**20 or spooled.records == 1, spooled
    influx.start()
    expected = stream.expected()
    assert wait_counts(influx, expected, 120) == expected
    assert svc.terminate() == 0


def test_decode_worker_death_stops_the_service_and_nothing_is_lost(tmp_path, mosquitto, influx, service_factory):
    import os
    import signal
    from pathlib import Path

    cfg_dir = config_copy(tmp_path)
    svc = service_factory(cfg_dir)
    stream = Stream(mosquitto, DEVICES, messages=3000, rate=1500).start()
    stream.wait_sent(1000)
    children = Path(f"/proc/{svc.proc.pid}/task/{svc.proc.pid}/children").read_text().split()
    # multiprocessing's spawn also starts a resource tracker; the worker runs spawn_main.
    workers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) == 1
    os.kill(int(workers[0]), signal.SIGKILL)
    assert svc.proc.wait(30) == 1
    assert "decode worker" in svc.log_text()
    svc = service_factory(cfg_dir)
    stream.join()
    assert wait_counts(influx, stream.expected(), 90) == stream.expected()
    assert svc.terminate() == 0
