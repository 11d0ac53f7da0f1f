"""Benchmark: one detection step as the service runs it (issue 17): `DetectionPipeline._evaluate` = every
shipped rule (`RuleSet.process`) and the alert engine (`AlertEngine.process`, a real SQLite store, one
terminal-type sink that drops what it is sent), on the single-reading shape of `bench_throughput.py`: 8 noise
devices, readings 10 ms apart, two hours before now (night in Xiamen for most of the day: leq 61.8 dB is over
every night limit, so every reading is an active alarm and emits a row per rule, the worst case for the
engine and for the rows' contexts).

Each step holds `--rows` readings of each device (the detector thread's step grows with the rate: about
10-50 at 16,000 readings/s). Figures are CPU time of this process (time.process_time) per reading, which a
shared machine's load disturbs far less than wall time.

    .venv/bin/python bench/bench_step.py [--rows 10,40,100] [--seconds 3] [--against DIR [--pairs 3]]

`--against DIR` runs the same measurement on another copy of the code (DIR holds its `detectors`, `alerts`,
`core`, `config`, `citywatch` packages, e.g. `git archive <rev> | tar -x -C DIR`), alternating in subprocesses,
and reports the ratio of the medians.
Ends with one line `RESULT bench_step rows<N>_us=.. [rows<N>_us_against=.. rows<N>_speedup=..] load=..`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, os.environ.get("BENCH_STEP_ROOT") or str(Path(__file__).resolve().parents[1]))

from alerts.dispatch import Dispatcher  # noqa: E402
from alerts.engine import AlertEngine  # noqa: E402
from alerts.store import AlertStore  # noqa: E402
from citywatch.pipeline import DetectionPipeline  # noqa: E402
from config import load_config  # noqa: E402
from core import ReadingBatch  # noqa: E402

ROOT = Path(os.environ.get("BENCH_STEP_ROOT") or Path(__file__).resolve().parents[1])
ALERTS = """alerting:
  sinks: {{drop: {{type: terminal}}}}
  route: {{receivers: [drop], group_interval_s: 0}}
  store_path: {store}
"""


class Drop:
    """A sink that takes every notice and keeps nothing."""

    def send(self, notice) -> None:
        return None

    def close(self) -> None:
        return None


def measure(rows: int, seconds: float, shape: str = "single", profile: str | None = None, devices: int = 0) -> float:
    """CPU µs per reading of DetectionPipeline._evaluate over `seconds`, steps of `rows` readings per device
    (`shape` single or batch, see the module docstring); with `profile` a cProfile of the timed steps is
    written there."""
    work = Path(tempfile.mkdtemp(prefix="bench_step_"))
    try:
        shutil.copytree(ROOT / "config", work / "config", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        (work / "config" / "alerts.yaml").write_text(ALERTS.format(store=work / "a.sqlite"))
        cfg = load_config(work / "config", {})
        store = AlertStore(work / "a.sqlite")
        sink = Drop()
        engine = AlertEngine(cfg, store, {"drop": sink}, dispatcher=Dispatcher({"drop": sink}, store, 0.01, 0.02))
        now = time.time_ns()
        pipe = DetectionPipeline(cfg, {}, work / "config", clock=time.time_ns, listen=False, engine=engine)
        if shape == "batch":
            batch = _batch_shape(cfg, rows, now, devices)
        else:
            batch = _single_shape(cfg, rows, now)
        for _ in range(20):  # warm up: alerts open, caches filled
            pipe._evaluate(batch())
        prof = None
        if profile:
            import cProfile
            prof = cProfile.Profile()
            prof.enable()
        n, made = 0, 0.0  # made: CPU time spent building the steps' batches, not the pipeline's
        cpu0, wall0 = time.process_time(), time.perf_counter()
        while time.perf_counter() - wall0 < seconds:
            c = time.process_time()
            b = batch()
            made += time.process_time() - c
            pipe._evaluate(b)
            n += len(b)
        us = (time.process_time() - cpu0 - made) / n * 1e6
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)
        engine.stop()
        return us
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _single_shape(cfg, rows: int, now: int):
    """bench_throughput's single shape: 8 noise devices, 10 ms apart, 2 h ago, every reading an alarm."""
    devs = np.array([i for i, d in enumerate(cfg.devices) if d.kind == "noise" and d.protocol == "json"][:8], np.int32)
    t = [now - 2 * 3600 * 10**9]

    def batch() -> ReadingBatch:
            n = rows * len(devs)
            ts = t[0] + np.arange(n, dtype=np.int64) * 10_000_000
            t[0] = int(ts[-1]) + 10_000_000
            return ReadingBatch(np.tile(devs, rows), ts, {"leq": np.full(n, 61.8), "lmax": np.full(n, 78.2),
                                                          "lmin": np.full(n, 52.0), "l90": np.full(n, 55.3)})

    return batch


def _batch_shape(cfg, rows: int, now: int, devices: int = 0):
    """bench_throughput's batch shape: every JSON device (gas and noise), 60-sample messages 1 s apart from
    6 days ago, the same values; a step holds ceil(rows / 60) messages of each of `devices` devices (0: all;
    fewer: the next ones in turn, as the service's steps hold the devices whose messages came meanwhile),
    devices interleaved message by message as a chunk of the broker's deliveries is."""
    devs = [(i, d) for i, d in enumerate(cfg.devices) if d.protocol == "json" and d.kind in ("noise", "gas")]
    per = max(1, -(-rows // 60))
    k = len(devs) if devices <= 0 else min(devices, len(devs))
    t = {i: now - 6 * 86400 * 10**9 for i, _ in devs}
    turn = [0]
    j = np.arange(60, dtype=np.int64)
    nan = np.full(60, np.nan)

    def batch() -> ReadingBatch:
        sensor, ts, leq, lmax, lmin, p = [], [], [], [], [], []
        chosen = [devs[(turn[0] + m) % len(devs)] for m in range(k)]
        turn[0] = (turn[0] + k) % len(devs)
        for _ in range(per):
            for i, d in chosen:
                x = t[i] + j * 1_000_000_000
                t[i] = int(x[-1]) + 1_000_000_000
                ms = x // 1_000_000
                sensor.append(np.full(60, i, np.int32))
                ts.append(x)
                if d.kind == "gas":
                    p.append(np.round(d.set_pressure_kpa * (1 + 0.004 * np.sin(ms / 9000.0)), 3))
                    leq.append(nan), lmax.append(nan), lmin.append(nan)
                else:
                    leq.append(np.round(44 + 2 * np.sin(ms / 7000.0), 1))
                    lmax.append(np.full(60, 52.0)), lmin.append(np.full(60, 39.0)), p.append(nan)
        c = np.concatenate
        return ReadingBatch(c(sensor), c(ts), {"leq": c(leq), "lmax": c(lmax), "lmin": c(lmin), "p": c(p)})

    return batch


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="10,40,100", help="readings per device per step, comma-separated")
    ap.add_argument("--seconds", type=float, default=3.0, help="seconds per measurement (default 3)")
    ap.add_argument("--against", default=None, metavar="DIR", help="another copy of the code to compare with")
    ap.add_argument("--pairs", type=int, default=3, help="with --against: alternating runs of each (default 3)")
    ap.add_argument("--shape", choices=("single", "batch"), default="single",
                    help="single (8 noise devices, every reading an alarm; default) or batch (every JSON device, "
                         "60-sample messages)")
    ap.add_argument("--devices", type=int, default=0, help="batch shape: devices per step, in turn (default 0: all; "
                    "the service's steps at 120,000 readings/s held ~1,660 readings, about 28 devices' messages)")
    ap.add_argument("--profile", default=None, metavar="FILE",
                    help="write a cProfile of the timed steps of the last --rows figure to FILE (not with --against)")
    ap.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # child mode: print one figure
    a = ap.parse_args()
    if a.one is not None:
        print(f"{measure(a.one, a.seconds, a.shape, devices=a.devices):.3f}")
        return 0
    try:
        rows = [int(r) for r in a.rows.split(",") if r.strip()]
    except ValueError:
        ap.error(f"--rows must be comma-separated integers, got {a.rows!r}")
    if not rows or min(rows) < 1 or a.seconds <= 0 or a.pairs < 1 or a.devices < 0:
        ap.error("--rows, --seconds and --pairs must be positive, --devices 0 or more")
    if a.against and not (Path(a.against) / "detectors").is_dir():
        ap.error(f"--against {a.against}: no detectors package there")
    if a.profile and a.against:
        ap.error("--profile measures this copy only; leave out --against")
    what = ("8 noise devices, every reading an active alarm" if a.shape == "single" else
            "every JSON device, 60-sample messages 1 s apart")
    print(f"load average {os.getloadavg()[0]:.2f}; {what}")
    parts = []

    def child(root: str, r: int) -> float:
        env = {**os.environ, "BENCH_STEP_ROOT": root}
        out = subprocess.run([sys.executable, __file__, "--one", str(r), "--seconds", str(a.seconds),
                              "--shape", a.shape, "--devices", str(a.devices)], env=env,
                             capture_output=True, text=True, check=True).stdout
        return float(out.strip().splitlines()[-1])

    for r in rows:
        if not a.against:
            us = measure(r, a.seconds, a.shape, a.profile if r == rows[-1] else None, a.devices)
            print(f"  {r:>4} rows per device per step: {us:6.1f} CPU µs per reading")
            parts.append(f"rows{r}_us={us:.1f}")
            continue
        ours, theirs = [], []
        for _ in range(a.pairs):
            theirs.append(child(str(Path(a.against).resolve()), r))
            ours.append(child(str(ROOT), r))
        m, o = statistics.median(ours), statistics.median(theirs)
        print(f"  {r:>4} rows per device per step: {o:6.1f} -> {m:6.1f} CPU µs per reading (x{o / m:.2f}; "
              f"medians of {a.pairs}: against {', '.join(f'{x:.1f}' for x in theirs)}; this "
              f"{', '.join(f'{x:.1f}' for x in ours)})")
        parts += [f"rows{r}_us={m:.1f}", f"rows{r}_us_against={o:.1f}", f"rows{r}_speedup={o / m:.2f}"]
    print("RESULT bench_step " + " ".join(parts) + f" load={os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
