"""Scenario files: loading the default scenario, and located errors for bad ones."""

from __future__ import annotations

import textwrap

import pytest

from config import ConfigError
from simulators.scenario import load_scenario, parse_duration


def test_city_day_loads_over_the_example_inventory(city_day, cfg):
    assert city_day.name == "city_day"
    assert city_day.devices == tuple(cfg.device_ids)
    assert (city_day.end_ms - city_day.start_ms) == 24 * 3600 * 1000
    # 2025-06-02 06:00 in Asia/Shanghai is 2025-06-01 22:00 UTC.
    assert city_day.start_ms == 1748815200000
    ids = [f.id for f in city_day.faults]
    assert len(ids) == len(set(ids)) >= 15
    # "HH:MM" earlier than the start time is the next morning: the night pour runs 23:00 -> 01:30.
    pour = next(f for f in city_day.faults if f.id == "F18")
    assert pour.start_ms == city_day.start_ms + 17 * 3600 * 1000
    assert pour.rules == ("N-night", "N-night-max", "N-prohibited")


def test_every_noise_fault_type_and_gas_fault_type_is_known(city_day):
    types = {f.type.code for f in city_day.faults}
    assert {"S3", "S4", "S5", "S7", "S8", "S9", "G3", "G4", "G5", "G6", "G8", "G9", "C1", "C2", "C3", "C4"} <= types


@pytest.mark.parametrize("text,seconds", [("90m", 5400), ("24h", 86400), ("30s", 30), ("2d", 172800), (15, 15),
                                          ("1.5h", 5400), ("250ms", 0.25)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "5 weeks", "-3m", "h"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def _write(tmp_path, body: str):
    p = tmp_path / "s.yaml"
    p.write_text(textwrap.dedent(body))
    return p


def test_errors_name_file_line_and_path(tmp_path, cfg):
    p = _write(tmp_path, """\
        scenario:
          name: bad
          seed: 1
          start: "2025-06-02T06:00"
          faults:
            - {id: A, type: S3, device: XM0002NOIS, start: "09:00", duration: 1h}
            - {id: B, type: G4, device: XM0001NOISE, start: "09:00", duration: 1h}
            - {id: C, type: S3, device: XM0001NOISE, start: "09:00", duration: 1h, rules: [N-dya]}
            - {id: D, type: S3, device: XM0001NOISE, start: "09:00", duration: 1h, params: {leq: 80}}
        """)
    with pytest.raises(ConfigError) as exc:
        load_scenario(p, cfg)
    text = str(exc.value)
    assert f"{p}:6: scenario.faults[0].device: unknown device 'XM0002NOIS'; did you mean 'XM0002NOISE'?" in text
    assert f"{p}:7: scenario.faults[1].type: fault G4 (third-party damage / rupture) applies to gas devices; XM0001NOISE is noise" in text
    assert f"{p}:8: scenario.faults[2].rules[0]: unknown rule 'N-dya'; did you mean 'N-day'?" in text
    assert f"{p}:9: scenario.faults[3].params.leq: unknown parameter; did you mean 'leq_db'? (known: leq_db, lmax_db)" in text


def test_unknown_key_and_unknown_type(tmp_path, cfg):
    p = _write(tmp_path, """\
        scenario:
          name: bad
          seed: 1
          start: "2025-06-02T06:00"
          sed: 2
          faults:
            - {id: A, type: S33, device: XM0001NOISE, start: "09:00", duration: 1h}
        """)
    with pytest.raises(ConfigError) as exc:
        load_scenario(p, cfg)
    text = str(exc.value)
    assert f"{p}:5: scenario.sed:" in text
    assert "unknown fault type 'S33'" in text


def test_fault_outside_the_scenario_is_an_error(tmp_path, cfg):
    p = _write(tmp_path, """\
        scenario:
          name: short
          seed: 1
          start: "2025-06-02T06:00"
          duration: 2h
          faults:
            - {id: A, type: S3, device: XM0001NOISE, start: "09:00", duration: 1h}
        """)
    with pytest.raises(ConfigError) as exc:
        load_scenario(p, cfg)
    assert "scenario.faults[0].start: 09:00 is outside the scenario (2025-06-02T06:00 + 2h)" in str(exc.value)


def test_with_duration_cuts_faults(city_day):
    short = city_day.with_duration(3600 * 4)
    assert short.end_ms == city_day.start_ms + 4 * 3600 * 1000
    assert all(f.start_ms < short.end_ms for f in short.faults)
    assert len(short.faults) < len(city_day.faults)


def test_work_windows_are_checked(tmp_path, cfg):
    p = _write(tmp_path, """\
        scenario:
          name: w
          seed: 1
          start: "2025-06-02T06:00"
          work:
            sites: [SM-2025-101, NOPE]
            windows: [["08:00", "11:00"], ["13:00", "25:00"]]
        """)
    with pytest.raises(ConfigError) as exc:
        load_scenario(p, cfg)
    text = str(exc.value)
    assert f"{p}:6: scenario.work.sites[1]: unknown site 'NOPE'" in text
    assert f"{p}:7: scenario.work.windows[1]: must be [HH:MM, HH:MM] with start before end, got ['13:00', '25:00']" in text
    p.write_text(p.read_text().replace("25:00", "18:00").replace(", NOPE", ""))
    assert load_scenario(p, cfg).work_windows == ((480, 660), (780, 1080))


@pytest.mark.parametrize("start, duration, fault, said", [
    # An offset was dropped without a word, the config's zone used instead (an 8 h shift for +00:00).
    ('"2025-06-02T06:00+05:00"', "2h", "", "without a UTC offset"),
    ('"0001-01-01T00:00"', "2h", "", "a date from 2000 to 2100"),   # was a ValueError traceback in build_feed
    ('"2025-06-02T06:00"', "60d", "", "at most 31d"),               # the feed is built in memory
    # A fault of no length injected nothing; one past the end was cut without a word and scored as if whole.
    ('"2025-06-02T06:00"', "2h", '{id: A, type: S3, device: XM0001NOISE, start: "07:00", duration: 0s}',
     "a fault lasts longer than 0 s"),
    ('"2025-06-02T06:00"', "2h", '{id: A, type: S3, device: XM0001NOISE, start: "07:00", duration: 10h}',
     "ends after the scenario (2025-06-02T06:00 + 2h)"),
])
def test_scenario_values_taken_without_a_word_are_refused(tmp_path, cfg, start, duration, fault, said):
    faults = f"\n  faults:\n    - {fault}" if fault else ""
    p = tmp_path / "s.yaml"
    p.write_text(f"scenario:\n  name: s\n  seed: 1\n  start: {start}\n  duration: {duration}{faults}\n")
    with pytest.raises(ConfigError) as exc:
        load_scenario(p, cfg)
    assert said in str(exc.value)
