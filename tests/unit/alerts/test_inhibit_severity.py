"""Inhibition by a process source (the shipped G-rupture -> G-low of its site): it mutes its targets up to its
own severity, never a more severe gas alarm (an audit found an orange rupture at one sensor muting a red low
pressure at another sensor of the site)."""

from __future__ import annotations

from tests.unit.alerts.helpers import det
from tests.unit.alerts.test_offline_clear import Harness, real_cfg

# Two gas sensors of one site (GS-SM-01 in config/inventory.yaml).
RUPTURED, DOWNSTREAM = "XMG0001", "XMG0011"


def _site_pair(h):
    a, b = h.index(RUPTURED), h.index(DOWNSTREAM)
    assert h.engine.cfg.devices[a].site == h.engine.cfg.devices[b].site
    return a, b


def test_an_orange_rupture_mutes_an_orange_low_pressure_of_its_site(tmp_path):
    h = Harness(tmp_path, real_cfg())
    a, b = _site_pair(h)
    h.engine.process(det([(a, 0, "G-rupture", "orange", 2.1, 2.3, "gas")]))
    h.engine.process(det([(b, 10, "G-low", "orange", 1.6, 1.7, "gas")]))
    assert h.transitions("G-rupture", RUPTURED) == ["firing"]
    assert h.transitions("G-low", DOWNSTREAM) == []  # the rupture's consequence: muted as configured
    low = next(al for al in h.engine.active() if al.rule_id == "G-low")
    assert low.muted == f"inhibited:{h.notices('G-rupture', RUPTURED)[0].alert_id}"
    h.stop()


def test_an_orange_rupture_never_mutes_a_red_low_pressure_and_a_red_one_does(tmp_path):
    h = Harness(tmp_path, real_cfg())
    a, b = _site_pair(h)
    h.engine.process(det([(a, 0, "G-rupture", "orange", 2.1, 2.3, "gas")]))
    h.engine.process(det([(b, 10, "G-low", "red", 1.0, 1.25, "gas")]))
    red = h.notices("G-low", DOWNSTREAM)
    assert [(n.transition, n.payload["severity"]) for n in red] == [("firing", "red")]
    assert h.engine.alert(red[0].alert_id).muted is None
    h.stop()
    # A red rupture explains a red low pressure of its site: muted, as configured.
    h = Harness(tmp_path / "second", real_cfg())
    a, b = _site_pair(h)
    h.engine.process(det([(a, 0, "G-rupture", "red", 1.9, 2.3, "gas")]))
    h.engine.process(det([(b, 10, "G-low", "red", 1.0, 1.25, "gas")]))
    assert h.transitions("G-low", DOWNSTREAM) == []
    h.stop()
