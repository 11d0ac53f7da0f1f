"""The one board across a cluster's workers (`citywatch alerts list|show` given a cluster): each partition's open
alerts as its owner saved them, read back from the saved form, shown in the board's table with partition and
worker, under a header that says which worker serves which partition and turns red for one that nobody serves."""

from __future__ import annotations

import io
import json

from rich.console import Console

from alerts.engine import alert_from_state
from citywatch.commands.alerts import cluster_board, cluster_header
from citywatch.partition_state import PartitionAlerts, alerts_in_object, to_bytes
from detectors.snapshot import Snapshot
from tests.unit.alerts.helpers import T0, S, det, make_engine


def saved_alerts(tmp_path) -> dict:
    """A worker's export of one open alert, through JSON as the cluster holds it."""
    engine, _ = make_engine(tmp_path)
    engine.process(det([(0, 0, "N-day", "yellow", 72)]))
    out = json.loads(json.dumps(engine.export_alerts({engine.cfg.devices[0].id})))
    engine.stop()
    return out


def text(renderable, width: int = 250) -> str:
    console = Console(file=io.StringIO(), width=width, highlight=False)
    console.print(renderable)
    return console.file.getvalue()


def test_an_objects_alerts_are_read_without_its_snapshot(tmp_path):
    alerts = saved_alerts(tmp_path)
    assert alerts_in_object(to_bytes(Snapshot({}, 0, 0), alerts)) == alerts
    assert alerts_in_object(to_bytes(Snapshot({}, 0, 0), None)) is None
    assert alerts_in_object(b"PK\x03\x04 a bare snapshot file") is None


def partitions(tmp_path, owner_of_1: str | None) -> list[PartitionAlerts]:
    alerts = saved_alerts(tmp_path)
    return [PartitionAlerts(0, "wa", [], None, 0),
            PartitionAlerts(1, owner_of_1, [alert_from_state(a) for a in alerts["alerts"]], T0, alerts["watermark_ns"])]


def test_every_partitions_alerts_in_one_table_with_partition_and_worker(tmp_path):
    parts = partitions(tmp_path, "wb")
    header = cluster_header(parts, "event", now_ns=T0 + 5 * S)
    assert header.plain == ("as of 2025-06-01 22:30:00 CST (event clock) · cluster: 2 partitions served by wa (0), "
                            "wb (1)")
    assert not header.style
    out = text(cluster_board(parts, "citywatch: active alerts", 250, "event"))
    row = next(line for line in out.splitlines() if "N-day.XM0001NOISE" in line)
    assert "p1 wb" in row and "firing" in row and "yellow" in row and "│ 0 s " in row
    narrow = text(cluster_board(parts, "citywatch: active alerts", 80, "event"), width=80)
    assert "p1 wb" in narrow
    # Live workers (wall clock): durations run to now, as their engines reckon them.
    live = text(cluster_board(parts, "citywatch: active alerts", 250, "wall", now_ns=T0 + 600 * S))
    assert "as of 2025-06-01 22:40:00 CST (wall clock)" in live and "│ 10 min " in live


def test_a_partition_nobody_serves_turns_the_header_red_with_the_age_of_its_alerts(tmp_path):
    parts = partitions(tmp_path, None)
    header = cluster_header(parts, now_ns=T0 + 90 * S)
    assert header.plain.endswith("served by wa (0) · partition 1 NOT SERVED (its alerts as saved 1 min 30 s ago)")
    assert header.style == "bold red"
    assert "p1 NOT SERVED" in text(cluster_board(parts, "citywatch: active alerts", 250))
    empty = [PartitionAlerts(0, "wa", [], None, 0), PartitionAlerts(1, None, [], None, 0)]
    assert "NOT an all-clear" in text(cluster_board(empty, "citywatch: active alerts", 250))
    assert text(cluster_board(empty[:1], "citywatch: active alerts", 250)).endswith("citywatch: active alerts: none\n")
