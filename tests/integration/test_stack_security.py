"""The locked-down local stack (issue 10): credential files 0600 from their first byte, Mosquitto not running
as root, and `citywatch replay` publishing only the data plane of a capture (the broker refusing the rest)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from citywatch import localstack
from citywatch.localstack import Credentials, write_private_file

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_credential_files_are_0600_from_their_first_byte(tmp_path, monkeypatch):
    """The secret is written into a file created 0600 and renamed into place: at the rename the file already
    holds everything and was never readable by others; a pre-existing world-readable file is replaced."""
    seen = []
    real_replace = os.replace

    def spying_replace(src, dst):
        seen.append((Path(dst).name, _mode(src), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(localstack.os, "replace", spying_replace)
    old_umask = os.umask(0)   # a permissive umask must not matter: the mode is given at creation
    try:
        creds_path = tmp_path / "credentials.json"
        creds_path.write_text("stale, world-readable")
        creds_path.chmod(0o644)
        old_inode = os.stat(creds_path).st_ino
        creds = Credentials.generate(["XMG0001"], ["operator", "lin"])
        creds.save(creds_path)
        env = tmp_path / "env"
        write_private_file(env, "export CITYWATCH_MQTT_PASSWORD=secret\n")
    finally:
        os.umask(old_umask)
    assert [(name, mode) for name, mode, _ in seen] == [("credentials.json", 0o600), ("env", 0o600)]
    assert json.loads(seen[0][2])["operators"].keys() == {"operator", "lin"}
    assert _mode(creds_path) == 0o600 and os.stat(creds_path).st_ino != old_inode
    assert _mode(env) == 0o600
    assert Credentials.load(creds_path) == creds
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file is left behind"


def test_old_credentials_format_still_loads(tmp_path):
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps({"collector": {"username": "citywatch", "password": "a"},
                                "operator": {"username": "operator", "password": "b"},
                                "tester": {"username": "tester", "password": "c"}, "devices": {"XMG0001": "d"}}))
    creds = Credentials.load(path)
    assert creds.operator == ("operator", "b") and creds.operators == {"operator": "b"}
    assert creds.add_missing(["XMG0001", "XMG0002"], ["operator", "lin"])
    assert set(creds.operators) == {"operator", "lin"} and set(creds.devices) == {"XMG0001", "XMG0002"}
    assert creds.operators["operator"] == "b" and creds.devices["XMG0001"] == "d"


def test_broker_files_and_user(mosquitto):
    """Started as root, Mosquitto runs as Debian's `mosquitto` user, which owns its password file (0600), ACL
    and persistence; not started as root, it switches nothing. The ACL has no pattern lines."""
    uid = int(next(line for line in Path(f"/proc/{mosquitto.pid}/status").read_text().splitlines()
                   if line.startswith("Uid:")).split()[1])
    broker_dir = mosquitto.broker_dir
    if os.geteuid() == 0:
        import pwd
        expected = pwd.getpwnam("mosquitto").pw_uid
        assert "\nuser mosquitto\n" in mosquitto.conf.read_text()
    else:
        expected = os.geteuid()
        assert "\nuser " not in mosquitto.conf.read_text()
    assert uid == expected
    assert uid != 0 or os.geteuid() != 0
    for name in ("passwd", "acl"):
        assert _mode(broker_dir / name) == 0o600, name
        assert os.stat(broker_dir / name).st_uid == expected, name
    assert os.stat(broker_dir / "data").st_uid == expected
    acl = (broker_dir / "acl").read_text()
    assert not [line for line in acl.splitlines() if line.startswith("pattern")]
    assert "%u" not in acl
    # Passwords are hashed in the broker's file.
    assert mosquitto.credentials.tester[1] not in (broker_dir / "passwd").read_text()
    # Persistence still works as that user: a retained message survives a graceful restart.
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    pub.username_pw_set(*mosquitto.credentials.tester)
    pub.connect(mosquitto.host, mosquitto.port)
    pub.loop_start()
    pub.publish("city/xm/gas/GS-SM-01/XMG0001/status", b"online", qos=1, retain=True).wait_for_publish(10)
    pub.disconnect()
    pub.loop_stop()
    mosquitto.restart()
    assert (broker_dir / "data" / "mosquitto.db").exists()
    assert os.stat(broker_dir / "data" / "mosquitto.db").st_uid == expected
    got = []
    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.username_pw_set(*mosquitto.credentials.tester)
    sub.on_message = lambda c, u, m: got.append((m.topic, m.payload))
    sub.connect(mosquitto.host, mosquitto.port)
    sub.loop_start()
    sub.subscribe("city/xm/gas/+/+/status", qos=1)
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    sub.disconnect()
    sub.loop_stop()
    assert got == [("city/xm/gas/GS-SM-01/XMG0001/status", b"online")]


def _capture(path: Path) -> list[str]:
    """A `mosquitto_sub -v -t 'city/xm/#'` capture: device data plus the service's and operators' topics."""
    now_ms = int(time.time() * 1000)
    sample = {"schema": "xm.gas.v1", "device_id": "XMG0001", "site_id": "GS-SM-01",
              "samples": [{"ts": now_ms, "values": {"p": 2.5}}]}
    lines = [
        ("city/xm/gas/GS-SM-01/XMG0001/data", json.dumps(sample)),
        ("city/xm/alerts/cmd/lin", json.dumps({"action": "silence", "matchers": {"category": "gas"},
                                               "comment": "x", "expires": "1w"})),
        ("city/xm/alerts/gas/GS-SM-01", '{"transition":"firing"}'),
        ("city/xm/alerts/active/XMG0001-G-highhigh-1", '{"transition":"firing"}'),
        ("city/xm/deadletter/invalid_json/XMG0001", '{"reason":"invalid_json"}'),
        ("city/xm/internal/metrics/x", "{}"),
        ("city/xm/alerts/replies", '{"ok":true}'),
    ]
    path.write_text("".join(f"{t} {p}\n" for t, p in lines))
    return [t for t, _ in lines]


def _replay(mosquitto, feed: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "citywatch", "replay", str(feed), "--fast", "--no-progress",
                           "--config", str(ROOT / "config"), "--credentials", str(mosquitto.credentials_path),
                           "--host", mosquitto.host, "--port", str(mosquitto.port), *extra],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)


def _watch(mosquitto):
    got: list[str] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.username_pw_set(*mosquitto.credentials.collector)
    c.on_message = lambda cl, u, m: got.append(m.topic)
    subscribed = threading.Event()
    c.on_subscribe = lambda *a: subscribed.set()
    c.connect(mosquitto.host, mosquitto.port)
    c.loop_start()
    c.subscribe("city/xm/#", qos=1)
    assert subscribed.wait(10)
    return c, got


def test_replay_skips_non_data_topics_and_the_broker_refuses_them_when_asked(mosquitto, tmp_path):
    feed = tmp_path / "capture.txt"
    topics = _capture(feed)
    watcher, got = _watch(mosquitto)

    res = _replay(mosquitto, feed)
    assert res.returncode == 0, res.stderr
    assert ("skipped 6 messages that are not device data (2 alert notices and states, 1 alert commands, "
            "1 dead letters, 1 internal topics, 1 command replies)") in res.stderr, res.stderr
    assert "refused" not in res.stderr
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    assert got == [topics[0]]

    # --all-topics: published, and every non-data message refused by the broker (tester / device accounts).
    got.clear()
    res = _replay(mosquitto, feed, "--all-topics")
    assert res.returncode == 0, res.stderr
    assert "skipped" not in res.stderr
    assert ("the broker refused 6 messages (not authorized for the publishing account): 2 alert notices and "
            "states, 1 alert commands, 1 dead letters, 1 internal topics, 1 command replies") in res.stderr, res.stderr
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    watcher.disconnect()
    watcher.loop_stop()
    assert got == [topics[0]]
