"""A rich progress bar of simulated time on stderr, shared by `simulate` and `replay`."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn


@contextmanager
def sim_progress(label: str, start_ms: int, end_ms: int, tz: dt.tzinfo,
                 enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """Yield `update(sim_ms, readings)`; draws `label  <local sim time>  [bar]  readings  elapsed` on stderr.

    Disabled (a no-op callback) when `enabled` is false.
    """
    if not enabled:
        yield lambda sim_ms, readings: None
        return
    console = Console(file=sys.stderr)
    columns = (
        TextColumn("[bold]{task.description}"),
        TextColumn("{task.fields[clock]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[readings]:>9,} readings"),
        TimeElapsedColumn(),
    )
    total = max(1, end_ms - start_ms)
    with Progress(*columns, console=console, transient=False, refresh_per_second=8) as bar:
        task = bar.add_task(label, total=total, clock=_clock(start_ms, tz), readings=0)

        def update(sim_ms: int, readings: int) -> None:
            bar.update(task, completed=min(total, max(0, sim_ms - start_ms)), clock=_clock(sim_ms, tz), readings=readings)

        yield update


def _clock(ms: int, tz: dt.tzinfo) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%d %H:%M")
