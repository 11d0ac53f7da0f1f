"""YAML reading that keeps line numbers, rejects duplicate keys and does not parse `22:00` as a number."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from config.errors import ConfigProblem, path_text

# libyaml's parser when PyYAML was built with it: load_config runs often (tests, reloads) and the
# pure-Python scanner is most of its time. Both give the same nodes and line marks.
if TYPE_CHECKING:  # the same interface; the checker sees the pure-Python class
    _Base = yaml.SafeLoader
else:
    _Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_Base):
    """SafeLoader without YAML 1.1 sexagesimal numbers (`22:00` would load as 1320)."""


# Rebuild the implicit int/float resolvers of SafeLoader without their base-60 alternatives.
_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$", re.X),
    list("-+0123456789"),
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
        re.X,
    ),
    list("-+0123456789."),
)


# libyaml's terse messages for the usual slips, with what to look at.
_HINTS = {
    "did not find expected key": "check this line's indentation, and for an unclosed [ or {",
    "found a tab character": "indent with spaces",
    "mapping values are not allowed": "quote a value that contains ': ', or check the indentation",
    "found character that cannot start any token": "quote a value that starts with @, ` or %",
}


@dataclass
class YamlDoc:
    """One parsed file: its data and the line of every key path in it (1-based)."""

    file: str
    data: Any
    lines: dict[tuple[Any, ...], int] = field(default_factory=dict)


def parse_yaml(text: str, file: str) -> tuple[YamlDoc | None, list[ConfigProblem]]:
    """Parse `text`; return the document (None on a syntax error) and any problems found."""
    problems: list[ConfigProblem] = []
    loader = _Loader(text)
    node = None
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except ValueError as exc:  # YAML reads 2025-02-30 as a date, which does not exist (PyYAML raises ValueError)
        bad = _bad_date(node)
        where = f"{bad.value!r} is not a date ({exc})" if bad is not None else str(exc)
        return None, [ConfigProblem(file, bad.start_mark.line + 1 if bad is not None else None, "",
                                    f"{where}; write a date that exists as YYYY-MM-DD")]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        what = getattr(exc, "problem", None) or str(exc)
        context, start = getattr(exc, "context", None), getattr(exc, "context_mark", None)
        tab = _indent_tab(text, line)
        if tab:
            # libyaml names a tab in indentation after whatever it expected there ("cannot start any
            # token", "violates indentation"), which sends the reader after the wrong fix.
            what = f"tab characters are not allowed in YAML indentation; indent with spaces (tab at column {tab})"
        for start_of, hint in _HINTS.items():
            if not tab and what.startswith(start_of):
                what += f"; {hint}"
        # An unclosed quote or bracket is found far below where it was opened: name that line too.
        opened = context and ("quoted" in context or "flow" in context)
        if opened and start is not None and start.line + 1 != line:
            what += f" ({context} that starts on line {start.line + 1})"
        return None, [ConfigProblem(file, line, "", f"YAML syntax error: {what}")]
    finally:
        loader.dispose()
    if node is None:
        return None, [ConfigProblem(file, 1, "", "file is empty; remove it or give it content")]
    lines: dict[tuple[Any, ...], int] = {}
    _walk(node, (), lines, problems, file)
    return YamlDoc(file, data, lines), problems


def _bad_date(node: yaml.Node | None) -> yaml.ScalarNode | None:
    """The first scalar under `node` that YAML reads as a date or time and that is none (2025-02-30)."""
    stack = [node] if node is not None else []
    while stack:
        n = stack.pop(0)
        if isinstance(n, yaml.ScalarNode):
            if n.tag == "tag:yaml.org,2002:timestamp":
                try:
                    yaml.SafeLoader("").construct_yaml_timestamp(n)
                except ValueError:
                    return n
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
        elif isinstance(n, yaml.MappingNode):
            stack.extend(v for kv in n.value for v in kv)
    return None


def _indent_tab(text: str, line: int | None) -> int | None:
    """The 1-based column of the first tab in the indentation of `line` (1-based), or None."""
    if not line:
        return None
    rows = text.splitlines()
    if line > len(rows):
        return None
    row = rows[line - 1]
    indent = row[: len(row) - len(row.lstrip(" \t"))]
    return indent.index("\t") + 1 if "\t" in indent else None


def _walk(node: yaml.Node, path: tuple[Any, ...], lines: dict[tuple[Any, ...], int], problems: list[ConfigProblem],
          file: str) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                problems.append(
                    ConfigProblem(file, line, _fmt(path + (key,)), f"duplicate key (first given on line {seen[key]})")
                )
                continue
            seen[key] = line
            lines[path + (key,)] = line
            _walk(value_node, path + (key,), lines, problems, file)
            lines[path + (key,)] = line
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, path + (i,), lines, problems, file)


def _fmt(path: tuple[Any, ...]) -> str:
    return path_text(path)


# Lines: key path -> (file, line) where it was written. A path's first element is the top-level key.
Lines = dict[tuple[Any, ...], tuple[str, int | None]]


def locate(lines: Lines, path: tuple[Any, ...]) -> tuple[str, int | None]:
    """The (file, line) of a key path, or of its nearest written parent."""
    p = tuple(path)
    while p:
        if p in lines:
            return lines[p]
        p = p[:-1]
    return lines.get((), ("config", None))


def problem_at(lines: Lines, path: tuple[Any, ...], message: str) -> ConfigProblem:
    """A problem reported at the file and line where `path` (or its nearest written parent) was written."""
    file, line = locate(lines, path)
    return ConfigProblem(file, line, path_text(path), message)
