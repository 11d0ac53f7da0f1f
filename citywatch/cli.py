"""The `citywatch` command: one subcommand per module in `citywatch.commands`."""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

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


class CommandParser(argparse.ArgumentParser):
    """argparse's parser, with a hint where its own message misleads: it reads a value that starts with '-'
    (`--duration -5m`) as the next option and says "expected one argument"."""

    def error(self, message: str) -> NoReturn:
        if message.endswith(": expected one argument"):
            option = message.removeprefix("argument ").split(":")[0].split("/")[-1]
            message += f" (a value that starts with '-' is written {option}=VALUE)"
        super().error(message)


# ----- argument types and checks shared by the commands ------------------------------------------------
# An argparse `type=` refuses a value at parse time with `citywatch CMD: error: argument --X: <message>`, exit 2.

def positive_speed(text: str) -> float:
    """argparse type of --speed: a finite number above 0 (N simulated seconds per wall-clock second)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:  # NaN passes a `<= 0` test: refused as not finite
        raise argparse.ArgumentTypeError("must be a finite number above 0 (simulated seconds per wall-clock "
                                         f"second), got {text!r}")
    return value


def port_number(text: str) -> int:
    """argparse type of a TCP port: a whole number from 1 to 65535."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {text!r}")
    return value


def positive_count(text: str) -> int:
    """argparse type of a number of things to wait for: a whole number, at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def positive_duration(text: str) -> float:
    """argparse type of a length of time: seconds of a positive duration such as 90s, 15m, 2h, 1d
    (config.durations, the one duration grammar)."""
    from config.durations import parse_duration

    if text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def output_problem(option: str, path: str) -> str | None:
    """Why the file `path` given to `option` cannot be written (None: it can be tried): a directory, a folder
    that does not exist, no permission. Checked before a command's work, so that a typo costs no run and no
    traceback: `--out /tmp: is a directory; give a file path`."""
    p = Path(path)
    if p.is_dir():
        return f"{option} {path}: is a directory; give a file path"
    parent = p.parent  # `.` for a bare file name
    if not parent.is_dir():
        return f"{option} {path}: folder {parent} {'is not a directory' if parent.exists() else 'does not exist'}"
    if not os.access(p if p.exists() else parent, os.W_OK):
        return f"{option} {path}: permission denied"
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser of every command; given the arguments, only the module of the command they name
    when a module has that command's name (`citywatch detect FILE` imports citywatch.commands.detect,
    not the other twelve commands' modules and what they import: about half of the start of a `detect`
    called once per file)."""
    only = _command_module(argv) if argv is not None else None
    parser = CommandParser(
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
