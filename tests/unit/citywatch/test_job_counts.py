"""No scheduled run is skipped without a count (issue 17): JobLag counts each job's runs, late runs and the
due runs that never ran on their own (coalesced into a later run, or refused while the last one ran)."""

from __future__ import annotations

import logging
import threading
import time

from citywatch.service import JobLag, make_scheduler


class Clock:
    def __init__(self, t: float = 1_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_coalesced_and_refused_slots_are_counted_once_each():
    clock = Clock()
    j = JobLag(scheduler=None, clock=clock, logger=logging.getLogger("test.counts"))

    def run(slot: float, start: float | None = None) -> None:
        clock.t = slot if start is None else start
        j.observe("alerts_tick", "alert tick", 1.0, slot)

    run(1_000)
    run(1_001)
    # The run of 1001 took 3.5 s: the slots 1002 and 1003 were refused (max instances), 1004 ran late.
    j.refused("alerts_tick", 1.0, 1_002)
    j.refused("alerts_tick", 1.0, 1_003)
    run(1_004, 1_004.5)
    # The process was too busy to submit 1005..1008: APScheduler coalesced them into 1009, started late.
    run(1_009, 1_012.0)
    # Both late: each started more than 2 intervals after the first slot it left without a run (1002, 1005).
    assert j.counts() == {"alerts_tick": {"runs": 4, "late": 2, "skipped": 6}}


def test_a_real_scheduler_counts_the_runs_an_overrunning_job_missed(caplog):
    caplog.set_level(logging.DEBUG, "apscheduler")
    sched = make_scheduler()
    ran = threading.Event()

    def slow():
        ran.set()
        time.sleep(0.45)  # longer than 4 intervals: the next due runs find it still going

    sched.add_job(slow, "interval", seconds=0.1, id="alerts_tick")
    sched.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            c = sched.job_lag.counts().get("alerts_tick", {})
            if c.get("runs", 0) >= 3:
                break
            time.sleep(0.05)
    finally:
        sched.shutdown(wait=True)
    c = sched.job_lag.counts()["alerts_tick"]
    assert ran.is_set() and c["runs"] >= 3
    # Each run spans at least four slots, so at least three per run went by without a run of their own.
    assert c["skipped"] >= 3 * (c["runs"] - 1), c
    # ... and APScheduler's own per-skip warning stays filtered out.
    assert not any("maximum number of running instances" in r.getMessage() for r in caplog.records)
