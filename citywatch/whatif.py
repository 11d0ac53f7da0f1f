"""The dry run of a config change, read as alerts: each config's detections go through the alert
engine's own lifecycle (for_s, clear_for_s, flapping; an in-memory store, no sinks), and the alerts the
two configs open are compared per rule and device: opened, no longer opened, severity or times changed.
`citywatch detect FEED --compare OTHER_CONFIG` prints the report; `--plot DIR` draws each device it
changes."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from alerts.engine import AlertEngine
from alerts.store import AlertStore
from core.severity import SEVERITY_NAMES
from core.timefmt import NS_PER_S as NS

# matplotlib colours of the severity scale used everywhere else (red, orange, yellow, blue).
SEVERITY_COLOURS = {4: "#d62728", 3: "#ff7f0e", 2: "#e6b800", 1: "#1f77b4", 0: "#999999"}


@dataclass(frozen=True)
class Span:
    """One alert the engine opened (it fired): its condition's start, its end (None: still open when the
    feed ended) and the highest severity and value it reached."""

    rule_id: str
    device_id: str
    site_id: str
    site_name: str
    started_ns: int
    firing_ns: int
    end_ns: int | None
    peak_severity: int
    peak_value: float
    limit: float
    unit: str

    def overlaps(self, other: Span) -> bool:
        inf = 2**63 - 1
        return self.started_ns < (other.end_ns or inf) and other.started_ns < (self.end_ns or inf)


@dataclass
class Change:
    """What the other config does to one stretch of one (rule, device): `opened` (a new alert),
    `closed` (an alert that is no longer opened), `severity` (its peak differs), `times` (same peak,
    other start or end, or split/merged), or `same`."""

    kind: str
    rule_id: str
    device_id: str
    site_id: str
    site_name: str
    before: list[Span] = field(default_factory=list)
    after: list[Span] = field(default_factory=list)

    @property
    def start_ns(self) -> int:
        return min(s.started_ns for s in self.before + self.after)


class _NoDispatch:
    """Stands in for the dispatcher: a what-if notifies nobody."""

    def submit(self, notice, sink) -> bool:
        return False

    def flush(self, timeout_s: float = 0.0) -> bool:
        return True

    def stop(self, timeout_s: float = 0.0) -> None:
        pass


def alert_spans(cfg, parts, end_ns: int | None) -> list[Span]:
    """The alerts the engine opens over `parts` (Detections in the order the detectors produced them,
    clear rows included), with timers advanced to `end_ns` (the feed's last event time) at the end."""
    store = AlertStore(":memory:")
    engine = AlertEngine(cfg, store, sinks={}, clock=None, dispatcher=_NoDispatch())
    for det in parts:
        if len(det):
            engine.process(det)
    if end_ns is not None:
        engine.tick(end_ns)
    engine.stop()  # persists the latest value and peak of the alerts still open
    out = []
    for a in store.alerts(limit=2**62):
        if a.firing_ns is None:  # pending when the feed ended, or cleared before for_s: never opened
            continue
        out.append(Span(a.rule_id, a.device_id, a.site.get("id", ""), a.site.get("name", ""), int(a.started_ns),
                        int(a.firing_ns), None if a.resolved_ns is None else int(a.resolved_ns), int(a.peak_severity),
                        float(a.peak_value), float(a.limit), str((a.context or {}).get("unit") or "")))
    store.close()
    return sorted(out, key=lambda s: (s.rule_id, s.device_id, s.started_ns))


def compare_spans(before: list[Span], after: list[Span]) -> list[Change]:
    """Pair the alerts of two configs per (rule, device): spans that overlap in time are the same
    stretch of the condition; each stretch is one Change."""
    keys: dict[tuple[str, str], tuple[list, list]] = {}
    for i, spans in enumerate((before, after)):
        for s in spans:
            keys.setdefault((s.rule_id, s.device_id), ([], []))[i].append(s)
    out = []
    for (rule, dev), (a, b) in sorted(keys.items()):
        tagged = sorted([(s.started_ns, 0, s) for s in a] + [(s.started_ns, 1, s) for s in b], key=lambda t: t[:2])
        groups: list[tuple[list, list, int | None]] = []
        for _, side, s in tagged:
            g = groups[-1] if groups else None
            if g is not None and (g[2] is None or s.started_ns < g[2]):
                (g[0], g[1])[side].append(s)
                groups[-1] = (g[0], g[1], None if (g[2] is None or s.end_ns is None) else max(g[2], s.end_ns))
            else:
                new: tuple[list, list, int | None] = ([], [], s.end_ns)
                (new[0], new[1])[side].append(s)
                groups.append(new)
        for ga, gb, _ in groups:
            one = (ga or gb)[0]
            if not ga:
                kind = "opened"
            elif not gb:
                kind = "closed"
            elif max(s.peak_severity for s in ga) != max(s.peak_severity for s in gb):
                kind = "severity"
            elif len(ga) != len(gb) or any((x.started_ns, x.end_ns) != (y.started_ns, y.end_ns) for x, y in zip(ga, gb)):
                kind = "times"
            else:
                kind = "same"
            out.append(Change(kind, rule, dev, one.site_id, one.site_name, ga, gb))
    return out


# ----- the report ---------------------------------------------------------------------------------

KIND_SIGN = {"opened": "+", "closed": "-", "severity": "~", "times": "~"}


def _when(ns: int, tz) -> str:
    return dt.datetime.fromtimestamp(ns / NS, tz).strftime("%m-%d %H:%M")


def _length(seconds: float) -> str:
    m = int(round(seconds / 60))
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min" if h < 48 else f"{h // 24} d {h % 24} h"


def _value(v: float, unit: str) -> str:
    if math.isnan(v):
        return "-"
    if unit == "s":  # Offline: seconds of silence
        return _length(v)
    return f"{v:.1f}" + (f" {unit}" if unit else "")


def span_text(s: Span, tz, feed_end_ns: int | None) -> str:
    end = _when(s.end_ns, tz)[6:] if s.end_ns is not None else "open at the end"
    if s.end_ns is not None and _when(s.end_ns, tz)[:5] != _when(s.started_ns, tz)[:5]:
        end = _when(s.end_ns, tz)
    stop = s.end_ns if s.end_ns is not None else feed_end_ns
    length = f" ({_length((stop - s.started_ns) / NS)}{'+' if s.end_ns is None else ''})" if stop else ""
    limit = f", limit {s.limit:.1f}" if s.limit == s.limit and s.unit != "s" else ""
    return (f"{SEVERITY_NAMES[s.peak_severity]:<6} {_when(s.started_ns, tz)} -> {end}{length}, "
            f"peak {_value(s.peak_value, s.unit)}{limit}")


def _spans_text(spans: list[Span], tz, feed_end_ns) -> str:
    return "; ".join(span_text(s, tz, feed_end_ns) for s in spans)


def write_report(changes: list[Change], names: tuple[str, str], tz_name: str, feed_end_ns: int | None, out,
                 span_text_of=None) -> None:
    """The alert report: per rule, per site, each alert opened (+), no longer opened (-) or changed (~),
    then one summary line per rule and a total."""
    tz = ZoneInfo(tz_name)
    base, other = names
    shown = [c for c in changes if c.kind != "same"]
    n_before = sum(len(c.before) for c in changes)
    n_after = sum(len(c.after) for c in changes)
    out.write(f"alerts as the engine would open them (each config's for_s, clear_for_s), times {tz_name}:\n")
    out.write(f"  before: {base} ({n_before} alert(s)); after: {other} ({n_after} alert(s))\n")
    rules = sorted({c.rule_id for c in changes})
    for rule in rules:
        mine = [c for c in shown if c.rule_id == rule]
        if not mine:
            continue
        out.write(f"\n{rule}\n")
        for site in sorted({(c.site_id, c.site_name) for c in mine}):
            out.write(f"  {site[0]} {site[1]}\n" if site[1] and site[1] != site[0] else f"  {site[0]}\n")
            for c in sorted((c for c in mine if (c.site_id, c.site_name) == site), key=lambda c: (c.start_ns, c.device_id)):
                sign = KIND_SIGN[c.kind]
                if c.kind == "opened":
                    out.write(f"    + {c.device_id}  opens    {_spans_text(c.after, tz, feed_end_ns)}\n")
                elif c.kind == "closed":
                    out.write(f"    - {c.device_id}  no longer opens  {_spans_text(c.before, tz, feed_end_ns)}\n")
                else:
                    what = "severity" if c.kind == "severity" else "times   "
                    out.write(f"    {sign} {c.device_id}  {what} before: {_spans_text(c.before, tz, feed_end_ns)}\n")
                    out.write(f"    {' ' * len(c.device_id)}             after:  {_spans_text(c.after, tz, feed_end_ns)}\n")
    out.write(f"\ncompare {base} -> {other}: {n_before} -> {n_after} alert(s): " + _counts(changes) + "\n")
    width = max((len(r) for r in rules), default=0)
    for rule in rules:
        mine = [c for c in changes if c.rule_id == rule]
        if any(c.kind != "same" for c in mine):
            out.write(f"  {rule + ':':<{width + 1}} {_counts(mine, short=True)}\n")


def _counts(changes: list[Change], short: bool = False) -> str:
    n = {k: sum(1 for c in changes if c.kind == k) for k in ("opened", "closed", "severity", "times", "same")}
    if short:
        return (f"+{n['opened']} opened, -{n['closed']} no longer opened, ~{n['severity']} severity, "
                f"~{n['times']} times, {n['same']} unchanged")
    return (f"+{n['opened']} opened, -{n['closed']} no longer opened, ~{n['severity']} changed severity, "
            f"~{n['times']} changed times, {n['same']} unchanged")


# ----- the plot -----------------------------------------------------------------------------------

@dataclass
class DeviceSeries:
    """What the plot of one device needs: its readings and, per rule, the limit each config judged by."""

    device_id: str
    kind: str
    field: str            # the field drawn; several: "a, b" with values (n, m), one column each
    ts_ns: np.ndarray
    values: np.ndarray
    limits: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]]  # (rule, 0 before | 1 after) -> (ts, limit)


def plot_device(series: DeviceSeries, changes: list[Change], names: tuple[str, str], tz_name: str,
                path: Path, unit: str = "") -> Path:
    """One PNG: the readings with the old and new limit of each changed rule, and under them the
    alerts before and after, one row each, coloured by peak severity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    tz = ZoneInfo(tz_name)

    def times(ns):
        return np.asarray(ns, "datetime64[ns]").astype("datetime64[ms]").astype(dt.datetime)

    def local(ns):
        return [t.replace(tzinfo=dt.UTC).astimezone(tz) for t in times(ns)]

    # Only the rules whose alerts change: the others' limits would bury the ones that matter.
    rules = sorted({c.rule_id for c in changes if c.kind != "same"}) or sorted({c.rule_id for c in changes})
    changes = [c for c in changes if c.rule_id in rules]
    fig, (ax, lanes) = plt.subplots(2, 1, figsize=(13, 5.2 + 0.35 * len(rules)), sharex=True,
                                    gridspec_kw={"height_ratios": [3.0, 0.35 + 0.4 * len(rules)]})
    if len(series.ts_ns):
        # values (n, m) with field "a, b": one line per field the changed rules read.
        cols = np.asarray(series.values).reshape(len(series.ts_ns), -1)
        names_ = series.field.split(", ") if cols.shape[1] > 1 else [series.field]
        greys = ["#555555", "#8c8c8c", "#2f4f4f", "#b0a080", "#6b8e23", "#708090", "#a0522d", "#4682b4"]
        when = local(series.ts_ns)
        for j in range(cols.shape[1]):
            ax.plot(when, cols[:, j], color=greys[j % len(greys)], lw=0.8, label=f"readings ({names_[j]})")
    styles = {0: dict(ls="--", lw=1.6), 1: dict(ls="-", lw=1.8)}
    palette = ["#9467bd", "#2ca02c", "#8c564b", "#e377c2", "#17becf"]
    for i, rule in enumerate(rules):
        for side in (0, 1):
            got = series.limits.get((rule, side))
            if got is None or not len(got[0]):
                continue
            ts, lim = got
            ax.step(local(ts), lim, where="post", color=palette[i % len(palette)], alpha=0.9 if side else 0.6,
                    label=f"{rule} limit {'after' if side else 'before'}", **styles[side])
    ax.set_ylabel(f"{series.field}" + (f" ({unit})" if unit else ""))
    ax.grid(alpha=0.3)
    # Outside the axes, so they never hide a reading; limits are drawn where the rule judged the device.
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.9,
              title="limits where judged", title_fontsize=8)
    words = {"opened": "opened", "closed": "no longer opened", "severity": "severity changed",
             "times": "times changed", "same": "unchanged"}
    per_rule = []
    for rule in rules:
        n: dict[str, int] = {}
        for c in changes:
            if c.rule_id == rule:
                n[c.kind] = n.get(c.kind, 0) + 1
        per_rule.append(f"{rule} " + ", ".join(f"{v} {words[k]}" for k, v in sorted(n.items())))
    ax.set_title(f"{series.device_id}: {names[0]} (before) -> {names[1]} (after)\n" + "; ".join(per_rule),
                 fontsize=10)

    # Alert lanes: for each rule, a row "before" above a row "after".
    yticks, ylabels = [], []
    for i, rule in enumerate(rules):
        for side in (0, 1):
            y = (len(rules) - 1 - i) * 2 + (1 - side)
            yticks.append(y + 0.4)
            ylabels.append(f"{rule} {'after' if side else 'before'}")
            for c in changes:
                if c.rule_id != rule:
                    continue
                for s in (c.after if side else c.before):
                    end = s.end_ns if s.end_ns is not None else int(series.ts_ns.max()) if len(series.ts_ns) else s.started_ns
                    t0, t1 = local([s.started_ns, max(end, s.started_ns + 60 * NS)])
                    lanes.broken_barh([(mdates.date2num(t0), mdates.date2num(t1) - mdates.date2num(t0))], (y, 0.8),
                                      facecolors=SEVERITY_COLOURS[s.peak_severity],
                                      edgecolors="black" if c.kind != "same" else "none", linewidth=0.6,
                                      alpha=1.0 if c.kind != "same" else 0.35)
    lanes.set_yticks(yticks, ylabels, fontsize=8)
    lanes.set_ylim(-0.2, len(rules) * 2)
    lanes.grid(axis="x", alpha=0.3)
    lanes.legend(handles=[Patch(color=SEVERITY_COLOURS[k], label=SEVERITY_NAMES[k]) for k in (4, 3, 2, 1)],
                 loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, framealpha=0.9,
                 title="alerts, peak severity\n(pale: unchanged)", title_fontsize=8)
    lanes.xaxis.set_major_formatter(mdates.DateFormatter("%m-%d %H:%M", tz=tz))
    lanes.set_xlabel(f"local time ({tz_name})")
    lanes.set_title("alerts as the engine opens them", fontsize=9, loc="left")
    fig.autofmt_xdate()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
