"""`citywatch alerts`: placeholder until its issue lands."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("alerts", help="(not yet implemented)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    raise SystemExit("citywatch alerts: not implemented yet")
