"""The `citywatch` command: one subcommand per module in `citywatch.commands`."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Each module defines `register(subparsers)`, which adds its parser and sets `func(args) -> int`.
COMMAND_MODULES = [

    "check_config",
    "run",
    "status",
    "detect",
    "warmup",
    "alerts",
    "simulate",
    "record",
    "replay",
    "score",
    "notify",
    "console",
    "users",
]


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given the arguments, only the module of the command they name
    when a module has that command's name (`citywatch detect FILE` imports citywatch.commands.detect,
    not the other twelve commands' modules and what they import: about half of the start of a `detect`
    called once per file)."""
    only = _command_module(argv) if argv is not None else None
    parser = argparse.ArgumentParser(
        prog="citywatch",
        description="Sensor ingestion and alerting for construction noise and gas-pipeline pressure.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES if only is None else [only]:
        module = importlib.import_module(f"citywatch.commands.{name}")
        module.register(sub)
    if only is not None and argv is not None and argv[0] not in sub.choices:
        return build_parser()
    return parser


def _first_word(argv: list[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


def _command_module(argv: list[str]) -> str | None:
    """The command module named by the first word of argv (check-config: check_config), or None."""
    word = _first_word(argv)
    if word is None or word != argv[0]:
        return None  # top-level options first (or none): the whole parser
    name = word.replace("-", "_")
    return name if name in COMMAND_MODULES else None


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe is caught below, not in the interpreter's exit
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`citywatch status | head`): stop quietly like other Unix tools, and point
        # stdout at /dev/null so that the interpreter's final flush cannot raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by a closed pipe


if __name__ == "__main__":
    sys.exit(main())
