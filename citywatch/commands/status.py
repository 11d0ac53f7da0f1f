"""`citywatch status`: the collector's latest self-metrics from InfluxDB and the local spool depth."""

from __future__ import annotations

import os
import sys
import time

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
    influx = cfg.connections.influx
    print(f"InfluxDB {influx.url} ({influx.api})")
    if influx.api != "v1":
        print("  self-metrics are read through the v1 query API only; use the InfluxDB UI for api v2")
        return rc
    from ingest.influx_writer import RetryableWriteError, V1Writer

    env = os.environ
    user, password = influx.credentials(env) or (None, None)
    writer = V1Writer(influx.url, influx.database, user, password, influx.timeout_s)
    try:
        res = writer.query(f'SELECT * FROM "{MEASUREMENT}" WHERE "kind" = \'collector\' '
                           f"GROUP BY \"client_id\" ORDER BY time DESC LIMIT 1")
        dl = writer.query(f'SELECT last("records") FROM "{MEASUREMENT}" WHERE "kind" = \'deadletter\' '
                          f"AND time > now() - 7d GROUP BY \"reason\"")
    except (RetryableWriteError, RuntimeError) as exc:
        print(f"  cannot read self-metrics: {exc}")
        return 1
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
    dls = (dl[0].get("series") if dl else None) or []
    if dls:
        print("  dead letters by reason (cumulative, latest run):")
        for s in sorted(dls, key=lambda s: s.get("tags", {}).get("reason", "")):
            print(f"    {s.get('tags', {}).get('reason', '?'):20s} {int(s['values'][0][1]):>12,d}")
    return rc
