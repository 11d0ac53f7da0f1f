"""A local Mosquitto + InfluxDB stack as plain processes: config files, credentials, start, wait, stop by pid.

Used by `scripts/stack.sh` (the developer stack under `.stack/`) and by the test fixtures (servers on free
ports in temporary directories). Mosquitto runs with password auth, an ACL, persistence and queue limits
raised so that a slow or absent collector loses nothing within the documented bound (README, "Broker settings").
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import typing
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

# Broker limits the no-loss guarantee depends on (README "Broker settings"). Mosquitto's defaults
# (max_inflight_messages 20, max_queued_messages 1000) cap QoS 1 delivery and silently drop what is
# queued beyond 1000 messages for an absent persistent session, QoS 1 included.
BROKER_LIMITS = {
    "max_inflight_messages": 1000,
    "max_queued_messages": 2_000_000,
    "max_queued_bytes": 2 * 1024**3,
    "persistent_client_expiration": "14d",
    "autosave_interval": 30,
}

COLLECTOR_USER = "citywatch"
OPERATOR_USER = "operator"
TESTER_USER = "tester"
CONSOLE_USER = "console"  # the web console: reads alerts and device data, writes nothing
# Debian's mosquitto package creates this system user; a broker started as root switches to it.
BROKER_RUN_USER = "mosquitto"


# Ports free_port picks from start here; up to the kernel's ephemeral range (see free_port).
LOW_PORT = 10_000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux: /proc/sys/net/ipv4/ip_local_port_range), or 0."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago.

    Below the kernel's ephemeral range where it is known: a server stopped and started again on its port (a
    SIGKILLed broker node rejoining its cluster) must find it free, and a port in the ephemeral range can
    meanwhile become the source port of any outgoing connection on the machine ("address already in use")."""
    low = _ephemeral_low()
    if low > LOW_PORT + 1000:
        pick = random.SystemRandom()
        for _ in range(64):
            port = pick.randrange(LOW_PORT, low)
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_private_file(path: Path, text: str) -> None:
    """Write `path` atomically with mode 0600 from its first byte: a temporary file created 0600 (O_EXCL) in
    the same directory, then renamed over `path`. A pre-existing file (whatever its mode) is replaced, never
    reused, so no reader ever sees the secret in a world-readable file. Raises OSError."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        create_private_file(tmp, text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass
class Credentials:
    """Broker users: the collector, the operators (one account each), a tester, and one user per device (its id).

    collector, tester: (user name, password); operators: {user name: password}, one per `alerting.operators`
    entry; devices: {device id: password}.
    """

    collector: tuple[str, str]
    tester: tuple[str, str]
    operators: dict[str, str] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    console: tuple[str, str] | None = None  # the web console's read-only account (None in older files)

    @property
    def operator(self) -> tuple[str, str]:
        """The default operator account (user `operator` when there is one, else the first). Raises KeyError
        when there is no operator account (alerting.operators is empty)."""
        if not self.operators:
            raise KeyError("no operator accounts: list them under alerting.operators (config/alerts.yaml)")
        user = OPERATOR_USER if OPERATOR_USER in self.operators else next(iter(self.operators))
        return user, self.operators[user]

    @staticmethod
    def generate(device_ids: list[str], operators: list[str] | None = None) -> Credentials:
        """Fresh random passwords. operators: operator user names (default: one account, `operator`)."""
        def pw() -> str:
            return secrets.token_urlsafe(18)

        ops = [OPERATOR_USER] if operators is None else list(operators)
        return Credentials((COLLECTOR_USER, pw()), (TESTER_USER, pw()), {u: pw() for u in ops},
                           {d: pw() for d in device_ids}, (CONSOLE_USER, pw()))

    def add_missing(self, device_ids: list[str], operators: list[str]) -> bool:
        """Generate passwords for devices and operators that have none yet; return whether any was added."""
        fresh = Credentials.generate([d for d in device_ids if d not in self.devices],
                                     [u for u in operators if u not in self.operators])
        self.devices.update(fresh.devices)
        self.operators.update(fresh.operators)
        added_console = self.console is None
        if added_console:
            self.console = fresh.console
        return bool(fresh.devices or fresh.operators or added_console)

    def to_json(self) -> dict:
        def user(pair):
            return {"username": pair[0], "password": pair[1]}

        data = {"collector": user(self.collector), "tester": user(self.tester), "operators": dict(self.operators),
                "devices": dict(self.devices)}
        if self.console is not None:
            data["console"] = user(self.console)
        if self.operators:
            data["operator"] = user(self.operator)   # the default operator, for readers of the older format
        return data

    @staticmethod
    def from_json(data: dict) -> Credentials:
        def pair(d):
            return (d["username"], d["password"])

        operators = dict(data.get("operators") or {})
        if not operators and isinstance(data.get("operator"), dict):
            operators = dict([pair(data["operator"])])   # the format before one account per operator
        console = pair(data["console"]) if isinstance(data.get("console"), dict) else None
        return Credentials(pair(data["collector"]), pair(data["tester"]), operators, dict(data["devices"]), console)

    def users(self) -> list[tuple[str, str]]:
        """Every (user name, password) the broker's password file holds."""
        return [self.collector, self.tester, *([self.console] if self.console else []), *self.operators.items(),
                *self.devices.items()]

    def save(self, path: Path) -> None:
        """Write the JSON file, mode 0600 from its first byte (write_private_file)."""
        write_private_file(Path(path), json.dumps(self.to_json(), indent=1))

    @staticmethod
    def load(path: Path) -> Credentials:
        return Credentials.from_json(json.loads(Path(path).read_text()))


# ----- the broker's ACL, generated from the inventory and the accounts ----------------------------

# Device channels a device publishes on (city/xm/{kind}/{site}/{id}/{channel}); `cmd` is the one it reads.
DEVICE_CHANNELS = ("data", "status", "event")
DEVICE_KINDS = ("noise", "gas")


def topic_matches(filter_: str, topic: str) -> bool:
    """MQTT topic filter matching (`+` one level, `#` the rest, including the parent level itself)."""
    f, t = filter_.split("/"), topic.split("/")
    for i, level in enumerate(f):
        if level == "#":
            return True
        if i >= len(t) or (level != "+" and level != t[i]):
            return False
    return len(f) == len(t)


@dataclass(frozen=True)
class AclTopics:
    """The topics the ACL is written for, taken from the config (defaults: the shipped ones)."""

    alert_prefixes: tuple[str, ...] = ("city/xm/alerts",)
    command_topic: str = "city/xm/alerts/cmd"
    reply_topic: str = "city/xm/alerts/replies"
    deadletter_topic: str = "city/xm/deadletter"
    internal_topic: str = "city/xm/internal"
    root: str = "city/xm"

    @staticmethod
    def from_config(cfg) -> AclTopics:
        prefixes = sorted({s.topic_prefix.rstrip("/") for s in cfg.alerting.sinks.values() if s.type == "mqtt"})
        return AclTopics(tuple(prefixes) or ("city/xm/alerts",), cfg.alerting.command_topic.rstrip("/"),
                         cfg.alerting.command_reply_topic.rstrip("/"), cfg.ingest.deadletter_topic.rstrip("/"))


@dataclass(frozen=True)
class AclBlock:
    """One account's grants, as Mosquitto ACL lines (`topic read|write|deny <filter>`): the one source of the
    broker permissions, rendered for Mosquitto (render_acl) and for the NATS cluster (citywatch/cluster.py)."""

    user: str
    comment: str
    grants: tuple[str, ...]


def render_acl(creds: Credentials, cfg=None) -> str:
    """The Mosquitto ACL file: one `user` block per account (acl_blocks), no `pattern` line (a pattern applies
    to every user and so to topics that belong to other accounts: issue 10, `city/xm/+/+/%u/#` let a device
    write city/xm/alerts/cmd/<its id>). Raises ValueError as acl_blocks does."""
    lines = ["# Generated by citywatch.localstack from the inventory and the accounts; do not edit.",
             "# No `pattern` lines: every grant names one account. Anything not granted is refused",
             "# (a QoS 1 publish gets PUBACK 0x87 under MQTT 5 and is dropped silently under 3.1.1).", ""]
    for b in acl_blocks(creds, cfg):
        lines.extend([f"# {b.comment}", f"user {b.user}", *b.grants, ""])
    return "\n".join(lines)


def acl_blocks(creds: Credentials, cfg=None) -> list[AclBlock]:
    """Every account's grants, derived from the inventory and the accounts.

    cfg: the loaded config (default: the shipped one) for device kinds, sites and MNs and the alert,
    command, reply and dead-letter topics. A device with a password but not in the inventory (test devices)
    may publish under its own id on either kind and any site. Raises ValueError when a write grant of the
    collector would cover the command topic.
    """
    from config import load_config
    from config.alerting import Category

    cfg = cfg if cfg is not None else load_config()
    t = AclTopics.from_config(cfg)
    categories = typing.get_args(Category)
    blocks: list[AclBlock] = []

    def block(user: str, comment: str, grants: list[str]) -> None:
        blocks.append(AclBlock(user, comment, tuple(grants)))

    collector_writes = [f"{p}/{c}/+" for p in t.alert_prefixes for c in categories]
    collector_writes += [f"{p}/active/+" for p in t.alert_prefixes]
    collector_writes += [t.reply_topic, f"{t.reply_topic}/#", f"{t.deadletter_topic}/#", f"{t.internal_topic}/#"]
    for probe in (t.command_topic, f"{t.command_topic}/{OPERATOR_USER}"):
        clash = [g for g in collector_writes if topic_matches(g, probe)]
        if clash:
            raise ValueError(f"the service's write grant {clash[0]!r} would cover the command topic {probe!r}: "
                             "move alerting.command_topic out of the alert, reply and dead-letter topics")
    block(creds.collector[0], "The service: reads everything; publishes alert notices and states, command replies,"
          " dead letters and self-metrics; never commands.",
          [f"topic read {t.root}/#"] + [f"topic write {g}" for g in collector_writes])
    for user in creds.operators:
        reads = [f"topic read {p}/#" for p in t.alert_prefixes]
        if not any(topic_matches(f"{p}/#", t.reply_topic) for p in t.alert_prefixes):
            reads.append(f"topic read {t.reply_topic}/#")
        block(user, "An operator: reads alerts and replies; sends commands on its own command topic only.",
              reads + [f"topic write {t.command_topic}/{user}"])
    if creds.console is not None:
        reads = [f"topic read {p}/#" for p in t.alert_prefixes]
        reads += [f"topic read {t.root}/{k}/+/+/data" for k in DEVICE_KINDS]
        reads.append(f"topic read {t.internal_topic}/presence/+")  # the service's liveness (ingest/collector.py)
        block(creds.console[0], "The web console: reads alerts, device data and the service's presence (for the "
              "age of its board); "
              "writes nothing (its users' commands go through the alert store's inbox).", reads)
    # Deny lines are applied before grants by Mosquitto 2.0 (checked against 2.0.11): a device's command
    # topic stays out of the tester's data-plane wildcard, which it needs for malformed topics and unknown
    # devices (the collector dead-letters those).
    block(creds.tester[0], "The tester: reads everything; replays device data, status, event and HJ 212 topics"
          " only.", [f"topic read {t.root}/#"] + [f"topic write {t.root}/{k}/#" for k in DEVICE_KINDS]
          + [f"topic write {t.root}/hj212/+"] + [f"topic deny {t.root}/{k}/+/+/cmd/#" for k in DEVICE_KINDS])
    for dev_id in creds.devices:
        d = cfg.device(dev_id)
        if d is not None:
            base, mn, what = [f"{t.root}/{d.kind}/{d.site}/{d.id}"], d.mn_or_id, f"{d.kind} device at site {d.site}"
        else:
            base, mn, what = [f"{t.root}/{k}/+/{dev_id}" for k in DEVICE_KINDS], dev_id, "device not in the inventory"
        grants = [f"topic write {b}/{c}" for b in base for c in DEVICE_CHANNELS]
        grants += [f"topic write {t.root}/hj212/{mn}"] + [f"topic read {b}/cmd" for b in base]
        block(dev_id, f"Device {dev_id} ({what}): its own data, status and event, its HJ 212 MN; reads its cmd.",
              grants)
    return blocks


def mosquitto_passwd() -> str:
    path = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if not os.path.exists(path):
        raise RuntimeError("mosquitto_passwd not found: install Debian's mosquitto (scripts/stack.sh does)")
    return path


def mosquitto_binary() -> str:
    for path in (shutil.which("mosquitto"), "/usr/sbin/mosquitto"):
        if path and os.path.exists(path):
            return path
    raise RuntimeError("mosquitto not found: install Debian's mosquitto (scripts/stack.sh does)")


def influxd_binary() -> str:
    for path in (shutil.which("influxd"), "/usr/bin/influxd"):
        if path and os.path.exists(path):
            return path
    raise RuntimeError("influxd not found: install Debian's influxdb (scripts/stack.sh does)")


def broker_owner() -> tuple[int, int] | None:
    """(uid, gid) the broker switches to: Debian's `mosquitto` user when this process is root; None when not
    root (Mosquitto then runs as the caller and switches nothing). Raises RuntimeError when root and the
    user does not exist."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(BROKER_RUN_USER)
    except KeyError:
        raise RuntimeError(f"user {BROKER_RUN_USER!r} not found: install Debian's mosquitto package (it creates "
                           "the user the broker runs as; scripts/stack.sh does)") from None
    return entry.pw_uid, entry.pw_gid


def reachable_by(path: Path, owner: tuple[int, int]) -> bool:
    """Whether user `owner` (uid, gid; supplementary groups ignored) may traverse every directory down to `path`."""
    uid, gid = owner
    resolved = Path(path).resolve()
    for d in [*reversed(resolved.parents), resolved]:
        st = d.stat()
        bit = stat.S_IXUSR if st.st_uid == uid else stat.S_IXGRP if st.st_gid == gid else stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def broker_dir_for(directory: Path, owner: tuple[int, int] | None) -> Path:
    """Where the broker's own files live (password file, ACL, persistence, log): `directory` itself unless
    the broker's user cannot reach it (pytest's /tmp/pytest-of-root is 0700), then a directory of its own
    under the system temp dir, named after `directory` so that a restart from another process finds it."""
    if owner is None or reachable_by(directory, owner):
        return Path(directory)
    digest = hashlib.sha256(str(Path(directory).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"citywatch-mosquitto-{digest}"


def write_mosquitto_files(directory: Path, port: int, creds: Credentials, persistence: bool = True, cfg=None,
                          owner: tuple[int, int] | None = None, broker_dir: Path | None = None) -> Path:
    """Write mosquitto.conf into `directory`, and the hashed password file and the ACL (render_acl) into
    `broker_dir` (default `directory`); return the conf path.

    owner: (uid, gid) the broker runs as when started as root (broker_owner()): the conf then says
    `user mosquitto`, and the password file, ACL, log and persistence directory belong to that user, since
    Mosquitto 2.0.11 switches user right after reading its conf and opens all of them afterwards (strace).
    Secret-bearing files are 0600 from their first byte. Raises subprocess.CalledProcessError, OSError.
    """
    directory = Path(directory)
    broker_dir = Path(broker_dir or directory)
    directory.mkdir(parents=True, exist_ok=True)
    broker_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = broker_dir / "data"
    data.mkdir(exist_ok=True, mode=0o700)
    log_file = broker_dir / "mosquitto.log"
    log_file.touch()

    def own(path: Path) -> None:
        if owner is not None:
            os.chown(path, *owner)

    # The plain passwords exist only in a 0600 temporary file until mosquitto_passwd hashes them in place.
    passwd = broker_dir / "passwd"
    tmp = broker_dir / f".passwd.{secrets.token_hex(6)}.tmp"
    try:
        create_private_file(tmp, "".join(f"{u}:{p}\n" for u, p in creds.users()))
        subprocess.run([mosquitto_passwd(), "-U", str(tmp)], check=True, capture_output=True)
        os.chmod(tmp, 0o600)
        own(tmp)
        os.replace(tmp, passwd)
    finally:
        tmp.unlink(missing_ok=True)
    acl = broker_dir / "acl"
    write_private_file(acl, render_acl(creds, cfg))
    if owner is not None:
        # `directory` itself stays root's: a broker user that could write there could replace the conf
        # that root reads at the next start.
        for path in ([broker_dir] if broker_dir != directory else []) + [passwd, acl, log_file, data]:
            own(path)
        for root, dirs, files in os.walk(data):
            for name in dirs + files:
                os.chown(os.path.join(root, name), *owner)
    conf = directory / "mosquitto.conf"
    limits = "\n".join(f"{k} {v}" for k, v in BROKER_LIMITS.items())
    run_as = (f"# Started as root, the broker runs as {BROKER_RUN_USER} (which owns the files below).\n"
              f"user {BROKER_RUN_USER}" if owner is not None else "# Not started as root: no user switch.")
    conf.write_text(
        f"""# Generated by citywatch.localstack
per_listener_settings false
listener {port} 127.0.0.1
allow_anonymous false
password_file {passwd}
acl_file {acl}
{run_as}
persistence {'true' if persistence else 'false'}
persistence_location {data}/
log_dest file {log_file}
log_type error
log_type warning
log_type notice
connection_messages true
{limits}
"""
    )
    return conf


def write_influx_conf(directory: Path, port: int, rpc_port: int, auth: bool = True) -> Path:
    """Write influxdb.conf into `directory` (data, WAL and meta under it); return its path.

    auth: `[http] auth-enabled`: every request but /ping needs an account (InfluxAccounts below).
    """
    directory.mkdir(parents=True, exist_ok=True)
    conf = directory / "influxdb.conf"
    conf.write_text(
        f"""# Generated by citywatch.localstack
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"
[meta]
  dir = "{directory / 'meta'}"
[data]
  dir = "{directory / 'data'}"
  wal-dir = "{directory / 'wal'}"
  query-log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  auth-enabled = {'true' if auth else 'false'}
  log-enabled = false
  max-body-size = 0
[logging]
  level = "warn"
"""
    )
    return conf


class ManagedProcess:
    """A server process started in its own session, with a pid file; stopped and killed by pid."""

    name = "server"

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.pid_file = self.directory / f"{self.name}.pid"
        self.log_path = self.directory / f"{self.name}.out"

    def command(self) -> list[str]:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    def ready(self) -> bool:  # pragma: no cover - defined by subclasses
        raise NotImplementedError

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        # A zombie of ours counts as gone.
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
            return state != "Z"
        except OSError:
            return False

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server and wait (bounded) until it answers; raise RuntimeError with its log otherwise."""
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            proc = subprocess.Popen(
                self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self._proc = proc
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode}:\n{self.tail_log()}")
            if self.ready():
                return
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"{self.name} did not answer within {timeout_s:.0f} s:\n{self.tail_log()}")

    def tail_log(self, lines: int = 30) -> str:
        text = ""
        for path in (self.log_path, self.directory / f"{self.name}.log"):
            if path.exists():
                text += "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def _signal_and_wait(self, sig: int, timeout_s: float) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout_s
        proc = getattr(self, "_proc", None)
        while time.monotonic() < deadline:
            if proc is not None and proc.pid == pid:
                if proc.poll() is not None:
                    break
            elif not self.running():
                break
            time.sleep(0.02)
        else:
            if sig != signal.SIGKILL:
                self._signal_and_wait(signal.SIGKILL, 10)
                return
        self.pid_file.unlink(missing_ok=True)

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM and wait for a clean exit (Mosquitto saves its persistence file); SIGKILL after the timeout."""
        self._signal_and_wait(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved."""
        self._signal_and_wait(signal.SIGKILL, 10)

    def restart(self) -> None:
        """Graceful stop, then start again with the same port and data."""
        self.stop()
        self.start()


class MosquittoProcess(ManagedProcess):
    """Mosquitto with password auth, the generated ACL, persistence and the limits above.

    cfg: the loaded config the ACL is generated from (default: the shipped one). Started as root, the broker
    runs as Debian's `mosquitto` user; its own files then live in `broker_dir`, which is `directory` when
    that user can reach it and otherwise a directory under the system temp dir (remove_broker_dir()).
    """

    name = "mosquitto"

    def __init__(self, directory: Path, port: int, creds: Credentials, persistence: bool = True, cfg=None):
        super().__init__(directory)
        self.host = "127.0.0.1"
        self.port = port
        self.credentials = creds
        self.owner = broker_owner()
        self.directory.mkdir(parents=True, exist_ok=True)  # a first `stack.sh up`: .stack/mosquitto is new
        self.broker_dir = broker_dir_for(self.directory, self.owner)
        if self.broker_dir != self.directory and not (self.directory / "mosquitto.conf").exists():
            # A new server: never start from the persistence of an earlier one that had the same path.
            shutil.rmtree(self.broker_dir, ignore_errors=True)
        self.conf = write_mosquitto_files(self.directory, port, creds, persistence, cfg, self.owner, self.broker_dir)

    def command(self) -> list[str]:
        return [mosquitto_binary(), "-c", str(self.conf)]

    def ready(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def tail_log(self, lines: int = 30) -> str:
        text = super().tail_log(lines)
        log = self.broker_dir / "mosquitto.log"
        if self.broker_dir != self.directory and log.exists():
            text += "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) + "\n"
        return text

    def remove_broker_dir(self) -> None:
        """Delete a broker_dir kept outside `directory` (call after stop or kill; the data is gone)."""
        if self.broker_dir != self.directory and not self.running():
            shutil.rmtree(self.broker_dir, ignore_errors=True)


INFLUX_ADMIN_USER = "admin"
INFLUX_USER = "citywatch"


def create_private_file(path: Path, text: str) -> None:
    """Create `path` with mode 0600 from its first byte (O_EXCL: never an existing file or a symlink's target).

    Raises FileExistsError when the path exists.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


@dataclass
class InfluxAccounts:
    """InfluxDB accounts: `admin` (all privileges: creates users and databases) and `user` (the citywatch
    account: read and write of its own database only), each (user name, password).

    Kept in `influx_credentials.json` beside the server's data, apart from the broker's Credentials: the
    passwords must outlive a restart, since the users live in the server's meta store.
    """

    admin: tuple[str, str]
    user: tuple[str, str]

    @staticmethod
    def load_or_create(path: Path) -> InfluxAccounts:
        """Read the accounts from `path`, or generate them and write it (mode 0600 from the first byte)."""
        path = Path(path)
        try:
            data = json.loads(path.read_text())
            return InfluxAccounts(tuple(data["admin"]), tuple(data["user"]))
        except FileNotFoundError:
            pass
        accounts = InfluxAccounts((INFLUX_ADMIN_USER, secrets.token_urlsafe(18)),
                                  (INFLUX_USER, secrets.token_urlsafe(18)))
        path.parent.mkdir(parents=True, exist_ok=True)
        create_private_file(path, json.dumps({"admin": list(accounts.admin), "user": list(accounts.user)}, indent=1))
        return accounts


class InfluxProcess(ManagedProcess):
    """InfluxDB 1.x with authentication on: an admin account and the citywatch account, which may read and
    write `database` only (GRANT ALL ON it; not admin: no users, no other database, no DROP DATABASE).

    `query`, `write` and `count` run as the citywatch account, as the service does; `query(as_admin=True)`
    and `create_database` use the admin account (CREATE DATABASE and GRANT need it).
    """

    name = "influxd"

    def __init__(self, directory: Path, port: int, rpc_port: int, database: str = "citywatch"):
        super().__init__(directory)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.database = database
        self.credentials_path = self.directory / "influx_credentials.json"
        self.accounts = InfluxAccounts.load_or_create(self.credentials_path)
        self.username, self.password = self.accounts.user
        self.conf = write_influx_conf(self.directory, port, rpc_port)

    def command(self) -> list[str]:
        return [influxd_binary(), "-config", str(self.conf)]

    def ready(self) -> bool:
        # /ping needs no credentials in InfluxDB 1.x.
        try:
            with urllib.request.urlopen(self.url + "/ping", timeout=1) as resp:
                return resp.status == 204
        except (OSError, urllib.error.URLError):
            return False

    def start(self, timeout_s: float = 60.0) -> None:
        super().start(timeout_s)
        self.ensure_accounts()

    def env(self) -> dict[str, str]:
        """The CITYWATCH_INFLUX_* variables that point `citywatch` at this server as the citywatch account."""
        return {"CITYWATCH_INFLUX_URL": self.url, "CITYWATCH_INFLUX_DATABASE": self.database,
                "CITYWATCH_INFLUX_USERNAME": self.username, "CITYWATCH_INFLUX_PASSWORD": self.password}

    def ensure_accounts(self) -> None:
        """Create the admin user (the first start), the database and the citywatch user with its grant.

        Idempotent: on a server that has them, passwords are set again from the credentials file.
        Raises RuntimeError when the server's admin password is not the file's (a lost or replaced file).
        """
        status, body = self.request("/query", {"q": "SHOW USERS"}, auth="admin")
        if status == 403 and "create admin user first" in body.get("error", ""):
            # InfluxDB accepts exactly this statement without credentials while it has no user at all.
            admin, pw = self.accounts.admin
            q = f"CREATE USER \"{admin}\" WITH PASSWORD '{pw}' WITH ALL PRIVILEGES"
            # In the POST body: a password in a URL would reach logs.
            status, body = self.request("/query", {}, data=urllib.parse.urlencode({"q": q}).encode(), auth=None)
            _check(status, body, "CREATE USER admin")
            status, body = self.request("/query", {"q": "SHOW USERS"}, auth="admin")
        if status == 401:
            raise RuntimeError(f"influxd in {self.directory} refuses the admin password of {self.credentials_path}: "
                               f"restore that file, or delete {self.directory / 'meta'} to start over without users")
        _check(status, body, "SHOW USERS")
        users = {row[0] for s in body["results"][0].get("series", []) for row in s.get("values", [])}
        admin, pw = self.accounts.admin
        if admin not in users:
            # Only a server running with authentication off gets here (its users were made without it).
            self.query(f"CREATE USER \"{admin}\" WITH PASSWORD '{pw}' WITH ALL PRIVILEGES", method="POST", as_admin=True)
        user, pw = self.accounts.user
        if user in users:
            self.query(f"SET PASSWORD FOR \"{user}\" = '{pw}'", method="POST", as_admin=True)
        else:
            self.query(f"CREATE USER \"{user}\" WITH PASSWORD '{pw}'", method="POST", as_admin=True)
        self.create_database(self.database)

    def create_database(self, name: str) -> None:
        """CREATE DATABASE (as admin) and grant the citywatch account read and write on it."""
        self.query(f'CREATE DATABASE "{name}"', method="POST", as_admin=True)
        self.query(f'GRANT ALL ON "{name}" TO "{self.username}"', method="POST", as_admin=True)

    def request(self, path: str, params: dict, data: bytes | None = None,
                auth: str | tuple[str, str] | None = "user") -> tuple[int, dict]:
        """One HTTP request (POST when `data` is given); return (status, JSON body or {}); never raises on an
        HTTP status. auth: "user" (the citywatch account), "admin", a (name, password) pair, or None (none)."""
        from config.connections import basic_auth

        who = {"user": self.accounts.user, "admin": self.accounts.admin}.get(auth) if isinstance(auth, str) else auth
        url = f"{self.url}{path}?{urllib.parse.urlencode(params)}"
        req = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET",
                                     headers=basic_auth(who))
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            status, raw = exc.code, exc.read()
        try:
            return status, json.loads(raw) if raw.strip() else {}
        except ValueError:
            return status, {"error": raw.decode("utf-8", "replace")[:500]}

    def query(self, q: str, db: str | None = None, method: str = "GET", as_admin: bool = False) -> list[dict]:
        """Run InfluxQL through the v1 HTTP API as the citywatch account (the admin with `as_admin`);
        return the `results` list. Raises RuntimeError on an HTTP error or an error result."""
        params = {"q": q, "epoch": "ns"}
        if db or self.database:
            params["db"] = db or self.database
        auth = "admin" if as_admin else "user"
        if method == "GET":
            status, body = self.request("/query", params, auth=auth)
        else:
            data = urllib.parse.urlencode(params).encode()
            status, body = self.request("/query", {}, data=data, auth=auth)
        _check(status, body, q)
        return body.get("results", [])

    def count(self, measurement: str, field: str | None = None, where: str = "") -> int:
        """Number of points in `measurement` (count of `field`, default its first field)."""
        if field is None:
            keys = self.query(f'SHOW FIELD KEYS FROM "{measurement}"')
            series = keys[0].get("series") if keys else None
            if not series:
                return 0
            field = series[0]["values"][0][0]
        clause = f" WHERE {where}" if where else ""
        res = self.query(f'SELECT count("{field}") FROM "{measurement}"{clause}')
        series = res[0].get("series") if res else None
        return int(series[0]["values"][0][1]) if series else 0

    def write(self, lines: str | bytes, precision: str = "ns", db: str | None = None) -> None:
        """Write line protocol as the citywatch account. Raises RuntimeError unless InfluxDB answers 204."""
        data = lines.encode() if isinstance(lines, str) else lines
        status, body = self.request("/write", {"db": db or self.database, "precision": precision}, data=data)
        if status != 204:
            raise RuntimeError(f"write failed: HTTP {status}: {body.get('error', '')}")


def _check(status: int, body: dict, what: str) -> None:
    """Raise RuntimeError for an HTTP error or an error result of InfluxQL `what` (passwords redacted)."""
    if "PASSWORD" in what.upper():
        what = re.sub(r"(?i)(PASSWORD\s*'|=\s*')[^']*'", r"\1[REDACTED]'", what)
    if status >= 300 or "error" in body:
        raise RuntimeError(f"InfluxQL error for {what!r}: HTTP {status}: {body.get('error', '')}")
    for result in body.get("results", []):
        if "error" in result:
            raise RuntimeError(f"InfluxQL error for {what!r}: {result['error']}")


# ----- the developer stack under .stack/ (scripts/stack.sh) ----------------------------------------


def _stack_paths(stack_dir: Path) -> dict:
    return {"mqtt": stack_dir / "mosquitto", "influx": stack_dir / "influxdb", "creds": stack_dir / "credentials.json",
            "env": stack_dir / "env", "ports": stack_dir / "ports.json"}


def stack_up(stack_dir: Path, config_dir: Path | None, mqtt_port: int, influx_port: int) -> None:
    """Start the local stack (idempotent): credentials kept across runs, servers started if not running."""
    from config import load_config

    paths = _stack_paths(stack_dir)
    stack_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(config_dir)
    operators = [op.username for op in cfg.alerting.operators]
    if paths["creds"].exists():
        creds = Credentials.load(paths["creds"])
        creds.add_missing(cfg.device_ids, operators)
    else:
        creds = Credentials.generate(cfg.device_ids, operators)
    creds.save(paths["creds"])
    # The password file and the ACL are written again from the config on every `up`.
    mqtt = MosquittoProcess(paths["mqtt"], mqtt_port, creds, cfg=cfg)
    influx = InfluxProcess(paths["influx"], influx_port, influx_port + 2, database=cfg.connections.influx.database or "citywatch")
    for proc, port in ((mqtt, mqtt_port), (influx, influx_port)):
        if proc.running():
            print(f"{proc.name}: already running (pid {proc.pid})")
            if proc is mqtt and proc.pid is not None:  # running() found its pid
                # SIGHUP makes Mosquitto re-read its password file and ACL (new devices, operators).
                os.kill(proc.pid, signal.SIGHUP)
                print(f"{proc.name}: accounts and ACL reloaded")
            if proc is influx:
                influx.ensure_accounts()
                _create_stack_databases(influx)
                if influx.request("/query", {"q": "SHOW DATABASES"}, auth=None)[0] == 200:
                    print("influxd: WARNING: it runs with authentication off (started before it was turned on); "
                          "run scripts/stack.sh down, then up")
            continue
        if _port_busy(port):
            raise SystemExit(f"{proc.name}: port {port} on 127.0.0.1 is taken by another process; "
                             f"set CITYWATCH_MQTT_PORT / CITYWATCH_INFLUX_PORT to a free port")
        proc.start()
        if proc is influx:
            _create_stack_databases(influx)
        print(f"{proc.name}: started (pid {proc.pid}, 127.0.0.1:{port})")
    user, pw = creds.collector
    write_private_file(
        paths["env"],
        f"export CITYWATCH_MQTT_HOST=127.0.0.1\nexport CITYWATCH_MQTT_PORT={mqtt_port}\n"
        f"export CITYWATCH_MQTT_USERNAME={user}\nexport CITYWATCH_MQTT_PASSWORD={pw}\n"
        f"export CITYWATCH_INFLUX_URL=http://127.0.0.1:{influx_port}\n"
        f"export CITYWATCH_INFLUX_USERNAME={influx.username}\nexport CITYWATCH_INFLUX_PASSWORD={influx.password}\n"
        f"export CITYWATCH_CREDENTIALS={paths['creds'].resolve()}\n"
        + (f"export CITYWATCH_CONSOLE_MQTT_PASSWORD={creds.console[1]}\n" if creds.console else ""),
    )
    paths["ports"].write_text(json.dumps({"mqtt": mqtt_port, "influx": influx_port}))
    print(f"environment for citywatch: source {paths['env']}")


def _create_stack_databases(influx: InfluxProcess) -> None:
    """The demo's own database beside the service's (the citywatch account may not create databases)."""
    from citywatch.demo import DEMO_DATABASE

    influx.create_database(DEMO_DATABASE)


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        # As the servers bind (both set SO_REUSEADDR): connections of a just-stopped server in TIME_WAIT
        # do not make the port busy, a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return False
        except OSError:
            return True


def _stack_procs(stack_dir: Path) -> list[ManagedProcess]:
    paths = _stack_paths(stack_dir)
    procs = []
    for name, directory in (("mosquitto", paths["mqtt"]), ("influxd", paths["influx"])):
        proc = ManagedProcess(directory)
        proc.name = name
        proc.pid_file = directory / f"{name}.pid"
        procs.append(proc)
    return procs


def stack_down(stack_dir: Path) -> None:
    for proc in _stack_procs(stack_dir):
        if proc.running():
            pid = proc.pid
            proc.stop()
            print(f"{proc.name}: stopped (pid {pid})")
        else:
            proc.pid_file.unlink(missing_ok=True)
            print(f"{proc.name}: not running")


def stack_status(stack_dir: Path) -> int:
    ports = {}
    if _stack_paths(stack_dir)["ports"].exists():
        ports = json.loads(_stack_paths(stack_dir)["ports"].read_text())
    down = 0
    for proc, key in zip(_stack_procs(stack_dir), ("mqtt", "influx")):
        if proc.running():
            print(f"{proc.name}: running (pid {proc.pid}, 127.0.0.1:{ports.get(key, '?')})")
        else:
            print(f"{proc.name}: not running")
            down += 1
    return 1 if down else 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m citywatch.localstack", description="Local Mosquitto + InfluxDB stack")
    parser.add_argument("action", choices=["up", "down", "status"])
    parser.add_argument("--dir", default=".stack", help="stack directory (default .stack)")
    parser.add_argument("--config", default=None, help="config directory (default: the shipped config/)")
    parser.add_argument("--mqtt-port", type=int, default=int(os.environ.get("CITYWATCH_MQTT_PORT", 1883)))
    parser.add_argument("--influx-port", type=int, default=int(os.environ.get("CITYWATCH_INFLUX_PORT", 8086)))
    args = parser.parse_args(argv)
    stack_dir = Path(args.dir)
    if args.action == "up":
        stack_up(stack_dir, Path(args.config) if args.config else None, args.mqtt_port, args.influx_port)
        return 0
    if args.action == "down":
        stack_down(stack_dir)
        return 0
    return stack_status(stack_dir)


if __name__ == "__main__":
    raise SystemExit(main())
