"""A received value as it appears in an error message: a repr of at most 80 characters. A bad value is shown,
never copied whole into the message: a feed may hold a cell of 200 MB."""

from __future__ import annotations

import reprlib

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxdict, _REPR.maxstring, _REPR.maxother = 3, 4, 4, 80, 80


def shown(value: object) -> str:
    """`value` as a repr of at most 80 characters, for error messages."""
    text = _REPR.repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
