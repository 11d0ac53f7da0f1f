"""JobLag: one line of our own when a scheduled job really falls behind, rate-limited, with by how much;
APScheduler's per-run warnings are filtered out."""

from __future__ import annotations

import logging

from citywatch.service import JobLag, make_scheduler


class Clock:
    def __init__(self, t: float = 1_000.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def lag(clock, caplog) -> JobLag:
    caplog.set_level(logging.WARNING, "test.lag")
    return JobLag(scheduler=None, clock=clock, logger=logging.getLogger("test.lag"))


def messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "test.lag"]


def test_on_time_and_slightly_late_runs_say_nothing(caplog):
    clock = Clock()
    j = lag(clock, caplog)
    for k in range(10):
        clock.t = 1_000 + k + 0.9  # each run 0.9 s late: within two intervals
        assert abs(j.observe("alerts_tick", "alert tick", 1.0, 1_000 + k) - 0.9) < 1e-6
    assert messages(caplog) == []


def test_runs_skipped_while_the_tick_overran_count_as_lateness(caplog):
    clock = Clock()
    j = lag(clock, caplog)
    clock.t = 1_000.0
    j.observe("alerts_tick", "alert tick", 1.0, 1_000.0)
    # The run of 1000 took 4.5 s: the runs due at 1001..1004 were skipped, the next starts at 1004.5
    # (APScheduler coalesces them into the slot of 1004).
    clock.t = 1_004.5
    assert j.observe("alerts_tick", "alert tick", 1.0, 1_004.0) == 3.5
    assert messages(caplog) == ["alert tick is falling behind: a run started 3.5 s late (it runs every 1 s)"]


def test_rate_limited_to_one_line_a_minute_with_the_worst(caplog):
    clock = Clock()
    j = lag(clock, caplog)

    def run(slot: float, start: float | None = None) -> float:
        clock.t = slot if start is None else start
        return j.observe("alerts_tick", "alert tick", 1.0, slot)

    run(1_000)
    # Late runs (slot, start): the next slot due after 1000 is 1001, and so on.
    assert [run(1_004), run(1_010), run(1_013, 1_013.5), run(1_018)] == [3.0, 5.0, 2.5, 4.0]
    assert messages(caplog) == ["alert tick is falling behind: a run started 3.0 s late (it runs every 1 s)"]
    for slot in range(1_019, 1_070):  # on time again for a while: nothing to say
        assert run(slot) == 0.0
    assert run(1_073) == 3.0  # a minute after the first line: the next one sums up
    assert messages(caplog)[1:] == ["alert tick is falling behind: a run started 3.0 s late (it runs every 1 s); "
                                    "3 more late run(s) since the last such line, the worst 5.0 s late"]


def test_scheduler_defaults_and_filter(caplog):
    scheduler = make_scheduler()
    assert scheduler._job_defaults == {"coalesce": True, "max_instances": 1, "misfire_grace_time": None}
    caplog.set_level(logging.WARNING)
    logging.getLogger("apscheduler.scheduler").warning(
        'Execution of job "%s" skipped: maximum number of running instances reached (%d)', "x", 1)
    logging.getLogger("apscheduler.executors.default").warning('Run time of job "%s" was missed by %s', "x", "0:00:02")
    logging.getLogger("apscheduler.scheduler").warning("Scheduler other warning")
    assert [r.getMessage() for r in caplog.records] == ["Scheduler other warning"]
