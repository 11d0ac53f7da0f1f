"""One wording and one exit code for "InfluxDB / the MQTT broker is down", shared by every command.

A duty officer or tester who sees the stack down must read the same one line from `status`, `detect
--influx`, `warmup`, `score influx:`, `replay`, `simulate` and `record`, never a traceback or a
urllib3 retry dump:

    citywatch status: cannot reach InfluxDB at http://127.0.0.1:8086: connection refused; is the stack up? (scripts/stack.sh up; source .stack/env)
"""

from __future__ import annotations

import errno
import socket
import sys

EXIT_UNREACHABLE = 2  # the exit code of every command that cannot reach InfluxDB or the broker
STACK_HINT = "is the stack up? (scripts/stack.sh up; source .stack/env)"


def short_reason(exc: BaseException | str) -> str:
    """A few words on why a connection failed: `connection refused`, `timed out`, `host not found`,
    `not authorized`, else the first line of the exception text (cut to 120 characters).

    Walks the exception's causes and arguments (urllib3 nests the socket error two levels deep)."""
    if isinstance(exc, str):
        return _cut(exc)
    seen, todo = set(), [exc]
    while todo:
        e = todo.pop(0)
        if id(e) in seen or e is None:
            continue
        seen.add(id(e))
        if isinstance(e, ConnectionRefusedError) or getattr(e, "errno", None) == errno.ECONNREFUSED:
            return "connection refused"
        if isinstance(e, (TimeoutError, socket.timeout)):
            return "timed out"
        if isinstance(e, socket.gaierror):
            return "host not found"
        todo.extend(x for x in (getattr(e, "reason", None), e.__cause__, e.__context__) if isinstance(x, BaseException))
        todo.extend(a for a in getattr(e, "args", ()) if isinstance(a, BaseException))
    text = str(exc)
    low = text.lower()
    for needle, said in (("connection refused", "connection refused"), ("errno 111", "connection refused"),
                         ("timed out", "timed out"), ("name or service not known", "host not found"),
                         ("nodename nor servname", "host not found"), ("http 401", "not authorized (HTTP 401)"),
                         ("not authorized", "not authorized")):
        if needle in low:
            return said
    return _cut(text)


def unreachable(command: str, service: str, where: str, exc: BaseException | str) -> str:
    """The one line: `<command>: cannot reach <service> at <where>: <reason>; is the stack up? ...`.

    command: e.g. "citywatch status"; service: "InfluxDB" or "the MQTT broker"; where: its URL or host:port."""
    return f"{command}: cannot reach {service} at {where}: {short_reason(exc)}; {STACK_HINT}"


def report_unreachable(command: str, service: str, where: str, exc: BaseException | str) -> int:
    """Print `unreachable(...)` on stderr and return EXIT_UNREACHABLE (for `return report_unreachable(...)`)."""
    print(unreachable(command, service, where, exc), file=sys.stderr)
    return EXIT_UNREACHABLE


def _cut(text: str, limit: int = 120) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 3] + "..."


def report_config_error(exc) -> int:
    """Print every problem of a `config.ConfigError` (one `file:line: path: message` a line) and a count on
    stderr; return 1, the exit code of an invalid config (for `return report_config_error(exc)`)."""
    for problem in exc.problems:
        print(problem, file=sys.stderr)
    print(f"{len(exc.problems)} problem(s) found", file=sys.stderr)
    return 1
