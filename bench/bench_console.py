"""Benchmark: the operations console (issue 11) in Debian's chromium (Playwright, executable_path) against a
real Mosquitto, InfluxDB, `citywatch console` and, for the latency part, `citywatch run`.

(a) board: an inventory of --devices devices (the shipped one plus generated sites and devices, in a temporary
    config dir) and --alerts active alerts, published as the service publishes them (retained JSON states on
    `city/xm/alerts/active/<alert_id>`, as the service's broker account, in the engine's payload shape);
    time from navigation start to the first render of every row (a MutationObserver in the page) and to the
    frame after it (requestAnimationFrame). Median of --repeats page loads.
(b) chart: 1,440 one-minute noise readings of one device over 24 hours written to InfluxDB; on the device
    page, time from the click on "24 h" (the request) to the chart drawn (the frame after ECharts' setOption
    of the 24-hour series), with the fetch's share from the Resource Timing entry. Median of --repeats.
(c) latency: the service (`citywatch run`, shipped rules and inventory) ingests --rate readings/s (10-sample
    JSON messages over the shipped JSON devices) while probe gas devices (twelve, taking turns) go over and back under
    their G-highhigh limit, --probe-hz readings in all; each firing is a new red row. Latency = the row's first frame in the page
    (MutationObserver + requestAnimationFrame, wall clock) minus the wall time the probe reading was
    published; the firing notice's ts_ns (the probe reading's time) maps a row to its publish. The board shows
    the --alerts states of (a) meanwhile.

Run:  .venv/bin/python bench/bench_console.py [--quick] [--devices 10000] [--alerts 500] [--repeats 5]
      [--rate 5000] [--duration 40] [--probe-hz 4] [--keep]
      (--quick: 2 repeats and 10 s of load, about a minute in all; the default run takes about 2 minutes)
Ends with: RESULT bench_console devices=.. alerts=.. render_ms=.. render_dom_ms=.. chart_ms=.. chart_fetch_ms=..
           rate=.. achieved_readings_s=.. probes=.. rows=.. p50_ms=.. p99_ms=.. max_ms=.. targets_met=..
Measures; changes nothing in the service or the console.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import paho.mqtt.client as mqtt
import yaml
from paho.mqtt.enums import CallbackAPIVersion

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alerts.model import alert_id_for, iso  # noqa: E402
from citywatch.localstack import Credentials, InfluxProcess, MosquittoProcess, free_port  # noqa: E402
from config import load_config  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]
VENDOR = ROOT / "var" / "console-vendor"
SCREENSHOTS = ROOT / "var" / "screenshots"
ALERTS_YAML = """
alerting:
  sinks:
    ops_mqtt: {type: mqtt, topic_prefix: city/xm/alerts, qos: 1, rate_per_s: 1000}
  route: {receivers: [ops_mqtt], group_by: [site_id, rule_id], group_wait_s: 0, group_interval_s: 0}
  flap_max_transitions: 1000000
  store_path: STORE
"""
CONSOLE_YAML = """
console:
  host: 127.0.0.1
  port: PORT
  users_path: USERS
  language: zh-CN
  stale_after_s: 120
  vendor_dir: VENDOR
"""
PASSWORD = "bench-duty-officer-pw"
SAMPLES_PER_MESSAGE = 10
CHART_DEVICE = "XM0001NOISE"
PROBE_DEVICES = 12      # gas devices taking turns as probes in (c)
TARGETS = {"render_ms": 1000.0, "chart_ms": 300.0, "p99_ms": 1000.0}
WAIT_MS = 60_000

# In the page before its own scripts: when #rows first holds `want` rows, note the time (ms since navigation
# start) and that of the next frame.
BOARD_PROBE = """
(() => {
  const want = %d;
  const b = window.__cwBench = {dom: null, frame: null};
  const obs = new MutationObserver(() => {
    const rows = document.getElementById("rows");
    if (b.dom === null && rows && rows.children.length >= want) {
      b.dom = performance.now();
      obs.disconnect();
      requestAnimationFrame(() => { b.frame = performance.now(); });
    }
  });
  obs.observe(document, {childList: true, subtree: true});
})();
"""
# In the page: every alert row's first appearance, in wall-clock ms (DOM and the frame after it).
ROW_WATCH = """
(() => {
  const seen = window.__cwRows = {};
  const busy = window.__cwLong = {n: 0, ms: 0, since: performance.now()};
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) { busy.n++; busy.ms += e.duration; }
  }).observe({type: "longtask"});
  const note = (tr) => {
    const id = tr.dataset && tr.dataset.alertId;
    if (!id || seen[id]) return;
    const rec = seen[id] = {dom: performance.timeOrigin + performance.now(), frame: null};
    requestAnimationFrame(() => { rec.frame = performance.timeOrigin + performance.now(); });
  };
  new MutationObserver((muts) => {
    for (const m of muts) for (const n of m.addedNodes) if (n.nodeType === 1 && n.tagName === "TR") note(n);
  }).observe(document.getElementById("rows"), {childList: true});
  for (const tr of document.querySelectorAll("#rows tr")) note(tr);
})();
"""
# Animation frames drawn in 2 s, per second.
FPS_PROBE = """
() => new Promise((resolve) => {
  let n = 0;
  const t0 = performance.now();
  const step = () => { n++; if (performance.now() - t0 < 2000) requestAnimationFrame(step);
    else resolve(n * 1000 / (performance.now() - t0)); };
  requestAnimationFrame(step);
})
"""
# In the device page: click a range button now; resolve with the times of the chart's redraw for it.
CHART_CLICK = """
(hours) => new Promise((resolve) => {
  const chart = document.getElementById("chart");
  const t0 = performance.now();
  const obs = new MutationObserver(() => {
    if (chart.dataset.hours === String(hours) && chart.dataset.stamp !== String(t0)) {
      chart.dataset.stamp = String(t0);
      obs.disconnect();
      const tSet = performance.now();
      requestAnimationFrame(() => {
        const tFrame = performance.now();
        const e = performance.getEntriesByType("resource").filter((r) => r.name.includes("hours=" + hours)
          && r.startTime >= t0 - 1).pop();
        resolve({t0, tSet, tFrame, fetchStart: e ? e.startTime : null, fetchEnd: e ? e.responseEnd : null,
          points: Number(chart.dataset.points)});
      });
    }
  });
  obs.observe(chart, {attributes: true});
  document.querySelector(`#ranges button[data-hours="${hours}"]`).click();
})
"""


def generated_inventory(src: Path, n_devices: int) -> dict:
    """The shipped inventory plus generated sites (ten devices each, half noise, half gas) up to n_devices."""
    inv = yaml.safe_load(src.read_text())
    rng = random.Random(11)
    districts = ["Siming", "Huli", "Jimei", "Haicang", "Tongan", "Xiangan"]
    i = 0
    while len(inv["devices"]) < n_devices:
        site = f"BX-{i // 10:04d}"
        if i % 10 == 0:
            d = districts[(i // 10) % len(districts)]
            inv["sites"].append({"id": site, "name": f"{d} bench site {i // 10}", "address": f"{i // 10} Bench Rd, {d}",
                                 "district": d, "lat": round(24.45 + rng.random() * 0.2, 5),
                                 "lon": round(118.0 + rng.random() * 0.25, 5)})
        if i % 2 == 0:
            inv["devices"].append({"id": f"BXN{i:05d}", "kind": "noise", "site": site, "report_interval_s": 60,
                                   "protocol": "json"})
        else:
            inv["devices"].append({"id": f"BXG{i:05d}", "kind": "gas", "site": site, "report_interval_s": 3600,
                                   "sample_interval_s": 300, "pressure_class": "low", "set_pressure_kpa": 2.5,
                                   "mop_kpa": 3.5, "full_scale_kpa": 10.0})
        i += 1
    return inv


def active_states(cfg, n: int, now_ns: int) -> list[dict]:
    """n alert states in the engine's payload shape (alerts/engine.py `_payload`), on devices spread over the
    whole inventory: severities mixed, one in five acknowledged, started over the last six hours."""
    rng = random.Random(500)
    sites = {s.id: s for s in cfg.sites}
    devices = rng.sample(list(cfg.devices), n)
    out = []
    for k, dev in enumerate(devices):
        site = sites[dev.site]
        sev = rng.choices(["red", "orange", "yellow", "blue"], [1, 2, 4, 3])[0]
        code = {"red": 4, "orange": 3, "yellow": 2, "blue": 1}[sev]
        rule = ("N-day" if dev.kind == "noise" else "G-high") if sev != "red" else (
            "N-prohibited" if dev.kind == "noise" else "G-highhigh")
        started = now_ns - rng.randrange(60, 6 * 3600) * 1_000_000_000
        aid = alert_id_for(rule, dev.id, started)
        unit = "dB(A)" if dev.kind == "noise" else "kPa"
        value, limit = (72.4, 65.0) if dev.kind == "noise" else (3.9, 3.5)
        acked = k % 5 == 0
        out.append({
            "idempotency_key": f"{aid}:1", "alert_id": aid, "seq": 1, "transition": "firing", "ts": iso(started),
            "ts_ns": started, "state": "firing", "rule_id": rule, "rule_version": None,
            "dedupe_key": f"{site.id}/{dev.id}/{rule}", "category": "noise" if dev.kind == "noise" else "gas",
            "severity": sev, "severity_code": code, "peak_severity": sev, "peak_severity_code": code,
            "site": {"id": site.id, "name": site.name, "address": site.address, "district": site.district},
            "device": {"id": dev.id, "kind": dev.kind}, "metric": "leq" if dev.kind == "noise" else "p",
            "window": "5min" if dev.kind == "noise" else None, "unit": unit, "value": value, "limit": limit,
            "peak_value": value, "start_ts": iso(started), "firing_ts": iso(started), "resolved_ts": None,
            "duration_s": round((now_ns - started) / 1e9, 3), "flapping": False,
            "ack": {"by": "console:duty", "name": "Duty officer", "at": iso(now_ns), "note": "crew sent"}
            if acked else None,
            "escalation_level": 0, "escalation_name": None, "context": {"window_s": 300}, "receivers": ["ops_mqtt"],
            "group": {"site_id": site.id, "rule_id": rule},
        })
    return out


def mqtt_client(cid: str, user: str, pw: str, port: int, on_message=None) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=cid, protocol=mqtt.MQTTv5)
    c.username_pw_set(user, pw)
    c.max_inflight_messages_set(1000)
    c.max_queued_messages_set(0)
    if on_message:
        c.on_message = on_message
    c.connect("127.0.0.1", port)
    c.loop_start()
    return c


def reading_payload(dev, ts_ms: list[int], value: float) -> bytes:
    if dev.kind == "noise":
        samples = [{"ts": t, "values": {"leq": value, "lmax": value + 8, "lmin": value - 5, "flag": "N"}} for t in ts_ms]
        doc = {"schema": "xm.noise.v1", "device_id": dev.id, "site_id": dev.site, "interval_s": 1, "samples": samples}
    else:
        samples = [{"ts": t, "values": {"p": value, "batt_v": 3.5}} for t in ts_ms]
        doc = {"schema": "xm.gas.v1", "device_id": dev.id, "site_id": dev.site, "samples": samples}
    return json.dumps(doc, separators=(",", ":")).encode()


class Proc:
    """A `citywatch ...` subprocess in its own session, its output in a log file, stopped by pid."""

    def __init__(self, args: list[str], env: dict, log_path: Path):
        self.log_path = log_path
        cwd = log_path.parent / (log_path.stem + "-cwd")
        cwd.mkdir(exist_ok=True)
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "citywatch", *args], env=env, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(cwd),
                                         start_new_session=True)

    def wait_for(self, ready, what: str, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if ready():
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"{what} did not start:\n{self.log_path.read_text(errors='replace')[-3000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def wait_js(page, expr: str, timeout_s: float = WAIT_MS / 1000) -> None:
    """Poll `expr` in the page until it is true (the console's CSP forbids wait_for_function's eval)."""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expr):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {expr}")
        time.sleep(0.02)


class EventStream:
    """The console's /events read by a plain HTTP client in a thread: when each alert's first event came (wall s)."""

    def __init__(self, url: str, cookie: str):
        self.first: dict[str, float] = {}
        self.resp = urllib.request.urlopen(urllib.request.Request(url, headers={"Cookie": cookie}), timeout=60)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        event = None
        try:
            for raw in self.resp:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "alert":
                    self.first.setdefault(json.loads(line[6:]).get("alert_id"), time.time())
        except Exception:  # noqa: BLE001 - the response is closed under the reader at the end of the run
            pass

    def close(self) -> None:
        try:
            self.resp.close()
        except OSError:
            pass


def proc_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process `pid` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="2 repeats and 10 s of load (about a minute)")
    ap.add_argument("--devices", type=int, default=10_000, help="devices in the generated inventory")
    ap.add_argument("--alerts", type=int, default=500, help="active alerts on the board")
    ap.add_argument("--repeats", type=int, default=5, help="page loads (a) and chart draws (b) measured")
    ap.add_argument("--rate", type=float, default=5000, help="background readings per second during (c)")
    ap.add_argument("--duration", type=float, default=40, help="seconds of probing during (c)")
    ap.add_argument("--probe-hz", type=float, default=4,
                    help="probe readings per second (every other one fires a new red alert)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, configs)")
    args = ap.parse_args()
    if args.quick:
        args.repeats, args.duration = min(args.repeats, 2), min(args.duration, 10)
    for name, v in (("--devices", args.devices), ("--alerts", args.alerts), ("--repeats", args.repeats)):
        if v < 1:
            ap.error(f"{name} must be at least 1, got {v}")
    if args.alerts > args.devices:
        ap.error(f"--alerts ({args.alerts}) must not exceed --devices ({args.devices})")
    if not Path(CHROMIUM).exists():
        ap.error(f"{CHROMIUM} is missing: apt-get install chromium (scripts/bootstrap.sh does)")
    if not (VENDOR / "node_modules" / "echarts" / "dist" / "echarts.min.js").is_file():
        ap.error(f"ECharts is not installed in {VENDOR}: run scripts/bootstrap.sh")

    work = Path(tempfile.mkdtemp(prefix="bench-console-"))
    cfg0 = load_config(ROOT / "config", env={})
    creds = Credentials.generate(cfg0.device_ids)
    mosq = MosquittoProcess(work / "mosquitto", free_port(), creds)
    influx = InfluxProcess(work / "influx", free_port(), free_port())
    procs: list[Proc] = []
    clients: list[mqtt.Client] = []
    try:
        mosq.start()
        influx.start()
        # The service's config: the shipped one with one MQTT sink and no group timers (the latency is the
        # pipeline's and the console's, not a routing policy's).
        svc_dir = work / "config"
        shutil.copytree(ROOT / "config", svc_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
        (svc_dir / "alerts.yaml").write_text(ALERTS_YAML.replace("STORE", str(work / "alerts.sqlite")))
        ingest = (svc_dir / "ingest.yaml").read_text()
        (svc_dir / "ingest.yaml").write_text(ingest.replace("    port: 9464", "    port: 0", 1))
        # The console's config: the same plus the generated inventory.
        con_dir = work / "config-console"
        shutil.copytree(svc_dir, con_dir)
        inv = generated_inventory(ROOT / "config" / "inventory.yaml", args.devices)
        (con_dir / "inventory.yaml").write_text(yaml.safe_dump(inv, sort_keys=False, allow_unicode=True))
        port = free_port()
        (con_dir / "console.yaml").write_text(CONSOLE_YAML.replace("PORT", str(port)).replace(
            "USERS", str(work / "console_users.sqlite")).replace("VENDOR", str(VENDOR)))
        user, pw = creds.collector
        env = {**os.environ, "CITYWATCH_MQTT_HOST": "127.0.0.1", "CITYWATCH_MQTT_PORT": str(mosq.port),
               "CITYWATCH_MQTT_USERNAME": user, "CITYWATCH_MQTT_PASSWORD": pw,
               "CITYWATCH_CONSOLE_MQTT_PASSWORD": creds.console[1], **influx.env()}
        t = time.monotonic()
        con_cfg = load_config(con_dir, env)
        print(f"console inventory: {len(con_cfg.sites)} sites, {len(con_cfg.devices)} devices "
              f"(config loaded in {time.monotonic() - t:.1f} s)")
        r = subprocess.run([sys.executable, "-m", "citywatch", "users", "--config", str(con_dir), "add", "duty",
                            "--role", "operator", "--name", "Bench duty officer", "--password-stdin"],
                           env=env, input=PASSWORD + "\n", capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"citywatch users add failed: {r.stderr}")

        # The active alerts, retained as the service's account publishes them.
        states = active_states(con_cfg, args.alerts, time.time_ns())
        pub = mqtt_client("bench-states", user, pw, mosq.port)
        clients.append(pub)
        infos = [pub.publish(f"city/xm/alerts/active/{s['alert_id']}",
                             json.dumps(s, sort_keys=True, separators=(",", ":")).encode(), qos=1, retain=True)
                 for s in states]
        for info in infos:
            info.wait_for_publish(30)

        # 24 hours of one-minute readings of one noise device, ending now.
        dev = con_cfg.device(CHART_DEVICE)
        district = next(s.district for s in con_cfg.sites if s.id == dev.site)
        now_min = time.time_ns() // 60_000_000_000 * 60_000_000_000
        lines = []
        for k in range(1440):
            ts = now_min - (1439 - k) * 60_000_000_000
            leq = 55 + 8 * np.sin(k / 120) + random.Random(k).random() * 3
            lines.append(f"noise,device_id={dev.id},district={district},site_id={dev.site} leq={leq:.1f},"
                         f"lmax={leq + 9:.1f},lmin={leq - 6:.1f},l90={leq - 4:.1f},flag=\"N\" {ts}")
        influx.write("\n".join(lines))

        console = Proc(["console", "--config", str(con_dir)], env, work / "console.log")
        procs.append(console)
        url = f"http://127.0.0.1:{port}"
        console.wait_for(lambda: http_ok(url + "/login"), "citywatch console", 120)

        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            ctx = browser.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
            ctx.set_default_timeout(WAIT_MS)
            page = ctx.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(url + "/login")
            page.fill("#username", "duty")
            page.fill("#password", PASSWORD)
            page.click("#login-submit")
            page.wait_for_selector("#alerts")
            # The console has heard every retained state before the board is timed.
            deadline = time.monotonic() + 60
            while len(ctx.request.get(url + "/api/alerts").json()["alerts"]) < args.alerts:
                if time.monotonic() > deadline:
                    raise RuntimeError("the console did not hear every active alert within 60 s")
                time.sleep(0.2)

            # (a) the board
            page.add_init_script(BOARD_PROBE % args.alerts)
            render, render_dom = [], []
            for _ in range(args.repeats + 1):       # the first load warms the console and the browser's cache
                page.goto(url + "/")
                wait_js(page, "window.__cwBench && window.__cwBench.frame !== null")
                b = page.evaluate("window.__cwBench")
                render_dom.append(b["dom"])
                render.append(b["frame"])
            print(f"(a) board, {args.alerts} alerts over {len(con_cfg.devices)} devices: navigation -> all rows "
                  f"in the DOM {[round(x) for x in render_dom]} ms, -> drawn {[round(x) for x in render]} ms "
                  "(first load warms up, not counted)")
            render_ms, render_dom_ms = median(render[1:]), median(render_dom[1:])
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOTS / "board-500-alerts-1920x1080.png"))
            # Frames the idle board draws in 2 s (60 when painting is cheap; fewer when every frame is heavy).
            fps = page.evaluate(FPS_PROBE)
            page.emulate_media(reduced_motion="reduce")     # console.css stops the red rows' pulse then
            fps_still = page.evaluate(FPS_PROBE)
            page.emulate_media(reduced_motion="no-preference")
            print(f"    idle board: {fps:.0f} frames/s ({fps_still:.0f} with prefers-reduced-motion)")

            # (b) the chart
            dpage = ctx.new_page()
            dpage.goto(f"{url}/devices/{CHART_DEVICE}")
            dpage.wait_for_selector("#chart[data-hours]")
            chart, fetch = [], []
            for _ in range(args.repeats + 1):
                dpage.evaluate(CHART_CLICK, 3)
                m = dpage.evaluate(CHART_CLICK, 24)
                if m["points"] < 1400:
                    raise RuntimeError(f"the 24-hour chart has {m['points']} points, expected 1,440")
                chart.append(m["tFrame"] - m["t0"])
                fetch.append((m["fetchEnd"] - m["t0"]) if m["fetchEnd"] is not None else float("nan"))
            print(f"(b) 24-hour chart of {CHART_DEVICE} ({m['points']} points): click -> drawn "
                  f"{[round(x) for x in chart]} ms, of which the request {[round(x) for x in fetch]} ms "
                  "(first draw warms up, not counted)")
            chart_ms, chart_fetch_ms = median(chart[1:]), median(fetch[1:])
            dpage.close()

            # (c) publish -> board latency under load
            svc = Proc(["run", "--config", str(svc_dir)], env, work / "service.log")
            procs.append(svc)
            svc.wait_for(lambda: "connected to MQTT broker" in svc.log_path.read_text(errors="replace"),
                         "citywatch run")
            svc_cfg = load_config(svc_dir, env)
            json_devs = [d for d in svc_cfg.devices if d.protocol == "json"]
            probes = [d for d in json_devs if d.kind == "gas"][:PROBE_DEVICES]
            background = [d for d in json_devs if d not in probes]
            probe_ids = {d.id for d in probes}
            firing: dict[str, int] = {}     # alert_id -> ts_ns of its firing notice (the probe reading's time)
            heard: dict[str, float] = {}    # alert_id -> wall time a subscriber got that notice (s)

            def on_notice(c, u, msg):
                if "/active/" in msg.topic or not msg.payload:
                    return
                n = json.loads(msg.payload)
                if n.get("rule_id") == "G-highhigh" and n.get("transition") == "firing" \
                        and (n.get("device") or {}).get("id") in probe_ids:
                    firing[n["alert_id"]] = n["ts_ns"]
                    heard[n["alert_id"]] = time.time()

            tuser, tpw = creds.tester
            sub = mqtt_client("bench-console-sub", tuser, tpw, mosq.port, on_notice)
            sub.subscribe("city/xm/alerts/#", qos=1)
            bg = mqtt_client("bench-console-bg", tuser, tpw, mosq.port)
            pr = mqtt_client("bench-console-probe", tuser, tpw, mosq.port)
            clients.extend([sub, bg, pr])
            page.goto(url + "/")
            wait_js(page, "window.__cwBench && window.__cwBench.frame !== null")
            try:
                page.wait_for_selector("#banner.fresh")
            except Exception:
                print(f"the board's banner: {page.inner_text('#banner')!r}; page errors: {errors}")
                raise
            page.evaluate(ROW_WATCH)
            cookie = "; ".join(f"{c['name']}={c['value']}" for c in ctx.cookies())
            stream = EventStream(url + "/events", cookie)
            sse = stream.first

            stop = threading.Event()
            sent = {"readings": 0}
            next_ts = {d.id: int(time.time() * 1000) - 60_000 for d in background + probes}

            def ts_for(d, n: int) -> list[int]:
                start = max(next_ts[d.id], int(time.time() * 1000) - 120_000)
                next_ts[d.id] = start + n
                return list(range(start, start + n))

            def background_loop():
                period = SAMPLES_PER_MESSAGE / args.rate
                t_next = time.monotonic()
                i = 0
                while not stop.is_set():
                    d = background[i % len(background)]
                    i += 1
                    value = 50.0 if d.kind == "noise" else d.set_pressure_kpa
                    bg.publish(f"city/xm/{d.kind}/{d.site}/{d.id}/data",
                               reading_payload(d, ts_for(d, SAMPLES_PER_MESSAGE), value), qos=1)
                    sent["readings"] += SAMPLES_PER_MESSAGE
                    t_next += period
                    delay = t_next - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)

            th = threading.Thread(target=background_loop, daemon=True)
            th.start()
            time.sleep(3.0)     # the load settles before probing
            cpu0 = {name: proc_cpu_s(pp.proc.pid) for name, pp in (("service", svc), ("console", console))}
            wall0 = time.monotonic()
            published: dict[int, float] = {}   # probe reading ts_ns -> wall time of its publish (s)
            high = {d.id: False for d in probes}
            n_high, k = 0, 0
            readings0, t0 = sent["readings"], time.monotonic()
            t_end = t0 + args.duration
            while time.monotonic() < t_end:
                # The probes take turns, each over its G-highhigh limit, then back: every row stays on the
                # board for PROBE_DEVICES readings' time, so no row fires and resolves within one frame.
                probe = probes[k % len(probes)]
                k += 1
                high[probe.id] = not high[probe.id]
                # The reading's own time is its publish time: a device stamps what it measured just now.
                ts = [max(int(time.time() * 1000), next_ts[probe.id])]
                next_ts[probe.id] = ts[0] + 1
                value = probe.mop_kpa * 1.5 if high[probe.id] else probe.set_pressure_kpa
                published[ts[0] * 1_000_000] = time.time()
                pr.publish(f"city/xm/gas/{probe.site}/{probe.id}/data", reading_payload(probe, ts, value), qos=1)
                n_high += high[probe.id]
                time.sleep(1.0 / args.probe_hz)
            achieved = (sent["readings"] - readings0) / (time.monotonic() - t0)
            cpu = {name: (proc_cpu_s(pp.proc.pid) - cpu0[name]) / (time.monotonic() - wall0) * 100
                   for name, pp in (("service", svc), ("console", console))}
            time.sleep(5.0)     # the last rows arrive
            stop.set()
            th.join(5)
            rows = page.evaluate("window.__cwRows")
            busy = page.evaluate("({...window.__cwLong, span: performance.now() - window.__cwLong.since})")
            stream.close()
            lat, lat_dom, lat_mqtt, lat_sse, missing = [], [], [], [], 0
            for aid, ts_ns in firing.items():
                if ts_ns not in published:
                    continue
                rec = rows.get(aid)
                if rec is None or rec["frame"] is None:
                    missing += 1
                    continue
                lat.append(rec["frame"] - published[ts_ns] * 1000)
                lat_dom.append(rec["dom"] - published[ts_ns] * 1000)
                lat_mqtt.append((heard[aid] - published[ts_ns]) * 1000)
                if aid in sse:
                    lat_sse.append((sse[aid] - published[ts_ns]) * 1000)
            la = np.array(lat or [np.nan])
            p50, p99, mx = (float(np.percentile(la, 50)), float(np.percentile(la, 99)), float(np.max(la)))
            print(f"(c) load {args.rate:.0f} readings/s target, achieved {achieved:.0f}; probe firings published "
                  f"{n_high}, firing notices {len(firing)}, rows seen {len(lat)}, missing {missing}")
            print(f"    CPU while probing: service {cpu['service']:.0f} %, console {cpu['console']:.0f} % of one core; "
                  f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
            def pct(xs: list[float]) -> str:
                a = np.array(xs or [np.nan])
                return f"p50 {np.percentile(a, 50):.0f} ms, p99 {np.percentile(a, 99):.0f} ms"

            print(f"    the board's main thread: {busy['n']} long tasks (> 50 ms), {busy['ms'] / busy['span'] * 100:.0f} % "
                  "of the time")
            print(f"    publish -> the notice at an MQTT subscriber (the service): {pct(lat_mqtt)}")
            print(f"    publish -> the console's event at an HTTP client (+ the console): {pct(lat_sse)}")
            print(f"    publish -> the row in the board's DOM (+ board.js): {pct(lat_dom)}")
            print(f"    publish -> the row drawn (+ the browser's frame): p50 {p50:.0f} ms, p99 {p99:.0f} ms, "
                  f"max {mx:.0f} ms")
            browser.close()

        met = (render_ms < TARGETS["render_ms"] and chart_ms < TARGETS["chart_ms"] and p99 < TARGETS["p99_ms"]
               and missing == 0 and len(lat) > 0)
        print(f"targets: render < {TARGETS['render_ms']:.0f} ms, chart < {TARGETS['chart_ms']:.0f} ms, "
              f"p99 < {TARGETS['p99_ms']:.0f} ms")
        print(f"RESULT bench_console devices={len(con_cfg.devices)} alerts={args.alerts} repeats={args.repeats} "
              f"render_ms={render_ms:.0f} render_dom_ms={render_dom_ms:.0f} idle_fps={fps:.0f} chart_ms={chart_ms:.0f} "
              f"chart_fetch_ms={chart_fetch_ms:.0f} rate={args.rate:.0f} achieved_readings_s={achieved:.0f} "
              f"probes={n_high} rows={len(lat)} missing={missing} p50_ms={p50:.0f} p99_ms={p99:.0f} max_ms={mx:.0f} "
              f"board_long_task_pct={busy['ms'] / busy['span'] * 100:.0f} console_cpu_pct={cpu['console']:.0f} load_avg={os.getloadavg()[0]:.1f} targets_met={'yes' if met else 'no'}")
        return 0
    finally:
        for c in clients:
            c.disconnect()
            c.loop_stop()
        for pr_ in reversed(procs):
            pr_.stop()
        influx.kill()
        mosq.kill()
        mosq.remove_broker_dir()
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
