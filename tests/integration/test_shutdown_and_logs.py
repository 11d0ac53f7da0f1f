"""`citywatch run` against the real broker and InfluxDB: Ctrl-C stops it cleanly (exit 0, nothing held is
lost), a dead decode worker leaves no traceback, and the log says once per change when the broker or
InfluxDB goes away and comes back, without APScheduler's per-run warnings during a long spool drain."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from citywatch.service import wait_until
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
# The shipped config's MQTT clients: ingest, the alert command listener and the `ops_mqtt` alert sink.
MQTT_CLIENTS = ("(collector)", "(alert command listener)", "(alert sink citywatch-alerts-ops_mqtt)")
APSCHEDULER_NOISE = ("was missed by", "maximum number of running instances")


def decode_worker_pid(svc) -> int:
    pid = svc.proc.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    # multiprocessing's spawn also starts a resource tracker; the worker runs spawn_main.
    workers = [c for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) == 1, workers
    return int(workers[0])


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return True
    return state == "Z"


def wait_for(predicate, timeout_s: float) -> bool:
    return wait_until(predicate, timeout_s, poll_s=0.1)


def lines_with(text: str, *parts: str) -> list[str]:
    return [line for line in text.splitlines() if all(p in line for p in parts)]


@pytest.mark.shared_influx
def test_ctrl_c_to_the_process_group_stops_cleanly_and_loses_nothing(tmp_path, mosquitto, influx, service_factory):
    cfg_dir = config_copy(tmp_path)
    svc = service_factory(cfg_dir)
    worker = decode_worker_pid(svc)
    stream = Stream(mosquitto, DEVICES, messages=4000, samples_per_message=1, rate=1500).start()
    stream.wait_sent(1500)
    # A terminal's Ctrl-C: SIGINT to the whole foreground process group, the decode worker included.
    os.killpg(svc.proc.pid, signal.SIGINT)
    assert svc.proc.wait(60) == 0, svc.log_tail()
    assert wait_for(lambda: gone(worker), 10)
    text = svc.log_text()
    for bad in ("Traceback", "KeyboardInterrupt", "decode worker is gone", "EOFError", "left unacked"):
        assert bad not in text, svc.log_tail()
    # Every message it acked (one reading each) is in InfluxDB; the rest stays with the broker.
    stopped = re.search(r"stopped; this run: (\d+) messages received, (\d+) acked", text)
    assert stopped, svc.log_tail()
    received, acked = int(stopped[1]), int(stopped[2])
    assert acked == received > 0
    assert sum(counts(influx)) == acked
    # What it had not taken yet is delivered to the next run, each reading once.
    stream.join()
    svc = service_factory(cfg_dir)
    assert wait_counts(influx, stream.expected(), 90) == stream.expected()
    assert svc.terminate() == 0


@pytest.mark.shared_influx
def test_decode_worker_left_alone_exits_without_a_traceback(tmp_path, mosquitto, influx, service_factory):
    cfg_dir = config_copy(tmp_path)
    svc = service_factory(cfg_dir)
    worker = decode_worker_pid(svc)
    stream = Stream(mosquitto, DEVICES, messages=2000, rate=1000).start()
    stream.wait_sent(500)
    # The service is killed (OOM killer, SIGKILL); its worker is left with a closed pipe.
    os.kill(svc.proc.pid, signal.SIGKILL)
    svc.proc.wait(10)
    assert wait_for(lambda: gone(worker), 20)
    text = svc.log_text()
    assert "Traceback" not in text and "EOFError" not in text, svc.log_tail()
    stream.join()
    svc = service_factory(cfg_dir)
    assert wait_counts(influx, stream.expected(), 90) == stream.expected()
    assert svc.terminate() == 0


@pytest.mark.shared_influx
def test_decode_worker_killed_alone_stops_the_service_without_a_traceback(tmp_path, mosquitto, influx,
                                                                          service_factory):
    svc = service_factory(config_copy(tmp_path))
    stream = Stream(mosquitto, DEVICES, messages=2000, rate=1000).start()
    stream.wait_sent(500)
    os.kill(decode_worker_pid(svc), signal.SIGKILL)
    assert svc.proc.wait(30) == 1
    text = svc.log_text()
    assert "decode worker" in text
    assert "Traceback" not in text and "EOFError" not in text, svc.log_tail()
    stream.join()


def test_broker_outage_is_logged_once_down_and_once_back_per_connection(tmp_path, mosquitto, influx,
                                                                       service_factory):
    svc = service_factory(config_copy(tmp_path))
    mosquitto.stop()
    for who in MQTT_CLIENTS:
        assert wait_for(lambda who=who: lines_with(svc.log_text(), who, "unreachable"), 30), (who, svc.log_tail())
    # Several reconnect attempts fail meanwhile (1 s, then 2 s apart): none of them adds a line.
    time.sleep(4)
    mosquitto.start()
    for who in MQTT_CLIENTS:
        assert wait_for(lambda who=who: lines_with(svc.log_text(), who, "back after"), 60), (who, svc.log_tail())
    text = svc.log_text()
    for who in MQTT_CLIENTS:
        down = lines_with(text, f"MQTT broker {mosquitto.host}:{mosquitto.port} {who} unreachable (")
        back = lines_with(text, f"MQTT broker {mosquitto.host}:{mosquitto.port} {who} back after")
        assert len(down) == 1 and len(back) == 1, (who, svc.log_tail(60))
        assert "WARNING" in down[0] and "INFO" in back[0]
    # The collector says whether the broker kept its session (it did: persistence on, clean stop).
    assert "session present: True" in lines_with(text, "(collector) back after")[0]
    assert "Traceback" not in text
    # Still working: a reading after the outage lands.
    stream = Stream(mosquitto, DEVICES, messages=40).start()
    stream.join()
    assert wait_counts(influx, stream.expected(), 60) == stream.expected()
    assert svc.terminate() == 0


def test_influx_outage_is_logged_once_and_a_long_drain_logs_no_scheduler_warnings(tmp_path, mosquitto, influx,
                                                                                  service_factory):
    # Small batches: the outage leaves hundreds of spool records, so the drain runs for longer than its
    # 0.25 s period (APScheduler used to warn for every period it overran).
    cfg_dir = config_copy(tmp_path, batch_max_rows=10, batch_max_age_ms=20)
    svc = service_factory(cfg_dir)
    spool_dir = tmp_path / "var" / "spool"
    influx.stop()
    stream = Stream(mosquitto, DEVICES, messages=6000, samples_per_message=1, rate=3000).start()
    stream.join()
    assert svc.wait_log("InfluxDB unreachable", 30), svc.log_tail()
    # Readings are still accepted: acked into the spool (wait until it stops growing).
    last = -1
    while wait_for(lambda: SpoolWriter.inspect(spool_dir).records > 0, 30):
        now = SpoolWriter.inspect(spool_dir).records
        if now == last:
            break
        last = now
        time.sleep(1.0)
    assert last > 20
    influx.start()
    assert svc.wait_log("InfluxDB back after", 60), svc.log_tail()
    assert wait_counts(influx, stream.expected(), 120) == stream.expected()
    assert wait_for(lambda: SpoolWriter.inspect(spool_dir).records == 0, 60)
    text = svc.log_text()
    down = lines_with(text, "InfluxDB unreachable (")
    back = lines_with(text, "InfluxDB back after")
    assert len(down) == 1 and len(back) == 1, svc.log_tail(60)
    assert "readings go to the spool until it is back" in down[0]
    assert re.search(r"the spool holds \d+ batch\(es\) to drain", back[0])
    for noise in APSCHEDULER_NOISE:
        assert noise not in text, svc.log_tail(60)
    assert svc.terminate() == 0
