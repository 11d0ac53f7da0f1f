"""One simulated feed replayed into a fresh event-clock service at several speeds and in two cuts raises the
same alerts (rule, device, severity, start minute): the deadman judges each device by its own reports and
the feed's progress, never by how far faster devices' messages have run ahead (issue 12)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.alert_sources import from_sqlite
from simulators.scoring import TruthFault, score
from tests.integration.test_ingest_harness import ServiceProcess, config_copy, counts

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]

# Three hours of the whole example inventory (52 devices): piling, three comms gaps with a back-fill (a JSON
# noise monitor, a 15-minute gas sensor, an HJ 212 monitor whose late frames keep their own times) and a
# device that duplicates and reorders its messages. Every other device reports normally and must stay quiet.
SCENARIO = """\
scenario:
  name: replay_speed
  seed: 7
  start: "2025-06-02T08:00"
  duration: 3h
  history: 0s
  devices: all
  work:
    sites: [HL-2025-102]
  faults:
    - {id: R1, type: S3, device: XM0002NOISE, start: "08:10", duration: 90m}
    - {id: R2, type: C1, device: XM0010NOISE, start: "08:40", duration: 30m}
    - {id: R3, type: C1, device: XMG0024, start: "09:00", duration: 75m}
    - {id: R4, type: C1, device: XM0008NOISE, start: "10:00", duration: 30m}
    - {id: R5, type: C2, device: XM0003NOISE, start: "08:00", duration: 3h}
"""


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citywatch", *args], cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=timeout)


def _settle(influx, store: Path, timeout_s: float = 60.0, quiet_s: float = 2.0) -> None:
    """Wait (bounded) until the points in InfluxDB and the alerts in the store stop changing for quiet_s."""
    def state():
        try:
            return counts(influx), len(from_sqlite(str(store))) if store.exists() else 0
        except Exception:  # noqa: BLE001 - the store may be mid-write; try again
            return None
    deadline = time.monotonic() + timeout_s
    last, since = state(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = state()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return


def _replay_run(tag: str, parts: list[tuple[Path, list[str]]], mosquitto, influx, env, tmp_path: Path):
    proj = tmp_path / tag
    cfg_dir = config_copy(proj, clock="event")
    for name, old, new in (("connections.yaml", "client_id: citywatch-collector", f"client_id: cw-collector-{tag}"),
                           ("alerts.yaml", "mqtt_client_id: citywatch-alerts", f"mqtt_client_id: cw-alerts-{tag}")):
        p = cfg_dir / name
        text = p.read_text()
        assert old in text
        p.write_text(text.replace(old, new))
    svc = ServiceProcess(cfg_dir, env, proj / "pipeline.log").start(timeout_s=60)
    summaries = []
    try:
        for feed, pace in parts:
            r = _cli("replay", str(feed), *pace, "--no-progress", "--config", str(cfg_dir), "--host", mosquitto.host,
                     "--port", str(mosquitto.port), "--credentials", str(mosquitto.credentials_path))
            assert r.returncode == 0, r.stderr
            summaries.append(r.stderr)
        _settle(influx, proj / "var" / "alerts.sqlite")
    finally:
        svc.terminate()
        svc.close()
    return from_sqlite(str(proj / "var" / "alerts.sqlite")), summaries


def _key(alerts) -> list[tuple]:
    return sorted((a.rule_id, a.device_id, a.severity, a.start_ms // 60_000) for a in alerts)


def test_the_same_alerts_at_any_replay_speed_and_cut(mosquitto, influx, service_env, tmp_path):
    scen = tmp_path / "scenario.yaml"
    scen.write_text(SCENARIO)
    feed, truth = tmp_path / "feed.jsonl", tmp_path / "truth.jsonl"
    r = _cli("simulate", str(scen), "--dry-run", "--out", str(feed), "--truth", str(truth))
    assert r.returncode == 0, r.stderr
    lines = feed.read_text().splitlines()
    # A cut in the middle of the R3 gap: the second file starts while XMG0024 is silent.
    cut = len(lines) * 11 // 20
    first, second = tmp_path / "part1.jsonl", tmp_path / "part2.jsonl"
    first.write_text("\n".join(lines[:cut]) + "\n")
    second.write_text("\n".join(lines[cut:]) + "\n")

    runs = {
        "paced": [(feed, ["--speed", "3600"])],   # 3 h in 3 s
        "fast": [(feed, ["--fast"])],
        "cuts": [(first, ["--fast"]), (second, ["--speed", "20000"])],
    }
    got = {}
    for tag, parts in runs.items():
        alerts, summaries = _replay_run(tag, parts, mosquitto, influx, service_env, tmp_path)
        got[tag] = (alerts, summaries)

    keys = {tag: _key(alerts) for tag, (alerts, _) in got.items()}
    for tag in ("fast", "cuts"):
        assert keys[tag] == keys["paced"], (tag, keys[tag], keys["paced"])

    # The gaps raised Offline on their devices and nowhere else; piling raised its noise alert.
    offline = {(d, minute) for rule, d, _, minute in keys["paced"] if rule == "Offline"}
    assert {d for d, _ in offline} == {"XM0010NOISE", "XMG0024", "XM0008NOISE"}, keys["paced"]
    records = [json.loads(ln) for ln in truth.read_text().splitlines()]
    card = score([TruthFault.from_record(x) for x in records], got["fast"][0])
    assert {"R2", "R3", "R4"} <= {f.id for f in card.caught}, card.summary()
    assert not [a for a, _ in card.false_alerts if a.rule_id == "Offline"], card.summary()

    # The summary counts readings (samples of envelopes, HJ 212 frames), not messages.
    readings = sum(int(json.loads(ln).get("n", 0)) for ln in lines)
    assert f"replayed {readings:,} readings in {len(lines):,} messages" in got["fast"][1][0]
