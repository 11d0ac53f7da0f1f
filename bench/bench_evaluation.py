"""Evaluation: every detector's alert onsets (`citywatch detect --flags onset`) scored event-wise against
labelled feeds: precision, recall, F1, false alarms per sensor-day and median detection delay.

    .venv/bin/python bench/bench_evaluation.py [--feeds sim,ucr] [--quick] [--workdir var/eval] [--json FILE]
    .venv/bin/python bench/bench_evaluation.py --write-sim var/eval    # only write the simulator feed and labels

Feeds (README "Evaluation" says more):
  sim  examples/eval/sim_eval.yaml: the demo day's reading-level faults on 18 devices after one fault-free
       day (the training rows), built by the simulator (same seed, same rows).
  ucr  UCR anomaly archive (KDD Cup 2021) series 135, InternalBleeding16: a heart-rate sensor, one labelled
       anomaly; shipped in the `aeon` wheel (BSD-3-Clause), fetched with `pip download --no-deps aeon==1.6.0`
       into WORKDIR at run time (never committed). Its first 1,200 rows are the archive's anomaly-free
       training part. The archive gives no clock: rows are placed one minute apart.

Honest settings: the detectors run with their shipped defaults and learn online; the one required
parameter (rate_of_change `limit`) is the largest rate seen in the training rows. Labels are only read
to score. Each detector (and each shipped rule) runs alone, as its own config, through the `citywatch
detect` command (a subprocess), two at a time (--jobs). The UCR feed is skipped, with a line on standard
error, when the registry cannot be reached.

Ends with `RESULT bench_evaluation ...`: per feed and detector, F1 and false alarms per sensor-day.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from citywatch.evaluation import (  # noqa: E402
    EventScore,
    LabelWindow,
    Span,
    format_table,
    onsets_by_series,
    score_onsets,
    windows_from_rows,
)
from core.timefmt import iso_utc  # noqa: E402

SIM_SCENARIO = ROOT / "examples" / "eval" / "sim_eval.yaml"
AEON = "aeon==1.6.0"
UCR_MEMBER = "aeon/datasets/data/KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TEST.csv"
UCR_TRAIN_ROWS = 1200  # the archive's training part (its TRAIN file): anomaly-free by construction
UCR_DEVICE, UCR_SITE = "UCR135", "EVAL-UCR"
UCR_T0_NS = 1_735_689_600 * 1_000_000_000  # 2025-01-01T00:00Z; one row per minute
MIN_NS = 60 * 1_000_000_000
FEED_COLUMNS = ["ts", "device_id", "flag", "leq", "lmax", "lmin", "l10", "l50", "l90", "p", "batt_v"]

# The generic detectors, each on the main field of every device kind (`value` is the UCR series): row
# name -> (type, keys besides field/fields and rate_of_change's limit). Shipped defaults throughout; CUSUM
# also with its other documented `after_alarm` mode, since `hold` may never clear on a drifting signal.
GENERIC: dict[str, tuple[str, dict]] = {
    "robust_z": ("robust_z", {}),
    "ewma": ("ewma", {}),
    "cusum": ("cusum", {}),
    "cusum (after_alarm: reset)": ("cusum", {"after_alarm": "reset"}),
    "rate_of_change": ("rate_of_change", {}),  # limit: the largest rate of the training rows, per field
    "flatline": ("flatline", {}),
    "knn_cad": ("knn_cad", {}),
    "hotelling_t2": ("hotelling_t2", {}),      # fields per kind: T2_FIELDS
    "pca_residual": ("pca_residual", {}),      # fields per kind: T2_FIELDS; fitted on its first 100 readings
    "spectral_residual": ("spectral_residual", {}),
    "fuzzy_art": ("fuzzy_art", {}),
    # Over groups of related devices: a district's monitors, a district's gas sensors of one pressure class
    # (the UCR feed is one series: no group to judge).
    "group_t2": ("group_t2", {}),
    "group_residual": ("group_residual", {}),  # group_t2's groups and buckets, the PCA residual instead of T^2
}
# No site of the feed has two monitors, and no district two gas sensors of one pressure class (each
# `district_class` group would be one sensor, never judged): a district's devices make the groups. Gas
# sensors report every 15 min or hour: 15-minute buckets (rules.yaml's example), not the default 60 s.
GROUP_BY = {"noise": "district", "gas": "district", "ucr": "all"}
GROUP_EXTRA: dict[str, dict] = {"gas": {"bucket_s": 900}}
FIELDS = {"noise": "leq", "gas": "p", "ucr": "value"}
T2_FIELDS = {"noise": ["leq", "lmax", "l90"], "gas": ["p", "batt_v"], "ucr": ["value", "d1"]}


@dataclass
class Feed:
    """A labelled feed in the `citywatch detect` shape, and what scoring needs."""

    name: str
    path: Path
    series: list[str]                   # device id per row
    ts_ns: np.ndarray                   # time per row
    windows: list[LabelWindow]
    spans: list[Span]
    rules_of: dict[str, tuple[str, ...]] = field(default_factory=dict)  # window id -> rules expected to fire
    train_rates: dict[str, float] = field(default_factory=dict)         # field -> largest |rate| per minute


# ----- feeds ------------------------------------------------------------------------------------------

def build_sim(workdir: Path, cfg) -> Feed:
    """The simulator's labelled feed: examples/eval/sim_eval.yaml, history (training) day then the day."""
    from simulators.feed import simulate_device
    from simulators.scenario import load_scenario

    sc = load_scenario(SIM_SCENARIO, cfg)
    hist = sc.history()
    rows: list[tuple] = []
    order = {d: i for i, d in enumerate(sc.devices)}
    rates: dict[str, list[float]] = {"leq": [], "p": []}
    for dev_id in sc.devices:
        dev = cfg.device(dev_id)
        for part in (hist, sc):
            s = simulate_device(dev, part)
            ts = s.ts_ms.astype(np.int64) * 1_000_000
            cols = [s.values.get(c, np.full(len(s), np.nan)) for c in FEED_COLUMNS[3:]]
            flags = s.flags if s.flags is not None else np.full(len(s), "", object)
            for r in range(len(s)):
                rows.append((int(ts[r]), order[dev_id], dev_id, str(flags[r]), *[float(c[r]) for c in cols]))
            if part is hist:
                f = "leq" if dev.kind == "noise" else "p"
                rates[f].append(_max_rate(ts, s.values[f]))
    rows.sort(key=lambda r: (r[0], r[1]))
    path = workdir / "sim_eval.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(FEED_COLUMNS)
        for r in rows:
            w.writerow([_iso(r[0]), r[2], r[3], *["" if v != v else f"{v:.4g}" for v in r[4:]]])
    windows, rules_of = [], {}
    for f in sc.faults:
        kind = "anomaly" if f.rules else "ignore"  # a fault no rule should alert on (a permitted pour)
        windows.append(LabelWindow(f.device, f.start_ms * 1_000_000, f.end_ms * 1_000_000 - 1, kind, f.id))
        rules_of[f.id] = tuple(f.rules)
    spans = [Span(d, sc.start_ms * 1_000_000, sc.end_ms * 1_000_000 - 1) for d in sc.devices]
    with open(workdir / "sim_eval-labels.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["id", "device_id", "start", "end", "kind", "type", "rules", "note"])
        for f in sc.faults:
            w.writerow([f.id, f.device, _iso(f.start_ms * 1_000_000), _iso(f.end_ms * 1_000_000),
                        "anomaly" if f.rules else "ignore", f.type.code, " ".join(f.rules), f.note])
    return Feed("sim", path, [r[2] for r in rows], np.array([r[0] for r in rows], np.int64), windows, spans,
                rules_of, {k: max(v) for k, v in rates.items() if v})


class FetchError(RuntimeError):
    """A public data set could not be fetched from the package registry (the bench goes on without it)."""


def fetch_ucr(workdir: Path) -> Path:
    """The UCR 135 CSV from the aeon wheel, downloaded once into WORKDIR/pkg by pip (the registry).
    Raises FetchError when pip cannot get it."""
    import zipfile

    pkg = workdir / "pkg"
    target = pkg / UCR_MEMBER
    if target.exists():
        return target
    pkg.mkdir(parents=True, exist_ok=True)
    wheels = sorted(pkg.glob("aeon-1.6.0-*.whl"))
    if not wheels:
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(pkg), AEON],
                           capture_output=True, text=True)
        wheels = sorted(pkg.glob("aeon-1.6.0-*.whl"))
        if r.returncode != 0 or not wheels:
            raise FetchError(f"cannot fetch {AEON} from the package registry: {(r.stderr or r.stdout).strip()[-400:]}")
    with zipfile.ZipFile(wheels[0]) as z:
        z.extract(UCR_MEMBER, pkg)
    return target


def build_ucr(workdir: Path) -> Feed:
    src = fetch_ucr(workdir)
    with open(src, encoding="utf-8") as fh:
        data = list(csv.DictReader(fh))
    value = np.array([float(r["value"]) for r in data])
    label = np.array([int(r["is_anomaly"]) for r in data])
    ts = UCR_T0_NS + np.arange(len(value), dtype=np.int64) * MIN_NS
    d1 = np.r_[np.nan, np.diff(value)]  # the second field of hotelling_t2 on a single series
    path = workdir / "ucr135.csv"
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["ts", "device_id", "value", "d1"])
        for t, v, d in zip(ts.tolist(), value.tolist(), d1.tolist()):
            w.writerow([_iso(t), UCR_DEVICE, f"{v:.6g}", "" if d != d else f"{d:.6g}"])
    if label[:UCR_TRAIN_ROWS].any():
        raise SystemExit("bench_evaluation: the UCR training rows hold a labelled anomaly; not an honest split")
    windows = windows_from_rows(UCR_DEVICE, ts, label, prefix="ucr:")
    spans = [Span(UCR_DEVICE, int(ts[UCR_TRAIN_ROWS]), int(ts[-1]))]
    rate = _max_rate(ts[:UCR_TRAIN_ROWS], value[:UCR_TRAIN_ROWS])
    return Feed("ucr", path, [UCR_DEVICE] * len(ts), ts, windows, spans, {}, {"value": rate})


def _max_rate(ts_ns: np.ndarray, v: np.ndarray) -> float:
    """The largest |change| per minute between consecutive finite readings."""
    ok = np.isfinite(v)
    t, x = ts_ns[ok], v[ok]
    if len(x) < 2:
        return float("nan")
    return float(np.max(np.abs(np.diff(x)) / (np.diff(t) / MIN_NS)))


def _iso(ts_ns: int) -> str:
    return iso_utc(ts_ns, 0)


# ----- configs ----------------------------------------------------------------------------------------

def make_config(workdir: Path, name: str, rules: list[dict] | None) -> Path:
    """A copy of the shipped config with the UCR device added to the inventory and, unless `rules` is
    None, only these rules (the inhibit list, which names shipped rules, emptied)."""
    out = workdir / "configs" / name
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(ROOT / "config", out, ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    # Rewritten through YAML rather than edited as text: the temporary copies need no comments, and a
    # change of layout in the shipped files cannot break the edit.
    inv = out / "inventory.yaml"
    doc = yaml.safe_load(inv.read_text(encoding="utf-8"))
    doc["sites"].append({"id": UCR_SITE, "name": "Evaluation: UCR 135", "district": "Siming", "lat": 24.5,
                         "lon": 118.1})
    doc["devices"].append({"id": UCR_DEVICE, "kind": "noise", "site": UCR_SITE, "report_interval_s": 60})
    inv.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    if rules is not None:
        (out / "rules.yaml").write_text(yaml.safe_dump({"rules": rules}, sort_keys=False), encoding="utf-8")
        alerts = out / "alerts.yaml"
        doc = yaml.safe_load(alerts.read_text(encoding="utf-8"))
        doc["alerting"]["inhibit"] = []
        alerts.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return out


def generic_rules(rtype: str, extra: dict, feed: Feed) -> list[dict]:
    """The rules of one generic detector for a feed: one per device kind it holds."""
    kinds = ["ucr"] if feed.name == "ucr" else ["noise", "gas"]
    out = []
    for k in kinds:
        kind = "gas" if k == "gas" else "noise"
        rule: dict = {"id": f"{rtype}-{k}", "type": rtype, "kind": kind, **extra}
        if rtype in ("hotelling_t2", "pca_residual"):
            rule["fields"] = T2_FIELDS[k]
        elif rtype in ("group_t2", "group_residual"):
            rule["field"], rule["group_by"] = FIELDS[k], GROUP_BY[k]
            rule.update(GROUP_EXTRA.get(k, {}))
        else:
            rule["field"] = FIELDS[k]
        if rtype == "rate_of_change":
            rule["limit"] = _round_up(feed.train_rates[FIELDS[k]])
        out.append(rule)
    return out


def _round_up(x: float) -> float:
    """x rounded up to 3 significant digits (a limit at or just above the largest training rate)."""
    if not np.isfinite(x) or x <= 0:
        return 1e-6
    e = 10 ** (np.floor(np.log10(x)) - 2)
    return float(f"{np.ceil(x / e - 1e-9) * e:.3g}")


# ----- runs -------------------------------------------------------------------------------------------

def detect_onsets(feed: Feed, config: Path) -> dict[str, np.ndarray]:
    """Onsets per device from `citywatch detect FEED --config CONFIG --flags onset`."""
    cmd = [sys.executable, "-m", "citywatch", "detect", str(feed.path), "--config", str(config), "--flags", "onset",
           "--no-progress"]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"bench_evaluation: {' '.join(cmd[2:])} exited {r.returncode}:\n{r.stderr.strip()[-2000:]}")
    flags = np.array([int(x) for x in r.stdout.split()], np.int8)
    if len(flags) != len(feed.ts_ns):
        raise SystemExit(f"bench_evaluation: {len(flags)} flags for {len(feed.ts_ns)} rows of {feed.path}")
    return onsets_by_series(feed.series, feed.ts_ns, flags)


def rule_windows(feed: Feed, rule: str) -> list[LabelWindow]:
    """The windows as one shipped rule is judged: faults expecting it are its anomalies; every other
    labelled fault (another rule's job) is a window its onsets may fall in without being false alarms."""
    return [LabelWindow(w.series, w.start_ns, w.end_ns, "anomaly" if rule in feed.rules_of.get(w.id, ()) else "ignore",
                        w.id) for w in feed.windows]


def shipped_rules() -> list[dict]:
    """The enabled rules of config/rules.yaml, each as its YAML mapping."""
    doc = yaml.safe_load((ROOT / "config" / "rules.yaml").read_text(encoding="utf-8"))
    return [r for r in doc["rules"] if r.get("enabled", True)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--feeds", default="sim,ucr", help="comma-separated: sim, ucr (default both)")
    ap.add_argument("--quick", action="store_true", help="generic detectors only, and of the shipped rules only "
                    "the whole set (a smoke run for tests)")
    ap.add_argument("--workdir", default=str(ROOT / "var" / "eval"), help="where feeds, configs and the aeon "
                    "wheel go (default var/eval)")
    ap.add_argument("--late-s", type=float, default=0.0, help="seconds after a window's end in which an onset "
                    "still detects it (default 0)")
    ap.add_argument("--jobs", type=int, default=2, help="detect runs at a time (default 2)")
    ap.add_argument("--json", metavar="FILE", help="also write every score as JSON")
    ap.add_argument("--write-sim", metavar="DIR", help="only write the simulator feed and its labels to DIR")
    args = ap.parse_args()
    from config import load_config

    cfg = load_config(None)
    if args.write_sim:
        d = Path(args.write_sim)
        d.mkdir(parents=True, exist_ok=True)
        feed = build_sim(d, cfg)
        print(f"wrote {feed.path} ({len(feed.ts_ns)} rows) and {d / 'sim_eval-labels.csv'} ({len(feed.windows)} windows)")
        return
    names = [f.strip() for f in args.feeds.split(",") if f.strip()]
    unknown = sorted(set(names) - {"sim", "ucr"})
    if unknown or not names:
        raise SystemExit(f"bench_evaluation: --feeds: unknown feed(s) {', '.join(unknown) or '(none)'}; choose sim, ucr")
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    feeds = []
    for n in names:
        try:
            feeds.append(build_sim(workdir, cfg) if n == "sim" else build_ucr(workdir))
        except FetchError as exc:
            print(f"bench_evaluation: skipping the {n} feed: {exc}", file=sys.stderr)
    if not feeds:
        raise SystemExit("bench_evaluation: no feed to score")
    # (feed, row name, config, windows): one `citywatch detect` run each, two at a time.
    jobs: list[tuple[Feed, str, Path, list[LabelWindow]]] = []
    for feed in feeds:
        for name, (rtype, extra) in GENERIC.items():
            conf = make_config(workdir, f"{feed.name}-{_slug(name)}", generic_rules(rtype, extra, feed))
            jobs.append((feed, name, conf, feed.windows))
        if feed.name != "sim":
            continue  # the domain rules judge noise and gas readings: only the simulator's feed has them
        jobs.append((feed, "shipped rules (all)", make_config(workdir, "shipped", None), feed.windows))
        if not args.quick:
            for rule in shipped_rules():
                jobs.append((feed, rule["id"], make_config(workdir, f"rule-{rule['id']}", [rule]),
                             rule_windows(feed, rule["id"])))
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        onsets = list(pool.map(lambda j: detect_onsets(j[0], j[2]), jobs))
    rows: list[tuple[str, str, EventScore]] = [
        (feed.name, name, score_onsets(o, windows, feed.spans, args.late_s))
        for (feed, name, _, windows), o in zip(jobs, onsets)]
    elapsed = time.perf_counter() - t0
    print(format_table(rows))
    for feed in feeds:
        print(f"{feed.name}: {len(feed.ts_ns):,} rows, {len(feed.spans)} series, "
              f"{sum(s.days for s in feed.spans):.1f} sensor-days scored, "
              f"{sum(1 for w in feed.windows if w.kind == 'anomaly')} anomaly windows "
              f"({sum(1 for w in feed.windows if w.kind == 'ignore')} ignore); "
              + ", ".join(f"rate_of_change limit {k} {_round_up(v):g}/min" for k, v in feed.train_rates.items()))
    print(f"{len(rows)} detector runs in {elapsed:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps([{"feed": f, "detector": n, **s.summary()} for f, n, s in rows],
                                              indent=1), encoding="utf-8")
    parts = [f"{f}/{_slug(n)}={_fmt(s.f1)}/{_fmt(s.false_per_sensor_day)}"
             for f, n, s in rows]
    print("RESULT bench_evaluation type=f1/false_per_sensor_day " + " ".join(parts))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name).strip("_")


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
