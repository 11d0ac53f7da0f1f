"""Arguments the command line refuses in one line before any work (audit of the command line): output paths
that cannot be written, a file that is not an alert store, an unsilence of an unknown silence, nonsense
speeds, ports, counts and durations; the shipped config as the default of replay, record and simulate."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import pytest

from alerts.muting import Silence
from alerts.store import AlertStore
from citywatch.cli import (
    CommandParser,
    output_problem,
    port_number,
    positive_count,
    positive_duration,
    positive_speed,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SCENARIO = os.path.join(ROOT, "simulators", "scenarios", "city_day.yaml")
CONFIG = os.path.join(ROOT, "config")


def citywatch(*args, cwd=ROOT, timeout=60):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES") and not k.startswith("CITYWATCH_")}
    env["PYTHONPATH"] = ROOT  # `python -m citywatch` from another directory
    return subprocess.run([sys.executable, "-m", "citywatch", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def one_line(text: str) -> str:
    """The help text with argparse's wrapping undone."""
    return " ".join(text.split())


# ----- 1. output paths -------------------------------------------------------------------------------

def test_output_problem_names_the_option_and_the_problem(tmp_path):
    assert output_problem("--out", str(tmp_path)) == f"--out {tmp_path}: is a directory; give a file path"
    missing = tmp_path / "nonexist" / "o.jsonl"
    assert output_problem("--out", str(missing)) == f"--out {missing}: folder {missing.parent} does not exist"
    (tmp_path / "file").write_text("x")
    under_file = tmp_path / "file" / "o.jsonl"
    assert output_problem("--out", str(under_file)) == f"--out {under_file}: folder {tmp_path / 'file'} is not a directory"
    assert output_problem("--out", str(tmp_path / "o.jsonl")) is None
    assert output_problem("--out", "o.jsonl") is None  # the current directory


def test_detect_output_that_is_a_directory_is_one_line_and_exit_2(tmp_path):
    feed = tmp_path / "feed.csv"
    feed.write_text("ts,device_id,leq\n")
    res = citywatch("detect", str(feed), "-o", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr == f"citywatch detect: --output {tmp_path}: is a directory; give a file path\n"
    res = citywatch("detect", str(feed), "--output", str(tmp_path / "nonexist" / "d.csv"))
    assert res.returncode == 2
    assert res.stderr == (f"citywatch detect: --output {tmp_path / 'nonexist' / 'd.csv'}: folder "
                          f"{tmp_path / 'nonexist'} does not exist\n")


@pytest.mark.parametrize("option", ["--out", "--truth"])
def test_simulate_output_that_is_a_directory_is_refused_before_the_run(tmp_path, option):
    other = "--truth" if option == "--out" else "--out"
    res = citywatch("simulate", SCENARIO, "--dry-run", "--duration", "10m", option, str(tmp_path), other,
                    str(tmp_path / "other.jsonl"))
    assert res.returncode == 2
    assert res.stderr == f"citywatch simulate: {option} {tmp_path}: is a directory; give a file path\n"
    assert not (tmp_path / "other.jsonl").exists()  # nothing written: refused before the run


def test_simulate_out_in_a_missing_folder_is_one_line(tmp_path):
    out = tmp_path / "nonexist" / "o.jsonl"
    res = citywatch("simulate", SCENARIO, "--dry-run", "--out", str(out), "--truth", str(tmp_path / "t.jsonl"))
    assert res.returncode == 2
    assert res.stderr == f"citywatch simulate: --out {out}: folder {out.parent} does not exist\n"


def test_record_out_that_is_a_directory_is_one_line_and_exit_2(tmp_path):
    res = citywatch("record", "--out", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr == f"citywatch record: --out {tmp_path}: is a directory; give a file path\n"


# ----- 2. a file that is not an alert store ------------------------------------------------------------

def test_alerts_store_that_is_not_sqlite_is_one_line_and_exit_2(tmp_path):
    small = tmp_path / "small.csv"
    small.write_text("ts,device_id,leq\n2025-06-01T00:00:00Z,XMN0001,55\n")
    before = small.read_bytes()
    res = citywatch("alerts", "--store", str(small), "list")
    assert res.returncode == 2
    assert res.stderr == f"error: {small} (--store) is not a citywatch alert store: file is not a database\n"
    assert small.read_bytes() == before


# ----- 3. unsilence of a silence the store does not know ---------------------------------------------

def store_with_silences(tmp_path, *silences: Silence):
    path = tmp_path / "alerts.sqlite"
    store = AlertStore(path)
    store.commit([], [], silences=list(silences))
    store.close()
    return path


def silence(sid: str, ended_by: str | None = None, expires_in_s: float = 3600) -> Silence:
    now = time.time_ns()
    return Silence(sid, {"site_id": "SM-1"}, "local:li", "works", now - 60 * 10**9,
                   now + int(expires_in_s * 10**9), created_ns=now - 60 * 10**9, ended_by=ended_by)


def pending_commands(path) -> list:
    store = AlertStore(path, create=False)
    try:
        return [c.command for c in store.unapplied_commands()]
    finally:
        store.close()


def test_unsilence_of_an_unknown_id_is_refused_with_the_active_ids(tmp_path):
    path = store_with_silences(tmp_path, silence("roadworks-1"), silence("old-1", ended_by="local:li"))
    res = citywatch("alerts", "--store", str(path), "unsilence", "roadwork-1", "--wait", "0")
    assert res.returncode == 2
    assert res.stderr == (f"error: no silence 'roadwork-1' in the store {path}; active silences: roadworks-1 "
                          "(`citywatch alerts list --silences`)\n")
    assert res.stdout == ""
    assert pending_commands(path) == []  # nothing queued


def test_unsilence_of_an_unknown_id_lists_at_most_five_active_ids(tmp_path):
    path = store_with_silences(tmp_path, *(silence(f"s{i}") for i in range(7)))
    res = citywatch("alerts", "--store", str(path), "unsilence", "nope", "--wait", "0")
    assert res.returncode == 2
    assert "active silences: s0, s1, s2, s3, s4 and 2 more" in res.stderr


def test_unsilence_of_an_ended_silence_says_so_and_queues_nothing(tmp_path):
    path = store_with_silences(tmp_path, silence("old-1", ended_by="local:li"), silence("gone-1", expires_in_s=-1))
    res = citywatch("alerts", "--store", str(path), "unsilence", "old-1", "--wait", "0")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("silence old-1 already ended by local:li at ") and "nothing to end" in res.stdout
    res = citywatch("alerts", "--store", str(path), "unsilence", "gone-1", "--wait", "0")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("silence gone-1 already expired at ")
    assert pending_commands(path) == []


def test_unsilence_of_an_active_or_queued_silence_is_queued(tmp_path):
    path = store_with_silences(tmp_path, silence("roadworks-1"))
    store = AlertStore(path, create=False)
    store.add_command("cli:li", {"action": "silence", "id": "queued-1", "matchers": {"site_id": "SM-1"},
                                 "comment": "x", "expires_s": 60})
    store.close()
    for sid in ("roadworks-1", "queued-1"):
        res = citywatch("alerts", "--store", str(path), "unsilence", sid, "--wait", "0")
        assert res.returncode == 0, res.stderr
        assert res.stdout.startswith("queued as command ")
    assert [c["silence_id"] for c in pending_commands(path) if c["action"] == "unsilence"] == ["roadworks-1",
                                                                                                "queued-1"]


# ----- 4. speeds, ports, counts, durations -----------------------------------------------------------

@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "0", "-1", "fast"])
def test_positive_speed_refuses_nonsense(text):
    with pytest.raises(argparse.ArgumentTypeError, match="must be a finite number above 0"):
        positive_speed(text)


def test_positive_speed_takes_a_number_above_0():
    assert positive_speed("60") == 60.0 and positive_speed("0.5") == 0.5


@pytest.mark.parametrize("text", ["0", "-5", "65536", "99999", "1883.0", "x"])
def test_port_number_refuses_what_is_no_port(text):
    with pytest.raises(argparse.ArgumentTypeError, match="must be a port number from 1 to 65535"):
        port_number(text)


def test_port_number_takes_1_to_65535():
    assert port_number("1") == 1 and port_number("65535") == 65535


@pytest.mark.parametrize("text", ["-1", "0", "1.5", "x"])
def test_positive_count_refuses_what_is_no_count(text):
    with pytest.raises(argparse.ArgumentTypeError, match="must be a whole number of at least 1"):
        positive_count(text)


def test_positive_duration():
    assert positive_duration("10m") == 600.0
    with pytest.raises(argparse.ArgumentTypeError, match="must not be negative, got '-5m'"):
        positive_duration("-5m")
    with pytest.raises(argparse.ArgumentTypeError, match="must be a positive number"):
        positive_duration("0")


@pytest.mark.parametrize("command", [["replay", "feed.jsonl"], ["simulate", SCENARIO]])
def test_speed_nan_is_refused(command):
    res = citywatch(*command, "--speed", "nan")
    assert res.returncode == 2
    assert res.stderr.splitlines()[-1] == (f"citywatch {command[0]}: error: argument --speed: must be a finite "
                                           "number above 0 (simulated seconds per wall-clock second), got 'nan'")


@pytest.mark.parametrize("value", ["0", "-5", "99999"])
@pytest.mark.parametrize("command", [["replay", "feed.jsonl"], ["simulate", SCENARIO], ["record", "--out", "r.jsonl"]])
def test_port_outside_1_to_65535_is_refused(command, value):
    res = citywatch(*command, f"--port={value}")
    assert res.returncode == 2
    assert res.stderr.splitlines()[-1] == (f"citywatch {command[0]}: error: argument --port: must be a port number "
                                           f"from 1 to 65535, got '{value}'")


def test_record_count_below_1_is_refused():
    res = citywatch("record", "--out", "r.jsonl", "--count", "-1")
    assert res.returncode == 2
    assert res.stderr.splitlines()[-1] == ("citywatch record: error: argument --count: must be a whole number of at "
                                           "least 1, got '-1'")


@pytest.mark.parametrize("command", [["record", "--out", "r.jsonl"], ["simulate", SCENARIO]])
def test_negative_duration_is_refused_as_negative(command):
    res = citywatch(*command, "--duration=-5m")
    assert res.returncode == 2
    assert res.stderr.splitlines()[-1] == f"citywatch {command[0]}: error: argument --duration: must not be negative, got '-5m'"
    # Written apart, argparse takes -5m for an option (its own rule); the message says how to write it.
    res = citywatch(*command, "--duration", "-5m")
    assert res.returncode == 2
    assert res.stderr.splitlines()[-1] == (f"citywatch {command[0]}: error: argument --duration: expected one argument "
                                           "(a value that starts with '-' is written --duration=VALUE)")


def test_the_hint_names_the_long_option(capsys):
    parser = CommandParser(prog="x")
    parser.add_argument("-o", "--output")
    with pytest.raises(SystemExit):
        parser.parse_args(["-o", "-x"])
    assert capsys.readouterr().err.splitlines()[-1] == ("x: error: argument -o/--output: expected one argument (a "
                                                        "value that starts with '-' is written --output=VALUE)")


# ----- 5. the shipped config as the default, from any directory --------------------------------------

def test_simulate_from_another_directory_uses_the_shipped_config(tmp_path):
    res = citywatch("simulate", SCENARIO, "--dry-run", "--duration", "10m", "--out", "feed.jsonl", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "feed.jsonl").stat().st_size > 0
    assert (tmp_path / "city_day-truth.jsonl").exists()


def test_replay_and_record_from_another_directory_use_the_shipped_config(tmp_path):
    res = citywatch("replay", "missing.jsonl", cwd=tmp_path)
    assert res.returncode == 2
    assert "not a directory" not in res.stderr and "missing.jsonl" in res.stderr
    res = citywatch("record", "--out", "r.jsonl", "--credentials", str(tmp_path / "none.json"), cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith(f"citywatch record: cannot read credentials {tmp_path / 'none.json'}")


# ----- 6. help and check-config --config -------------------------------------------------------------

@pytest.mark.parametrize("action", ["ack", "silence", "unsilence"])
def test_alerts_wait_has_help(action):
    res = citywatch("alerts", action, "--help")
    assert "--wait WAIT seconds to wait for the service to apply it" in one_line(res.stdout)


def test_users_add_role_has_help():
    res = citywatch("users", "add", "--help")
    assert "--role {viewer,operator,admin} viewer: reads; operator: also acknowledges alerts" in one_line(res.stdout)


def test_check_config_takes_config_as_well_as_dir(tmp_path):
    res = citywatch("check-config", "--config", CONFIG)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith(f"config OK: {CONFIG}\n")
    res = citywatch("check-config", CONFIG, "--config", CONFIG + "/")
    assert res.returncode == 0, res.stderr
    res = citywatch("check-config", CONFIG, "--config", str(tmp_path))
    assert res.returncode == 2
    assert res.stderr == (f"citywatch check-config: DIR {CONFIG} and --config {tmp_path} name different directories; "
                          "give one of them\n")


def test_another_applications_sqlite_file_is_refused_and_left_as_it_was(tmp_path):
    """`alerts --store other.sqlite list` created citywatch's tables inside another application's database."""
    import sqlite3
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE readings (ts INTEGER, value REAL)")
    db.commit()
    db.close()
    before = other.read_bytes()
    r = citywatch("alerts", "--store", str(other), "list")
    assert r.returncode == 2
    assert "is not a citywatch alert store" in r.stderr and "Traceback" not in r.stderr
    assert other.read_bytes() == before
    tables = {row[0] for row in sqlite3.connect(other).execute("SELECT name FROM sqlite_master")}
    assert tables == {"readings"}


def test_detect_save_state_into_a_missing_folder_is_refused_before_the_run(tmp_path):
    r = citywatch("detect", os.devnull, "--save-state", str(tmp_path / "nowhere" / "state.npz"))
    assert r.returncode == 2 and "--save-state" in r.stderr and "does not exist" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("value", ["nan", "0", "-1"])
def test_alerts_watch_interval_must_be_positive(value):
    r = citywatch("alerts", "watch", f"--interval={value}", "--once")
    assert r.returncode == 2 and "--interval" in r.stderr and "Traceback" not in r.stderr
