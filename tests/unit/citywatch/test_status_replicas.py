"""`citywatch status` on InfluxDB replicas: each replica's spool depth from its own directory, and its
`replica_<name>_*` self-metrics gauges (the line texts are pinned)."""

from __future__ import annotations

import shutil

from citywatch.commands.status import replica_lines, replica_spool_lines
from citywatch.service import replica_spool_dir
from config import load_config
from config.loader import DEFAULT_CONFIG_DIR
from ingest.spool import SpoolWriter


def test_replica_gauges_become_one_line_per_replica():
    row = {"time": 1, "spool_records": 3,
           "replica_dr_spool_records": 2, "replica_dr_spool_bytes": 2048, "replica_dr_spool_age_s": 4.25,
           "replica_dr_influx_ok": 0, "replica_dr_rows_written": 1200, "replica_dr_rows_spooled": 1500,
           "replica_dr_write_errors": 7, "replica_dr_rows_rejected": 0, "replica_dr_spool_full_waits": 0,
           "replica_cloud_spool_records": 0, "replica_cloud_influx_ok": 1}
    assert replica_lines(row) == [
        "InfluxDB replica cloud: ok, spool 0 batch(es), 0 bytes, oldest 0.0 s; rows_written 0, rows_spooled 0, "
        "write_errors 0, rows_rejected 0, spool_full_waits 0",
        "InfluxDB replica dr: FAILING, spool 2 batch(es), 2,048 bytes, oldest 4.2 s; rows_written 1,200, "
        "rows_spooled 1,500, write_errors 7, rows_rejected 0, spool_full_waits 0",
    ]
    assert replica_lines({"spool_records": 0}) == []


def test_replica_spool_depth_is_read_from_its_directory(tmp_path):
    cfg_dir = tmp_path / "config"
    cfg_dir.mkdir()
    for f in DEFAULT_CONFIG_DIR.glob("*.yaml"):
        shutil.copy(f, cfg_dir / f.name)
    conn = cfg_dir / "connections.yaml"
    conn.write_text(conn.read_text().replace("  influx_replicas: []", "  influx_replicas:\n"
                                             "    - {name: dr, url: 'http://10.0.0.2:8086'}"))
    cfg = load_config(cfg_dir, env={})
    spool = SpoolWriter(replica_spool_dir(cfg, "dr"), 2**20)
    spool.append(b"m f=1i 1\n")
    spool.close()
    [line] = replica_spool_lines(cfg)
    assert line.startswith(f"spool of InfluxDB replica dr (http://10.0.0.2:8086) {tmp_path / 'var/spool/replicas/dr'}: "
                           "1 batch(es), 0.00 MiB of 512 MiB, oldest ")
