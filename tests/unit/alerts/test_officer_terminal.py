"""The duty officer's terminal must not mislead (issue 12): no store is created by reading, the board
says how old it is and whether the service lives, silences take site names and say what they mute,
ack takes short ids, values carry units and peaks, durations run on the store's clock, 80 columns stay
readable."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from rich.console import Console

from alerts import commands
from alerts.store import AlertStore
from alerts.terminal import STALE_AFTER_S, Freshness, value_text, words
from citywatch.cli import main
from citywatch.commands.alerts import board
from core import Detections
from tests.unit.alerts.helpers import T0, S, at, base_cfg, make_cfg, make_engine

RULES = [{"id": r, "type": t, "kind": k} for r, t, k in (
    ("N-day", "noise_day_limit", "noise"), ("G-rupture", "gas_rupture", "gas"), ("G-low", "gas_low", "gas"),
    ("Offline", "deadman", "any"))]
CTX = {"N-day": ("leq", "dB(A)", "noise"), "G-rupture": ("p_drop", "%", "gas"), "G-low": ("p", "kPa", "gas"),
       "Offline": ("silence", "s", "device")}


def dets(rows):
    """rows: (sensor, t_s, rule, severity code, value, limit): detections with the detectors' own context."""
    ctx = [{"metric": CTX[r[2]][0], "unit": CTX[r[2]][1]} for r in rows]
    return Detections(np.array([r[0] for r in rows], np.int32), np.array([at(r[1]) for r in rows], np.int64),
                      np.array([r[2] for r in rows], object), np.array([CTX[r[2]][2] for r in rows], object),
                      np.array([r[3] for r in rows], np.int8), np.array([r[4] for r in rows], float),
                      np.array([r[5] for r in rows], float), np.full(len(rows), np.nan), ctx)


def device(device_id):
    return next(i for i, d in enumerate(base_cfg().devices) if d.id == device_id)


@pytest.fixture
def engine(tmp_path):
    eng, _ = make_engine(tmp_path, make_cfg(rules=RULES))
    yield eng
    eng.stop()


def run(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


# ----- a missing store ------------------------------------------------------------------------------

@pytest.mark.parametrize("action", [["list"], ["watch", "--once"], ["show", "X"], ["ack", "X", "--wait", "0"],
                                    ["silence", "--match", "site_id=GS-HC-10", "--comment", "c", "--expires", "1h"],
                                    ["unsilence", "s1"]])
def test_a_missing_store_is_an_error_and_is_never_created(tmp_path, capsys, action):
    typo = tmp_path / "typo.sqlite"
    code, out, err = run(capsys, "alerts", "--store", str(typo), *action)
    assert code == 2 and out == ""
    assert err == (f"error: no alert store at {typo} (--store); check the path: `citywatch run` creates the store\n")
    assert not typo.exists() and list(tmp_path.iterdir()) == []


# ----- as of, and is the service alive ----------------------------------------------------------------

def test_list_says_as_of_and_whether_the_service_is_alive(tmp_path, capsys, engine):
    store = str(tmp_path / "alerts.sqlite")
    engine.process(dets([(device("XMG0003"), 0, "G-rupture", 4, 151.08, 10.0)]))
    engine.tick(at(60))
    engine.heartbeat(force=True)  # the next heartbeat (every HEARTBEAT_S of wall time) carries the clock
    code, out, _ = run(capsys, "alerts", "--store", store, "list")
    assert code == 0
    assert "as of 2025-06-01 22:31:00 CST (event clock) · service alive (heartbeat 0 s ago)" in out
    engine.stop()  # the service stops: the same board must now say so
    code, out, _ = run(capsys, "alerts", "--store", store, "list")
    assert "as of 2025-06-01 22:31:00 CST (event clock) · SERVICE NOT RUNNING: stopped 0 s ago" in out
    assert "G-rupture.XMG0003" in out  # still shown, under a header that says it may be stale


def test_a_stale_empty_board_is_not_an_all_clear(tmp_path, capsys, engine):
    store = str(tmp_path / "alerts.sqlite")
    engine.tick(at(0))
    code, out, _ = run(capsys, "alerts", "--store", store, "list")
    assert "citywatch: active alerts: none\n" in out and "NOT an all-clear" not in out
    engine.stop()
    code, out, _ = run(capsys, "alerts", "--store", store, "watch", "--once")
    assert code == 0 and "none in the store, but this is NOT an all-clear: the service is not known" in " ".join(out.split())


def test_freshness_judges_the_heartbeat():
    beat = T0
    alive = Freshness(T0, "wall", T0, beat, None, beat + 5 * S)
    assert alive.alive and alive.service_text() == "service alive (heartbeat 5 s ago)"
    stale = Freshness(T0, "wall", T0, beat, None, beat + int((STALE_AFTER_S + 1) * S))
    assert stale.alive is False and stale.service_text() == "SERVICE NOT RESPONDING: last heartbeat 1 min 1 s ago"
    stopped = Freshness(T0, "wall", T0, beat, beat + S, beat + 2 * 3600 * S + 5 * 60 * S)
    assert stopped.alive is False and stopped.service_text() == "SERVICE NOT RUNNING: stopped 2 h 4 min ago"
    old = Freshness(T0, None, T0, None, None, T0 + 300 * S)  # a store from before heartbeats
    assert old.alive is None and old.service_text() == (
        "service state UNKNOWN (no heartbeat in this store; store last written 5 min 0 s ago)")


def test_status_shows_the_alert_store_and_its_heartbeat(tmp_path, capsys):
    from tests.unit.alerts.helpers import write_config

    d = write_config(tmp_path / "config", "alerting:\n  store_path: var/alerts.sqlite\n")
    from config import load_config

    cfg = load_config(d, {})
    eng, _ = make_engine(tmp_path, cfg, store=AlertStore(tmp_path / "var" / "alerts.sqlite"))
    eng.tick(at(0))
    eng.heartbeat(force=True)
    from citywatch.commands.status import _alert_store_line

    _alert_store_line(cfg)
    eng.stop()
    _alert_store_line(cfg)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"alert store {tmp_path / 'var' / 'alerts.sqlite'}: as of 2025-06-01T14:30:00.000Z; "
                               "service alive")
    assert lines[1].endswith("SERVICE NOT RUNNING: stopped 0 s ago")


# ----- silence by site name, and what it mutes now ----------------------------------------------------

def test_silence_takes_a_site_name_and_says_what_it_mutes_now(tmp_path, capsys, engine):
    store = str(tmp_path / "alerts.sqlite")
    engine.process(dets([(device("XMG0010"), 0, "G-low", 2, 80.0, 90.0), (device("XMG0020"), 0, "G-low", 2, 81.0, 90.0),
                         (device("XMG0001"), 0, "G-low", 2, 82.0, 90.0)]))
    code, out, err = run(capsys, "alerts", "--store", store, "silence", "--match",
                         "site_id=Haicang gas network point 10", "--comment", "valve works", "--expires", "2h",
                         "--id", "s1", "--wait", "0")
    assert code == 0, err
    assert out.splitlines()[0] == "site_id=GS-HC-10: mutes 2 active alerts now: G-low.XMG0010, G-low.XMG0020"
    engine.tick(at(1))
    assert [s.matchers for s in engine.store.silences()] == [{"site_id": "GS-HC-10"}]
    code, out, err = run(capsys, "alerts", "--store", store, "silence", "--match", "site_id=Haicang gas network pt 10",
                         "--comment", "c", "--expires", "1h")
    assert code == 1 and err == ("error: matchers.site_id: unknown site 'Haicang gas network pt 10' "
                                 "(did you mean 'Haicang gas network point 10'?)\n")
    code, out, err = run(capsys, "alerts", "--store", store, "silence", "--match", "rule_id=N-day", "--comment", "c",
                         "--expires", "1h", "--wait", "0")
    assert code == 0 and out.splitlines()[0] == ("rule_id=N-day: mutes no active alert now (it mutes matching alerts "
                                                 "until it expires)")


def test_matchers_take_site_names_any_case_and_device_mns():
    cfg = base_cfg()
    dev = cfg.devices[4].model_copy(update={"mn": "88888880000004"})
    cfg = cfg.model_copy(update={"devices": [*cfg.devices[:4], dev, *cfg.devices[5:]]})
    got = commands.validate({"action": "silence", "matchers": ["site_id=haicang GAS network point 10",
                                                               "device_id=88888880000004"],
                             "comment": "c", "expires": "1h"}, cfg)
    assert got["matchers"] == {"site_id": "GS-HC-10", "device_id": dev.id}


# ----- ack by prefix, short id, selectors ---------------------------------------------------------------

def test_ack_takes_a_short_id_a_prefix_or_selectors_and_lists_ambiguity(tmp_path, capsys, engine):
    store = str(tmp_path / "alerts.sqlite")
    engine.process(dets([(device("XMG0003"), 0, "G-rupture", 4, 151.08, 10.0),
                         (device("XMG0010"), 0, "G-low", 2, 80.0, 90.0), (device("XMG0020"), 0, "G-low", 2, 81.0, 90.0)]))
    rupture = next(a.alert_id for a in engine.active() if a.rule_id == "G-rupture")
    code, out, err = run(capsys, "alerts", "--store", store, "ack", "G-rupture.XMG0003", "--wait", "0")
    assert code == 0, err
    assert out.splitlines()[0] == f"acknowledging {rupture} (red firing, Jimei gas station 3)"
    engine.tick(at(1))
    assert engine.alert(rupture).acked_by.startswith("local:")
    code, out, err = run(capsys, "alerts", "--store", store, "ack", "G-low", "--wait", "0")
    assert code == 2 and err.startswith("error: 'G-low' matches 2 alerts, name one: G-low.XMG0010.")
    assert "G-low.XMG0020." in err and err.count("\n") == 1
    code, out, err = run(capsys, "alerts", "--store", store, "ack", "--site", "Haicang gas network point 10",
                         "--wait", "0")
    assert code == 2 and "matches 2 alerts" in err
    code, out, err = run(capsys, "alerts", "--store", store, "ack", "--rule", "G-low", "--device", "XMG0020",
                         "--wait", "0")
    assert code == 0 and out.startswith("acknowledging G-low.XMG0020.")
    code, out, err = run(capsys, "alerts", "--store", store, "ack", "--rule", "N-day", "--wait", "0")
    assert code == 1 and err == "error: no alert --rule 'N-day' among the open alerts (pending, firing)\n"
    code, out, err = run(capsys, "alerts", "--store", store, "ack", "--wait", "0")
    assert code == 2 and err.startswith("error: name the alert:")


# ----- values, units, peaks, durations on the store's clock ---------------------------------------------

def test_values_in_words_with_units_and_the_peak(tmp_path, capsys, engine):
    store = str(tmp_path / "alerts.sqlite")
    noise = device("XM0001NOISE")
    engine.process(dets([(noise, 0, "N-day", 3, 81.8, 75.0)]))
    engine.process(dets([(noise, 60, "N-day", 2, 69.89, 70.0)]))
    engine.process(dets([(device("XMG0003"), 60, "G-rupture", 4, 151.08, 10.0),
                         (device("XMG0004"), 60, "Offline", 2, 18030.0, 7500.0)]))
    _, out, _ = run(capsys, "alerts", "--store", store, "list")
    rows = {line.split("│")[5].strip(): line for line in out.splitlines() if line.count("│") > 8}
    assert "69.89 dB(A), limit 70" in rows["N-day"] and "orange 81.8 dB(A)" in rows["N-day"]
    assert "yellow (peak orange)" in rows["N-day"]
    assert "151.1 % of set pressure, limit 10 %" in rows["G-rupture"]
    assert "5 h 0 min silent, limit 2 h 5 min" in rows["Offline"]
    assert "kPa" not in rows["G-rupture"]


def test_units_of_the_detectors_say_what_the_numbers_are():
    from detectors.deadman import Deadman
    from detectors.gas import GasRupture

    assert (GasRupture.metric, GasRupture.unit) == ("p_drop", "%")
    assert value_text(151.08, 10.0, GasRupture.unit, GasRupture.metric) == "151.1 % of set pressure, limit 10 %"
    assert value_text(18030, 7500, Deadman.unit, Deadman.metric) == "5 h 0 min silent, limit 2 h 5 min"
    assert value_text(0.62, 0.75, "ratio", "vdr") == "62 % valid, limit 75 %"
    assert [words(s) for s in (45, 605, 3600, 93600)] == ["45 s", "10 min", "1 h 0 min", "1 d 2 h"]


def test_durations_and_active_silences_use_the_stores_clock(tmp_path, capsys, engine):
    store = str(tmp_path / "alerts.sqlite")
    engine.process(dets([(device("XMG0010"), 0, "G-low", 2, 80.0, 90.0)]))
    engine.submit_command("cli", {"action": "silence", "matchers": {"rule_id": "G-low"}, "comment": "c",
                                  "expires_s": 7200, "id": "s1"}, commands.local_author("t"))
    engine.tick(at(3 * 3600 + 5 * 60))  # event time, 2025: the wall clock is more than a year later
    _, out, _ = run(capsys, "alerts", "--store", store, "list")
    assert "3 h 5 min" in out and "h0" not in out  # not wall now minus 2025 (thousands of hours)
    _, out, _ = run(capsys, "alerts", "--store", store, "list", "--silences")
    row = next(line for line in out.splitlines() if "s1" in line)
    assert row.rstrip(" │").endswith("no")  # expired at 2 h of event time
    engine.submit_command("cli", {"action": "silence", "matchers": {"rule_id": "G-low"}, "comment": "c",
                                  "expires_s": 7200, "id": "s2"}, commands.local_author("t"))
    engine.tick(at(3 * 3600 + 6 * 60))
    _, out, _ = run(capsys, "alerts", "--store", store, "list", "--silences")
    assert next(line for line in out.splitlines() if "s2" in line).rstrip(" │").endswith("yes")


# ----- 80 columns ----------------------------------------------------------------------------------

def test_the_board_at_80_columns_keeps_severity_site_rule_and_value_readable(tmp_path, engine):
    engine.process(dets([(device("XMG0010"), 0, "G-low", 3, 80.0, 90.0),
                         (device("XMG0003"), 0, "G-rupture", 4, 151.08, 10.0),
                         (device("XMG0004"), 0, "Offline", 2, 18030.0, 7500.0)]))
    buf = io.StringIO()
    console = Console(file=buf, width=80, highlight=False, color_system=None)
    console.print(board(engine.active(), at(60), width=80))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    # Cells may wrap onto more lines, never be cut: each piece is whole on some line.
    for word in ("red", "orange", "yellow", "firing", "G-rupture.XMG0003", "G-low.XMG0010", "Offline.XMG0004",
                 "Jimei gas", "station 3", "Haicang gas", "151.1 % of set", "5 h 0 min"):
        assert word in text, word
    wide = io.StringIO()
    Console(file=wide, width=200, highlight=False, color_system=None).print(board(engine.active(), at(60), width=200))
    assert "started (CST)" in wide.getvalue() and "started (CST)" not in text


def test_list_json_is_unchanged_in_shape(tmp_path, capsys, engine):
    store = str(tmp_path / "alerts.sqlite")
    engine.process(dets([(device("XMG0010"), 0, "G-low", 3, 80.0, 90.0)]))
    code, out, _ = run(capsys, "alerts", "--store", store, "list", "--json")
    assert code == 0 and json.loads(out)["rule_id"] == "G-low"
