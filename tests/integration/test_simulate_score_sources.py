"""`citywatch score` reading the InfluxDB `alerts` measurement of a real InfluxDB."""

from __future__ import annotations

import pytest

from simulators.alert_sources import AlertSourceError, load_alerts

pytestmark = [pytest.mark.integration, pytest.mark.shared_influx]


def test_alerts_measurement_is_read_one_alert_per_lifecycle(influx):
    aid = "N-day.XM0002NOISE.20250602T010100000Z"
    base = 1748826060000 * 1_000_000
    lines = [
        # as alerts/sinks/influx.py writes them: low-cardinality tags, alert id as a field, ts = notice time + seq
        f'alerts,category=noise,device_id=XM0002NOISE,district=Huli,rule_id=N-day,severity=yellow,site_id=HL-2025-102,'
        f'transition=firing alert_id="{aid}",key="{aid}:1",seq=1i,escalation_level=0i,value=72.5,limit=70.0 {base + 1}',
        f'alerts,category=noise,device_id=XM0002NOISE,district=Huli,rule_id=N-day,severity=orange,site_id=HL-2025-102,'
        f'transition=severity alert_id="{aid}",key="{aid}:2",seq=2i,escalation_level=0i,value=78.1,limit=75.0 {base + 600_000_000_002}',
        f'alerts,category=noise,device_id=XM0002NOISE,district=Huli,rule_id=N-day,severity=orange,site_id=HL-2025-102,'
        f'transition=resolved alert_id="{aid}",key="{aid}:3",seq=3i,escalation_level=0i {base + 3_600_000_000_003}',
    ]
    influx.write("\n".join(lines))
    got = load_alerts(f"influx:{influx.url}/{influx.database}", influx_auth=(influx.username, influx.password))
    assert len(got) == 1
    a = got[0]
    assert (a.alert_id, a.rule_id, a.device_id, a.site_id, a.severity) == (aid, "N-day", "XM0002NOISE", "HL-2025-102", "orange")
    assert a.start_ms == 1748826060000          # from the alert id: the lifecycle's start, not the notice time


def test_unknown_database_is_a_clear_error(influx):
    with pytest.raises(AlertSourceError):
        load_alerts(f"influx:{influx.url}/nope", influx_auth=(influx.username, influx.password))
