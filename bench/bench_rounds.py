"""Benchmark: the per-round cost of the whole shipped rule set (issue 17), in the two shapes the service sees.

- noise: 8 noise devices, one reading each per round (the single-reading stream): each `process` call gets
  `--rows` readings of each device (the detector thread's step, `detect_step_rows_per_device`), i.e. that
  many rounds of 8 rows.
- gas:   gas devices each sending a 60-sample batch (1 s apart); each `process` call gets one batch of each
  of `--gas-devices` devices (60 rounds).

The rule set is `RuleSet.from_config` over the shipped config (every rule on), as the service builds it;
the deadman's `advance` runs after each call as in the service. Readings are normal, the usual case:
the detections counted are the deadman's Offline rows of the inventory's devices that send nothing. Figures are per CPU second of the benchmark process (time.process_time), which a shared
machine's load disturbs far less than wall time.

    .venv/bin/python bench/bench_rounds.py [--seconds 3] [--rows 32] [--gas-devices 4] [--profile N]
        [--against DIR [--pairs 3]]

`--profile N` prints the top N functions of a cProfile run of each shape before timing.
`--against DIR` compares with another copy of the code (DIR holds its `detectors`, `core`, `config`
packages, e.g. a copy of the tree before a change): `--pairs` runs of this tree and of DIR alternate in
subprocesses on the same machine load, and the ratios of their medians are reported.
Ends with one line `RESULT bench_rounds key=value ...`.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# BENCH_ROUNDS_ROOT: the tree whose packages are measured (set by --against for the other copy).
sys.path.insert(0, os.environ.get("BENCH_ROUNDS_ROOT") or str(Path(__file__).resolve().parents[1]))

from config import load_config  # noqa: E402
from core import ReadingBatch  # noqa: E402
from detectors.registry import RuleSet  # noqa: E402

T0_NS = int(np.datetime64("2025-06-03T02:00:00", "ns").astype(np.int64))  # 10:00 Asia/Shanghai, a weekday


class Feed:
    """Successive batches of one shape, event times continuing from batch to batch."""

    def __init__(self, cfg, shape: str, rows: int, gas_devices: int) -> None:
        kind = "noise" if shape == "noise" else "gas"
        devs = [i for i, d in enumerate(cfg.devices) if d.kind == kind]
        self.devs = np.array(devs[:8] if shape == "noise" else devs[:gas_devices], np.int32)
        self.p_set = np.array([cfg.devices[i].set_pressure_kpa or np.nan for i in self.devs])
        self.shape = shape
        self.rows = rows if shape == "noise" else 60
        self.step_ns = 100_000_000 if shape == "noise" else 1_000_000_000
        self.t = T0_NS

    def next(self) -> ReadingBatch:
        k, r = len(self.devs), self.rows
        j = np.arange(r, dtype=np.int64)
        ts_one = self.t + j * self.step_ns
        self.t = int(ts_one[-1]) + self.step_ns
        if self.shape == "noise":
            # Arrival order: the devices interleaved, one reading each in turn (single-reading messages).
            sensor = np.tile(self.devs, r)
            ts = np.repeat(ts_one, k)
            v = 50.0 + 3.0 * np.sin(ts / 7e12)
            values = {"leq": v, "lmax": v + 8, "lmin": v - 5, "l90": v - 3}
        else:
            # One 60-sample message per device after the other.
            sensor = np.repeat(self.devs, r)
            ts = np.tile(ts_one, k)
            values = {"p": np.repeat(self.p_set, r) * (1 + 0.004 * np.sin(ts / 9e12))}
        return ReadingBatch(sensor, ts, values)


def run(rules: RuleSet, feed: Feed, seconds: float) -> tuple[float, float, int]:
    """(readings per CPU second, CPU µs per round, detections) over `seconds` of process + advance calls.
    CPU time of this (single-threaded) process, not wall time: on a shared machine the wall clock
    mostly measures the other processes."""
    for _ in range(3):  # warm up
        b = feed.next()
        rules.process(b)
        rules.advance(int(b.ts_ns.max()))
    n = rounds = dets = 0
    start, cpu0 = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        b = feed.next()
        dets += len(rules.process(b))
        dets += len(rules.advance(int(b.ts_ns.max())))
        n += len(b)
        rounds += feed.rows
    el = time.process_time() - cpu0
    return n / el, el / rounds * 1e6, dets


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=3.0, help="timed seconds per shape")
    ap.add_argument("--rows", type=int, default=32, help="readings of each noise device per process call")
    ap.add_argument("--gas-devices", type=int, default=4, help="gas devices per call (one 60-sample batch each)")
    ap.add_argument("--profile", type=int, default=0, help="print the top N functions of a cProfile run")
    ap.add_argument("--against", help="another copy of the code to compare with (see above)")
    ap.add_argument("--pairs", type=int, default=3, help="alternating runs of each tree with --against")
    a = ap.parse_args()
    if a.rows < 1 or a.gas_devices < 1 or a.seconds <= 0 or a.pairs < 1:
        ap.error("--rows, --gas-devices, --seconds and --pairs must be positive")
    if a.against:
        compare(a)
        return
    cfg = load_config()
    print(f"load average {os.getloadavg()[0]:.2f}; rules: {len(RuleSet.from_config(cfg).rules)}")
    if a.profile:
        for shape in ("noise", "gas"):
            rules, feed = RuleSet.from_config(cfg), Feed(cfg, shape, a.rows, a.gas_devices)
            prof = cProfile.Profile()
            prof.enable()
            run(rules, feed, a.seconds)
            prof.disable()
            print(f"--- {shape}")
            pstats.Stats(prof).sort_stats("tottime").print_stats(a.profile)
    out = {}
    for shape in ("noise", "gas"):
        rate, us, dets = run(RuleSet.from_config(cfg), Feed(cfg, shape, a.rows, a.gas_devices), a.seconds)
        print(f"{shape:5s}: {rate:10,.0f} readings per CPU second  {us:8.1f} CPU µs/round  ({dets} detections)")
        out[f"{shape}_readings_s"] = f"{rate:.0f}"
        out[f"{shape}_us_round"] = f"{us:.1f}"
    out["load"] = f"{os.getloadavg()[0]:.2f}"
    print("RESULT bench_rounds " + " ".join(f"{k}={v}" for k, v in out.items()))


def compare(a) -> None:
    """Alternate runs of this tree and of `a.against` (subprocesses), then the medians and their ratios."""
    other = Path(a.against).resolve()
    if not (other / "detectors" / "registry.py").is_file():
        sys.exit(f"--against {other}: no detectors/registry.py there")
    here = str(Path(__file__).resolve().parents[1])
    runs: dict[str, list[dict]] = {"new": [], "old": []}
    for _ in range(a.pairs):
        for name, root in (("old", str(other)), ("new", here)):
            cmd = [sys.executable, str(Path(__file__).resolve()), "--seconds", str(a.seconds), "--rows", str(a.rows),
                   "--gas-devices", str(a.gas_devices)]
            res = subprocess.run(cmd, env={**os.environ, "BENCH_ROUNDS_ROOT": root}, capture_output=True, text=True,
                                 check=True)
            last = res.stdout.strip().splitlines()[-1]
            kv = dict(x.split("=", 1) for x in last.split()[2:])
            print(f"{name}: {last}")
            runs[name].append(kv)
    out = {}
    for key in ("noise_readings_s", "gas_readings_s", "noise_us_round", "gas_us_round"):
        old = statistics.median(float(r[key]) for r in runs["old"])
        new = statistics.median(float(r[key]) for r in runs["new"])
        out[f"old_{key}"], out[f"new_{key}"] = f"{old:.1f}", f"{new:.1f}"
    for shape in ("noise", "gas"):
        out[f"{shape}_speedup"] = f"{float(out[f'new_{shape}_readings_s']) / float(out[f'old_{shape}_readings_s']):.2f}"
    out["load"] = f"{os.getloadavg()[0]:.2f}"
    print("RESULT bench_rounds " + " ".join(f"{k}={v}" for k, v in out.items()))


if __name__ == "__main__":
    main()
