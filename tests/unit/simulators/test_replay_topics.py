"""Which topics of a capture `citywatch replay` publishes: the data plane only unless asked (issue 10: a
replayed `mosquitto_sub -t 'city/xm/#'` capture re-applied an old silence and re-sent old alert notices)."""

from __future__ import annotations

import json

import pytest

from simulators.replay import DATA_PLANE, FAMILY_NAMES, read_feed, split_data_plane, topic_family

CASES = [
    ("city/xm/gas/GS-SM-01/XMG0001/data", "data"),
    ("city/xm/noise/SM-2025-101/XM0001NOISE/status", "status"),
    ("city/xm/noise/SM-2025-101/XM0001NOISE/event", "event"),
    ("city/xm/hj212/XM0004NOISE", "hj212"),
    ("city/xm/gas/GS-SM-01/XMG0001/cmd", "device-command"),
    ("city/xm/alerts/cmd", "command"),
    ("city/xm/alerts/cmd/lin", "command"),
    ("city/xm/alerts/replies", "reply"),
    ("city/xm/alerts/replies/console-7", "reply"),
    ("city/xm/alerts/gas/GS-SM-01", "alert"),
    ("city/xm/alerts/active/XMG0001-G-highhigh-1", "alert"),
    ("city/xm/deadletter/invalid_json/XMG0001", "deadletter"),
    ("city/xm/internal/metrics/x", "internal"),
    ("city/xm/noise/data", "other"),
    ("city/xm/hj212/XM0004NOISE/extra", "other"),
    ("elsewhere", "other"),
]


@pytest.mark.parametrize("topic, family", CASES)
def test_topic_family(cfg, topic, family):
    assert topic_family(topic, cfg) == family
    assert topic_family(topic) == family   # the shipped topics are the defaults
    assert family in FAMILY_NAMES


def test_family_follows_the_configured_topics(cfg):
    moved = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(update={"command_topic": "ops/cmd"})})
    assert topic_family("ops/cmd/lin", moved) == "command"
    assert topic_family("city/xm/alerts/cmd/lin", moved) == "alert"


def test_a_full_capture_keeps_only_the_data_plane(cfg, tmp_path):
    sample = {"schema": "xm.gas.v1", "device_id": "XMG0001", "site_id": "GS-SM-01",
              "samples": [{"ts": 1748788200000, "values": {"p": 2.5}}]}
    lines = [
        ("city/xm/gas/GS-SM-01/XMG0001/data", json.dumps(sample)),
        ("city/xm/alerts/cmd/lin", '{"action":"silence","matchers":{"category":"gas"},"expires":"1w"}'),
        ("city/xm/alerts/gas/GS-SM-01", '{"transition":"firing"}'),
        ("city/xm/alerts/active/XMG0001-G-highhigh-1", '{"transition":"firing"}'),
        ("city/xm/alerts/replies", '{"ok":true}'),
        ("city/xm/deadletter/invalid_json/XMG0001", '{"reason":"invalid_json"}'),
        ("city/xm/gas/GS-SM-01/XMG0001/status", "online"),
        ("city/xm/alerts/cmd/chen", '{"action":"ack"}'),
    ]
    path = tmp_path / "capture.txt"   # what `mosquitto_sub -v -t 'city/xm/#'` prints
    path.write_text("".join(f"{t} {p}\n" for t, p in lines))
    keep, skipped = split_data_plane(read_feed(path, cfg), cfg)
    assert [m.topic for m in keep] == ["city/xm/gas/GS-SM-01/XMG0001/data", "city/xm/gas/GS-SM-01/XMG0001/status"]
    assert skipped == {"command": 2, "alert": 2, "reply": 1, "deadletter": 1}
    assert all(topic_family(m.topic, cfg) in DATA_PLANE for m in keep)
