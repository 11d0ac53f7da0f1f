"""A webhook receiver that is down for a while gets every notice afterwards, each once by idempotency key,
signed with a timestamped HMAC-SHA256 that the receiver checks with `verify_signature`. "A minute" down is
compressed by the retry settings, not by sleeping."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.sinks import build_sinks, sink_rates
from alerts.sinks.webhook import SignatureError, verify_signature
from alerts.store import AlertStore
from citywatch.localstack import free_port
from tests.unit.alerts.helpers import det, make_cfg

pytestmark = pytest.mark.integration

SECRET = "s3cret-for-tests"



class Receiver:
    """An HTTP receiver that dedups by Idempotency-Key; `fail_first` answers 503 after recording."""

    def __init__(self, port: int, fail_first: int = 0):
        self.raw: list[dict] = []
        self.by_key: dict[str, dict] = {}
        self.bad_signatures = 0
        self.signature_times: list[int] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                header = self.headers.get("X-Citywatch-Signature")
                try:
                    verify_signature(header, body, SECRET)
                    outer.signature_times.append(int(header.split("t=")[1].split(",")[0]))
                except SignatureError:
                    outer.bad_signatures += 1
                notice = json.loads(body)
                outer.raw.append(notice)
                outer.by_key.setdefault(self.headers["Idempotency-Key"], notice)  # a redelivery is dropped
                if outer.fail_first > 0:
                    outer.fail_first -= 1  # processed, but the answer is lost: the sender must retry
                    self.send_response(503)
                else:
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def test_receiver_down_then_up_gets_every_notice_once(tmp_path):
    port = free_port()
    cfg = make_cfg({"sinks": {"hook": {"type": "webhook", "url": f"http://127.0.0.1:{port}/alerts",
                                       "secret_env": "HOOK_SECRET", "timeout_s": 2}},
                    "route": {"receivers": ["hook"], "group_interval_s": 0},
                    "retry": {"initial_s": 0.05, "max_s": 0.2}},
                   [{"id": "N-day", "type": "noise_day_limit"}])
    sinks = build_sinks(cfg, {"HOOK_SECRET": SECRET})
    store = AlertStore(tmp_path / "alerts.sqlite")
    engine = AlertEngine(cfg, store, sinks, dispatcher=Dispatcher(sinks, store, 0.05, 0.2, sink_rates(cfg)))
    # the receiver is down while alerts fire, change and resolve
    engine.process(det([(0, 0, "N-day", "yellow", 72), (1, 0, "N-day", "red", 90)]))
    engine.process(det([(0, 60, "N-day", "orange", 76), (1, 60, "N-day", "clear", 60)]))
    engine.process(det([(0, 120, "N-day", "clear", 60)]))
    expected = {f"{n.key}" for n, _ in sum((store.notices(a) for a in _alert_ids(store)), [])}
    assert len(expected) == 5
    deadline = time.monotonic() + 10
    while engine.dispatcher.counters[("retries", "hook")] < 5 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert engine.dispatcher.counters[("retries", "hook")] >= 5  # it kept trying while down
    assert store.delivery_counts() == {"pending": 5}

    receiver = Receiver(port, fail_first=1)
    try:
        assert engine.flush(20)
        assert set(receiver.by_key) == expected
        assert len(receiver.raw) == 6  # one redelivery after the lost answer, dropped by its key
        assert receiver.bad_signatures == 0 and len(receiver.signature_times) == 6
        # Each attempt is signed when it is sent: the redelivery after the lost answer is not older.
        assert receiver.signature_times == sorted(receiver.signature_times)
        order = [n["transition"] for n in receiver.by_key.values()]
        assert order.count("firing") == 2 and order.count("resolved") == 2
        # per alert, in transition order
        for alert_id in {n["alert_id"] for n in receiver.raw}:
            seqs = [n["seq"] for n in receiver.by_key.values() if n["alert_id"] == alert_id]
            assert seqs == sorted(seqs)
        assert store.delivery_counts() == {"sent": 5}
    finally:
        engine.stop()
        receiver.stop()


def _alert_ids(store):
    return [a.alert_id for a in store.alerts()]
