"""The commands: `notify preview` renders a stored alert's notice without sending, `notify test` sends one
through a real SMTP server, `oncall now` prints who is on duty, and check-config reports templates and
roster gaps with file:line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.store import AlertStore
from citywatch.cli import main
from config.loader import DEFAULT_CONFIG_DIR
from tests.integration.notify_receivers import SmtpReceiver, free_port
from tests.unit.alerts.helpers import RecordingSink, det, make_cfg

pytestmark = pytest.mark.integration


def _config_copy(tmp_path: Path, replace: dict[str, tuple[str, str]] | None = None) -> Path:
    d = tmp_path / "config"
    d.mkdir()
    for p in Path(DEFAULT_CONFIG_DIR).glob("*.yaml"):
        text = p.read_text()
        for old, new in [v for k, v in (replace or {}).items() if k == p.name]:
            assert old in text, (p.name, old)
            text = text.replace(old, new)
        (d / p.name).write_text(text)
    return d


def test_preview_renders_a_stored_alert_in_zh_cn_without_sending(tmp_path, capsys):
    cfg = make_cfg(None, [{"id": "N-day", "type": "noise_day_limit", "kind": "noise"}])
    store = AlertStore(tmp_path / "alerts.sqlite")
    sink = RecordingSink()
    engine = AlertEngine(cfg, store, {"rec": sink}, dispatcher=Dispatcher({"rec": sink}, store, 0.01, 0.05))
    engine.process(det([(0, 0, "N-day", "orange", 76.3, 70.0)]))
    engine.flush(5)
    engine.stop()
    alert_id = store.alerts()[0].alert_id
    store.close()
    code = main(["notify", "preview", "--alert", alert_id[:12], "--channel", "duty_mail",
                 "--store", str(tmp_path / "alerts.sqlite")])
    out = capsys.readouterr().out
    assert code == 0
    assert "--- email_subject" in out and "--- email_text" in out and "--- email_html" in out
    assert "橙色告警：昼间施工噪声超标" in out and "测量值：76.3 dB(A)，限值 70 dB(A)" in out
    code = main(["notify", "preview", "--alert", alert_id, "--channel", "wecom", "--language", "en",
                 "--store", str(tmp_path / "alerts.sqlite")])
    assert code == 0 and "[Orange Alert]</font> Daytime construction noise over the limit" in capsys.readouterr().out
    assert main(["notify", "preview", "--alert", "nope", "--channel", "wecom",
                 "--store", str(tmp_path / "alerts.sqlite")]) == 1


def test_notify_test_sends_through_the_team_to_the_person_on_duty(tmp_path, capsys):
    port = free_port()
    d = _config_copy(tmp_path, {"alerts.yaml": ("      port: 8025\n", f"      port: {port}\n")})
    smtp = SmtpReceiver(port)
    try:
        assert main(["notify", "test", "duty_mail", "--config", str(d)]) == 1  # no `to` for a plain send
        assert "no recipient" in capsys.readouterr().err
        assert main(["notify", "test", "team:gas-duty", "--config", str(d)]) == 0
        out = capsys.readouterr().out
        assert re.search(r"sent a test notice through team:gas-duty: team gas-duty level 0: .+ \(email\)", out)
        (rcpt, msg), = smtp.mails
        assert rcpt[0].endswith("@localhost") and "测试" in str(msg["Subject"])
    finally:
        smtp.stop()
    # the receiver is down: the command says so and that a retry could succeed
    assert main(["notify", "test", "team:gas-duty", "--config", str(d)]) == 1
    assert "a retry could succeed" in capsys.readouterr().err


@pytest.mark.parametrize("at, level0", [
    ("2026-12-07T09:00", "林工 (Lin)"),      # Monday day shift
    ("2026-12-08T03:00", "黄工 (Huang)"),    # Monday's night shift, across midnight
    ("2026-10-01T03:00", "陈科长 (Chen)"),   # National Day override
])
def test_oncall_now_prints_who_is_on_duty(capsys, at, level0):
    assert main(["oncall", "now", "--team", "gas-duty", "--at", at]) == 0
    out = capsys.readouterr().out
    assert f"  level 0: {level0} [" in out and "duty chief: Zhang (duty chief)" in out


def test_check_config_warns_about_roster_gaps_with_file_and_line(tmp_path, capsys):
    d = _config_copy(tmp_path, {"oncall.yaml": (
        '            - {days: [sat, sun], window: {start: "20:00", end: "08:00"}, people: [lin]}\n', "")})
    assert main(["check-config", str(d)]) == 0
    err = capsys.readouterr().err
    line = next(i for i, t in enumerate((d / "oncall.yaml").read_text().splitlines(), 1) if "- id: gas-duty" in t)
    assert (f"oncall.yaml:{line}: warning: oncall.teams[0]: team gas-duty has nobody on duty at level 0 in "
            "mon 00:00-08:00, sat 20:00-24:00, sun 00:00-08:00, sun 20:00-24:00") in err.replace(str(d) + "/", "")


def test_check_config_refuses_a_bad_template_and_a_wrong_team_sink(tmp_path, capsys):
    bad = tmp_path / "mine.j2"
    bad.write_text("{{ rule_name }}\n{% if severity %}\n")
    d = _config_copy(tmp_path, {
        "alerts.yaml": ("      from: citywatch@localhost\n", f"      from: citywatch@localhost\n      template: {bad}\n"),
        "oncall.yaml": ("sinks: {email: duty_mail}", "sinks: {email: duty_mail, sms: console}"),
    })
    assert main(["check-config", str(d)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:2: template syntax error" in err
    assert re.search(r"oncall\.yaml:\d+: oncall\.teams\[0\]\.sinks\.sms: sink 'console' is of type terminal, not sms",
                     err), err


def test_oncall_yaml_documents_every_key():
    from config.oncall import OnCall
    from tests.unit.config.test_documented import _keys

    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", (DEFAULT_CONFIG_DIR / "oncall.yaml").read_text()))
    assert sorted(k for k in _keys(OnCall) if k not in words) == []


def test_a_robot_token_written_in_yaml_is_refused_and_never_echoed(tmp_path, capsys):
    d = _config_copy(tmp_path, {"alerts.yaml": ("    duty_mail:                  #",
                                                "    robot:\n      type: dingtalk\n      token: abc123secret\n"
                                                "      secret: SECxyz\n    duty_mail:                  #")})
    assert main(["check-config", str(d)]) == 1
    err = capsys.readouterr().err
    assert "alerting.sinks.robot.token: a secret must not be written in YAML; put it in an environment variable " \
           "and give that variable's name in 'token_env'" in err
    assert "alerting.sinks.robot.secret: a secret must not be written in YAML" in err and "'secret_env'" in err
    assert "abc123secret" not in err and "SECxyz" not in err
