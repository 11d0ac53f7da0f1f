"""`citywatch detect` on anyone's CSV (issue 16 item 7): --time-column, --device for one series, --tz and
--epoch-unit, a byte-order mark, rows with too many or too few cells, generic devices (--kind generic),
--rules FILE, the warning for a rule field the feed lacks, and per-row --scores."""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from citywatch.commands import detect
from config import DEFAULT_CONFIG_DIR, ConfigError, load_config
from detectors.feed import parse_ts_ns, parse_tz
from detectors.registry import RuleSet, check_rules
from tests.unit.detectors.helpers import TEST_DEVICES, TEST_SITES, batch, make_config, rows_of, series

ROOT = Path(__file__).resolve().parents[3]

RULES = """\
rules:
  - {id: hi, type: threshold, field: value, levels: [{above: 5, severity: yellow}]}
"""


def run_detect(argv: list[str]) -> int:
    """The detect command as `citywatch detect ARGV` runs it (its own parser: no other command imported)."""
    parser = argparse.ArgumentParser(prog="citywatch")
    detect.register(parser.add_subparsers())
    args = parser.parse_args(["detect", *argv])
    return args.func(args)


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "r.yaml").write_text(RULES)
    return tmp_path


# name, file bytes, arguments, exit code, flags (stdout lines) or None, text expected on standard error
CASES = [
    ("timestamp column refused with a hint",
     b"timestamp,device_id,value\n2025-06-01T00:00:00Z,E1,1\n", [], 1, None,
     "line 1: the CSV header has no time column 'ts' (columns: timestamp, device_id, value); give --time-column "
     "timestamp"),
    ("--time-column names it",
     b"timestamp,device_id,value\n2025-06-01T00:00:00Z,E1,1\n2025-06-01T00:01:00Z,E1,9\n",
     ["--time-column", "timestamp"], 0, ["0", "1"], ""),
    ("time column of another case is suggested",
     b"TS,device_id,value\n2025-06-01T00:00:00Z,E1,1\n", [], 1, None, "give --time-column TS"),
    ("one series needs --device",
     b"ts,value\n2025-06-01T00:00:00Z,1\n", [], 1, None,
     "the feed has no device_id column; give --device ID once for a file that is one device's series"),
    ("one series takes one --device only",
     b"ts,value\n2025-06-01T00:00:00Z,1\n", ["--device", "E1", "--device", "E2"], 1, None,
     "give --device ID once for a file that is one device's series (got 2)"),
    ("a device outside the inventory needs --kind generic",
     b"ts,value\n2025-06-01T00:00:00Z,1\n", ["--device", "E1", "--no-kind"], 1, None,
     "--device 'E1': no such device in the inventory; give --kind generic to read the series as a generic device"),
    ("one series as a generic device",
     b"ts,value\n2025-06-01T00:00:00Z,1\n2025-06-01T00:01:00Z,9\n2025-06-01T00:02:00Z,2\n", ["--device", "E1"], 0,
     ["0", "1", "0"], ""),
    ("naive times refused, --tz offered",
     b"ts,device_id,value\n2025-06-01 00:00:00,E1,1\n", [], 1, None,
     "line 2: ts: timestamp '2025-06-01 00:00:00' has no time zone (add Z or +08:00); or give --tz with the zone "
     "these times are in (e.g. --tz Asia/Shanghai or --tz +08:00)"),
    ("an unknown zone",
     b"ts,device_id,value\n2025-06-01 00:00:00,E1,1\n", ["--tz", "Mars/Olympus"], 1, None,
     "--tz: unknown time zone 'Mars/Olympus' (give an IANA name such as Asia/Shanghai, UTC, or an offset such as "
     "+08:00)"),
    ("a byte-order mark is no part of the header",
     "\ufeffts,device_id,value\n2025-06-01T00:00:00Z,E1,9\n".encode(), [], 0, ["1"], ""),
    ("an extra cell names the line",
     b"ts,device_id,value\n2025-06-01T00:00:00Z,E1,1\n2025-06-01T00:01:00Z,E1,9,7\n", [], 1, None,
     "line 3: 4 cells, but the header names 3 columns (extra: '7'); a value with a comma must be quoted"),
    ("a missing cell names the line",
     b"ts,device_id,value\n2025-06-01T00:00:00Z,E1\n", [], 1, None,
     "line 2: 2 cells, but the header names 3 columns (no cell for value); write an empty cell for a missing value"),
    ("an empty cell is a missing value, not an error",
     b"ts,device_id,value\n2025-06-01T00:00:00Z,E1,\n2025-06-01T00:01:00Z,E1,9\n", [], 0, ["0", "1"], ""),
    ("a column named twice",
     b"ts,device_id,value,value\n2025-06-01T00:00:00Z,E1,1,2\n", [], 1, None,
     "line 1: the CSV header names column 'value' twice"),
    ("a rule field the feed lacks: warned, with the column of another case",
     b"ts,device_id,Value\n2025-06-01T00:00:00Z,E1,9\n", [], 0, ["0"],
     "warning: rule 'hi' reads field 'value', which the feed has no column for (columns: Value); did you mean "
     "'Value'? Rule fields are lower case: rename the column to value; it judged nothing"),
    ("a rule field the feed lacks: a misspelt column",
     b"ts,device_id,valu\n2025-06-01T00:00:00Z,E1,9\n", [], 0, ["0"],
     "(columns: valu); did you mean 'valu'?; it judged nothing"),
    ("epoch seconds read as milliseconds: warned",
     b"ts,device_id,value\n1748736000,E1,9\n", [], 0, ["1"],
     "warning: line 2: time 1748736000 read as epoch milliseconds is 1970-01-21T05:45:36.000Z; if the times are "
     "epoch seconds, give --epoch-unit s"),
    ("header spaces are trimmed",
     b"ts, device_id, value\n2025-06-01T00:00:00Z,E1,9\n", [], 0, ["1"], ""),
]


@pytest.mark.parametrize("name,data,extra,rc,flags,err", CASES, ids=[c[0] for c in CASES])
def test_feed_cases(work, capsys, name, data, extra, rc, flags, err):
    (work / "feed.csv").write_bytes(data)
    argv = ["feed.csv", "--rules", "r.yaml", "--flags", "--no-progress"]
    if "--no-kind" in extra:
        extra = [a for a in extra if a != "--no-kind"]
    else:
        argv += ["--kind", "generic"]
    assert run_detect(argv + extra) == rc
    out, stderr = capsys.readouterr()
    if flags is not None:
        assert out.split() == flags
    assert err in stderr
    if not err:
        assert "warning" not in stderr


# name, file text, arguments, the detection times (UTC) of the threshold rule
TIME_CASES = [
    ("--tz offset", "ts,device_id,value\n2025-06-01 08:00:00,E1,9\n", ["--tz", "+08:00"], ["2025-06-01T00:00:00.000Z"]),
    ("--tz IANA name", "ts,device_id,value\n2025-06-01T08:00:00,E1,9\n", ["--tz", "Asia/Shanghai"],
     ["2025-06-01T00:00:00.000Z"]),
    ("--tz leaves zoned times alone", "ts,device_id,value\n2025-06-01T08:00:00Z,E1,9\n", ["--tz", "Asia/Shanghai"],
     ["2025-06-01T08:00:00.000Z"]),
    ("--tz in a zone with daylight saving", "ts,device_id,value\n2025-07-01 12:00:00,E1,9\n",
     ["--tz", "Europe/Berlin"], ["2025-07-01T10:00:00.000Z"]),
    ("--epoch-unit s", "ts,device_id,value\n1748736000,E1,9\n", ["--epoch-unit", "s"], ["2025-06-01T00:00:00.000Z"]),
    ("epoch ms by default", "ts,device_id,value\n1748736000000,E1,9\n", [], ["2025-06-01T00:00:00.000Z"]),
    ("epoch seconds with a fraction", "ts,device_id,value\n1748736000.5,E1,9\n", ["--epoch-unit", "s"],
     ["2025-06-01T00:00:00.500Z"]),
]


@pytest.mark.parametrize("name,text,extra,times", TIME_CASES, ids=[c[0] for c in TIME_CASES])
def test_time_cases(work, capsys, name, text, extra, times):
    (work / "feed.csv").write_text(text)
    assert run_detect(["feed.csv", "--rules", "r.yaml", "--kind", "generic", "--no-progress", *extra]) == 0
    out, err = capsys.readouterr()
    rows = list(csv.DictReader(io.StringIO(out)))
    assert [r["ts"] for r in rows if r["rule_id"] == "hi"] == times
    assert "warning" not in err


@pytest.mark.parametrize("text,zone,expected", [
    ("2025-06-01 08:00", "+08:00", "2025-06-01T00:00:00+00:00"),
    ("2025-06-01 08:00", "+0800", "2025-06-01T00:00:00+00:00"),
    ("2025-06-01 08:00", "-5", "2025-06-01T13:00:00+00:00"),
    ("2025-06-01 08:00", "UTC", "2025-06-01T08:00:00+00:00"),
    ("2025-06-01 08:00", "Z", "2025-06-01T08:00:00+00:00"),
    ("2025-01-15 08:00", "America/New_York", "2025-01-15T13:00:00+00:00"),
])
def test_parse_tz_forms(text, zone, expected):
    import datetime as dt

    got = dt.datetime.fromtimestamp(parse_ts_ns(text, parse_tz(zone)) / 1e9, dt.UTC)
    assert got.isoformat() == expected


@pytest.mark.parametrize("zone,message", [
    ("+25:00", "offset '+25:00' is out of range"),
    ("Nowhere/Town", "unknown time zone 'Nowhere/Town'"),
])
def test_parse_tz_refuses(zone, message):
    with pytest.raises(ValueError, match=message.replace("+", r"\+")):
        parse_tz(zone)


def test_unknown_devices_skipped_with_the_hint(work, capsys):
    (work / "feed.csv").write_text("ts,device_id,value\n2025-06-01T00:00:00Z,E1,9\n")
    assert run_detect(["feed.csv", "--rules", "r.yaml", "--flags", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.split() == ["0"]
    assert ("skipped 1 row(s) of device 'E1': not in the inventory (--kind generic reads such devices as generic "
            "devices)") in err


def test_generic_devices_from_standard_input(work, capsys, monkeypatch):
    text = ("ts,device_id,value\n2025-06-01T00:00:00Z,E1,1\n2025-06-01T00:00:00Z,E1,9\n2025-06-01T00:01:00Z,E1,1\n"
            "2025-06-01T00:01:00Z,E2,8\n2025-06-01T00:01:00Z,XMG0031,380\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO("\ufeff" + text))
    assert run_detect(["-", "--rules", "r.yaml", "--kind", "generic", "--flags", "--no-progress"]) == 0
    # The inventory's gas sensor (its third cell is `value` here) is judged by the same generic rule.
    assert capsys.readouterr().out.split() == ["0", "1", "0", "1", "1"]


def test_jsonl_single_series(work, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO('{"t": 1748736000, "value": 3}\n{"t": 1748736060, "value": 8}\n'))
    assert run_detect(["-", "--rules", "r.yaml", "--kind", "generic", "--flags", "--no-progress", "--time-column", "t",
                       "--epoch-unit", "s", "--device", "S1"]) == 0
    assert capsys.readouterr().out.split() == ["0", "1"]


def test_inventory_device_as_one_series_gets_its_domain_rules(work, capsys):
    (work / "feed.csv").write_text("timestamp,p\n2025-06-01T15:01:00Z,300\n2025-06-01T15:02:00Z,380\n")
    assert run_detect(["feed.csv", "--time-column", "timestamp", "--device", "XMG0031", "--no-deadman",
                       "--no-progress", "--format", "jsonl"]) == 0
    out = capsys.readouterr().out
    assert '"rule_id": "G-highhigh"' in out and '"device_id": "XMG0031"' in out


@pytest.mark.parametrize("chunk_rows", ["50000", "2"])
def test_rows_of_one_instant_on_a_step_boundary_are_judged(work, capsys, chunk_rows):
    # Every row of a chunk at one time that is a multiple of --watermark-s: once dropped without a word.
    (work / "feed.csv").write_text("ts,device_id,p\n2025-06-01T15:00:00Z,XMG0031,380\n2025-06-01T15:00:00Z,XMG0025,300\n")
    assert run_detect(["feed.csv", "--flags", "--no-progress", "--chunk-rows", chunk_rows]) == 0
    assert capsys.readouterr().out.split() == ["1", "0"]  # 380 kPa is above G-high, 300 (the set pressure) is not


# ----- --rules FILE --------------------------------------------------------------------------------

def test_rules_file_keeps_the_rest_of_the_config(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text(RULES)
    cfg = load_config(rules_file=f)
    assert [r.id for r in cfg.rules] == ["hi"]
    # The shipped inhibit list names rules the file lacks: kept, never an error (it cannot match).
    assert len(cfg.alerting.inhibit) == len(load_config().alerting.inhibit) > 0
    assert cfg.devices == load_config().devices


def test_replacing_rules_yaml_in_a_copied_dir_still_checks_the_references(tmp_path):
    d = tmp_path / "cfg"
    shutil.copytree(DEFAULT_CONFIG_DIR, d, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    (d / "rules.yaml").write_text(RULES)
    with pytest.raises(ConfigError) as exc:
        load_config(d)
    assert exc.value.problems and all("unknown rule" in p.message for p in exc.value.problems)
    assert load_config(d, rules_file=d / "rules.yaml").rules[0].id == "hi"


@pytest.mark.parametrize("text,problem", [
    ("rules:\n  - {id: hi, type: threshold, field: value, levels: [{above: 5, severity: yellow}]}\nnoise: {}\n",
     "r.yaml:3: noise: a rules file holds only 'rules:'; the other sections come from the config directory (--config)"),
    ("- {id: hi, type: threshold}\n", "r.yaml:1: a rules file must be a mapping with a 'rules:' list, as "
     "config/rules.yaml"),
    ("rules:\n  - {id: a, type: threshold, field: v, levels: [{above: 1, severity: red}]}\n"
     "  - {id: a, type: threshold, field: v, levels: [{above: 1, severity: red}]}\n",
     "r.yaml:3: rules[1].id: duplicate rule id; already used by rules[0] (line 2) (got 'a')"),
    ("rules:\n  - {id: a, type: robust_zz, field: v}\n", "r.yaml:2: rules[0].type: unknown detector type; did you "
     "mean 'robust_z'?"),
])
def test_rules_file_problems(work, capsys, text, problem):
    (work / "r.yaml").write_text(text)
    (work / "feed.csv").write_text("ts,device_id,v\n2025-06-01T00:00:00Z,E1,9\n")
    assert run_detect(["feed.csv", "--rules", "r.yaml", "--kind", "generic", "--no-progress"]) == 1
    assert problem in capsys.readouterr().err


# ----- the generic device kind ---------------------------------------------------------------------

GENERIC = {"id": "B1", "kind": "generic", "report_interval_s": 60}


def test_generic_device_needs_no_site_but_noise_and_gas_do():
    cfg = make_config(devices=TEST_DEVICES + [GENERIC], sites=TEST_SITES)
    assert cfg.device("B1").site is None
    with pytest.raises(ValidationError, match=r"required key is missing \(a noise device belongs to a site; only a "
                                              r"generic device may have none\)"):
        make_config(devices=[{"id": "N1", "kind": "noise", "report_interval_s": 60}], sites=TEST_SITES)


@pytest.mark.parametrize("rule,problem", [
    ({"id": "x", "type": "gas_high", "kind": "generic"}, "detector type gas_high runs on gas devices (got 'generic')"),
    ({"id": "x", "type": "noise_day_limit", "kind": "generic"},
     "detector type noise_day_limit runs on noise devices (got 'generic')"),
    ({"id": "x", "type": "robust_z", "kind": "generic", "field": "v"}, None),
    ({"id": "x", "type": "deadman", "kind": "generic"}, None),
])
def test_rule_kind_generic(rule, problem):
    cfg = make_config(rules=[rule], devices=TEST_DEVICES + [GENERIC], sites=TEST_SITES)
    found = [p.message for p in check_rules(cfg)]
    assert found == ([problem] if problem else [])


def test_generic_devices_get_only_the_generic_rules_and_the_same_verdicts():
    rules = [{"id": "Z", "type": "robust_z", "field": "p", "window": 5, "min_count": 3},
             {"id": "G-high", "type": "gas_high", "kind": "gas"},
             {"id": "T", "type": "threshold", "field": "p", "levels": [{"above": 400, "severity": "red"}]}]
    devices = TEST_DEVICES + [GENERIC, {"id": "B2", "kind": "generic", "report_interval_s": 60}]
    cfg = make_config(rules=rules, devices=devices, sites=TEST_SITES)
    values = [{"p": v} for v in (300, 301, 300, 302, 300, 450, 300, 301)]
    t0 = 1_748_736_000_000_000_000
    # Rows of noise, gas and generic devices interleaved in one batch: the rounds order them by kind code.
    rows = [r for i in range(len(values)) for r in (series("B1", t0, values)[i], series("G-MED", t0, values)[i],
                                                    series("N-PLAIN", t0, values)[i], series("B2", t0, values)[i])]
    dets = RuleSet.from_config(cfg).process(batch(rows, cfg))

    def verdicts(device, rule):
        i = cfg.device_index(device)
        return [(r["ts_ns"], r["severity"], r["score"]) for r in rows_of(dets, rule) if r["sensor"] == i]

    assert verdicts("B1", "Z") == verdicts("G-MED", "Z") == verdicts("N-PLAIN", "Z") == verdicts("B2", "Z") != []
    assert verdicts("B1", "T") == verdicts("G-MED", "T") != []
    assert verdicts("B1", "G-high") == [] and verdicts("G-MED", "G-high") != []


def test_shipped_rule_groups_unchanged_without_generic_devices():
    # Snapshots name shared state by the kinds of its rule group: no generic device, no new names.
    rs = RuleSet.from_config(load_config())
    assert all("generic" not in kinds for kinds in rs.shared)


def test_service_refuses_generic_devices(tmp_path, capsys):
    import yaml

    from citywatch.commands import run

    d = tmp_path / "cfg"
    shutil.copytree(DEFAULT_CONFIG_DIR, d, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    inv = yaml.safe_load((d / "inventory.yaml").read_text())
    inv["devices"].append(GENERIC)
    (d / "inventory.yaml").write_text(yaml.safe_dump(inv))
    assert load_config(d).device("B1").kind == "generic"
    assert run._run(argparse.Namespace(config=str(d), log_level="WARNING")) == 1
    assert "citywatch run: device(s) of kind generic are for `citywatch detect` only, not the service: B1" \
        in capsys.readouterr().err


# ----- --scores ------------------------------------------------------------------------------------

SCORE_RULES = """\
rules:
  - {id: hi, type: threshold, field: value, levels: [{above: 5, severity: yellow}]}
  - {id: z, type: robust_z, field: value, window: 5, min_count: 3, min_mad: 0.5}
  - {id: c, type: cusum, field: value, warmup: 3, target: 1, sigma: 1}
"""


def test_scores_beside_the_flags(work, capsys):
    (work / "r.yaml").write_text(SCORE_RULES)
    vals = [1, 1, 2, 1, 9, 1, ""]
    text = "ts,device_id,value\n" + "".join(f"2025-06-01T00:0{i}:00Z,E1,{v}\n" for i, v in enumerate(vals))
    text += "2025-06-01T00:07:00Z,NOPE,9\n"
    (work / "feed.csv").write_text(text)
    assert run_detect(["feed.csv", "--rules", "r.yaml", "--kind", "generic", "--scores", "--no-progress",
                       "--output", "det.csv"]) == 0
    rows = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert rows[0] == ["flag", "hi", "z", "c"]
    body = rows[1:]
    assert len(body) == len(vals) + 1
    assert [r[0] for r in body] == ["0", "0", "0", "0", "1", "1", "0", "1"]  # the CUSUM holds one more row
    assert [r[1] for r in body] == ["1", "1", "2", "1", "9", "1", "", "9"]  # threshold: the value itself
    assert [r[2] == "" for r in body] == [True, True, True, False, False, False, True, True]  # z after min_count
    assert [r[3] for r in body] == ["", "", "", "0", "7.5", "7", "", ""]  # CUSUM S in sigma after its warm-up
    # A flagged row's score is the score of its detection.
    dets = {(d["rule_id"], d["ts"]): d for d in csv.DictReader((work / "det.csv").open())}
    z = dets[("z", "2025-06-01T00:04:00.000Z")]
    assert float(body[4][2]) == pytest.approx(float(z["score"]), abs=1e-3)
    assert float(body[4][2]) > 3.5 > float(body[3][2])


def test_scores_with_rule_filter_and_onset(work, capsys):
    (work / "r.yaml").write_text(SCORE_RULES)
    (work / "feed.csv").write_text("ts,value\n" + "".join(f"2025-06-01T00:0{i}:00Z,{v}\n"
                                                          for i, v in enumerate([1, 9, 9, 1])))
    assert run_detect(["feed.csv", "--rules", "r.yaml", "--kind", "generic", "--device", "E1", "--flags", "onset",
                       "--scores", "--rule", "hi", "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines() == ["flag,hi", "0,1", "1,9", "0,9", "0,1"]


def test_scores_of_a_skipped_device_are_empty(work, capsys):
    (work / "feed.csv").write_text("ts,device_id,value\n2025-06-01T00:00:00Z,NOPE,9\n")
    assert run_detect(["feed.csv", "--rules", "r.yaml", "--scores", "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines() == ["flag,hi", "0,"]
    assert "skipped 1 row(s) of device 'NOPE'" in err


def test_flags_output_unchanged_without_scores(work, capsys):
    (work / "feed.csv").write_text("ts,device_id,value\n2025-06-01T00:00:00Z,E1,9\n")
    assert run_detect(["feed.csv", "--rules", "r.yaml", "--kind", "generic", "--flags", "--no-progress"]) == 0
    assert capsys.readouterr().out == "1\n"


# ----- end to end ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_end_to_end_on_a_benchmark_style_csv(tmp_path):
    """A benchmark's file as published: a byte-order mark, `timestamp` and `value`, naive local times, one
    series; the command run as a user runs it."""
    lines = ["\ufefftimestamp,value"] + [f"2014-04-01 {h:02d}:00:00,{v}" for h, v in
                                          enumerate([10, 11, 10, 12, 11, 10, 90, 11, 10, 12])]
    (tmp_path / "machine.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "rules.yaml").write_text(
        "rules:\n  - {id: z, type: robust_z, field: value, window: 5, min_count: 3}\n"
        "  - {id: spike, type: threshold, field: value, levels: [{above: 50, severity: orange}]}\n")
    res = subprocess.run(
        [sys.executable, "-m", "citywatch", "detect", "machine.csv", "--time-column", "timestamp", "--device", "M1",
         "--kind", "generic", "--tz", "Asia/Shanghai", "--rules", "rules.yaml", "--scores", "--no-progress"],
        capture_output=True, text=True, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr
    rows = list(csv.reader(io.StringIO(res.stdout)))
    assert rows[0] == ["flag", "z", "spike"]
    flags = [r[0] for r in rows[1:]]
    assert flags == ["0"] * 6 + ["1"] + ["0"] * 3
    assert rows[7][2] == "90" and float(rows[7][1]) > 3.5
    assert res.stderr == ""
    help_text = subprocess.run([sys.executable, "-m", "citywatch", "detect", "--help"], capture_output=True, text=True,
                               cwd=ROOT).stdout
    for option in ("--time-column", "--tz", "--epoch-unit", "--kind", "--rules", "--scores"):
        assert option in help_text
    assert np.isfinite(float(rows[7][1]))


@pytest.mark.parametrize("argv,message", [
    (["feed.csv", "--scores", "--no-detections"], "--no-detections writes nothing, so it goes with none of --flags, "
     "--scores, --compare, --output"),
    (["--influx", "--kind", "generic", "--since", "1d", "--until", "now"], "--kind and --tz go with a feed file, "
     "not --influx"),
    (["--influx", "--tz", "+08:00", "--since", "1d", "--until", "now"], "--kind and --tz go with a feed file"),
])
def test_option_mistakes(work, capsys, argv, message):
    (work / "feed.csv").write_text("ts,device_id,value\n2025-06-01T00:00:00Z,E1,9\n")
    assert run_detect(argv) == 1
    assert message in capsys.readouterr().err
