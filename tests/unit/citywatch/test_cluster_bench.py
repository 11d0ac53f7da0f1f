"""bench/bench_cluster.py's plumbing: CPU time of a process tree from /proc (a busy child is counted with its
parent), and the split of the workers' CPU into a per-message and a per-reading cost from the two shapes."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.bench_module import load_bench


def _bench():
    return load_bench("bench_cluster")


def test_tree_cpu_counts_a_busy_grandchild_and_nothing_for_a_gone_process():
    b = _bench()
    # A shell whose child burns CPU until killed: the shell itself sleeps, so its time is the child's.
    code = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.5: pass\ntime.sleep(30)"
    parent = subprocess.Popen(["sh", "-c", f'{sys.executable} -c "{code}"; true'], start_new_session=True)
    try:
        deadline = time.monotonic() + 20
        while b.tree_cpu_s(parent.pid) < 0.4 and time.monotonic() < deadline:  # bounded: the child's 0.5 s of CPU
            time.sleep(0.05)
        assert b.tree_cpu_s(parent.pid) >= 0.4
    finally:
        import os
        import signal
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(10)
    assert b.tree_cpu_s(parent.pid) == 0.0  # reaped: gone from /proc
    assert b.tree_cpu_s(None) == 0.0


def test_per_message_and_per_reading_cost_from_two_shapes():
    b = _bench()
    # 2 ms per message + 30 us per reading: 1,000 batch messages of 60 readings, 20,000 single readings.
    batch = {"msgs": 1000, "sent": 60_000, "worker_cpu": 1000 * 0.002 + 60_000 * 30e-6}
    fast = {"msgs": 20_000, "sent": 20_000, "worker_cpu": 20_000 * 0.002 + 20_000 * 30e-6}
    ms_per_msg, us_per_reading = b.per_message_and_reading(batch, fast)
    assert ms_per_msg == pytest.approx(2.0)
    assert us_per_reading == pytest.approx(30.0)
    same = {"msgs": 10, "sent": 600, "worker_cpu": 1.0}
    assert b.per_message_and_reading(same, dict(same)) is None  # one shape twice: no split
