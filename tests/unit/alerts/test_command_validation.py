"""Operator command validation: every bound and every refusal text (pinned: they are what an operator
reads in the reply), the author rules, and the engine's handling of refused, failed and old stored rows."""

from __future__ import annotations

import json
import logging
import sqlite3

import pytest

from alerts import commands
from alerts.commands import Author
from tests.unit.alerts.helpers import AUTHORS, at, base_cfg, det, make_cfg, make_engine

LIN = Author("lin", "Duty officer Lin")
SIL = {"action": "silence", "matchers": {"category": "gas"}, "comment": "works", "expires": "2h"}
LONG = "x" * 501


def silence(**kw) -> dict:
    return {**SIL, **kw}


@pytest.mark.parametrize(
    "cmd, message",
    [
        ("ack", "a command must be a JSON object, got text"),
        ([1], "a command must be a JSON object, got a list"),
        ({"action": "close"}, "action: must be one of ack, silence, unsilence, got 'close'"),
        ({"action": "silense"}, "action: must be one of ack, silence, unsilence, got 'silense' (did you mean 'silence'?)"),
        ({}, "action: must be one of ack, silence, unsilence, got None"),
        # only known keys
        (silence(expire="1h"),
         "'expire': unknown key for silence (did you mean 'expires'?); keys: action, by, comment, expires, expires_s, id, matchers"),
        ({"action": "ack", "alert_id": "a", "comment": "c"},
         "'comment': unknown key for ack; keys: action, alert_id, by, note"),
        # ids by pattern
        ({"action": "ack"}, "alert_id: required"),
        ({"action": "ack", "alert_id": "a/b"},
         "alert_id: must be an alert id (letters, digits, . _ : -, at most 200), got 'a/b'"),
        ({"action": "ack", "alert_id": "a" * 201},
         f"alert_id: must be an alert id (letters, digits, . _ : -, at most 200), got '{'a' * 56}..."),
        ({"action": "ack", "alert_id": 7}, "alert_id: must be an alert id (letters, digits, . _ : -, at most 200), got 7"),
        ({"action": "unsilence"}, "silence_id: required"),
        ({"action": "unsilence", "silence_id": "s 1"},
         "silence_id: must be a silence id (letters, digits, . _ -, at most 64), got 's 1'"),
        (silence(id="#1"), "id: must be a silence id (letters, digits, . _ -, at most 64), got '#1'"),
        # strings bounded
        ({"action": "ack", "alert_id": "a", "note": LONG}, "note: at most 500 characters, got 501"),
        ({"action": "ack", "alert_id": "a", "note": {"x": 1}}, "note: must be text, got an object"),
        (silence(comment=LONG), "comment: at most 500 characters, got 501"),
        (silence(comment=" "), "comment: required: say why the alerts are silenced"),
        # durations: finite, > 0, at most alerting.silence_max_s, bounded grammar
        (silence(expires="999999999w"), "expires: at most 2592000 s (30d, alerting.silence_max_s), got '999999999w'"),
        (silence(expires="31d"), "expires: at most 2592000 s (30d, alerting.silence_max_s), got '31d'"),
        (silence(expires="1" * 10 + "s"),
         "expires: duration '1111111111s' must be a positive number with an optional unit s, m, h, d or w"),
        (silence(expires="0h"), "expires: duration '0h' must be a positive number with an optional unit s, m, h, d or w"),
        (silence(expires="soon"), "expires: duration 'soon' must be a positive number with an optional unit s, m, h, d or w"),
        (silence(expires=7200), "expires: must be a duration such as 2h, got a number"),
        ({**{k: v for k, v in SIL.items() if k != "expires"}, "expires_s": float("inf")},
         "expires_s: must be a finite number of seconds > 0, got inf"),
        ({**{k: v for k, v in SIL.items() if k != "expires"}, "expires_s": float("nan")},
         "expires_s: must be a finite number of seconds > 0, got nan"),
        ({**{k: v for k, v in SIL.items() if k != "expires"}, "expires_s": 1e300},
         "expires_s: at most 2592000 s (30d, alerting.silence_max_s), got 1e+300"),
        ({**{k: v for k, v in SIL.items() if k != "expires"}, "expires_s": 10 ** 400},
         "expires_s: must be a finite number of seconds > 0, got inf"),
        ({**{k: v for k, v in SIL.items() if k != "expires"}, "expires_s": -5},
         "expires_s: must be a finite number of seconds > 0, got -5.0"),
        ({**{k: v for k, v in SIL.items() if k != "expires"}, "expires_s": True},
         "expires_s: must be a number of seconds, got true/false"),
        (silence(expires_s=60), "expires, expires_s: give one of them, not both"),
        ({k: v for k, v in SIL.items() if k != "expires"},
         'expires: required (e.g. "expires": "2h", or "expires_s": 7200)'),
        # matchers: shape, count, known labels, values the config knows
        ({k: v for k, v in SIL.items() if k != "matchers"},
         'matchers: required: a mapping {label: value} or a list of "label=value"'),
        (silence(matchers="site_id=x"), 'matchers: must be a mapping or a list of "label=value", got text'),
        (silence(matchers=[]), "matchers: at least one is required (a silence of everything is not allowed)"),
        (silence(matchers=["site_id"]), "matchers: 'site_id' must be written label=value"),
        (silence(matchers=[3]), 'matchers: each must be written "label=value", got a number'),
        (silence(matchers=["category=gas"] * 9), "matchers: at most 8, got 9"),
        (silence(matchers=["category=gas", "category=noise"]), "matchers.category: given twice"),
        (silence(matchers={"colour": "red"}),
         "matchers: unknown label 'colour'; labels: alert_id, rule_id, device_id, site_id, district, category, severity"),
        (silence(matchers={"site": "SM-2025-101"}),
         "matchers: unknown label 'site' (did you mean 'site_id'?); labels: alert_id, rule_id, device_id, site_id, "
         "district, category, severity"),
        (silence(matchers={"site_id": "SM-2025-10"}), "matchers.site_id: unknown site 'SM-2025-10' (did you mean 'SM-2025-101'?)"),
        (silence(matchers={"site_id": "nowhere"}), "matchers.site_id: unknown site 'nowhere'"),
        (silence(matchers={"device_id": "XMG003"}), "matchers.device_id: unknown device 'XMG003' (did you mean 'XMG0003'?)"),
        (silence(matchers={"rule_id": "G-hihi"}), "matchers.rule_id: unknown rule 'G-hihi' (did you mean 'G-high'?)"),
        (silence(matchers={"rule_id": "offline"}), "matchers.rule_id: unknown rule 'offline' (did you mean 'Offline'?)"),
        (silence(matchers={"category": "gaz"}), "matchers.category: unknown category 'gaz' (did you mean 'gas'?)"),
        (silence(matchers={"severity": "critical"}), "matchers.severity: unknown severity 'critical'"),
        (silence(matchers={"district": "Simingg"}), "matchers.district: unknown district 'Simingg' (did you mean 'Siming'?)"),
        (silence(matchers={"site_id": 5}), "matchers.site_id: must be text of 1 to 200 characters, got 5"),
        (silence(matchers={"site_id": "S" * 201}),
         f"matchers.site_id: must be text of 1 to 200 characters, got '{'S' * 56}..."),
        (silence(matchers={"alert_id": "a b"}), "matchers.alert_id: not an alert id, got 'a b'"),
        # the author: a `by` must name the sender, never someone else
        (silence(by="duty officer Wang"),
         "by: this command's author is 'lin' (Duty officer Lin), taken from where it was sent; got 'duty officer Wang': "
         "leave by out"),
        (silence(by=["lin"]), "by: must be text of at most 200 characters, got ['lin']"),
    ],
)
def test_refusals(cmd, message):
    with pytest.raises(ValueError) as exc:
        commands.validate(cmd, base_cfg(), LIN)
    assert str(exc.value) == message


def test_the_issue_payload_is_refused():
    """Issue 10, critical 2, as sent: refused (its `by` names nobody; without it, its expiry is too long)."""
    cmd = {"action": "silence", "matchers": {"category": "gas"}, "by": "x", "comment": "x", "expires": "999999999w"}
    with pytest.raises(ValueError, match="^by: "):
        commands.validate(cmd, base_cfg(), LIN)
    del cmd["by"]
    with pytest.raises(ValueError, match="^expires: at most 2592000 s"):
        commands.validate(cmd, base_cfg(), LIN)


@pytest.mark.parametrize(
    "cmd, normalized",
    [
        ({"action": "ack", "alert_id": "G-highhigh.XMG0002.20250601T143000000Z", "note": " crew sent ", "by": "Lin"},
         {"action": "ack", "alert_id": "G-highhigh.XMG0002.20250601T143000000Z", "note": "crew sent"}),
        ({"action": "ack", "alert_id": "a1", "by": "duty officer lin"}, {"action": "ack", "alert_id": "a1", "note": ""}),
        (silence(matchers=["site_id=SM-2025-101", " rule_id = N-day "], expires="30d", id="s1"),
         {"action": "silence", "matchers": {"site_id": "SM-2025-101", "rule_id": "N-day"}, "comment": "works",
          "expires_s": 2592000.0, "id": "s1"}),
        ({**{k: v for k, v in SIL.items() if k != "expires"}, "expires_s": 90},
         {"action": "silence", "matchers": {"category": "gas"}, "comment": "works", "expires_s": 90.0}),
        (silence(matchers={"severity": "red", "district": "Siming", "device_id": "XMG0003", "alert_id": "x.y.z"}),
         {"action": "silence", "matchers": {"severity": "red", "district": "Siming", "device_id": "XMG0003",
                                            "alert_id": "x.y.z"}, "comment": "works", "expires_s": 7200.0}),
        ({"action": "unsilence", "silence_id": "s1"}, {"action": "unsilence", "silence_id": "s1"}),
    ],
)
def test_valid_commands_are_normalized_without_by(cmd, normalized):
    assert commands.validate(cmd, base_cfg(), LIN) == normalized


def test_silence_max_is_configurable():
    cfg = make_cfg({"silence_max_s": 3600})
    assert commands.validate(silence(expires="1h"), cfg)["expires_s"] == 3600
    with pytest.raises(ValueError, match=r"^expires: at most 3600 s \(1h, alerting.silence_max_s\), got '61m'$"):
        commands.validate(silence(expires="61m"), cfg)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"x" * 8193, "payload: 8193 bytes, at most 8192"),
        (b"[" * 5000, "payload: nested deeper than 8 levels"),
        (b'{"a":' * 9 + b"1" + b"}" * 9, "payload: nested deeper than 8 levels"),
        (b"{not json", "payload: not JSON (Expecting property name enclosed in double quotes at line 1 column 2)"),
        (b'{"action":"silence","expires_s":Infinity}', "payload: Infinity is not a JSON number"),
        (b'{"expires_s":NaN}', "payload: NaN is not a JSON number"),
        (b"\xff{}", "payload: not UTF-8 (invalid start byte at byte 0)"),
    ],
)
def test_payload_bounds(payload, message):
    with pytest.raises(ValueError) as exc:
        commands.parse_payload(payload)
    assert str(exc.value) == message


def test_durations_are_bounded():
    assert commands.parse_duration("999999999.999999w") == pytest.approx(999999999.999999 * 604800)
    for text in ("1" * 10, "1.1234567h", "1e300", "inf", "nan", "-1h", ""):
        with pytest.raises(ValueError):
            commands.parse_duration(text)


# ----- the engine: authors, refused rows, failed rows ------------------------------------------------

def test_refused_command_is_recorded_with_its_reason_and_never_applied(tmp_path):
    engine, _ = make_engine(tmp_path)
    engine.tick(at(0))
    r = engine.submit_command("mqtt:city/xm/alerts/cmd/li", b'{"action":"silence","matchers":{"category":"gas"},'
                              b'"comment":"x","expires":"999999999w"}', AUTHORS["li"])
    assert r == "error: expires: at most 2592000 s (30d, alerting.silence_max_s), got '999999999w'"
    row = engine.store.command_rows(1)[0]
    assert (row["status"], row["result"], row["author"], row["author_name"], row["source"]) == (
        "refused", r, "li", "Li Wei", "mqtt:city/xm/alerts/cmd/li")
    assert json.loads(row["body"])["expires"] == "999999999w"
    assert engine.store.unapplied_commands() == [] and engine.store.silences() == []
    assert engine.counters["commands_refused"] == 1
    engine.tick(at(1))  # nothing to re-apply
    assert engine.store.silences() == []
    engine.stop()


def test_author_is_the_account_and_must_be_an_operator(tmp_path):
    engine, sink = make_engine(tmp_path)
    engine.process(det([(0, 0, "N-day", "red", 90)]))
    alert_id = engine.active()[0].alert_id
    stranger = Author("XMG0003", "duty officer Lin")
    assert engine.submit_command("mqtt:x", {"action": "ack", "alert_id": alert_id}, stranger) == (
        "error: 'XMG0003' is not an operator (alerting.operators)")
    assert engine.submit_command("mqtt:x", {"action": "ack", "alert_id": alert_id}, None).startswith(
        "error: no authenticated author")
    assert engine.active()[0].acked_by is None
    assert engine.submit_command("mqtt:x", {"action": "ack", "alert_id": alert_id, "by": "Li Wei"}, AUTHORS["li"]) == "ok"
    a = engine.store.alert(alert_id)
    assert (a.acked_by, a.acked_by_name) == ("li", "Li Wei")
    engine.stop()


def _plant(path, rows):
    """Rows written straight into the command table, as an earlier version (or a fault) left them."""
    db = sqlite3.connect(str(path))
    db.executemany("INSERT INTO commands (received_at, source, body) VALUES (1.0, ?, ?)", rows)
    db.commit()
    db.close()


def test_old_bad_rows_are_marked_failed_and_start_and_tick_go_on(tmp_path, caplog):
    """Issue 10, critical 2: the stored overflow silence made every start raise OverflowError."""
    engine, sink = make_engine(tmp_path)
    engine.tick(at(0))
    engine.stop()
    bad = {"action": "silence", "matchers": {"category": "gas"}, "by": "x", "comment": "x", "expires": "999999999w"}
    _plant(tmp_path / "alerts.sqlite", [
        ("mqtt:city/xm/alerts/cmd", json.dumps(bad)),
        ("mqtt:city/xm/alerts/cmd", json.dumps({**bad, "expires": None, "expires_s": 1e300})),
        ("cli:someone", "{not json"),
        ("cli:someone", sqlite3.Binary(b"\x80\x81")),
    ])
    engine, sink = make_engine(tmp_path)
    engine.start()  # raised OverflowError before
    rows = {r["id"]: r for r in engine.store.command_rows()}
    assert [r["status"] for r in rows.values()] == ["failed"] * 4
    assert {r["result"] for r in rows.values()} == {
        "error: no authenticated author (a command stored by an earlier version): send it again",
        "error: stored body is not JSON (JSONDecodeError)", "error: stored body is not JSON (UnicodeDecodeError)"}
    assert engine.store.unapplied_commands() == []
    engine.process(det([(0, 10, "N-day", "red", 90)]))
    engine.tick(at(20))
    assert engine.flush(5) and sink.transitions() == ["firing"]
    engine.stop()


def test_a_stored_command_that_raises_while_applying_is_failed_not_retried(tmp_path, monkeypatch):
    engine, sink = make_engine(tmp_path)
    engine.tick(at(0))
    cid = engine.store.add_command("cli:x", {"action": "silence", "matchers": {"category": "gas"}, "comment": "c",
                                             "expires_s": 60}, "local:x", "x")

    def boom(*a, **kw):
        raise OverflowError("Python int too large to convert to SQLite INTEGER")

    monkeypatch.setattr(engine.store, "commit", boom)
    engine.tick(at(1))  # no exception out of the tick
    monkeypatch.undo()
    body, applied_at, result = engine.store.command(cid)
    assert applied_at is not None
    assert result == "error: internal: OverflowError: Python int too large to convert to SQLite INTEGER"
    assert engine.store.command_rows(1)[0]["status"] == "failed"
    assert engine.muter.silences == {}  # a silence the store could not hold mutes nothing
    engine.tick(at(2))
    assert engine.store.command(cid)[2] == result  # never retried
    engine.stop()


def test_tick_survives_a_broken_alert_and_logs_it_once(tmp_path, caplog):
    alerting = {"escalation": {"red_s": 60, "orange_s": 60, "yellow_s": 60}}
    engine, sink = make_engine(tmp_path, make_cfg(alerting))
    engine.process(det([(0, 0, "N-day", "red", 90), (1, 0, "N-day", "red", 90)]))
    broken, good = sorted(engine.active(), key=lambda a: a.device_id)
    broken.escalated_ns = "corrupt"  # e.g. a record no version of the engine can advance
    with caplog.at_level(logging.ERROR, logger="alerts.engine"):
        for t in (61, 62, 130):
            engine.tick(at(t))
    assert engine.flush(5)
    escalated = [n.payload["device"]["id"] for n in sink.notices if n.transition == "escalated"]
    assert escalated == [good.device_id, good.device_id]  # the other alert's timers went on
    logged = [r for r in caplog.records if broken.alert_id in r.getMessage()]
    assert len(logged) == 1 and logged[0].exc_info[0] is TypeError
    assert engine.counters["errors"] == 3
    engine.stop()


# ----- the listener: the author comes from the topic ------------------------------------------------

class _Msg:
    def __init__(self, topic: str, payload: bytes = b"{}", retain: bool = False):
        self.topic, self.payload, self.retain = topic, payload, retain


def _listener(handled: list, replies: list, answers_refusals=None):
    from alerts.command_listener import CommandListener

    cfg = make_cfg({"command_topic": "city/xm/alerts/cmd"})
    lst = CommandListener(cfg, lambda source, payload, author: handled.append((source, payload, author)) or "ok", {},
                          answers_refusals=answers_refusals)
    lst._reply = lambda msg, cmd, result, author: replies.append((msg.topic, result, author))
    return lst


@pytest.mark.parametrize(
    "topic, retain, kind, reply",
    [
        ("city/xm/alerts/cmd", False, "bare topic",
         "error: no author: send commands on city/xm/alerts/cmd/<your operator username>"),
        ("city/xm/alerts/cmd/ack", False, "unknown account",
         "error: 'ack' is not an operator (alerting.operators): send commands on city/xm/alerts/cmd/<your operator "
         "username>"),
        ("city/xm/alerts/cmd/XMG0003", False, "unknown account",
         "error: 'XMG0003' is not an operator (alerting.operators): send commands on city/xm/alerts/cmd/<your "
         "operator username>"),
        ("city/xm/alerts/cmd/li/ack", False, "deeper topic",
         "error: 'city/xm/alerts/cmd/li/ack' is not a command topic: send commands on city/xm/alerts/cmd/<your "
         "operator username>"),
        ("city/xm/alerts/cmd/li", True, "retained",
         "error: a retained command is not applied (it would be replayed on every reconnect): publish it without "
         "retain; send commands on city/xm/alerts/cmd/<your operator username>"),
    ],
)
def test_listener_refuses_commands_without_an_operator_topic(topic, retain, kind, reply, caplog):
    handled, replies = [], []
    lst = _listener(handled, replies)
    with caplog.at_level(logging.WARNING, logger="alerts.command_listener"):
        for _ in range(3):
            lst._on_message(None, None, _Msg(topic, b'{"action":"ack","alert_id":"a"}', retain))
    assert handled == []  # never applied
    assert replies == [(topic, reply, None)] * 3  # each answered
    assert lst.refused == {kind: 3}  # counted
    assert len(caplog.records) == 1 and kind in caplog.records[0].getMessage()  # logged once per kind


def test_in_a_cluster_one_worker_answers_a_refused_command_the_others_only_count_it():
    answers = {"wa": True, "wb": False}  # every worker's listener gets it; AlertEngine.answers_rest picks one
    replies_of = {}
    for worker, answers_rest in answers.items():
        handled, replies = [], []
        lst = _listener(handled, replies, answers_refusals=lambda a=answers_rest: a)
        lst._on_message(None, None, _Msg("city/xm/alerts/cmd/li", b'{"action":"ack","alert_id":"a"}', True))
        assert handled == [] and lst.refused == {"retained": 1}
        replies_of[worker] = [r[1] for r in replies]
    assert replies_of["wb"] == [] and len(replies_of["wa"]) == 1 and replies_of["wa"][0].startswith("error: ")


def test_listener_hands_an_operator_topic_command_over_with_its_author():
    handled, replies = [], []
    lst = _listener(handled, replies)
    lst._on_message(None, None, _Msg("city/xm/alerts/cmd/li", b'{"action":"ack","alert_id":"a"}'))
    assert handled == [("mqtt:city/xm/alerts/cmd/li", b'{"action":"ack","alert_id":"a"}', AUTHORS["li"])]
    assert replies == [("city/xm/alerts/cmd/li", "ok", AUTHORS["li"])]
    assert lst.refused == {}


# ----- damaged store rows and one alert's failing notice never stop the others ----------------------

def test_damaged_store_rows_are_skipped_and_logged_and_the_engine_starts(tmp_path, caplog):
    engine, _ = make_engine(tmp_path, make_cfg({}))
    engine.process(det([(0, 0, "N-day", "red", 90), (1, 0, "N-day", "red", 90)]))
    assert engine.submit_command("cli:test", {**SIL, "expires": "1h"}, AUTHORS["chen"]).startswith("ok")
    engine.stop()
    db = sqlite3.connect(engine.store.path)
    victim = sorted(a.alert_id for a in engine.active())[0]
    db.execute("UPDATE alerts SET body='{not json' WHERE alert_id=?", (victim,))
    db.execute("INSERT INTO silences (id, expires_ns, body) VALUES ('bad', 0, '{\"id\": \"bad\", \"matchers\": 7}')")
    db.commit()
    db.close()
    with caplog.at_level(logging.ERROR, logger="alerts.store"):
        again, sink = make_engine(tmp_path, make_cfg({}))
        again.start()
    assert [a.alert_id for a in again.active()] == [a for a in sorted(x.alert_id for x in engine.active()) if a != victim]
    assert len(again.muter.silences) == 1  # the good silence still mutes; the damaged one is skipped
    messages = [r.getMessage() for r in caplog.records]
    assert any("skipped 1 damaged open alert row" in m for m in messages)
    assert any("skipped 1 damaged silence row" in m for m in messages)
    again.tick(at(120))
    again.stop()


def test_one_alert_whose_notice_cannot_be_built_does_not_hold_the_others(tmp_path, caplog):
    engine, sink = make_engine(tmp_path, make_cfg({}))
    real = engine._build_notice

    def build(alert, kind, ts, extra):
        if alert.device_id == engine.cfg.devices[0].id:
            raise RuntimeError("a record no version of the engine can render")
        return real(alert, kind, ts, extra)

    engine._build_notice = build
    with caplog.at_level(logging.ERROR, logger="alerts.engine"):
        engine.process(det([(0, 0, "N-day", "red", 90), (1, 0, "N-day", "red", 90)]))
        engine.tick(at(600))
    assert engine.flush(5)
    notified = {n.payload["device"]["id"] for n in sink.notices if n.transition == "firing"}
    assert notified == {engine.cfg.devices[1].id}
    assert engine.counters["errors"] >= 1
    broken = [r for r in caplog.records if "could not be advanced" in r.getMessage()]
    assert len(broken) == 1 and broken[0].exc_info[0] is RuntimeError
    engine._build_notice = real  # the record is mended: its firing notice goes out at the next change
    engine.stop()


def _hint_before(value, choices):
    """`_hint` as it was: every candidate scored in full (a second for a long value against 10,000 devices)."""
    import difflib
    if not isinstance(value, str) or len(value) > commands.MAX_LABEL_VALUE:
        return ""
    best, best_score = None, 0.6
    for c in sorted(choices):
        if c.casefold() == value.casefold():
            return f" (did you mean {c!r}?)"
        score = difflib.SequenceMatcher(None, value, c).ratio()
        if score > best_score:
            best, best_score = c, score
    return f" (did you mean {best!r}?)" if best else ""


def test_did_you_mean_is_the_same_for_typos_and_not_given_for_long_values():
    cfg = make_cfg()
    ids = sorted(d.id for d in cfg.devices) + sorted(s.id for s in cfg.sites) + [s.name for s in cfg.sites]
    typos = []
    for x in ids:
        typos += [x[:-1], x[1:], x + "X", x.lower(), x[::-1], x[:3], x.replace("0", "O")]
    for value in typos + ["", "X", "XM", "GS", "燃气", "XM0001NOISEXM0001NOISE"]:
        assert commands._hint(value, ids) == _hint_before(value, ids), value
    # Longer than a typo: no hint, whatever it resembles (the old code compared 200 characters with each).
    long = "XM0001NOISE" * 6
    assert len(long) > commands.HINT_MAX_LEN
    assert _hint_before(long, [long + "X"]) and not commands._hint(long, [long + "X"])
    assert commands._hint(long[:commands.HINT_MAX_LEN], [long[:commands.HINT_MAX_LEN] + "X"])


def test_a_command_is_checked_outside_the_engine_lock(tmp_path, monkeypatch):
    """A refused command with a long unknown value held the engine's lock (detections, notices) for a second
    against 10,000 devices while its "did you mean" was worked out: parsing and validating run before it."""
    eng, _ = make_engine(tmp_path)
    held = []
    real = commands.validate

    def watched(cmd, cfg, author=None):
        held.append(eng._lock._is_owned())
        return real(cmd, cfg, author)

    monkeypatch.setattr(commands, "validate", watched)
    bad = {"action": "silence", "matchers": {"device_id": "NOSUCHDEVICE"}, "comment": "x", "expires": "1h"}
    good = {"action": "silence", "matchers": {"device_id": "XM0001NOISE"}, "comment": "x", "expires": "1h"}
    assert eng.submit_command("mqtt:city/xm/alerts/cmd/li", json.dumps(bad).encode(), AUTHORS["li"]).startswith("error:")
    assert eng.submit_command("mqtt:city/xm/alerts/cmd/li", good, AUTHORS["li"]).startswith("ok")
    assert held == [False, False]
    assert sorted(r["status"] for r in eng.store.command_rows()) == ["applied", "refused"]
