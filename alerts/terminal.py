"""Terminal sink: one coloured line per notice on the service's standard output (rich)."""

from __future__ import annotations

from rich.console import Console

from alerts.model import Notice

SEVERITY_STYLE = {"red": "bold red", "orange": "bold dark_orange", "yellow": "yellow", "blue": "blue", "clear": "green"}


def notice_line(notice: Notice) -> str:
    """A one-line rich-markup summary of a notice."""
    p = notice.payload
    style = "green" if notice.transition == "resolved" else SEVERITY_STYLE.get(p["severity"], "white")
    return (
        f"[{style}]{notice.transition.upper():<12}[/] [{style}]{p['severity']:<6}[/] {p['rule_id']} "
        f"{p['site'].get('name', p['site'].get('id', ''))} ({p['site'].get('address', '')}) "
        f"device {p['device'].get('id', '')}: {p.get('value')} vs {p.get('limit')} since {p.get('start_ts')} "
        f"[dim]{notice.key}[/]"
    )


class TerminalSink:
    def __init__(self, console: Console | None = None):
        self.console = console or Console(highlight=False)

    def send(self, notice: Notice) -> None:
        self.console.print(notice_line(notice))

    def close(self) -> None:
        pass
