"""`citywatch status`: the collector's latest self-metrics from InfluxDB and the local spool depth."""

from __future__ import annotations

import os
import sqlite3
import sys
import time

from citywatch.errors import EXIT_UNREACHABLE, report_unreachable, short_reason
from config import ConfigError, load_config


def register(sub) -> None:
    p = sub.add_parser("status", help="show the collector's self-metrics (from InfluxDB) and the spool depth")
    p.add_argument("--config", default=None, metavar="DIR", help="config directory (default: the shipped config/)")
    p.set_defaults(func=_run)


def _run(args) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 1
    from ingest.metrics import COUNTERS, MEASUREMENT
    from ingest.spool import SpoolWriter

    rc = 0
    spool_dir = cfg.resolve_path(cfg.ingest.spool_dir)
    st = SpoolWriter.inspect(spool_dir)
    age = f", oldest {(time.time_ns() - st.oldest_ns) / 1e9:.1f} s old" if st.oldest_ns else ""
    print(f"spool {spool_dir}: {st.records} batch(es), {st.bytes / 2**20:.2f} MiB of "
          f"{cfg.ingest.spool_max_mb:g} MiB{age}")
    for line in replica_spool_lines(cfg):
        print(line)
    _alert_store_line(cfg)
    influx = cfg.connections.influx
    print(f"InfluxDB {influx.url} ({influx.api})")
    if influx.api != "v1":
        print("  self-metrics are read through the v1 query API only; use the InfluxDB UI for api v2")
        return rc
    from ingest.influx_writer import RetryableWriteError, V1Writer

    env = os.environ
    user, password = influx.credentials(env) or (None, None)
    if not influx.database:  # the config requires it for api v1; said plainly should that ever change
        print("  connections.influx.database is not set: no self-metrics to read")
        return rc
    writer = V1Writer(influx.url, influx.database, user, password, influx.timeout_s)
    try:
        res = writer.query(f'SELECT * FROM "{MEASUREMENT}" WHERE "kind" = \'collector\' '
                           f"GROUP BY \"client_id\" ORDER BY time DESC LIMIT 1")
        dl = writer.query(f'SELECT last("records") FROM "{MEASUREMENT}" WHERE "kind" = \'deadletter\' '
                          f"AND time > now() - 7d GROUP BY \"reason\"")
    except RetryableWriteError as exc:
        return report_unreachable("citywatch status", "InfluxDB", influx.url, exc)
    except RuntimeError as exc:  # reachable, but the query was refused (credentials, database)
        print(f"citywatch status: InfluxDB at {influx.url} refused the query ({short_reason(exc)}); "
              "check CITYWATCH_INFLUX_USERNAME / CITYWATCH_INFLUX_PASSWORD and the database", file=sys.stderr)
        return EXIT_UNREACHABLE
    series = (res[0].get("series") if res else None) or []
    if not series:
        print("  no self-metrics yet (is `citywatch run` running?)")
        return rc
    for s in series:
        row = dict(zip(s["columns"], s["values"][0]))
        ago = (time.time_ns() - int(row["time"])) / 1e9
        print(f"  collector {s.get('tags', {}).get('client_id', '?')} on {row.get('host')}: last report {ago:.1f} s ago"
              f", MQTT {'connected' if row.get('mqtt_connected') else 'NOT connected'}"
              f", InfluxDB {'ok' if row.get('influx_ok', 1) else 'FAILING'}")
        for name in COUNTERS:
            print(f"    {name:20s} {int(row.get(name) or 0):>12,d}")
        for name in ("spool_records", "spool_bytes", "spool_age_s", "inbox_depth", "write_latency_ms_last",
                     "write_latency_ms_mean", "write_latency_ms_max"):
            if row.get(name) is not None:
                v = row[name]
                print(f"    {name:20s} {v:>12,.1f}" if isinstance(v, float) else f"    {name:20s} {v:>12,}")
        for line in replica_lines(row):
            print(f"    {line}")
        for line in detection_lines(row):
            print(f"    {line}")
    dls = (dl[0].get("series") if dl else None) or []
    if dls:
        print("  dead letters by reason (cumulative, latest run):")
        for s in sorted(dls, key=lambda s: s.get("tags", {}).get("reason", "")):
            print(f"    {s.get('tags', {}).get('reason', '?'):20s} {int(s['values'][0][1]):>12,d}")
    return rc


def replica_spool_lines(cfg) -> list[str]:
    """The local spool depth of each InfluxDB replica (`connections.influx_replicas`), read from its directory."""
    from citywatch.service import replica_spool_dir
    from ingest.spool import SpoolWriter

    out = []
    for r in cfg.connections.influx_replicas:
        path = replica_spool_dir(cfg, r.name)
        st = SpoolWriter.inspect(path)
        age = f", oldest {(time.time_ns() - st.oldest_ns) / 1e9:.1f} s old" if st.oldest_ns else ""
        out.append(f"spool of InfluxDB replica {r.name} ({r.url}) {path}: {st.records} batch(es), "
                   f"{st.bytes / 2**20:.2f} MiB of {cfg.ingest.spool_max_mb:g} MiB{age}")
    return out


def replica_lines(row: dict) -> list[str]:
    """What a self-metrics point says about each InfluxDB replica (its `replica_<name>_*` gauges)."""
    from ingest.influx_target import REPLICA_COUNTERS

    names = sorted({k[len("replica_"):-len("_spool_records")] for k in row
                    if k.startswith("replica_") and k.endswith("_spool_records") and row[k] is not None})
    out = []
    for name in names:
        g = {k[len(f"replica_{name}_"):]: v for k, v in row.items() if k.startswith(f"replica_{name}_")}
        counts = ", ".join(f"{c} {int(g.get(c) or 0):,}" for c in REPLICA_COUNTERS)
        out.append(f"InfluxDB replica {name}: {'ok' if g.get('influx_ok', 1) else 'FAILING'}, spool "
                   f"{int(g.get('spool_records') or 0):,} batch(es), {int(g.get('spool_bytes') or 0):,} bytes, "
                   f"oldest {float(g.get('spool_age_s') or 0.0):.1f} s; {counts}")
    return out


def detection_lines(row: dict) -> list[str]:
    """What a self-metrics point says about detection (issue 17: it never falls behind silently): readings
    queued for the detectors and by how much they lag, the alert tick's late and skipped runs, alert notices
    and their latency. Empty for a point of a collector that runs without detection."""
    from citywatch.pipeline import DETECT_LAG_WARN_S

    out = []
    if row.get("detect_rows_queued") is not None:
        queued, age = int(row["detect_rows_queued"]), float(row.get("detect_oldest_age_s") or 0.0)
        lag = float(row.get("detect_event_lag_s") or 0.0)
        state = f"BEHIND (over {DETECT_LAG_WARN_S:g} s)" if age > DETECT_LAG_WARN_S else "keeping up"
        out.append(f"detection: {state}: {queued:,} readings queued, oldest handed over {age:.1f} s ago, "
                   f"event-time lag {lag:.1f} s; {int(row.get('detect_steps') or 0):,} steps, "
                   f"{int(row.get('detect_deferred_steps') or 0):,} of them left readings for later")
        held = int(row.get("detect_rows_held_ahead") or 0)
        if held:
            out.append(f"detection holds {held:,} readings dated more than a day ahead of the feed (event clock), "
                       f"{int(row.get('detect_rows_ahead_dropped') or 0):,} left out")
    if row.get("tick_runs") is not None:
        out.append(f"alert tick: {int(row['tick_runs']):,} runs, {int(row.get('tick_late') or 0):,} late, "
                   f"{int(row.get('tick_skipped') or 0):,} skipped")
    if row.get("alert_notices") is not None:
        n = int(row.get("alert_latency_count") or 0)
        p99 = row.get("alert_latency_p99_le_s")
        lat = (f"; firing latency p99 <= {float(p99):g} s over {n:,} firing notices" if n and p99 is not None
               else f"; firing latency p99 over the last bucket ({n:,} firing notices)" if n else "")
        out.append(f"alert notices: {int(row['alert_notices']):,}{lat}")
    return out


def _alert_store_line(cfg) -> None:
    """The alert store: how fresh it is and whether the engine writing it is alive (its heartbeat)."""
    from alerts.model import iso
    from alerts.store import AlertStore
    from alerts.terminal import freshness

    path = cfg.resolve_path(cfg.alerting.store_path)
    try:
        store = AlertStore(path, create=False)
    except FileNotFoundError:
        print(f"alert store {path}: none yet (`citywatch run` creates it)")
        return
    except sqlite3.DatabaseError as exc:
        print(f"alert store {path}: {exc}")
        return
    try:
        fresh = freshness(store)
        as_of = f"as of {iso(fresh.as_of_ns)}" if fresh.as_of_ns else "no event seen yet"
        print(f"alert store {path}: {as_of}; {fresh.service_text()}")
    finally:
        store.close()
