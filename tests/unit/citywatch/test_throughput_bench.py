"""bench/bench_throughput.py's pure helpers: the volume of InfluxDB's own ingest, its --influx-readings check,
and the cutting of line protocol into write bodies."""

from __future__ import annotations

import argparse

import pytest

from tests.bench_module import load_bench


def _bench():
    return load_bench("bench_throughput")


@pytest.mark.parametrize("requested, burst, step_s, top, want", [
    (0, 120_000, 5.0, 470_000, 2_350_000),   # batch default: the top step's readings
    (0, 50_000, 5.0, 50_000, 250_000),       # single default
    (0, 3_000_000, 5.0, 470_000, 3_000_000),  # never fewer than the burst's
    (0, 120_000, 0.5, 15_000, 120_000),
    (1_000, 120_000, 5.0, 470_000, 1_000),   # asked for: taken as is
])
def test_influx_volume(requested, burst, step_s, top, want):
    assert _bench().influx_volume(requested, burst, step_s, top) == want


def test_influx_readings_arg_takes_0_to_the_bound():
    b = _bench()
    assert b.influx_readings_arg("0") == 0
    assert b.influx_readings_arg("2_000_000") == 2_000_000
    assert b.influx_readings_arg(str(b.INFLUX_READINGS_MAX)) == b.INFLUX_READINGS_MAX


@pytest.mark.parametrize("text, msg", [
    ("-1", "from 0 (the default volume) to 20,000,000, got -1"),
    ("20000001", "from 0 (the default volume) to 20,000,000, got 20,000,001"),
    ("1e6", "a whole number of readings, got '1e6'"),
    ("", "a whole number of readings, got ''"),
])
def test_influx_readings_arg_refuses(text, msg):
    with pytest.raises(argparse.ArgumentTypeError) as e:
        _bench().influx_readings_arg(text)
    assert str(e.value) == msg


def test_cut_bodies_full_bodies_and_the_rest():
    lines = [f"m v={i} {i}".encode() for i in range(7)]
    bodies, rest = _bench().cut_bodies(lines, 3)
    assert bodies == [b"m v=0 0\nm v=1 1\nm v=2 2\n", b"m v=3 3\nm v=4 4\nm v=5 5\n"]
    assert rest == [b"m v=6 6"]
    assert _bench().cut_bodies(lines[:2], 3) == ([], lines[:2])


@pytest.mark.parametrize("burst, before, after, want", [
    (100_000, 500_000, 600_000, (100_000, 0)),        # all landed
    (100_000, 500_000, 541_668, (41_668, 58_332)),    # part lost at the broker
    # Regression: an earlier step's 75,579 readings a stock broker dropped made the burst read "0 landed, lost
    # 133,911" (counted from what was sent before it); they are not the burst's.
    (100_000, 424_421, 466_089, (41_668, 58_332)),
    (100_000, 500_000, 620_000, (100_000, 0)),        # late readings of an earlier step: capped at the burst
    (100_000, 500_000, 500_000, (0, 100_000)),
])
def test_burst_tally_counts_the_bursts_own_landings(burst, before, after, want):
    assert _bench().burst_tally(burst, before, after) == want


@pytest.mark.parametrize("cores, others, influx, ceiling, budget", [
    # This machine's batch shape (shared cores): 3.5 ms of others leave 0.53 ms for 80 % of 620,000/s.
    (2, 3.5, 620_000, 571_428.6, 0.532),
    # InfluxDB on a core of its own: one core for the rest, 1.3 ms of others (no InfluxDB among them).
    (1, 1.3, 500_000, 769_230.8, 1.2),
    # Others alone take more than 80 % needs: out of any service's reach.
    (2, 4.5, 620_000, 444_444.4, -0.468),
])
def test_service_budget(cores, others, influx, ceiling, budget):
    got_ceiling, got_budget = _bench().service_budget(cores, others, influx)
    assert got_ceiling == pytest.approx(ceiling, rel=1e-6)
    assert got_budget == pytest.approx(budget, abs=1e-3)
    # A service costing exactly the budget runs at 80 % of InfluxDB's own ingest on those cores.
    assert cores * 1e6 / (others + got_budget) == pytest.approx(0.8 * influx)


@pytest.mark.parametrize("cores, others, influx", [(2, float("nan"), 620_000), (2, 3.5, 0.0), (0, 3.5, 620_000)])
def test_service_budget_without_figures_is_nan(cores, others, influx):
    import math
    assert all(math.isnan(x) for x in _bench().service_budget(cores, others, influx))
