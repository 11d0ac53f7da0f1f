"""The terminal sink: one coloured line per notice on the service's console (rich markup)."""

from __future__ import annotations

from rich.console import Console

from alerts.model import Notice
from alerts.terminal import SEVERITY_STYLE, value_text


def notice_line(notice: Notice) -> str:
    """A one-line rich-markup summary of a notice."""
    p = notice.payload
    style = "green" if notice.transition == "resolved" else SEVERITY_STYLE.get(p["severity"], "white")
    return (
        f"[{style}]{notice.transition.upper():<12}[/] [{style}]{p['severity']:<6}[/] {p['rule_id']} "
        f"{p['site'].get('name', p['site'].get('id', ''))} ({p['site'].get('address', '')}) "
        f"device {p['device'].get('id', '')}: {value_text(p.get('value'), p.get('limit'), p.get('unit'), p.get('metric'))} "
        f"since {p.get('start_ts')} "
        f"[dim]{notice.key}[/]"
    )


class TerminalSink:
    """Prints one coloured line per notice (rich)."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False)

    def send(self, notice: Notice) -> None:
        self.console.print(notice_line(notice))

    def close(self) -> None:
        pass
