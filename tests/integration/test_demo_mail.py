"""The demo's config copy routes red gas alarms (and only those) to the on-call team by email, and the
demo's local SMTP receiver keeps them in a Maildir that the demo lists at its end."""

from __future__ import annotations

import shutil

import pytest

from alerts.dispatch import Dispatcher
from alerts.engine import AlertEngine
from alerts.sinks import build_sinks
from alerts.store import AlertStore
from citywatch import demo_mail
from config import load_config
from config.loader import DEFAULT_CONFIG_DIR
from tests.unit.alerts.helpers import det

pytestmark = pytest.mark.integration

def test_demo_routes_red_gas_alarms_to_the_duty_mail(tmp_path):
    config_dir = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, config_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    mail = demo_mail.start(tmp_path, config_dir)
    try:
        cfg = load_config(config_dir, env={})
        # Only the mail sink and the team are built here: the other receivers need the local stack.
        only = cfg.model_copy(update={"alerting": cfg.alerting.model_copy(
            update={"sinks": {"duty_mail": cfg.alerting.sinks["duty_mail"]}})})
        sinks = build_sinks(only, {})
        store = AlertStore(tmp_path / "alerts.sqlite")
        engine = AlertEngine(cfg, store, sinks, dispatcher=Dispatcher(sinks, store, 0.05, 0.2))
        gas, noise = cfg.device_index("XMG0001"), cfg.device_index("XM0001NOISE")
        d = det([(gas, 0, "G-highhigh", "red", 412.5, 400.0, "gas"), (noise, 0, "N-night-max", "red", 91.0, 85.0)])
        d.context = [{"metric": "p", "unit": "kPa"}, {"metric": "lmax", "unit": "dB(A)"}]
        engine.process(d)
        assert engine.flush(20)
        engine.stop()
        lines = mail.summary()
        assert lines[0].startswith(f"mails to the people on duty: 1 in {tmp_path / 'mail'}")
        assert "红色告警：燃气压力超高" in lines[1] and "@localhost" in lines[1]
        assert not any("噪声" in line for line in lines)
    finally:
        mail.stop()
