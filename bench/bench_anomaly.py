"""Benchmark: one anomaly detector at a time over 10,000 sensors (readings/s, bytes of state per sensor),
beside the generic ones, on bench_detectors' synthetic city (15-minute batches of one-minute readings).

    .venv/bin/python bench/bench_anomaly.py [--sensors 10000] [--batches 4] [--repeat 3] [--types a,b] [--warm 8]

Prints one line per detector and ends with `RESULT bench_anomaly type=readings_per_s/state_bytes ...`.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_detectors import make_batches, synthetic_config

from config.model import Config
from detectors.registry import RuleSet

# One rule per detector, on fields every noise monitor reports (gas sensors read NaN: missing, cheap).
RULES = {
    "robust_z": {"field": "leq"},
    "ewma": {"field": "leq"},
    "cusum": {"field": "leq"},
    "hotelling_t2": {"fields": ["leq", "lmax", "l90"]},
    "pca_residual": {"fields": ["leq", "lmax", "l90"]},   # judged from its 101st reading (--warm 8)
    "knn_cad": {"field": "leq"},
    "spectral_residual": {"field": "leq"},
    "fuzzy_art": {"field": "leq"},
    # The synthetic city puts 10 noise monitors on each even-numbered site: 500 groups of 10, vectorized.
    "group_t2": {"field": "leq", "group_by": "site"},
    "group_residual": {"field": "leq", "group_by": "site"},
    # The same with the model fixed after the warm-up: its eigendecomposition cached per group (--warm 8).
    "group_residual_train": {"type": "group_residual", "field": "leq", "group_by": "site", "fit": "train"},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=10_000)
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warm", type=int, default=0,
                    help="15-minute batches run before the timed ones (untimed): past the detectors' warm-ups "
                         "(spectral_residual judges from its 64th reading, fuzzy_art from its 101st)")
    ap.add_argument("--types", default=",".join(RULES), help="comma-separated detector types to run (default: all)")
    args = ap.parse_args()
    unknown = sorted(set(args.types.split(",")) - set(RULES))
    if unknown:
        ap.error(f"unknown type(s) {', '.join(unknown)}; known: {', '.join(RULES)}")
    base = synthetic_config(args.sensors)
    everything = make_batches(base, args.warm + args.batches)
    warm, batches = everything[:args.warm], everything[args.warm:]
    out = []
    for rtype, params in RULES.items():
        if rtype not in args.types.split(","):
            continue
        d = base.model_dump(by_alias=True)
        d["rules"] = [{"id": "X", "type": rtype, "kind": "noise", "flags": "any", **params}]
        cfg = Config.model_validate(d)
        best = 0.0
        for _ in range(args.repeat):
            rs = RuleSet.from_config(cfg)
            for b in warm:
                rs.process(b)
            gc.collect()
            n, t = 0, time.perf_counter()
            for b in batches:
                rs.process(b)
                n += len(b)
            best = max(best, n / (time.perf_counter() - t))
        noise = sum(1 for dv in cfg.devices if dv.kind == "noise")
        state = rs.state_bytes() / noise
        print(f"{rtype:14s} {best:12,.0f} readings/s (all sensors' rows; the rule runs on {noise} noise monitors)"
              f"  {state:8.0f} bytes of state per monitor")
        out.append(f"{rtype}={best:.0f}/{state:.0f}")
    print("RESULT bench_anomaly " + " ".join(out))


if __name__ == "__main__":
    main()
