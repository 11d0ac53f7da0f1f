"""InfluxDB sink: every transition as a point of the `alerts` measurement (v1 HTTP /write), tagged with the
run id (CITYWATCH_RUN_ID) when the service has one."""

from __future__ import annotations

import urllib.parse
import urllib.request

from alerts.model import Notice
from alerts.sinks.robot_http import exchange
from config.connections import basic_auth


def _tag(v: str) -> str:
    return str(v).replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ") or "none"


def _str(v: str) -> str:
    return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'


def line_of(notice: Notice, measurement: str = "alerts") -> str:
    """One line-protocol point. Tags stay low-cardinality (no alert id): it is a field."""
    p = notice.payload
    tags = {
        "rule_id": p["rule_id"], "category": p["category"], "severity": p["severity"],
        "transition": notice.transition, "site_id": p["site"].get("id", ""), "device_id": p["device"].get("id", ""),
        "district": p["site"].get("district", ""),
    }
    if p.get("run_id"):
        # The simulation or replay this alert belongs to (CITYWATCH_RUN_ID): `score --run-id` selects by it.
        tags["run_id"] = p["run_id"]
    fields = {"alert_id": _str(notice.alert_id), "key": _str(notice.key), "seq": f"{notice.seq}i",
              "escalation_level": f"{p.get('escalation_level', 0)}i"}
    for name in ("value", "limit"):
        v = p.get(name)
        if isinstance(v, (int, float)) and v == v:
            fields[name] = repr(float(v))
    # The highest severity the alert has reached (a field: a tag would multiply series).
    fields["peak_severity"] = _str(p.get("peak_severity") or p["severity"])
    if p.get("ack"):
        fields["acked_by"] = _str(p["ack"]["by"])
    tag_text = ",".join(f"{k}={_tag(v)}" for k, v in sorted(tags.items()))
    field_text = ",".join(f"{k}={v}" for k, v in fields.items())
    # Add the seq to the nanosecond timestamp so two transitions at one event time stay two points.
    return f"{_tag(measurement)},{tag_text} {field_text} {notice.ts_ns + notice.seq}"


class InfluxSink:
    """Writes each notice with HTTP POST /write?db=...&precision=ns (InfluxDB 1.x, 2.x/3.x v1-compat).
    5xx, 429 and network errors are retryable; other 4xx, a redirect (never followed) and an answer over
    64 KiB are not (alerts/sinks/robot_http.py: `exchange`)."""

    def __init__(self, url: str, database: str, measurement: str = "alerts", timeout_s: float = 10.0,
                 username: str | None = None, password: str | None = None):
        self.endpoint = url.rstrip("/") + "/write?" + urllib.parse.urlencode({"db": database, "precision": "ns"})
        self.measurement = measurement
        self.timeout_s = timeout_s
        self.headers = basic_auth((username, password or "") if username else None)

    def send(self, notice: Notice) -> None:
        req = urllib.request.Request(self.endpoint, data=line_of(notice, self.measurement).encode(), method="POST",
                                     headers=self.headers)
        exchange(req, self.timeout_s, "influx write", lambda code: code >= 500 or code == 429)

    def close(self) -> None:
        pass
