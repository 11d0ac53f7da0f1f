"""Partitioned mode without servers: `--partitions`, the cluster YAML keys, the partition hash, the NATS
permissions derived from the Mosquitto grants, the node configs and the partitioned collector's topics."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from citywatch.cluster import (
    NatsCluster,
    mapped_subjects,
    mqtt_filter_subjects,
    nats_users,
    parse_partitions,
    partition_mappings,
    partition_of,
)
from citywatch.commands.run import _partitions
from citywatch.localstack import Credentials, acl_blocks
from citywatch.partition_lease import (
    PartitionLeases,
    assign,
    check_worker_options,
    default_worker_id,
    worker_config,
)
from config import ConfigError, load_config
from config.connections import Cluster, Connections
from ingest.collector import AckToken, Message
from ingest.partitioned_collector import PartitionedCollector

CFG = load_config()


def creds() -> Credentials:
    return Credentials.generate(CFG.device_ids + ["TESTDEV1"], [op.username for op in CFG.alerting.operators])


@pytest.mark.parametrize("text, total, expected", [
    ("0,1,2", 6, (0, 1, 2)), ("2-4", 6, (2, 3, 4)), ("5, 0-1", 6, (0, 1, 5)), ("0", 1, (0,)),
])
def test_partitions_parse(text, total, expected):
    assert parse_partitions(text, total) == expected


@pytest.mark.parametrize("text, message", [
    ("6", "--partitions: 6 is out of range: connections.cluster.partitions is 6, so partitions are 0 to 5"),
    ("0,0", "--partitions: 0 is given twice"),
    ("1-3,2", "--partitions: 2 is given twice"),
    ("a", "--partitions: 'a' is not a partition number or a range such as 0-2 (partitions are 0 to 5)"),
    ("", "--partitions: '' is not a partition number or a range such as 0-2 (partitions are 0 to 5)"),
    ("-1", "--partitions: '-1' is not a partition number or a range such as 0-2 (partitions are 0 to 5)"),
    ("3-1", "--partitions: range '3-1' runs backwards"),
])
def test_partitions_errors_name_the_item(text, message):
    with pytest.raises(ValueError) as err:
        parse_partitions(text, 6)
    assert str(err.value) == message


def test_run_flag_and_mode_must_agree():
    single, part = Cluster(), Cluster(mode="partitioned", partitions=4, nodes=["127.0.0.1:1883"])
    assert _partitions(None, single) is None
    assert _partitions("0,3", part) == (0, 3)
    with pytest.raises(ValueError, match=r"^--partitions needs connections.cluster.mode: partitioned"):
        _partitions("0", single)
    with pytest.raises(ValueError) as err:
        _partitions(None, part)
    assert str(err.value) == ("connections.cluster.mode is partitioned: give the partitions this worker owns, e.g. "
                              "--partitions 0-3 (partitions are 0 to 3)")


def write_config(tmp_path, cluster_yaml: str, protocol: str = "mqtt311"):
    import shutil

    from config.loader import DEFAULT_CONFIG_DIR

    d = tmp_path / "config"
    d.mkdir()
    for f in DEFAULT_CONFIG_DIR.glob("*.yaml"):
        shutil.copy(f, d / f.name)
    conn = d / "connections.yaml"
    shipped = conn.read_text().replace("protocol: mqtt5", f"protocol: {protocol}")
    conn.write_text(shipped.split("\n  cluster:")[0] + "\n" + cluster_yaml)  # the shipped section is the last
    return d


def problems(tmp_path, cluster_yaml: str, protocol: str = "mqtt311", env=None) -> list[str]:
    try:
        load_config(write_config(tmp_path, cluster_yaml, protocol), env=env or {})
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


def test_cluster_keys_are_checked(tmp_path):
    found = problems(tmp_path, "  cluster:\n    mode: partitioned\n    partitions: 0\n    nodes: [\"h:99999\"]\n",
                     protocol="mqtt5")
    text = "\n".join(found)
    assert "connections.cluster.partitions: must be between 1 and 256 (got 0)" in text
    assert "connections.cluster.nodes[0]: must be host:port with a port between 1 and 65535 (got 'h:99999')" in text


def test_partitioned_mode_needs_nodes_and_mqtt311(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    found = problems(tmp_path / "a", "  cluster:\n    mode: partitioned\n")
    assert any("connections.cluster.nodes: must list the MQTT listeners (host:port) of the cluster's nodes when "
               "mode is partitioned (got nothing)" in p for p in found), found
    found = problems(tmp_path / "b", "  cluster:\n    mode: partitioned\n    nodes: [\"127.0.0.1:4883\"]\n", "mqtt5")
    assert any("connections.mqtt.protocol: must be mqtt311 when cluster.mode is partitioned (the NATS cluster "
               "speaks MQTT 3.1.1 only; got mqtt5)" in p for p in found), found


def test_nodes_from_the_environment(tmp_path):
    d = write_config(tmp_path, "  cluster:\n    mode: partitioned\n    partitions: 3\n")
    cfg = load_config(d, env={"CITYWATCH_CLUSTER_NODES": "127.0.0.1:4001, 127.0.0.1:4002"})
    assert cfg.connections.cluster.hosts() == [("127.0.0.1", 4001), ("127.0.0.1", 4002)]


def test_single_mode_is_the_default():
    assert CFG.connections.cluster.mode == "single"
    assert Connections().cluster.mode == "single"


def test_partition_hash_matches_the_server():
    # Measured on nats-server 2.15.1 with partition(4,1) over the site token (tests/integration/test_cluster.py
    # checks the same against a running cluster).
    assert [partition_of(s, 4) for s in ("GS-SM-01", "GS-HL-02", "GS-SM-07", "GS-HL-08")] == [2, 3, 0, 1]
    assert all(0 <= partition_of(s.id, 7) < 7 for s in CFG.sites)


def test_mappings_by_site_and_mn():
    m = partition_mappings(6)
    assert m["city.xm.gas.*.*.data"] == "cw.p.{{partition(6,1)}}.city.xm.gas.{{wildcard(1)}}.{{wildcard(2)}}.data"
    assert m["city.xm.hj212.*"] == "cw.p.{{partition(6,1)}}.city.xm.hj212.{{wildcard(1)}}"
    assert len(m) == 7  # 2 kinds x data, status, event, and HJ 212


@pytest.mark.parametrize("topic, subjects", [
    ("city/xm/alerts/cmd/operator", ["city.xm.alerts.cmd.operator"]),
    ("city/xm/+/+/data", ["city.xm.*.*.data"]),
    ("city/xm/#", ["city.xm", "city.xm.>"]),
    ("#", [">"]),
])
def test_mqtt_filters_become_subjects(topic, subjects):
    assert mqtt_filter_subjects(topic) == subjects


def test_a_topic_nats_cannot_express_is_refused():
    with pytest.raises(ValueError, match="not supported"):
        mqtt_filter_subjects("city/xm/a.b")


def test_mapped_subjects():
    k = partition_of("GS-SM-01", 4)
    assert mapped_subjects("city.xm.gas.GS-SM-01.XMG0001.data", 4) == [f"cw.p.{k}.city.xm.gas.GS-SM-01.XMG0001.data"]
    assert mapped_subjects("city.xm.gas.*.TESTDEV1.data", 4) == ["cw.p.*.city.xm.gas.*.TESTDEV1.data"]
    assert mapped_subjects("city.xm.gas.GS-SM-01.XMG0001.cmd", 4) == []
    assert mapped_subjects("city.xm.alerts.cmd.operator", 4) == []
    assert mapped_subjects("city.xm.>", 4) == ["cw.p.*.city.xm.>"]


def test_permissions_come_from_the_mosquitto_grants():
    c = creds()
    users = {u["user"]: u for u in nats_users(c, CFG, total=4)}
    assert set(users) == {b.user for b in acl_blocks(c, CFG)}
    dev = CFG.device("XMG0001")
    k = partition_of(dev.site, 4)
    pub = users["XMG0001"]["permissions"]["publish"]["allow"]
    assert f"cw.p.{k}.city.xm.gas.{dev.site}.XMG0001.data" in pub
    assert f"city.xm.gas.{dev.site}.XMG0001.data" in pub
    assert not any("XMG0002" in s for s in pub)
    assert not any(s.startswith("cw.p.*") for s in pub)  # an inventory device: its one partition
    for u in users.values():
        assert "$MQTT.sub.>" in u["permissions"]["subscribe"]["allow"]
        # MQTT only, but the service account also speaks NATS itself: the partition leases of `--partitions auto`
        expected = ["MQTT", "STANDARD"] if u["user"] == c.collector[0] else ["MQTT"]
        assert u["allowed_connection_types"] == expected
        assert u["password"] == dict(c.users())[u["user"]]
    service = users[c.collector[0]]["permissions"]
    assert "cw.p.>" in service["subscribe"]["allow"] and "_INBOX.>" in service["subscribe"]["allow"]
    assert {"$JS.API.>", "$KV.citywatch_partitions.>"} <= set(service["publish"]["allow"])
    assert not any(s.startswith("$JS") or s.startswith("$KV") for u in users.values() if u["user"] != c.collector[0]
                   for s in u["permissions"]["publish"]["allow"])
    assert not any(s.startswith("city.xm.alerts.cmd") for s in service["publish"]["allow"])
    tester = users["tester"]["permissions"]
    assert {"city.xm.gas.*.*.cmd", "city.xm.gas.*.*.cmd.>"} <= set(tester["publish"]["deny"])


def test_node_configs(tmp_path):
    cluster = NatsCluster(tmp_path, creds(), CFG, partitions=5)
    confs = [n.conf.read_text() for n in cluster.nodes]
    assert len(confs) == 3 and len({n.ports.mqtt for n in cluster.nodes}) == 3
    routes = [f"nats-route://127.0.0.1:{n.ports.route}" for n in cluster.nodes]
    for node, conf in zip(cluster.nodes, confs):
        assert f"server_name: {node.server_name}" in conf
        assert all(r in conf for r in routes)
        assert "stream_replicas: 3, consumer_replicas: 3" in conf and 'ack_wait: "10s"' in conf
        assert "partition(5,1)" in conf and 'include "../auth.conf"' in conf
    assert (tmp_path / "auth.conf").stat().st_mode & 0o077 == 0
    again = NatsCluster(tmp_path, creds(), CFG)  # the ports and partitions of the first set-up are kept
    assert [n.ports for n in again.nodes] == [n.ports for n in cluster.nodes]


def test_partitioned_collector_sessions_topics_and_acks():
    mq = CFG.connections.mqtt.model_copy(update={"protocol": "mqtt311"})
    cl = Cluster(mode="partitioned", partitions=4, nodes=["127.0.0.1:1", "127.0.0.1:2"])
    got: list[Message] = []
    pc = PartitionedCollector(mq, cl, (0, 3), None, got.append)
    p0, p3 = pc.collectors[0], pc.collectors[3]
    assert p0.client._client_id == f"{mq.client_id}-p0".encode()
    assert p3._topics == ("cw/p/3/#",)
    assert p0._topics[0] == "cw/p/0/#" and "city/xm/gas/#" in p0._topics  # unmapped topics: dead letters
    msg = SimpleNamespace(topic="cw/p/3/city/xm/gas/S/D/data", payload=b"{}", mid=7, qos=1, retain=False)
    p3._on_message(p3.client, None, msg)
    assert got[0].topic == "city/xm/gas/S/D/data" and got[0].token.source == 3
    sent = []
    p3.ack = lambda tokens: sent.append(("p3", tokens)) or len(tokens)
    p0.ack = lambda tokens: sent.append(("p0", tokens)) or len(tokens)
    assert pc.ack([AckToken(0, 7, 1, 3), AckToken(0, 8, 1, 0), AckToken(0, 9, 1, 3)]) == 3
    assert sent == [("p3", [AckToken(0, 7, 1, 3), AckToken(0, 9, 1, 3)]), ("p0", [AckToken(0, 8, 1, 0)])]
    # Fail-over: the next reconnect goes to the next node, round the list.
    p0._nodes.advance(p0.client)
    assert (p0.client._host, p0.client._port) == ("127.0.0.1", 2)
    p0._nodes.advance(p0.client)
    assert (p0.client._host, p0.client._port) == ("127.0.0.1", 1)


# ----- --partitions auto: the lease plan, the worker options, the keys ------------------------------------


@pytest.mark.parametrize("workers, total, holders, expected", [
    (["a"], 4, {}, {"a": (0, 1, 2, 3)}),
    (["c", "a", "b"], 4, {}, {"a": (0, 1), "b": (2,), "c": (3,)}),
    # a dead worker's partitions go to the survivors, the survivors keep theirs
    (["a", "c"], 4, {0: "a", 3: "a", 1: "b", 2: "c"}, {"a": (0, 3), "c": (1, 2)}),
    # a worker joins: only the extra partitions move to it
    (["a", "c", "d"], 4, {0: "a", 3: "a", 1: "c", 2: "c"}, {"a": (0, 3), "c": (1,), "d": (2,)}),
    (["a", "b"], 6, {0: "b", 1: "b", 2: "b", 3: "b", 4: "b", 5: "b"}, {"a": (3, 4, 5), "b": (0, 1, 2)}),
    (["a", "b", "c", "d", "e"], 4, {}, {"a": (0,), "b": (1,), "c": (2,), "d": (3,), "e": ()}),
    (["a"], 2, {0: "gone", 7: "a"}, {"a": (0, 1)}),
])
def test_lease_plan(workers, total, holders, expected):
    plan = assign(workers, total, holders)
    assert plan == expected
    assert sorted(k for ks in plan.values() for k in ks) == list(range(total))


def test_lease_plan_refuses_nothing():
    with pytest.raises(ValueError, match="^assign: no live workers$"):
        assign([], 4)
    with pytest.raises(ValueError, match=r"^assign: partitions must be at least 1 \(got 0\)$"):
        assign(["a"], 0)


def test_partitions_auto_needs_the_nats_listeners():
    with_nats = Cluster(mode="partitioned", partitions=4, nodes=["127.0.0.1:1883"], nats=["127.0.0.1:4222"])
    assert _partitions("auto", with_nats) == ()
    with pytest.raises(ValueError, match=r"^--partitions auto needs connections.cluster.nats: the NATS client "
                       r"listeners \(host:port\) of the cluster's nodes \(CITYWATCH_CLUSTER_NATS"):
        _partitions("auto", Cluster(mode="partitioned", partitions=4, nodes=["127.0.0.1:1883"]))
    with pytest.raises(ValueError, match="^--partitions needs connections.cluster.mode: partitioned"):
        _partitions("auto", Cluster())
    with pytest.raises(ValueError, match="^--partitions auto needs connections.cluster.nats"):
        PartitionLeases([], None, None, 4, 10, acquire=print, release=print)


@pytest.mark.parametrize("worker_id, port, message", [
    ("a.b", None, "--worker-id: 'a.b' must be 1 to 40 letters, digits, '-' or '_'"),
    ("", None, "--worker-id: '' must be 1 to 40 letters, digits, '-' or '_'"),
    ("w" * 41, None, f"--worker-id: {'w' * 41!r} must be 1 to 40 letters, digits, '-' or '_'"),
    (None, 0, "--metrics-port: 0 is not a port between 1 and 65535"),
    (None, 70000, "--metrics-port: 70000 is not a port between 1 and 65535"),
])
def test_worker_options_are_checked(worker_id, port, message):
    with pytest.raises(ValueError) as err:
        check_worker_options(worker_id, port)
    assert str(err.value) == message


def test_each_worker_its_own_alert_client_and_metrics_port():
    check_worker_options("w-1", 9470)
    a, b = worker_config(CFG, "w-1", None), worker_config(CFG, "w-2", 9471)
    assert a.alerting.mqtt_client_id == f"{CFG.alerting.mqtt_client_id}-w-1"
    assert b.alerting.mqtt_client_id == f"{CFG.alerting.mqtt_client_id}-w-2"
    assert a.ingest.metrics_http.port == 0 and b.ingest.metrics_http.port == 9471
    assert a.ingest.ack_after == "influxdb"  # a partition outlives its worker's spool
    assert CFG.ingest.metrics_http.port == 9464  # the loaded config is left alone
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", default_worker_id())


def test_nats_listeners_keys(tmp_path):
    d = write_config(tmp_path, "  cluster:\n    mode: partitioned\n    partitions: 3\n    lease_ttl_s: 30s\n")
    cfg = load_config(d, env={"CITYWATCH_CLUSTER_NODES": "127.0.0.1:4001",
                              "CITYWATCH_CLUSTER_NATS": "127.0.0.1:4222, 127.0.0.1:4223"})
    assert cfg.connections.cluster.nats_urls() == ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
    assert cfg.connections.cluster.lease_ttl_s == 30
    (tmp_path / "x").mkdir()
    found = "\n".join(problems(tmp_path / "x", "  cluster:\n    nats: [\"h\"]\n    lease_ttl_s: 1\n"))
    assert "connections.cluster.nats[0]: must be host:port with a port between 1 and 65535 (got 'h')" in found
    assert "connections.cluster.lease_ttl_s: must be between 2 and 300 seconds (got 1)" in found


def test_partitions_come_and_go_in_auto_mode():
    mq = CFG.connections.mqtt.model_copy(update={"protocol": "mqtt311"})
    cl = Cluster(mode="partitioned", partitions=4, nodes=["127.0.0.1:1"])
    pc = PartitionedCollector(mq, cl, (), None, lambda m: None, dynamic=True)
    assert pc.partitions == () and pc.client is None
    pc.publish("t", b"x")  # nobody to publish through: nothing happens
    pc.add(2)  # not started: nothing
    assert pc.partitions == ()
    started = []
    pc._make_orig, pc._make = pc._make, lambda k: _fake(pc._make_orig(k), started)
    pc.start()
    pc.add(2)
    pc.add(1)
    assert pc.partitions == (1, 2) and started == [2, 1]
    first = pc.collectors[2]
    old_gen = first._generation
    pc.remove(2)
    assert pc.partitions == (1,) and first.stopped
    assert pc.ack([AckToken(old_gen, 5, 1, 2)]) == 0  # a partition given up: its acks are dropped
    pc.add(2)
    assert pc.collectors[2]._generation != old_gen  # a late token of the old session acks nothing here
    with pytest.raises(ValueError, match="^a partitioned collector needs at least one partition$"):
        PartitionedCollector(mq, cl, (), None, lambda m: None)


def _fake(collector, started):
    collector.start = lambda: started.append(collector.partition)
    collector.stopped = False

    def stop():
        collector.stopped = True
    collector.stop = stop
    return collector


@pytest.mark.parametrize("argv, message", [
    (["--worker-id", "w1"], "citywatch run: --worker-id and --metrics-port are for partitioned mode (--partitions); "
                            "the single service takes ingest.metrics_http.port and alerting.mqtt_client_id"),
    (["--metrics-port", "9470"], "citywatch run: --worker-id and --metrics-port are for partitioned mode"),
])
def test_worker_options_refused_in_single_mode(argv, message, capsys):
    import signal

    from citywatch.cli import main

    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert main(["run", *argv]) == 2
    finally:  # `run` installs its stop handlers first of all
        for s, h in handlers.items():
            signal.signal(s, h)
    assert message in capsys.readouterr().err
