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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="citywatch",
        description="Sensor ingestion and alerting for construction noise and gas-pipeline pressure.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"citywatch.commands.{name}")
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
