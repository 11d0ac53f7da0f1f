"""Any single mutation of a valid config loads or fails with located problems; it never crashes (hypothesis)."""

from __future__ import annotations

import copy
import re
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import Config, ConfigError, load_config

BASE_DIR = Path(__file__).parent / "broken" / "overlapping_permits"  # any case: the valid parts are shared


def _valid_sections() -> dict[str, dict]:
    inventory = yaml.safe_load((BASE_DIR / "inventory.yaml").read_text())
    time = yaml.safe_load((BASE_DIR.parent / "permit_unknown_site" / "time_rules.yaml").read_text())
    time["time"]["permits"][0]["site"] = "SM-2025-101"
    connections = yaml.safe_load((BASE_DIR.parent / "influx_bad_url" / "connections.yaml").read_text())
    connections["connections"]["influx"]["url"] = "http://127.0.0.1:8086"
    return {"inventory.yaml": inventory, "time_rules.yaml": time, "connections.yaml": connections}


VALID = _valid_sections()
PROBLEM = re.compile(r"^[^:]+?(:\d+)?: .+$")
WEIRD = [None, -1, 0, 1e12, "", "x", "25:00", [], {}, True, [1, "a"], {"k": 1}, "2025-13-01", "Asia/Nowhere"]


def _paths(node, path=()):
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, path + (i,))


def _mutate(sections: dict, file: str, path: tuple, how: str, value) -> dict:
    out = copy.deepcopy(sections)
    if not path:
        out[file] = value
        return out
    parent = out[file]
    for key in path[:-1]:
        parent = parent[key]
    last = path[-1]
    if how == "replace":
        parent[last] = value
    elif how == "delete":
        del parent[last]
    elif how == "rename" and isinstance(last, str):
        parent[last[:-1] + "x"] = parent.pop(last)
    elif how == "duplicate" and isinstance(parent, list):
        parent.append(copy.deepcopy(parent[last]))
    return out


@st.composite
def mutations(draw):
    file = draw(st.sampled_from(sorted(VALID)))
    path = draw(st.sampled_from(list(_paths(VALID[file]))))
    how = draw(st.sampled_from(["replace", "delete", "rename", "duplicate"]))
    value = draw(st.sampled_from(WEIRD))
    return file, path, how, value


@settings(max_examples=int(__import__("os").environ.get("FUZZ_EXAMPLES", "120")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations())
def test_a_mutated_config_loads_or_reports_located_problems(mutation):
    sections = _mutate(VALID, *mutation)
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in sections.items():
            (Path(tmp) / name).write_text(yaml.safe_dump(data, sort_keys=False) if data is not None else "")
        try:
            cfg = load_config(tmp, env={})
        except ConfigError as exc:
            assert exc.problems
            for problem in exc.problems:
                text = str(problem)
                assert PROBLEM.match(text), text
                assert text.count("(got ") <= 1, text
                if problem.file.endswith(".yaml"):
                    assert problem.line, text
        else:
            assert isinstance(cfg, Config)


def test_the_unmutated_base_is_valid(tmp_path):
    for name, data in VALID.items():
        (tmp_path / name).write_text(yaml.safe_dump(data, sort_keys=False))
    assert isinstance(load_config(tmp_path, env={}), Config)
