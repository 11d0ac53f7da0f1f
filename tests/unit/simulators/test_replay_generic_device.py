"""Replaying detect-format readings of a device that has no topic: a clear error naming the line."""

from __future__ import annotations

import pytest

from config.inventory import Device
from simulators.replay import FeedFormatError, read_feed


@pytest.fixture()
def cfg_with_generic(cfg):
    # What `citywatch detect --kind generic` builds: the inventory plus a generic device (no site).
    devices = [*cfg.devices, Device(id="BENCH1", kind="generic", report_interval_s=60)]
    out = cfg.model_copy(update={"devices": devices})
    out.model_post_init(None)
    return out


def test_readings_of_a_generic_device_are_refused_with_their_line(cfg_with_generic, tmp_path):
    p = tmp_path / "readings.csv"
    p.write_text("ts,device_id,leq\n1748788200000,XM0001NOISE,55.0\n1748788260000,BENCH1,1.5\n")
    # Before: KeyError('generic') from the envelope encoder, a traceback out of `citywatch replay`.
    with pytest.raises(FeedFormatError, match=rf"^{p}:3: device BENCH1 is of kind generic: it has no site"):
        read_feed(p, cfg_with_generic)


def test_readings_of_noise_devices_still_replay_beside_the_generic_one(cfg_with_generic, tmp_path):
    p = tmp_path / "readings.csv"
    p.write_text("ts,device_id,leq\n1748788200000,XM0001NOISE,55.0\n")
    got = read_feed(p, cfg_with_generic)
    assert [(m.device, m.n) for m in got] == [("XM0001NOISE", 1)]
