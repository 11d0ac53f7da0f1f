"""YAML reading: no sexagesimal numbers, line of every key, duplicate keys, syntax errors with their line."""

from __future__ import annotations

from config.yamlsrc import parse_yaml


def test_times_stay_text_and_numbers_stay_numbers():
    doc, problems = parse_yaml("a: 22:00\nb: 1:30\nc: 1_000\nd: 0x1f\ne: 2.5\nf: 1e3\ng: 2025-06-01\n", "f.yaml")
    assert problems == []
    assert doc.data["a"] == "22:00" and doc.data["b"] == "1:30"
    assert doc.data["c"] == 1000 and doc.data["d"] == 31 and doc.data["e"] == 2.5 and doc.data["f"] == 1000.0
    assert str(doc.data["g"]) == "2025-06-01"


def test_every_key_path_has_its_line():
    doc, _ = parse_yaml("top:\n  list:\n    - id: a\n      x: 1\n    - {id: b}\n", "f.yaml")
    assert doc.lines[("top",)] == 1
    assert doc.lines[("top", "list", 0)] == 3
    assert doc.lines[("top", "list", 0, "x")] == 4
    assert doc.lines[("top", "list", 1, "id")] == 5


def test_a_duplicate_key_is_a_problem_at_its_second_line():
    _, problems = parse_yaml("a:\n  b: 1\n  c: 2\n  b: 3\n", "f.yaml")
    assert [str(p) for p in problems] == ["f.yaml:4: a.b: duplicate key (first given on line 2)"]


def test_a_syntax_error_names_its_line():
    doc, problems = parse_yaml("a:\n  b: [1, 2\n  c: 3\n", "f.yaml")
    assert doc is None
    assert len(problems) == 1 and problems[0].line == 3
    assert problems[0].message.startswith("YAML syntax error: ")


def test_a_comment_only_file_is_empty():
    doc, problems = parse_yaml("# nothing yet\n", "f.yaml")
    assert doc is None and [str(p) for p in problems] == ["f.yaml:1: file is empty; remove it or give it content"]


def test_python_tags_are_refused():
    doc, problems = parse_yaml("a: !!python/object/apply:os.system ['true']\n", "f.yaml")
    assert doc is None and problems[0].line == 1
