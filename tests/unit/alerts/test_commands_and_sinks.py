"""Operator command validation (pinned texts), the notice payload, sink encodings, and the CLI on the store."""

from __future__ import annotations

import getpass
import hashlib
import hmac
import json

import pytest

from alerts import commands
from alerts.model import Notice
from alerts.sinks.influx import line_of
from alerts.sinks.webhook import sign
from citywatch.cli import main
from tests.unit.alerts.helpers import at, det, make_engine

# The validator's table (every bound, every refusal text) is in test_command_validation.py.


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("15m", 900), ("2h", 7200), ("1d", 86400),
                                           ("1.5h", 5400)])
def test_durations(text, seconds):
    assert commands.parse_duration(text) == seconds


def test_notice_payload_carries_what_the_duty_officer_needs(tmp_path):
    engine, sink = make_engine(tmp_path)
    engine.process(det([(0, 0, "N-day", "orange", 76.5, 70.0)]))
    engine.flush(5)
    p = sink.notices[0].payload
    for key in ("alert_id", "idempotency_key", "transition", "rule_id", "category", "severity", "site", "device",
                "value", "limit", "start_ts", "duration_s", "escalation_level", "ack", "dedupe_key", "unit", "metric"):
        assert key in p, key
    assert p["site"]["address"] and p["site"]["district"] and p["site"]["lat"] is not None
    assert (p["value"], p["limit"], p["unit"], p["severity"]) == (76.5, 70.0, "dB(A)", "orange")
    json.dumps(p, allow_nan=False)  # strict JSON: no NaN
    engine.stop()


def test_webhook_signature_is_hmac_sha256_of_time_and_body():
    body = b'{"a":1}'
    mac = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(b"k", body, now=1_700_000_000.7) == f"t=1700000000,v1={mac}"


def test_influx_line_keeps_alert_id_out_of_tags():
    n = Notice("N-day.X.1:2", "N-day.X.1", 2, "resolved", 1_000, {
        "rule_id": "N-day", "category": "noise", "severity": "yellow", "site": {"id": "S 1", "district": "Siming"},
        "device": {"id": "X"}, "value": 71.5, "limit": 70.0, "escalation_level": 0, "ack": None})
    assert line_of(n) == (
        "alerts,category=noise,device_id=X,district=Siming,rule_id=N-day,severity=yellow,site_id=S\\ 1,"
        'transition=resolved alert_id="N-day.X.1",key="N-day.X.1:2",seq=2i,escalation_level=0i,'
        'value=71.5,limit=70.0,peak_severity="yellow" 1002')


def test_cli_ack_is_applied_by_the_engine_and_shown(tmp_path, capsys):
    engine, sink = make_engine(tmp_path)
    engine.process(det([(0, 0, "N-day", "red", 90)]))
    alert_id = engine.active()[0].alert_id
    store = str(tmp_path / "alerts.sqlite")
    assert main(["alerts", "--store", store, "ack", alert_id, "--note", "on site", "--wait", "0"]) == 0
    assert "queued as command" in capsys.readouterr().out
    engine.tick(at(10))  # the running service applies the inbox on its tick
    engine.flush(5)
    assert sink.transitions() == ["firing", "acknowledged"]
    assert main(["alerts", "--store", store, "show", alert_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    login = getpass.getuser()  # the terminal's author is the local login, never a typed name
    assert (shown["alert"]["acked_by"], shown["alert"]["acked_by_name"]) == (f"local:{login}", login)
    assert [n["transition"] for n in shown["notices"]] == ["firing", "acknowledged"]
    assert main(["alerts", "--store", store, "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["alert_id"] == alert_id
    assert main(["alerts", "--store", store, "ack", "nope"]) == 1
    assert "error: no alert 'nope'" in capsys.readouterr().err
    assert main(["alerts", "--store", store, "ack", alert_id, "--by", "Li Wei"]) == 1
    assert capsys.readouterr().err == (f"error: --by is gone: the author is your login, local:{login} (the store "
                                       "file's permissions authenticate it)\n")
    engine.stop()


def test_cli_silence_and_watch_once(tmp_path, capsys):
    engine, _ = make_engine(tmp_path)
    engine.tick(at(0))
    store = str(tmp_path / "alerts.sqlite")
    assert main(["alerts", "--store", store, "silence", "--match", "site_id=SM-2025-101",
                 "--comment", "pour", "--expires", "2h", "--id", "s1", "--wait", "0"]) == 0
    engine.tick(at(1))
    assert main(["alerts", "--store", store, "list", "--silences", "--json"]) == 0
    s = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (s["id"], s["by"], s["comment"], s["matchers"]) == (
        "s1", f"local:{getpass.getuser()}", "pour", {"site_id": "SM-2025-101"})
    assert main(["alerts", "--store", store, "silence", "--match", "bad", "--comment", "c",
                 "--expires", "1h"]) == 1
    assert capsys.readouterr().err == "error: matchers: 'bad' must be written label=value\n"
    # refused before it is stored as a command to apply, and recorded as refused with its reason
    row = engine.store.command_rows(1)[0]
    assert (row["status"], row["result"], row["applied_at"] is not None) == (
        "refused", "error: matchers: 'bad' must be written label=value", True)
    assert main(["alerts", "--store", store, "silence", "--match", "site_id=SM-2025-10", "--comment", "c",
                 "--expires", "999999999w"]) == 1
    assert capsys.readouterr().err == (
        "error: matchers.site_id: unknown site 'SM-2025-10' (did you mean 'SM-2025-101'?)\n")
    assert main(["alerts", "--store", store, "watch", "--once"]) == 0
    assert "active alerts" in capsys.readouterr().out
    engine.stop()


def test_config_rejects_an_unknown_escalation_level_in_a_route(tmp_path):
    from config import ConfigError, load_config
    from tests.unit.alerts.helpers import write_config

    d = write_config(tmp_path / "c", "alerting:\n  route:\n    routes:\n      - match: {level: [boss]}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(d, {})
    assert [str(p) for p in exc.value.problems] == [
        f"{d}/alerts.yaml:1: alerting: route.routes[0].match.level: unknown escalation level 'boss'"
        " (escalation.levels: duty_officer, section_chief, bureau_leader)"]


def test_show_says_whom_a_delivery_reached(tmp_path, capsys):
    engine, _ = make_engine(tmp_path)
    engine.process(det([(0, 0, "N-day", "red", 90)]))
    assert engine.flush(5)
    alert_id = engine.active()[0].alert_id
    (notice, deliveries), = engine.store.notices(alert_id)
    assert deliveries == [("rec", "sent", 1, None)]  # a sink that reaches no person says nobody
    # A team receiver (alerts/sinks/team.py) returns whom it reached; the dispatcher stores it beside the status.
    engine.store.mark_delivery(notice.key, "rec", "sent", 1, None, "team gas level 0: 林工 (email)")
    store = str(tmp_path / "alerts.sqlite")
    assert main(["alerts", "--store", store, "show", alert_id, "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["notices"][0]["deliveries"] == [["rec", "sent", 1, "team gas level 0: 林工 (email)"]]
    assert main(["alerts", "--store", store, "show", alert_id]) == 0
    assert "rec: sent (1) -> team gas level 0: 林工 (email)" in capsys.readouterr().out.replace("\n", "")
    engine.stop()
