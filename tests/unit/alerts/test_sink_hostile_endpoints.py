"""Sinks against endpoints that misbehave (the sink audit, /tmp/audit_sinks): a redirect is refused, never
followed; a huge answer is refused after 64 KiB; an SMS number refused does not stop the others; a team
notice that reached someone is delivered, one that can reach nobody fails; a retrying delivery shows its
error in the store; the dispatcher's dedup memory stays bounded."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import alerts.dispatch as dispatch
from alerts.dispatch import Dispatcher
from alerts.model import Notice
from alerts.notice_text import Renderer
from alerts.roster import recipients
from alerts.sinks.base import SinkError
from alerts.sinks.channels import SAMPLE_PAYLOAD
from alerts.sinks.influx import InfluxSink
from alerts.sinks.robot_http import MAX_ANSWER_BYTES, post_json
from alerts.sinks.sms import SmsSink
from alerts.sinks.team import TeamSink
from alerts.sinks.webhook import WebhookSink
from alerts.sinks.wecom import WecomSink
from alerts.store import AlertStore
from config.channels import SmsSink as SmsSpec
from config.oncall import OnCall, Person


class Endpoint:
    """A threaded HTTP server on 127.0.0.1 answering each request with `behave(handler, body)`; `log` keeps
    (method, path, body) of every request."""

    def __init__(self, behave: Callable[[BaseHTTPRequestHandler, bytes], None]) -> None:
        self.log: list[tuple[str, str, bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                outer.log.append((self.command, self.path, body))
                try:
                    behave(self, body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            do_GET = do_POST = do_PUT = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # A short poll interval: `stop` (shutdown) waits for the serving loop to look.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def reply(h: BaseHTTPRequestHandler, code: int = 200, body: bytes = b'{"errcode":0,"errmsg":"ok"}',
          headers: tuple[tuple[str, str], ...] = ()) -> None:
    h.send_response(code)
    for k, v in headers:
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


@pytest.fixture
def endpoints() -> Iterator[Callable[[Callable[[BaseHTTPRequestHandler, bytes], None]], Endpoint]]:
    started: list[Endpoint] = []

    def start(behave: Callable[[BaseHTTPRequestHandler, bytes], None]) -> Endpoint:
        started.append(Endpoint(behave))
        return started[-1]

    yield start
    for e in started:
        e.stop()


NOTICE = Notice("R.1:1", "R.1", 1, "firing", 1_780_000_000 * 10**9,
                {**SAMPLE_PAYLOAD, "alert_id": "R.1", "seq": 1, "severity": "red", "escalation_level": 0})


def _notice(alert: str, seq: int, severity: str, level: int = 0) -> Notice:
    return Notice(f"{alert}:{seq}", alert, seq, "firing", 1_780_000_000 * 10**9,
                  {**SAMPLE_PAYLOAD, "alert_id": alert, "seq": seq, "severity": severity, "escalation_level": level})


# ----- 1. redirects -------------------------------------------------------------------------------------

SINKS: dict[str, Callable[[str], Callable[[], object]]] = {
    "webhook": lambda url: lambda: WebhookSink(url, b"sec", 2.0).send(NOTICE),
    "wecom": lambda url: lambda: WecomSink(url, "ROBOTKEY", Renderer("wecom"), 2.0, "w").send(NOTICE),
    "influx": lambda url: lambda: InfluxSink(url, "citywatch", timeout_s=2.0).send(NOTICE),
}


@pytest.mark.parametrize("code", [301, 302, 303, 307, 308])
@pytest.mark.parametrize("kind", sorted(SINKS))
def test_a_redirect_is_refused_for_good_naming_its_location_and_the_other_host_gets_nothing(endpoints, kind, code):
    other = endpoints(lambda h, body: reply(h))
    origin = endpoints(lambda h, body: reply(h, code, b"", (("Location", other.url("/landed?" + h.path)),)))
    with pytest.raises(SinkError) as info:
        SINKS[kind](origin.url("/r"))()
    assert not info.value.retryable
    assert f"HTTP {code} redirect to {other.url('/landed')}, not followed" in str(info.value)
    assert "ROBOTKEY" not in str(info.value)  # the Location's query may echo the robot's key
    assert len(origin.log) == 1 and other.log == []


def test_a_redirect_loop_is_one_request(endpoints):
    loop = endpoints(lambda h, body: reply(h, 302, b"", (("Location", "/loop"),)))
    with pytest.raises(SinkError, match="HTTP 302 redirect to /loop, not followed") as info:
        post_json(loop.url("/loop"), b"{}", 2.0, "wecom sink w")
    assert not info.value.retryable and len(loop.log) == 1


# ----- 2. huge answers ----------------------------------------------------------------------------------

def test_an_answer_over_64_kib_is_refused_and_not_read_whole(endpoints):
    declared = 64 << 20
    written = [0]

    def huge(h: BaseHTTPRequestHandler, body: bytes) -> None:
        h.send_response(200)
        h.send_header("Content-Length", str(declared))
        h.end_headers()
        chunk = b"x" * (1 << 20)
        for _ in range(declared // len(chunk)):
            h.wfile.write(chunk)
            written[0] += len(chunk)

    e = endpoints(huge)
    for send in (lambda: post_json(e.url("/"), b"{}", 5.0, "wecom sink w"),
                 lambda: WebhookSink(e.url("/"), None, 5.0).send(NOTICE)):
        with pytest.raises(SinkError, match="the answer is larger than 64 KiB") as info:
            send()
        assert not info.value.retryable
    # The sender hung up after 64 KiB: the server could not push the 64 MiB it declared (socket buffers
    # take a few MiB at most).
    deadline = time.monotonic() + 5
    while len(e.log) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert written[0] < 2 * declared // 4


def test_an_answer_of_exactly_64_kib_is_read(endpoints):
    e = endpoints(lambda h, body: reply(h, 200, json.dumps({"errcode": 0, "pad": "x" * (MAX_ANSWER_BYTES - 26)})
                                        .encode()))
    assert post_json(e.url("/"), b"{}", 2.0, "wecom sink w")["errcode"] == 0


# ----- 3. SMS to several numbers ------------------------------------------------------------------------

def _sms(url: str, to: list[str]) -> SmsSink:
    return SmsSink(SmsSpec.model_validate({"type": "sms", "url": url, "to": to}), Renderer("sms"), None)


def _gateway(refused: set[str]) -> Callable[[BaseHTTPRequestHandler, bytes], None]:
    def gw(h: BaseHTTPRequestHandler, body: bytes) -> None:
        to = json.loads(body)["to"]
        reply(h, 200, json.dumps({"code": "E_NUMBER" if to in refused else "0"}).encode())
    return gw


def test_sms_a_refused_number_does_not_stop_the_others_and_is_named(endpoints):
    e = endpoints(_gateway({"10000"}))
    note = _sms(e.url("/sms"), ["10000", "13900000001", "13900000002"]).send(NOTICE)
    assert [json.loads(b)["to"] for _, _, b in e.log] == ["10000", "13900000001", "13900000002"]
    assert note.startswith("sms:13900000001,13900000002; not reached: 10000 (sms sink sms: not accepted: code=")


def test_sms_fails_only_when_every_number_fails(endpoints):
    e = endpoints(_gateway({"10000", "10001"}))
    with pytest.raises(SinkError) as info:
        _sms(e.url("/sms"), ["10000", "10001"]).send(NOTICE)
    assert not info.value.retryable
    assert str(info.value).startswith("10000: sms sink sms: not accepted") and "; 10001: " in str(info.value)
    assert len(e.log) == 2


# ----- 4. team receivers --------------------------------------------------------------------------------

class Channel:
    """A channel sink that reaches people: records (notice key, person id), or raises `error` every time."""

    def __init__(self, kind: str, error: SinkError | None = None) -> None:
        self.kind = kind
        self.error = error
        self.sent: list[tuple[str, str]] = []

    def send(self, notice: Notice, person: Person | None = None) -> str:
        if self.error is not None:
            raise self.error
        assert person is not None
        self.sent.append((notice.key, person.id))
        return f"{self.kind}:{person.name}"

    def close(self) -> None:
        pass


def _shifts(person: str) -> list[dict]:
    """`person` on duty all day, every day."""
    return [{"window": {"start": "00:00", "end": "12:00"}, "people": [person]},
            {"window": {"start": "12:00", "end": "24:00"}, "people": [person]}]


def _oncall(levels: list[str], chief: list[str]) -> OnCall:
    return OnCall.model_validate({
        "people": [{"id": "lin", "name": "Lin", "channels": {"email": "lin@ops.example", "sms": "13900000001"}},
                   {"id": "huang", "name": "Huang", "channels": {"dingtalk": "13900000002"}},
                   {"id": "chen", "name": "Chen", "channels": {"email": "chen@ops.example"}},
                   {"id": "zhang", "name": "Zhang", "channels": {"email": "zhang@ops.example"}}],
        "teams": [{"id": "gas", "name": "gas", "sinks": {"email": "mail", "sms": "sms"},
                   "levels": [{"shifts": _shifts(p)} for p in levels]}],
        "duty_chief": chief,
    })


def test_team_a_person_reached_on_one_channel_is_delivered_naming_the_channel_that_failed():
    email, sms = Channel("email"), Channel("sms", SinkError("sms sink sms: HTTP 503", True))
    team = TeamSink(_oncall(["lin"], ["zhang"]), "gas", {"email": email, "sms": sms})
    note = team.send(NOTICE)
    assert note == "team gas level 0: Lin (email); not reached: Lin (sms): sms sink sms: HTTP 503"
    assert email.sent == [(NOTICE.key, "lin")]


def test_team_one_channel_down_does_not_hold_the_teams_queue():
    email, sms = Channel("email"), Channel("sms", SinkError("sms sink sms: HTTP 503", True))
    team = TeamSink(_oncall(["lin"], ["zhang"]), "gas", {"email": email, "sms": sms})
    d = Dispatcher({"team:gas": team}, None, 0.05, 0.2, rates={"team:gas": 1e6})
    try:
        d.submit(_notice("Y", 1, "yellow"), "team:gas")
        d.submit(_notice("R", 1, "red"), "team:gas")
        assert d.flush(3)
        assert sorted(k for k, _ in email.sent) == ["R:1", "Y:1"]
        assert d.counters[("sent", "team:gas")] == 2
    finally:
        d.stop(1)


def test_team_a_notice_that_reached_nobody_is_retried_while_a_failure_may_pass():
    down = SinkError("down", True)
    team = TeamSink(_oncall(["lin"], []), "gas", {"email": Channel("email", down), "sms": Channel("sms", down)})
    with pytest.raises(SinkError) as info:
        team.send(NOTICE)
    assert info.value.retryable and str(info.value) == "team gas level 0: Lin (email): down; Lin (sms): down"


def test_team_a_person_on_duty_without_the_teams_channels_counts_as_nobody_on_duty():
    email = Channel("email")
    # huang (level 0) has only DingTalk, the team sends by email: level 1 (chen) gets it.
    team = TeamSink(_oncall(["huang", "chen"], ["zhang"]), "gas", {"email": email})
    assert team.send(NOTICE) == "team gas level 1: Chen (email)"
    # No level reachable: the duty chief.
    team = TeamSink(_oncall(["huang"], ["zhang"]), "gas", {"email": email})
    assert team.send(NOTICE) == "team gas duty chief: Zhang (email)"
    assert email.sent == [(NOTICE.key, "chen"), (NOTICE.key, "zhang")]


def test_team_that_can_reach_nobody_fails_and_is_never_sent():
    email = Channel("email")
    team = TeamSink(_oncall(["huang"], ["huang"]), "gas", {"email": email})
    with pytest.raises(SinkError) as info:
        team.send(NOTICE)
    assert not info.value.retryable
    assert str(info.value) == ("team gas: nobody on duty from level 0 up, nor the duty chief, has a channel of "
                               "the team (email): not sent")
    assert email.sent == []


def test_recipients_leave_out_the_unreachable_and_pass_the_level_on():
    oncall = _oncall(["huang", "chen"], ["zhang"])
    at = dt.datetime(2026, 12, 7, 3, 0, tzinfo=dt.UTC)
    has_email = lambda p: p.channels.email is not None  # noqa: E731
    assert [p.id for p in recipients(oncall, "gas", 0, at)[1]] == ["huang"]  # by default everyone
    where, people = recipients(oncall, "gas", 0, at, has_email)
    assert (where, [p.id for p in people]) == ("level 1", ["chen"])
    where, people = recipients(_oncall(["huang"], ["huang", "zhang"]), "gas", 0, at, has_email)
    assert (where, [p.id for p in people]) == ("duty chief", ["zhang"])


# ----- 5. a retrying delivery shows its error -----------------------------------------------------------

class Down:
    def __init__(self) -> None:
        self.attempts = 0

    def send(self, notice: Notice) -> None:
        self.attempts += 1
        raise SinkError(f"webhook: HTTP 503 (attempt {self.attempts})", True)

    def close(self) -> None:
        pass


def test_a_retrying_delivery_is_recorded_pending_with_its_error(tmp_path):
    store = AlertStore(tmp_path / "a.sqlite")
    store.commit([], [(NOTICE, [("hook", 0)])])
    sink = Down()
    d = Dispatcher({"hook": sink}, store, 0.001, 0.001, rates={"hook": 1e6})
    d.submit(NOTICE, "hook")
    db = sqlite3.connect(tmp_path / "a.sqlite")
    try:
        deadline = time.monotonic() + 5
        row = None
        while time.monotonic() < deadline:
            row = db.execute("SELECT status, attempts, error FROM deliveries").fetchone()
            if row[1] >= 20:
                break
            time.sleep(0.01)
        d.stopping.set()
        assert row is not None and row[0] == "pending" and row[1] in (1, 20, 40, 60)
        assert row[2] == f"webhook: HTTP 503 (attempt {row[1]})"
        assert d.counters[("pending", "hook")] == 0  # retries are counted as retries, not outcomes
    finally:
        db.close()
        d.stop(1)


# ----- 6. the dispatcher's dedup memory ------------------------------------------------------------------

class Null:
    def send(self, notice: Notice) -> None:
        pass

    def close(self) -> None:
        pass


def test_the_dedup_memory_stays_bounded_and_still_refuses_a_queued_or_just_sent_notice(monkeypatch):
    monkeypatch.setattr(dispatch, "DONE_REMEMBERED", 50)
    d = Dispatcher({"n": Null()}, None, 0.01, 0.02, rates={"n": 1e9})
    try:
        for i in range(2000):
            assert d.submit(_notice(f"A{i}", 1, "yellow"), "n")
        assert d.flush(10)
        assert d.counters[("sent", "n")] == 2000
        assert len(d._seen) == 0 and len(d._done) == 50
        assert not d.submit(_notice("A1999", 1, "yellow"), "n")  # just sent: still refused
    finally:
        d.stop(1)


# ----- an overall deadline per exchange (the audit's s1 and s7) ----------------------------------------------

def _trickle(sock, data: bytes, every_s: float, stop: threading.Event) -> None:
    """Send `data` a byte at a time, `every_s` apart: never silent for a read timeout, never done."""
    for ch in data:
        if stop.wait(every_s):
            return
        try:
            sock.send(bytes([ch]))
        except OSError:
            return


def test_a_webhook_that_drips_its_answer_is_cut_off_at_the_exchange_deadline():
    """A server sending a byte every 0.05 s never lets a 0.2 s read timeout fire: the send went on for as long
    as the server dripped (14.5 s in the audit). Now it ends at twice timeout_s, retryable, saying why."""
    stop = threading.Event()

    def drip(h, body):
        h.send_response(200)
        h.send_header("Content-Length", "2000")
        h.end_headers()
        h.wfile.flush()
        _trickle(h.connection, b" " * 2000, 0.05, stop)

    ep = Endpoint(drip)
    sink = WebhookSink(ep.url("/drip"), timeout_s=0.2)
    out: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(out, sink.send, _notice("A", 1, "red")), daemon=True)
    t.start()
    t.join(20)  # a bound on the test, not a speed assertion: the old code dripped for 100 s
    stop.set()
    assert not t.is_alive(), "the send was still reading the drip"
    assert isinstance(out[0], SinkError) and out[0].retryable and "within 0.4 s" in str(out[0])
    ep.stop()


def test_an_smtp_greeting_trickled_forever_is_cut_off():
    import socket as socket_mod

    from alerts.sinks.mail import EmailSink
    srv = socket_mod.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    stop = threading.Event()

    def serve():
        conn, _ = srv.accept()
        _trickle(conn, b"220 " + b"x" * 2000 + b"\r\n", 0.05, stop)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    sink = EmailSink("127.0.0.1", srv.getsockname()[1], "plain", "cw@ops.example", ["duty@ops.example"],
                     Renderer("email"), timeout_s=0.2)
    n = _notice("R", 1, "red")
    n.payload.update(SAMPLE_PAYLOAD)
    out: list[BaseException] = []
    t = threading.Thread(target=lambda: _catch(out, sink.send, n), daemon=True)
    t.start()
    t.join(20)
    stop.set()
    srv.close()
    assert not t.is_alive(), "the send was still reading the greeting"
    assert isinstance(out[0], SinkError) and out[0].retryable and "did not finish within 0.4 s" in str(out[0])


def _catch(out: list, fn, *args) -> None:
    try:
        fn(*args)
        out.append(None)
    except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
        out.append(exc)


def test_a_reload_lets_the_engine_work_while_the_old_sinks_finish(tmp_path):
    """engine.reload stopped the old dispatcher under the engine's lock: three sinks stuck mid-send held
    detections and notices for 8 s (the audit's s9). Now the old sinks finish outside it, and what they did not
    deliver is queued again afterwards."""
    from tests.unit.alerts.helpers import make_cfg, make_engine

    eng, _ = make_engine(tmp_path, make_cfg())
    entered, release = threading.Event(), threading.Event()

    class Retired:  # the old dispatcher, whose sinks are still busy: its stop takes as long as they do
        def stop(self, timeout_s: float = 5.0) -> None:
            entered.set()
            release.wait(30)

        def submit(self, notice, sink_name):
            return True

        def flush(self, timeout_s: float = 10.0) -> bool:
            return True

    eng.dispatcher = Retired()
    changed = make_cfg({"sinks": {"rec": {"type": "terminal"}, "log": {"type": "terminal"}}})
    reload = threading.Thread(target=eng.reload, args=(changed,), daemon=True)
    reload.start()
    assert entered.wait(30)
    free = eng._lock.acquire(timeout=10)  # the engine is free while the old sinks finish
    if free:
        eng._lock.release()
    release.set()
    reload.join(30)
    assert free and not reload.is_alive()
    assert isinstance(eng.dispatcher, Dispatcher) and {"rec", "log"} <= set(eng.sinks)
