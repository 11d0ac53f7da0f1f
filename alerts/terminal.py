"""How the duty officer's board words values, durations and the freshness of what it shows (the
terminal, the console and the terminal sink, alerts/sinks/terminal.py, use it)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from alerts.model import Alert
    from alerts.store import AlertStore

# A heartbeat older than this means the service is not running (it writes one every
# alerts.engine.HEARTBEAT_S = 10 s; the margin covers a busy or briefly late scheduler).
STALE_AFTER_S = 60.0

SEVERITY_STYLE = {"red": "bold red", "orange": "bold dark_orange", "yellow": "yellow", "blue": "blue", "clear": "green"}

# ----- what the duty officer reads: values in words, durations, short ids, how fresh the board is -----

# Units as the detectors put them in `context.unit` (detectors/*.py `unit`), and what their numbers mean.
_QUANTITY = {
    "p_drop": "% of set pressure",  # G-rupture: the drop, in percent of the device's set pressure
    "vdr": "% valid",               # N-data: valid-data rate (a ratio, shown in percent)
}


def words(seconds: float) -> str:
    """A duration as an officer says it: `45 s`, `12 min 5 s`, `5 h 0 min`, `2 d 3 h`."""
    s = round(max(0.0, float(seconds)))
    d, rem = divmod(s, 86400)
    h, rem = divmod(rem, 3600)
    m, sec = divmod(rem, 60)
    if d:
        return f"{d} d {h} h"
    if h:
        return f"{h} h {m} min"
    if m:
        return f"{m} min {sec} s" if m < 10 else f"{m} min"
    return f"{sec} s"


def _known(v: float | None) -> float | None:
    """The value as a float, or None when it is missing (None or NaN)."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _number(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"


def quantity(v: float | None, unit: str | None, metric: str | None = None) -> str:
    """One value with its unit in words (`69.89 dB(A)`, `151.1 % of set pressure`, `5 h 0 min`); `-` if unknown."""
    known = _known(v)
    if known is None:
        return "-"
    v = known
    if unit == "s":
        return words(v)
    if metric == "vdr" or unit == "ratio":
        return f"{100 * v:.0f} % valid"
    if metric in _QUANTITY:
        return f"{_number(v)} {_QUANTITY[metric]}"
    if unit == "sigma":
        return f"{_number(v)} sigma"
    return f"{_number(v)} {unit}".rstrip() if unit else _number(v)


def value_text(value: float | None, limit: float | None, unit: str | None, metric: str | None = None) -> str:
    """The value against its limit: `69.89 dB(A), limit 70`, `5 h 0 min silent, limit 2 h 5 min`."""
    if unit == "s" and metric == "silence":
        head = "-" if _known(value) is None else f"{quantity(value, unit, metric)} silent"
    else:
        head = quantity(value, unit, metric)
    limit = _known(limit)
    if limit is None:
        return head
    if unit == "s":
        lim = words(limit)
    elif metric == "vdr" or unit == "ratio":
        lim = f"{100 * limit:.0f} %"
    elif metric in _QUANTITY:
        lim = f"{_number(limit)} %"
    else:
        lim = _number(limit)
    return f"{head}, limit {lim}"


def alert_value(alert: Alert) -> str:
    """`value_text` of an alert (units from its context)."""
    ctx = alert.context or {}
    return value_text(alert.value, alert.limit, ctx.get("unit"), ctx.get("metric"))


def alert_peak(alert: Alert) -> str:
    """The peak: `orange 81.8 dB(A)` (the severity it peaked at and the most extreme value)."""
    from core.severity import SEVERITY_NAMES

    ctx = alert.context or {}
    return f"{SEVERITY_NAMES.get(alert.peak_severity, '?')} {quantity(alert.peak_value, ctx.get('unit'), ctx.get('metric'))}"


def short_id(alert: Alert) -> str:
    """`RULE.DEVICE` (e.g. `G-rupture.XMG0003`): unique among open alerts (one per rule and device), and
    accepted by `citywatch alerts ack`."""
    return f"{alert.rule_id}.{alert.device_id}"


@dataclass(frozen=True)
class Freshness:
    """How old a store's view is, and whether the service that writes it is alive.

    as_of_ns:     the store's clock (UTC ns): the engine's clock at its last heartbeat or the event-time
                  watermark, whichever is later; durations and "active now" are judged at this time
    clock:        the engine's clock kind, wall | event (None: unknown, the store has no heartbeat)
    written_ns:   wall time of the store's last write
    heartbeat_ns: wall time of the engine's last heartbeat (None: never, e.g. a store of an older version)
    stopped_ns:   wall time the engine last stopped cleanly
    now_ns:       the wall time this was judged at
    """

    as_of_ns: int | None
    clock: str | None
    written_ns: int | None
    heartbeat_ns: int | None
    stopped_ns: int | None
    now_ns: int

    @property
    def alive(self) -> bool | None:
        """True: heartbeat fresh and no clean stop after it; False: stopped, or the heartbeat is stale;
        None: no heartbeat to judge by."""
        if self.heartbeat_ns is None:
            return None
        if self.stopped_ns is not None and self.stopped_ns >= self.heartbeat_ns:
            return False
        return (self.now_ns - self.heartbeat_ns) / 1e9 <= STALE_AFTER_S

    def service_text(self) -> str:
        """`service alive (heartbeat 3 s ago)`, `SERVICE NOT RUNNING: stopped 2 h 5 min ago`, ..."""
        def ago(ns: int) -> str:
            return words((self.now_ns - ns) / 1e9) + " ago"

        alive, beat = self.alive, self.heartbeat_ns  # alive is None exactly when beat is
        if alive and beat is not None:
            return f"service alive (heartbeat {ago(beat)})"
        if alive is False and beat is not None:
            if self.stopped_ns is not None and self.stopped_ns >= beat:
                return f"SERVICE NOT RUNNING: stopped {ago(self.stopped_ns)}"
            return f"SERVICE NOT RESPONDING: last heartbeat {ago(beat)}"
        written = f"; store last written {ago(self.written_ns)}" if self.written_ns else ""
        return f"service state UNKNOWN (no heartbeat in this store{written})"


def freshness(store: AlertStore, now_ns: int | None = None) -> Freshness:
    """Read a store's watermark, heartbeat and stop marks (alerts.engine.AlertEngine.heartbeat)."""
    import json
    import time

    now_ns = time.time_ns() if now_ns is None else now_ns
    wm = _int(store.meta("watermark"))
    beat: Any = {}
    try:
        beat = json.loads(store.meta("heartbeat") or "{}")
    except ValueError:
        pass
    beat = beat if isinstance(beat, dict) else {}
    engine_now = _int(beat.get("now_ns"))
    as_of = max((t for t in (wm, engine_now) if t), default=None)
    return Freshness(as_of, beat.get("clock") if beat.get("clock") in ("wall", "event") else None,
                     store.last_write_ns(), _int(beat.get("wall_ns")), _int(store.meta("stopped")), now_ns)


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None
