"""Every broker account against every topic family on a real Mosquitto with the generated ACL (issue 10).

One broker for the whole table. Each account publishes every topic at QoS 1 over MQTT 5: an allowed publish
is acknowledged with 0x00 Success or 0x10 No matching subscribers, a refused one with 0x87 Not authorized.
Readers of every account, subscribed to `#` before the table runs, must receive exactly the allowed
messages their read grants cover: a refused publish reaches nobody, and a refused retained alert state is
never stored. Mosquitto 2.0.11 grants every SUBSCRIBE (SUBACK 0x01) and applies read grants per message at
delivery, so reads are asserted on what arrives, not on the SUBACK.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from config import load_config
from config.loader import DEFAULT_CONFIG_DIR
from tests.servers import MosquittoServer

pytestmark = pytest.mark.integration

GAS, OTHER_GAS, NOISE, MN_DEV, MN = "XMG0001", "XMG0002", "XM0001NOISE", "XM0004NOISE", "XM0004MN"
OPERATORS = ("operator", "lin", "chen")
COLLECTOR, TESTER, CONSOLE = "citywatch", "tester", "console"
ACCOUNTS = (GAS, NOISE, MN_DEV, *OPERATORS, TESTER, COLLECTOR, CONSOLE)
OK = (0x00, 0x10)
NOT_AUTHORIZED = 0x87


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """One broker for the table, its ACL generated from a copy of the shipped config in which the HJ 212
    device XM0004NOISE reports under an MN that differs from its id."""
    cfg_dir = tmp_path_factory.mktemp("config")
    for p in Path(DEFAULT_CONFIG_DIR).glob("*.yaml"):
        shutil.copy(p, cfg_dir / p.name)
    inv = cfg_dir / "inventory.yaml"
    text = inv.read_text()
    assert f"  - id: {MN_DEV}\n" in text
    inv.write_text(text.replace(f"  - id: {MN_DEV}\n", f"  - id: {MN_DEV}\n    mn: {MN}\n", 1))
    cfg = load_config(cfg_dir)
    assert cfg.device(MN_DEV).mn_or_id == MN and [op.username for op in cfg.alerting.operators] == list(OPERATORS)
    server = MosquittoServer(tmp_path_factory.mktemp("broker") / "mosquitto", cfg=cfg)
    server.start()
    yield server, cfg
    server.kill()
    server.remove_broker_dir()


def _user(server, account):
    if account == COLLECTOR:
        return server.credentials.collector
    if account == TESTER:
        return server.credentials.tester
    if account == CONSOLE:
        return server.credentials.console
    if account in server.credentials.operators:
        return account, server.credentials.operators[account]
    return account, server.credentials.devices[account]


def _connect(server, username, password, protocol=mqtt.MQTTv5, on_message=None):
    """A started client and its CONNACK reason code (bounded wait)."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"acl-{username}-{time.monotonic_ns()}", protocol=protocol)
    if username is not None:
        c.username_pw_set(username, password)
    result, done = {}, threading.Event()

    def on_connect(client, userdata, flags, rc, props=None):
        result["rc"] = rc
        done.set()

    c.on_connect = on_connect
    if on_message is not None:
        c.on_message = on_message
    c.connect(server.host, server.port)
    c.loop_start()
    assert done.wait(10), f"no CONNACK for {username!r} within 10 s"
    return c, result["rc"]


def _close(client):
    client.disconnect()
    client.loop_stop()


def _table(cfg) -> list[tuple[str, str, set[str]]]:
    """(family, topic, accounts allowed to publish there) for every topic family; `{me}` is the publisher."""
    g, o, n, m = cfg.device(GAS), cfg.device(OTHER_GAS), cfg.device(NOISE), cfg.device(MN_DEV)
    own = f"city/xm/gas/{g.site}/{GAS}"
    return [
        ("own data", f"{own}/data", {GAS, TESTER}),
        ("own status", f"{own}/status", {GAS, TESTER}),
        ("own event", f"{own}/event", {GAS, TESTER}),
        ("device command topic", f"{own}/cmd", set()),
        ("own id under another site", f"city/xm/gas/{o.site}/{GAS}/data", {TESTER}),
        ("another device's data", f"city/xm/gas/{o.site}/{OTHER_GAS}/data", {TESTER}),
        ("noise device data", f"city/xm/noise/{n.site}/{NOISE}/data", {NOISE, TESTER}),
        ("noise device's id on the gas kind", f"city/xm/gas/{n.site}/{NOISE}/data", {TESTER}),
        ("malformed data-plane topic", "city/xm/noise/data", {TESTER}),
        ("hj212 own MN (= id)", f"city/xm/hj212/{GAS}", {GAS, TESTER}),
        ("hj212 MN differing from the id", f"city/xm/hj212/{MN}", {MN_DEV, TESTER}),
        ("hj212 under the id of a device with an MN", f"city/xm/hj212/{MN_DEV}", {TESTER}),
        ("hj212 another device", f"city/xm/hj212/{OTHER_GAS}", {TESTER}),
        ("hj212 below an MN", f"city/xm/hj212/{GAS}/x", set()),
        ("alert notice", f"city/xm/alerts/gas/{g.site}", {COLLECTOR}),
        ("alert notice, device category", f"city/xm/alerts/device/{m.site}", {COLLECTOR}),
        ("alert notice, unknown category", f"city/xm/alerts/anything/{GAS}", set()),
        ("alert state (retained)", f"city/xm/alerts/active/{GAS}-G-highhigh-1", {COLLECTOR}),
        ("alert state under the publisher's name", "city/xm/alerts/active/{me}", {COLLECTOR}),
        ("command, bare topic", "city/xm/alerts/cmd", set()),
        ("command on own topic", "city/xm/alerts/cmd/{me}", set(OPERATORS)),
        ("command as operator lin", "city/xm/alerts/cmd/lin", {"lin"}),
        ("command as operator chen", "city/xm/alerts/cmd/chen", {"chen"}),
        ("command under a device id", f"city/xm/alerts/cmd/{GAS}", set()),
        ("command below an operator topic", "city/xm/alerts/cmd/lin/x", set()),
        ("command replies", "city/xm/alerts/replies", {COLLECTOR}),
        ("command reply to a console", "city/xm/alerts/replies/console-7", {COLLECTOR}),
        ("dead letter", f"city/xm/deadletter/invalid_json/{GAS}", {COLLECTOR}),
        ("dead letter under the publisher's name", "city/xm/deadletter/x/{me}", {COLLECTOR}),
        ("internal", "city/xm/internal/metrics/{me}", {COLLECTOR}),
        ("service presence (retained)", "city/xm/internal/presence/{me}", {COLLECTOR}),
        ("outside city/xm", "elsewhere/x", set()),
    ]


def _reads(account: str, topic: str) -> bool:
    """What each account may receive (its read grants)."""
    if account in (COLLECTOR, TESTER):
        return topic.startswith("city/xm/") and not topic.endswith("/cmd")
    if account in OPERATORS:
        return topic.startswith("city/xm/alerts/")
    if account == CONSOLE:  # the web console: alerts and device data only, and it may publish nothing
        parts = topic.split("/")
        return topic.startswith("city/xm/alerts/") or (
            len(parts) == 6 and parts[2] in ("noise", "gas") and parts[5] == "data") or (
            len(parts) == 5 and parts[2:4] == ["internal", "presence"])
    return False   # a device reads only its own command topic, which nobody may publish


def test_every_account_against_every_topic_family(broker):
    server, cfg = broker
    table = _table(cfg)
    inboxes: dict[str, set[bytes]] = {a: set() for a in ACCOUNTS}
    lock = threading.Lock()
    readers = []
    for account in ACCOUNTS:
        def on_message(c, u, msg, account=account):
            with lock:
                inboxes[account].add(bytes(msg.payload))
        reader, rc = _connect(server, *_user(server, account), on_message=on_message)
        assert not rc.is_failure, (account, rc)
        acked = threading.Event()
        grants = []
        reader.on_subscribe = lambda c, u, mid, rcs, p, grants=grants, acked=acked: (grants.extend(rcs), acked.set())
        reader.subscribe("#", qos=1)
        assert acked.wait(10)
        # Mosquitto 2.0.11 grants the SUBSCRIBE whatever the read grants; delivery applies them.
        assert [r.value for r in grants] == [1], (account, grants)
        readers.append(reader)

    expected_ok: dict[bytes, str] = {}
    failures = []
    for account in ACCOUNTS:
        client, rc = _connect(server, *_user(server, account))
        assert not rc.is_failure, (account, rc)
        acks: dict[int, object] = {}
        client.on_publish = lambda c, u, mid, reason, props, acks=acks: acks.__setitem__(mid, reason)
        sent = []
        for family, pattern, allowed in table:
            topic = pattern.replace("{me}", account)
            payload = f"{account} -> {topic}".encode()
            info = client.publish(topic, payload, qos=1, retain="/active/" in topic)
            sent.append((family, topic, payload, account in allowed, info))
        for *_, info in sent:
            info.wait_for_publish(10)
        for family, topic, payload, allowed, info in sent:
            got = acks[info.mid].value
            if (got in OK) != allowed or (not allowed and got != NOT_AUTHORIZED):
                failures.append(f"{account} publishing {family} ({topic}): PUBACK {got:#04x}, "
                                f"expected {'allowed' if allowed else 'refused (0x87)'}")
            if allowed:
                expected_ok[payload] = topic
        _close(client)
    assert not failures, "\n".join(failures)

    def delivered_all() -> bool:
        with lock:
            return all({p for p, t in expected_ok.items() if _reads(a, t)} <= inboxes[a] for a in ACCOUNTS)

    deadline = time.monotonic() + 15
    while not delivered_all() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # a wrongly forwarded message would arrive in this time
    for reader in readers:
        _close(reader)
    for account in ACCOUNTS:
        want = {p for p, t in expected_ok.items() if _reads(account, t)}
        with lock:
            got = set(inboxes[account])
        assert got == want, (account, sorted(got - want), sorted(want - got))
    # The collector's view of city/xm/# holds only allowed publishes, and every one of them.
    assert inboxes[COLLECTOR] == {p for p, t in expected_ok.items() if t.startswith("city/xm/")}

    # Retained alert states: only the service's were stored (a device's fake alert state never reaches a console).
    retained: list[str] = []
    late, rc = _connect(server, *_user(server, "lin"), on_message=lambda c, u, m: retained.append(m.topic))
    late.subscribe("city/xm/alerts/active/#", qos=1)
    deadline = time.monotonic() + 5
    while len(retained) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    _close(late)
    assert sorted(retained) == sorted([f"city/xm/alerts/active/{GAS}-G-highhigh-1", "city/xm/alerts/active/citywatch"])


@pytest.mark.parametrize("who", ["anonymous", "wrong password", "operator with a device's password"])
def test_unauthenticated_clients_are_refused(broker, who):
    server, _ = broker
    user, pw = {"anonymous": (None, None), "wrong password": (GAS, "not-the-password"),
                "operator with a device's password": ("lin", server.credentials.devices[GAS])}[who]
    for protocol in (mqtt.MQTTv5, mqtt.MQTTv311):
        client, rc = _connect(server, user, pw, protocol=protocol)
        client.loop_stop()
        # Mosquitto 2.0.11 answers both with CONNACK "Not authorized" (MQTT 5: 0x87; 3.1.1: return code 5).
        assert rc.is_failure and rc.value in (0x86, 0x87, 4, 5), (who, protocol, rc)


def test_refused_publish_under_mqtt311_is_acknowledged_but_dropped(broker):
    """MQTT 3.1.1 has no reason codes: Mosquitto acknowledges a refused QoS 1 publish as usual and drops it.
    Clients that need to know (citywatch replay) speak MQTT 5."""
    server, cfg = broker
    seen: list[str] = []
    reader, _ = _connect(server, *_user(server, COLLECTOR), on_message=lambda c, u, m: seen.append(m.topic))
    subscribed = threading.Event()
    reader.on_subscribe = lambda *a: subscribed.set()
    reader.subscribe([("city/xm/gas/#", 1), ("city/xm/alerts/cmd/#", 1)])   # no retained alert states
    assert subscribed.wait(10)
    dev, _ = _connect(server, *_user(server, GAS), protocol=mqtt.MQTTv311)
    acks = {}
    dev.on_publish = lambda c, u, mid, reason, props: acks.__setitem__(mid, reason)
    forged = dev.publish(f"city/xm/alerts/cmd/{GAS}", b'{"action":"ack"}', qos=1)
    own = dev.publish(f"city/xm/gas/{cfg.device(GAS).site}/{GAS}/data", b"own", qos=1)
    forged.wait_for_publish(10)
    own.wait_for_publish(10)
    deadline = time.monotonic() + 10
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.3)
    _close(dev)
    _close(reader)
    assert acks[forged.mid].value == 0 and forged.is_published()
    assert seen == [f"city/xm/gas/{cfg.device(GAS).site}/{GAS}/data"]
