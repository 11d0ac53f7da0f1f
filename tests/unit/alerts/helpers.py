"""Test helpers for the alert engine: a config with chosen alerting/rules, detections, a recording sink."""

from __future__ import annotations

import threading

import numpy as np

from alerts.commands import Author
from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.model import Notice
from alerts.sinks.base import SinkError
from alerts.store import AlertStore
from config import load_config
from config.alerting import Alerting
from config.rules import RuleSpec
from core import Detections
from core.severity import SEVERITY_CODES

S = 1_000_000_000
T0 = 1_748_788_200 * S  # 2025-06-01T14:30:00Z

_BASE = None
# The operator accounts of the test configs (username -> display name); AUTHORS[username] for submit_command.
OPERATORS = {"li": "Li Wei", "chen": "Section chief Chen"}
AUTHORS = {u: Author(u, n) for u, n in OPERATORS.items()}


def base_cfg():
    global _BASE
    if _BASE is None:
        _BASE = load_config(None, env={})
    return _BASE


def make_cfg(alerting: dict | None = None, rules: list[dict] | None = None):
    """The shipped config with `alerting` replaced (default: one `rec` sink, no grouping delay)."""
    a = {"sinks": {"rec": {"type": "terminal"}}, "route": {"receivers": ["rec"], "group_interval_s": 0},
         "operators": [{"username": u, "name": n} for u, n in OPERATORS.items()]}
    a.update(alerting or {})
    rules = rules if rules is not None else [{"id": "N-day", "type": "noise_day_limit", "kind": "noise"}]
    cfg = base_cfg()
    return cfg.model_copy(update={"alerting": Alerting.model_validate(a),
                                  "rules": [RuleSpec.model_validate(r) for r in rules]})


class RecordingSink:
    """Keeps every notice it is sent; `fail_next` makes the next sends raise SinkError."""

    def __init__(self):
        self.notices: list[Notice] = []
        self.lock = threading.Lock()
        self.fail = 0
        self.retryable = True

    def send(self, notice: Notice) -> None:
        with self.lock:
            if self.fail:
                self.fail -= 1
                raise SinkError("down", self.retryable)
            self.notices.append(notice)

    def close(self):
        pass

    def kinds(self) -> list[tuple[str, str]]:
        return [(n.alert_id.split(".")[0], n.transition) for n in self.notices]

    def transitions(self) -> list[str]:
        return [n.transition for n in self.notices]


def det(rows: list[tuple]) -> Detections:
    """rows: (sensor, t_seconds_after_T0, rule_id, severity name, value[, limit[, category]])."""
    sensor = np.array([r[0] for r in rows], np.int32)
    ts = np.array([T0 + int(r[1] * S) for r in rows], np.int64)
    rule = np.array([r[2] for r in rows], object)
    sev = np.array([SEVERITY_CODES[r[3]] for r in rows], np.int8)
    value = np.array([r[4] if len(r) > 4 else np.nan for r in rows], float)
    limit = np.array([r[5] if len(r) > 5 else 70.0 for r in rows], float)
    cat = np.array([r[6] if len(r) > 6 else "noise" for r in rows], object)
    return Detections(sensor, ts, rule, cat, sev, value, limit, np.full(len(rows), np.nan),
                      [{"metric": "leq", "unit": "dB(A)"} for _ in rows])


def make_engine(tmp_path, cfg=None, sink=None, store=None, clock=None, rate_per_s: float | None = None):
    """An engine on `sink` for every sink of `cfg`; rate_per_s: each sink's send rate limit (None: the
    dispatcher's default)."""
    cfg = cfg or make_cfg()
    sink = sink or RecordingSink()
    store = store or AlertStore(tmp_path / "alerts.sqlite")
    sinks = {name: sink for name in cfg.alerting.sinks}
    rates = {name: rate_per_s for name in sinks} if rate_per_s is not None else None
    engine = AlertEngine(cfg, store, sinks, clock=clock, dispatcher=Dispatcher(sinks, store, 0.01, 0.05, rates=rates))
    return engine, sink


def at(t_seconds: float) -> int:
    return T0 + int(t_seconds * S)


# ----- for the integration tests (real Mosquitto) -----------------------------------------------------

def write_config(directory, alerts_yaml: str, rules_yaml: str | None = None):
    """A copy of the shipped config directory with alerts.yaml (and rules.yaml) replaced."""
    import shutil
    from pathlib import Path

    from config.loader import DEFAULT_CONFIG_DIR

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for p in Path(DEFAULT_CONFIG_DIR).glob("*.yaml"):
        shutil.copy(p, directory / p.name)
    (directory / "alerts.yaml").write_text(alerts_yaml)
    if rules_yaml is not None:
        (directory / "rules.yaml").write_text(rules_yaml)
    return directory


def mqtt_env(mosquitto, who: str = "collector") -> dict[str, str]:
    user, pw = getattr(mosquitto.credentials, who)
    return {"CITYWATCH_MQTT_HOST": mosquitto.host, "CITYWATCH_MQTT_PORT": str(mosquitto.port),
            "CITYWATCH_MQTT_USERNAME": user, "CITYWATCH_MQTT_PASSWORD": pw}


class Subscriber:
    """A paho client that records every message on its topics: (topic, payload bytes, retain)."""

    def __init__(self, mosquitto, topics: list[str], who: str = "tester", client_id: str | None = None):
        import time

        import paho.mqtt.client as mqtt

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.RLock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id or f"sub-{time.monotonic_ns()}",
                                  protocol=mqtt.MQTTv311)
        self.client.username_pw_set(**mosquitto.client_args(who))
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p=None: c.subscribe([(t, 1) for t in topics])
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect(mosquitto.host, mosquitto.port)
        self.client.loop_start()
        assert self.subscribed.wait(10), "subscription not acknowledged"

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))

    def wait_for(self, predicate, timeout_s: float = 10.0) -> bool:
        import time

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self.lock:
                if predicate(list(self.messages)):
                    return True
            time.sleep(0.02)
        return False

    def notices(self, prefix: str = "city/xm/alerts") -> list[dict]:
        import json

        with self.lock:
            return [json.loads(p) for t, p, _ in self.messages
                    if t.startswith(prefix + "/") and "/active/" not in t and "/cmd" not in t
                    and "/replies" not in t]

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


def publish(mosquitto, topic: str, payload: bytes, who: str = "tester", retain: bool = False) -> None:
    import paho.mqtt.publish as pub

    pub.single(topic, payload, qos=1, retain=retain, hostname=mosquitto.host, port=mosquitto.port,
               auth=mosquitto.client_args(who), client_id=f"pub-{threading.get_ident()}")


class NoScheduler:
    """A scheduler stand-in for pipelines whose jobs a test runs by hand (tick, save): takes jobs, runs none."""

    def add_job(self, *a, **k):
        pass
