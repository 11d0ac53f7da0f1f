"""`run_service` (citywatch/runner.py), the one way the service starts: refusals at start are an exit code and
one line on stderr, with nothing left running."""

from __future__ import annotations

import shutil
import threading

from citywatch.runner import run_service
from config import load_config
from config.loader import DEFAULT_CONFIG_DIR
from ingest.spool import SpoolWriter


def test_a_locked_spool_is_exit_1_with_one_line_and_no_traceback(tmp_path, capsys):
    cfg_dir = tmp_path / "config"
    shutil.copytree(DEFAULT_CONFIG_DIR, cfg_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    cfg = load_config(cfg_dir, env={})
    spool_dir = cfg.resolve_path(cfg.ingest.spool_dir)
    holder = SpoolWriter(spool_dir, 2**20)  # another collector holds this spool
    try:
        stop = threading.Event()
        stop.set()  # were it to start, it would stop at once: the refusal must come first
        assert run_service(cfg, stop, env={}) == 1
    finally:
        holder.close()
    err = capsys.readouterr().err
    assert err.splitlines() == [f"citywatch run: spool directory {spool_dir} is in use by another process"]
    assert not [t for t in threading.enumerate() if t.name == "detect-alert"]
