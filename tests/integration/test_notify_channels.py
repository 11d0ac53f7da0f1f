"""Each notification channel against a real local receiver: WeCom and DingTalk robots that answer as
their APIs document, an SMTP server (aiosmtpd), an SMS gateway that checks the configured HMAC. Rate
limits delay and never drop; a receiver down then up gets every notice once; a team receiver reaches the
person on duty and the delivery log names them."""

from __future__ import annotations

import sqlite3
import time

import pytest

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.sinks import build_sinks, sink_rates
from alerts.store import AlertStore
from config.oncall import OnCall
from tests.integration.notify_receivers import (
    DingtalkRobot,
    SmsGateway,
    SmtpReceiver,
    WecomRobot,
    _HttpReceiver,
    free_port,
)
from tests.unit.alerts.helpers import det as _det
from tests.unit.alerts.helpers import make_cfg

pytestmark = pytest.mark.integration

GAS_SENSOR = 12  # XMG0001 of the shipped inventory


def det(rows):
    """Detections of the gas sensor in kPa: rows (t_seconds, rule, severity, value, limit)."""
    d = _det([(GAS_SENSOR, *r[1:]) for r in rows])
    d.context = [{"metric": "p", "unit": "kPa"} for _ in rows]
    return d


RULES = [{"id": "G-highhigh", "type": "gas_highhigh", "kind": "gas"}]
RETRY = {"initial_s": 0.05, "max_s": 0.2}


def _engine(tmp_path, sinks_cfg: dict, receivers: list[str], env: dict, oncall: dict | None = None):
    cfg = make_cfg({"sinks": sinks_cfg, "route": {"receivers": receivers, "group_interval_s": 0}, "retry": RETRY,
                    "console_url": "https://ops.example/console"}, RULES)
    if oncall is not None:
        cfg = cfg.model_copy(update={"oncall": OnCall.model_validate(oncall)})
    sinks = build_sinks(cfg, env)
    store = AlertStore(tmp_path / "alerts.sqlite")
    engine = AlertEngine(cfg, store, sinks, dispatcher=Dispatcher(sinks, store, 0.05, 0.2, sink_rates(cfg)))
    return engine, store


def _fire_and_resolve(engine):
    engine.process(det([(0, 0, "G-highhigh", "red", 412.5, 400.0, "gas")]))
    engine.process(det([(0, 60, "G-highhigh", "clear", 380.0, 400.0, "gas")]))


def _deliveries(store) -> list[tuple]:
    db = sqlite3.connect(store.path)
    try:
        return db.execute("SELECT key, sink, status, attempts, error, reached FROM deliveries ORDER BY key").fetchall()
    finally:
        db.close()


def test_wecom_markdown_rate_limited_is_delayed_never_dropped(tmp_path):
    robot = WecomRobot("robot-key", rate_limited=3)
    engine, store = _engine(tmp_path, {"wc": {"type": "wecom", "url": robot.url, "key_env": "WC_KEY",
                                              "rate_per_s": 100}}, ["wc"], {"WC_KEY": "robot-key"})
    try:
        _fire_and_resolve(engine)
        assert engine.flush(20)
        assert len(robot.requests) == 5  # three refused with 45009, then both sent
        contents = [r["body"]["markdown"]["content"] for r in robot.accepted]
        assert len(contents) == 2
        assert "【红色告警】" in contents[0] and "燃气压力超高" in contents[0] and "412.5 kPa" in contents[0]
        assert "限值 400 kPa" in contents[0]
        assert "https://ops.example/console/alerts/G-highhigh." in contents[0]
        assert "【已恢复】" in contents[1]
        assert store.delivery_counts() == {"sent": 2}
        assert engine.dispatcher.counters[("retries", "wc")] == 3
    finally:
        engine.stop()
        robot.stop()


def test_wecom_wrong_key_is_refused_not_retried(tmp_path):
    robot = WecomRobot("robot-key")
    engine, store = _engine(tmp_path, {"wc": {"type": "wecom", "url": robot.url, "key_env": "WC_KEY"}},
                            ["wc"], {"WC_KEY": "other"})
    try:
        engine.process(det([(0, 0, "G-highhigh", "red", 412.5, 400.0, "gas")]))
        assert engine.flush(20)
        assert len(robot.requests) == 1
        assert store.delivery_counts() == {"failed": 1}
    finally:
        engine.stop()
        robot.stop()


def test_dingtalk_signed_url_checked_and_rate_limit_retried(tmp_path):
    robot = DingtalkRobot("tok", "SECabc", rate_limited=2)
    engine, store = _engine(tmp_path, {"dt": {"type": "dingtalk", "url": robot.url, "token_env": "DT_TOKEN",
                                              "secret_env": "DT_SECRET", "rate_per_s": 100}},
                            ["dt"], {"DT_TOKEN": "tok", "DT_SECRET": "SECabc"})
    try:
        _fire_and_resolve(engine)
        assert engine.flush(20)
        assert robot.bad_signatures == 0
        assert len(robot.requests) == 4 and len(robot.accepted) == 2
        first = robot.accepted[0]["body"]
        assert first["msgtype"] == "markdown" and first["markdown"]["title"].startswith("【红色告警】")
        assert "燃气压力超高" in first["markdown"]["text"]
        assert store.delivery_counts() == {"sent": 2}
    finally:
        engine.stop()
        robot.stop()


def test_dingtalk_wrong_secret_gets_their_error_and_is_not_retried(tmp_path):
    robot = DingtalkRobot("tok", "SECabc")
    engine, store = _engine(tmp_path, {"dt": {"type": "dingtalk", "url": robot.url, "token_env": "DT_TOKEN",
                                              "secret_env": "DT_SECRET"}},
                            ["dt"], {"DT_TOKEN": "tok", "DT_SECRET": "SECwrong"})
    try:
        engine.process(det([(0, 0, "G-highhigh", "red", 412.5, 400.0, "gas")]))
        assert engine.flush(20)
        assert robot.bad_signatures == 1 and len(robot.requests) == 1
        assert store.delivery_counts() == {"failed": 1}
        assert "310000" in _deliveries(store)[0][4]
    finally:
        engine.stop()
        robot.stop()


def test_email_down_then_up_every_notice_once_with_both_parts_and_one_thread(tmp_path):
    port = free_port()
    engine, store = _engine(tmp_path, {"mail": {"type": "email", "host": "127.0.0.1", "port": port,
                                                "security": "plain", "from": "citywatch@ops.example",
                                                "to": ["duty@ops.example"], "rate_per_s": 100}},
                            ["mail"], {})
    smtp = None
    try:
        _fire_and_resolve(engine)  # the mail server is down
        deadline = time.monotonic() + 10
        while engine.dispatcher.counters[("retries", "mail")] < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.dispatcher.counters[("retries", "mail")] >= 3
        assert store.delivery_counts() == {"pending": 2}
        smtp = SmtpReceiver(port)
        assert engine.flush(20)
        assert len(smtp.mails) == 2
        keys = [m["X-Citywatch-Key"] for _, m in smtp.mails]
        assert len(set(keys)) == 2
        (rcpt, firing), (_, resolved) = smtp.mails
        assert rcpt == ["duty@ops.example"]
        assert "红色告警" in str(firing["Subject"]) and "已恢复" in str(resolved["Subject"])
        assert firing.get_content_type() == "multipart/alternative"
        text = firing.get_body(("plain",)).get_content()
        html = firing.get_body(("html",)).get_content()
        assert "测量值：412.5 kPa，限值 400 kPa" in text and "<b>412.5 kPa</b>" in html
        root = firing["Message-ID"]
        assert root.startswith("<G-highhigh.") and root.endswith("@ops.example>")
        assert resolved["Message-ID"] != root
        assert resolved["In-Reply-To"] == root and resolved["References"] == root
        assert store.delivery_counts() == {"sent": 2}
    finally:
        engine.stop()
        if smtp:
            smtp.stop()


def test_sms_gateway_checks_hmac_and_throttle_is_retried(tmp_path):
    gw = SmsGateway("gw-secret", rate_limited=1)
    spec = {"type": "sms", "url": gw.url, "auth": {"kind": "hmac", "header": "X-Signature",
                                                   "timestamp_header": "X-Timestamp", "secret_env": "SMS_SECRET"},
            "body_template": '{"mobile": {{ to | tojson }}, "content": {{ text | tojson }}, "sign": "厦门城运"}',
            "accepted_field": "result.status", "accepted_value": "OK", "retry_values": ["THROTTLED"],
            "to": ["13800000001"], "rate_per_s": 100}
    engine, store = _engine(tmp_path, {"sms": spec}, ["sms"], {"SMS_SECRET": "gw-secret"})
    try:
        _fire_and_resolve(engine)
        assert engine.flush(20)
        assert gw.bad_signatures == 0
        assert len(gw.requests) == 3 and len(gw.accepted) == 2
        body = gw.accepted[0]["body"]
        assert body["mobile"] == "13800000001" and body["sign"] == "厦门城运"
        assert body["content"].startswith("【citywatch】红色告警：") and "412.5kPa（限值400kPa）" in body["content"]
        assert store.delivery_counts() == {"sent": 2}
    finally:
        engine.stop()
        gw.stop()


def test_sms_bad_signature_is_refused_not_retried(tmp_path):
    gw = SmsGateway("gw-secret")
    spec = {"type": "sms", "url": gw.url, "auth": {"kind": "hmac", "header": "X-Signature",
                                                   "secret_env": "SMS_SECRET"},
            "accepted_field": "result.status", "accepted_value": "OK", "to": ["13800000001"]}
    engine, store = _engine(tmp_path, {"sms": spec}, ["sms"], {"SMS_SECRET": "not-the-secret"})
    try:
        engine.process(det([(0, 0, "G-highhigh", "red", 412.5, 400.0, "gas")]))
        assert engine.flush(20)
        assert gw.bad_signatures == 1 and len(gw.requests) == 1
        assert store.delivery_counts() == {"failed": 1}
    finally:
        engine.stop()
        gw.stop()


ONCALL = {
    "people": [
        {"id": "lin", "name": "林工", "channels": {"dingtalk": "13900000001", "email": "lin@ops.example"}},
        {"id": "chen", "name": "Chen", "language": "en", "channels": {"email": "chen@ops.example"}},
    ],
    "teams": [{"id": "gas-siming", "name": "思明燃气", "sinks": {"dingtalk": "dt", "email": "mail"},
               "levels": [{"shifts": [{"window": {"start": "08:00", "end": "20:00"}, "people": ["lin"]},
                                     {"window": {"start": "20:00", "end": "08:00"}, "people": ["lin"]}]}]}],
    "duty_chief": ["chen"],
}


def test_team_receiver_reaches_the_person_on_duty_and_records_them(tmp_path):
    robot = DingtalkRobot("tok", "SECabc")
    port = free_port()
    smtp = SmtpReceiver(port)
    sinks = {"dt": {"type": "dingtalk", "url": robot.url, "token_env": "DT_TOKEN", "secret_env": "DT_SECRET"},
             "mail": {"type": "email", "host": "127.0.0.1", "port": port, "security": "plain",
                      "from": "citywatch@ops.example"}}
    engine, store = _engine(tmp_path, sinks, ["team:gas-siming"], {"DT_TOKEN": "tok", "DT_SECRET": "SECabc"},
                            ONCALL)
    try:
        engine.process(det([(0, 0, "G-highhigh", "red", 412.5, 400.0, "gas")]))
        assert engine.flush(20)
        assert len(robot.accepted) == 1 and len(smtp.mails) == 1
        body = robot.accepted[0]["body"]
        assert body["at"] == {"atMobiles": ["13900000001"], "isAtAll": False}
        assert body["markdown"]["text"].endswith("@13900000001") and "值班：林工" in body["markdown"]["text"]
        assert smtp.mails[0][0] == ["lin@ops.example"]
        (_key, sink, status, _attempts, error, note), = _deliveries(store)
        assert sink == "team:gas-siming" and status == "sent" and error is None
        assert note == "team gas-siming level 0: 林工 (dingtalk), 林工 (email)"
    finally:
        engine.stop()
        robot.stop()
        smtp.stop()


ESCALATING = {
    "people": [
        {"id": "lin", "name": "林工", "channels": {"email": "lin@ops.example"}},
        {"id": "chen", "name": "陈科长", "channels": {"email": "chen@ops.example"}},
        {"id": "zhang", "name": "Zhang", "language": "en", "channels": {"email": "zhang@ops.example"}},
    ],
    "teams": [{"id": "gas", "name": "燃气", "sinks": {"email": "mail"}, "levels": [
        {"shifts": [{"window": {"start": "08:00", "end": "20:00"}, "people": ["lin"]},
                    {"window": {"start": "20:00", "end": "08:00"}, "people": ["lin"]}]},
        {"shifts": [{"window": {"start": "08:00", "end": "20:00"}, "people": ["chen"]},
                    {"window": {"start": "20:00", "end": "08:00"}, "people": ["chen"]}]},
    ]}],
    "duty_chief": ["zhang"],
}


@pytest.mark.parametrize("ack_after_first", [False, True])
def test_unacknowledged_escalates_to_next_level_then_chief_and_an_ack_stops_it(tmp_path, ack_after_first):
    from tests.unit.alerts.helpers import AUTHORS, at

    port = free_port()
    smtp = SmtpReceiver(port)
    sinks = {"mail": {"type": "email", "host": "127.0.0.1", "port": port, "security": "plain",
                      "from": "citywatch@ops.example", "rate_per_s": 100}}
    engine, store = _engine(tmp_path, sinks, ["team:gas"], {}, ESCALATING)
    try:
        engine.process(det([(0, 0, "G-highhigh", "red", 412.5, 400.0, "gas")]))
        alert_id = store.alerts()[0].alert_id
        if ack_after_first:
            assert engine.submit_command("mqtt:city/xm/alerts/cmd/li", {"action": "ack", "alert_id": alert_id},
                                         AUTHORS["li"]).startswith("ok")
        engine.tick(at(301))   # red_s 300: one level up
        engine.tick(at(602))   # and the next
        assert engine.flush(20)
        got = [(rcpt[0], str(m["Subject"])) for rcpt, m in smtp.mails]
        if ack_after_first:
            # The firing and the acknowledgement reach the person on duty; nothing escalates after the ack.
            assert [r for r, _ in got] == ["lin@ops.example", "lin@ops.example"]
            assert "红色告警" in got[0][1] and "已确认" in got[1][1]
            assert not any("升级" in s or "Escalated" in s for _, s in got)
        else:
            assert [r for r, _ in got] == ["lin@ops.example", "chen@ops.example", "zhang@ops.example"]
            assert "升级·section_chief" in got[1][1]
            assert "Escalated (bureau_leader)" in got[2][1]  # the duty chief reads English
        notes = [row[5] for row in _deliveries(store)]
        assert notes[0] == "team gas level 0: 林工 (email)"
        if not ack_after_first:
            assert notes[1:] == ["team gas level 1: 陈科长 (email)", "team gas duty chief: Zhang (email)"]
    finally:
        engine.stop()
        smtp.stop()


def test_webhook_body_template_posts_the_rendered_json(tmp_path):
    hook = _Plain()
    engine, store = _engine(tmp_path, {"hook": {"type": "webhook", "url": hook.url, "secret_env": "HOOK",
                                                "body_template": '{"msg": {{ text | tojson }}, '
                                                                 '"severity": {{ severity_word | tojson }}}'}},
                            ["hook"], {"HOOK": "k"})
    try:
        engine.process(det([(0, 0, "G-highhigh", "red", 412.5, 400.0, "gas")]))
        assert engine.flush(20)
        (req,) = hook.requests
        assert req["body"]["severity"] == "红色" and req["body"]["msg"].startswith("【citywatch】红色告警")
        from alerts.sinks.webhook import verify_signature

        assert verify_signature(req["headers"]["X-Citywatch-Signature"], req["raw"], "k")
        assert store.delivery_counts() == {"sent": 1}
    finally:
        engine.stop()
        hook.stop()


class _Plain(_HttpReceiver):
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def answer(self, req):
        return 200, {"ok": True}


# aiosmtpd warns of AUTH without STARTTLS; in implicit-TLS mode the whole session is TLS already.
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
@pytest.mark.parametrize("security", ["starttls", "tls"])
def test_email_over_starttls_or_tls_with_login(tmp_path, security):
    from tests.integration.notify_receivers import SecureSmtpReceiver, self_signed

    cert, key = self_signed(tmp_path)
    port = free_port()
    smtp = SecureSmtpReceiver(port, cert, key, security, "citywatch", "pw-from-env")
    spec = {"type": "email", "host": "127.0.0.1", "port": port, "security": security, "username": "citywatch",
            "password_env": "SMTP_PASSWORD", "ca_file": cert, "from": "citywatch@ops.example",
            "to": ["duty@ops.example"], "rate_per_s": 100}
    engine, store = _engine(tmp_path, {"mail": spec}, ["mail"], {"SMTP_PASSWORD": "pw-from-env"})
    try:
        engine.process(det([(0, 0, "G-highhigh", "red", 412.5, 400.0, "gas")]))
        assert engine.flush(20)
        assert smtp.logins == [("citywatch", True)]
        (rcpt, msg), = smtp.mails
        assert rcpt == ["duty@ops.example"] and "红色告警" in str(msg["Subject"])
        assert store.delivery_counts() == {"sent": 1}
    finally:
        engine.stop()
        smtp.stop()


def test_email_wrong_password_is_refused_not_retried(tmp_path):
    from tests.integration.notify_receivers import SecureSmtpReceiver, self_signed

    cert, key = self_signed(tmp_path)
    port = free_port()
    smtp = SecureSmtpReceiver(port, cert, key, "starttls", "citywatch", "pw-from-env")
    spec = {"type": "email", "host": "127.0.0.1", "port": port, "security": "starttls", "username": "citywatch",
            "password_env": "SMTP_PASSWORD", "ca_file": cert, "from": "citywatch@ops.example",
            "to": ["duty@ops.example"]}
    engine, store = _engine(tmp_path, {"mail": spec}, ["mail"], {"SMTP_PASSWORD": "wrong"})
    try:
        engine.process(det([(0, 0, "G-highhigh", "red", 412.5, 400.0, "gas")]))
        assert engine.flush(20)
        # smtplib tries each offered mechanism (PLAIN, LOGIN) once; none is retried later.
        assert smtp.logins and all(ok is False for _, ok in smtp.logins) and smtp.mails == []
        assert store.delivery_counts() == {"failed": 1}
    finally:
        engine.stop()
        smtp.stop()


def test_sms_token_header_and_default_body(tmp_path):
    from tests.integration.notify_receivers import TokenSmsGateway

    gw = TokenSmsGateway("tkn")
    spec = {"type": "sms", "url": gw.url, "method": "PUT",
            "auth": {"kind": "token", "prefix": "Bearer ", "secret_env": "SMS_TOKEN"}, "to": ["13800000002"],
            "language": "en"}
    engine, store = _engine(tmp_path, {"sms": spec}, ["sms"], {"SMS_TOKEN": "tkn"})
    try:
        engine.process(det([(0, 0, "G-highhigh", "red", 412.5, 400.0, "gas")]))
        assert engine.flush(20)
        (req,) = gw.accepted
        assert req["body"]["to"] == "13800000002"
        assert req["body"]["text"].startswith("[citywatch] Red Alert: ") and "Gas pressure very high" in req["body"]["text"]
        assert store.delivery_counts() == {"sent": 1}
    finally:
        engine.stop()
        gw.stop()
