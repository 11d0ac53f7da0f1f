"""`citywatch detect`: placeholder until its issue lands."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("detect", help="(not yet implemented)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    raise SystemExit("citywatch detect: not implemented yet")
