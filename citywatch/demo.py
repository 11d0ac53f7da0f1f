"""The demo (`make demo`): the service on the local stack, a compressed city day of simulated devices with
faults, the live alert board while it runs, and the scorecard against the scenario's ground truth. The web
console runs beside the service (citywatch/demo_console.py); its URL and a demo login are printed before the
day starts, and it stops with the demo (or, with --keep, on Ctrl-C after the scorecard).

It works in its own directory (default `var/demo`): a copy of the config whose spool, dead-letter store and
alert store live there, and its own InfluxDB database, so a demo never mixes with earlier runs. The service
runs with `ingest.clock: event` (CITYWATCH_CLOCK=event): simulated 2025 timestamps are accepted and the
time-driven rules follow the simulated clock.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

ROOT = Path(__file__).resolve().parent.parent
DEMO_DATABASE = "citywatch_demo"


def _influx(url: str, q: str, db: str | None, auth: tuple[str, str] | None) -> dict:
    """Run InfluxQL as the citywatch account `auth`; raise SystemExit with InfluxDB's answer on an HTTP error."""
    from config.connections import basic_auth

    params = {"q": q}
    if db:
        params["db"] = db
    req = urllib.request.Request(url + "/query", data=urllib.parse.urlencode(params).encode(), method="POST",
                                 headers=basic_auth(auth))
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise SystemExit(f"demo: InfluxDB answered HTTP {exc.code} to {q!r}: {exc.read().decode(errors='replace')}"
                         f"\n(run `scripts/stack.sh up` and `source .stack/env`: it creates the database "
                         f"{DEMO_DATABASE} and grants the citywatch account on it)") from None


def _count_points(url: str, db: str, auth: tuple[str, str] | None) -> int:
    total = 0
    for measurement, fld in (("noise", "leq"), ("gas_pressure", "p")):
        body = _influx(url, f'SELECT count("{fld}") FROM "{measurement}"', db, auth)
        series = body.get("results", [{}])[0].get("series")
        if series:
            total += int(series[0]["values"][0][1])
    return total


def _wait_for_log(path: Path, needle: str, proc: subprocess.Popen, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"demo: citywatch run exited with {proc.returncode}; its log:\n{path.read_text()[-3000:]}")
        if path.exists() and needle in path.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise SystemExit(f"demo: citywatch run did not start within {timeout_s:.0f} s; see {path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m citywatch.demo", description=__doc__)
    parser.add_argument("--scenario", default=str(ROOT / "simulators/scenarios/city_day.yaml"))
    parser.add_argument("--speed", type=float, default=1000.0, help="simulated seconds per second (default 1000)")
    parser.add_argument("--workdir", default=str(ROOT / "var/demo"))
    parser.add_argument("--history", default=None, metavar="D",
                        help="fault-free history before the day, e.g. 14d: written to InfluxDB as a data migration "
                             "would, then learned with `citywatch warmup` before the service starts (G-leak needs a "
                             "learned weekly profile)")
    parser.add_argument("--console-port", type=int, default=None, metavar="P",
                        help="port of the demo's web console (default: console.port, 8080; when that one is in "
                             "use, a free one is taken and printed; a port given here must be free)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the web console running after the scorecard, until Ctrl-C")
    args = parser.parse_args(argv)
    if args.console_port is not None and not 1 <= args.console_port <= 65535:
        parser.error(f"--console-port: must be 1-65535 (got {args.console_port})")

    from config import load_config
    from simulators.feed import build_feed, build_history, status_topic, write_truth
    from simulators.publisher import BrokerCredentials, FeedPublisher
    from simulators.scenario import load_scenario, parse_duration

    console = Console(highlight=False)
    work = Path(args.workdir)
    if work.exists():
        shutil.rmtree(work)
    (work).mkdir(parents=True)
    config_dir = work / "config"
    shutil.copytree(ROOT / "config", config_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))

    env = dict(os.environ)
    env["CITYWATCH_CLOCK"] = "event"
    env["CITYWATCH_INFLUX_DATABASE"] = DEMO_DATABASE
    for var in ("CITYWATCH_MQTT_PORT", "CITYWATCH_INFLUX_URL", "CITYWATCH_CREDENTIALS", "CITYWATCH_MQTT_PASSWORD",
                "CITYWATCH_INFLUX_USERNAME"):
        if var not in env:
            raise SystemExit(f"demo: {var} is not set; run `source .stack/env` after `scripts/stack.sh up`")
    from citywatch import demo_console, demo_mail

    # Red gas alarms also go to the on-call team by email, to a local SMTP receiver (citywatch/demo_mail.py).
    mail = demo_mail.start(work, config_dir)
    cfg = load_config(config_dir, env=env)
    influx_url = cfg.connections.influx.url
    influx_auth = cfg.connections.influx.credentials(env)
    # The citywatch account may not drop or create databases (scripts/stack.sh up made this one and granted
    # it): it empties the demo's database instead, which needs only its write privilege.
    _influx(influx_url, "DROP SERIES FROM /.*/", DEMO_DATABASE, influx_auth)

    scenario = load_scenario(args.scenario, cfg)
    if args.history:
        scenario = scenario.with_history(parse_duration(args.history))
    history = build_history(scenario, cfg)
    messages = build_feed(scenario, cfg)
    truth = work / "truth.jsonl"
    n_faults = write_truth(scenario, truth)
    readings = sum(m.n for m in messages) + sum(m.n for m in history)
    console.print(f"[bold]citywatch demo[/]: scenario {scenario.name}: {len(scenario.devices)} devices, "
                  f"{readings:,} readings, {n_faults} injected faults, at {args.speed:g}x")

    if history:
        _learn_history(console, cfg, config_dir, env, scenario, history, work)
        # The history is already in InfluxDB and in the detectors' snapshot: only the day is published.
        history = []

    warning = demo_console.missing_password(env, cfg)
    if warning:
        console.print(f"[yellow]demo: {warning}[/]")
    run_log = work / "run.log"
    service = web = None
    # `kill <pid>` (SIGTERM) ends the demo as Ctrl-C does: through the cleanup below. By default it would end the
    # process at once and leave the console and the service, each in a session of its own, running.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        web = demo_console.start(work, config_dir, env, ROOT, args.console_port)
        with open(run_log, "wb") as log:
            service = subprocess.Popen(
                [sys.executable, "-m", "citywatch", "run", "--config", str(config_dir)],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True,
            )
        _wait_for_log(run_log, "connected to MQTT broker", service, 60)
        console.print(f"service running (pid {service.pid}, log {run_log})")
        web.wait_ready()
        if web.note:
            console.print(f"[yellow]{web.note}[/]")
        # One unwrapped line (a narrow terminal must not break the password): the URL and the login.
        console.print(f"[bold]{web.line}[/]", soft_wrap=True)
        console.print(f"console pid {web.proc.pid}, log {web.log_path}")
        rc = _show(console, cfg, scenario, history, messages, truth, work, env, service, args.speed, readings,
                   BrokerCredentials, FeedPublisher, status_topic)
        if args.keep:
            _keep(console, web)
        return rc
    finally:
        if web is not None:
            web.stop()
        if service is not None and service.poll() is None:
            service.send_signal(signal.SIGTERM)
            try:
                service.wait(60)
            except subprocess.TimeoutExpired:
                service.kill()
        for line in mail.summary():
            console.print(line)
        _stop_mail(console, mail)


def _exit_on_signal(signum: int, frame) -> None:
    raise SystemExit(128 + signum)


def _stop_mail(console, mail, timeout_s: float = 10.0) -> None:
    """Stop the mail receiver, waiting at most `timeout_s`: aiosmtpd's stop joins its thread without a bound, and
    that thread is a daemon, so a receiver that does not stop must not keep the demo from ending."""
    stopper = threading.Thread(target=mail.stop, name="demo-mail-stop", daemon=True)
    stopper.start()
    stopper.join(timeout_s)
    if stopper.is_alive():
        console.print(f"[yellow]the mail receiver did not stop within {timeout_s:.0f} s; leaving it[/]")


def _keep(console, web) -> None:
    """After the scorecard: the console stays up (the service has stopped, so its board says so in red; the
    alert pages and device charts stay readable) until Ctrl-C or until the console itself exits."""
    from citywatch.demo_console import DEMO_USER

    try:  # a Ctrl-C may come as soon as the line is out, while print() still holds the terminal
        console.print(f"[bold]the console keeps running[/] at {web.url} (login {DEMO_USER} / the password above); "
                      "Ctrl-C stops it")
        while web.alive():
            time.sleep(0.5)
        console.print(f"[red]the console exited ({web.proc.returncode}); see {web.log_path}[/]")
    except KeyboardInterrupt:
        console.print("stopping the console")


def _learn_history(console, cfg, config_dir, env, scenario, history, work) -> None:
    """Write the fault-free history to InfluxDB (decoded and validated as the collector would), then run
    `citywatch warmup` over it, so the service starts with the detectors' state of those weeks (the learned
    gas profile) without alerting on a back-fill."""
    from alerts.model import iso
    from ingest.decoder import Decoder
    from ingest.influx_writer import make_writer
    from ingest.lineproto import encode

    decoder, writer = Decoder(cfg), make_writer(cfg.connections.influx, env)
    chunk, points = [], 0
    try:
        for i, m in enumerate(history):
            d = decoder.decode(m.topic, m.payload, m.t_ms * 1_000_000)
            if len(d.batch):
                chunk.append(encode(d.batch, cfg))
                points += len(d.batch)
            if len(chunk) >= 200 or (i == len(history) - 1 and chunk):
                writer.write(b"".join(chunk))
                chunk = []
    finally:
        writer.close()
    since, until = iso((scenario.start_ms - scenario.history_ms) * 1_000_000), iso(scenario.start_ms * 1_000_000)
    console.print(f"history: {points:,} readings written to InfluxDB, {since} .. {until}; learning it "
                  "(citywatch warmup)")
    with open(work / "warmup.log", "wb") as log:
        rc = subprocess.call([sys.executable, "-m", "citywatch", "warmup", "--config", str(config_dir), "--since", since,
                              "--until", until, "--no-progress"], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    if rc != 0:
        raise SystemExit(f"demo: citywatch warmup failed (exit {rc}); see {work / 'warmup.log'}")


def _show(console, cfg, scenario, history, messages, truth, work, env, service, speed, readings,
          BrokerCredentials, FeedPublisher, status_topic) -> int:
    from alerts.store import AlertStore
    from simulators.progress import _clock

    creds = BrokerCredentials.load(env["CITYWATCH_CREDENTIALS"])
    mq = cfg.connections.mqtt
    publisher = FeedPublisher(mq.host, mq.port, creds, {d: status_topic(cfg.device(d)) for d in scenario.devices})
    state = {"sim_ms": scenario.start_ms, "readings": 0, "error": None, "done": False, "offset": 0}

    def progress(sim_ms: int, n: int) -> None:
        state["sim_ms"], state["readings"] = sim_ms, state["offset"] + n

    def publish() -> None:
        try:
            if history:  # a back-fill: as fast as the broker takes it
                publisher.run(history, None, progress=lambda sim_ms, n: state.__setitem__("readings", n))
                state["offset"] = sum(m.n for m in history)
            publisher.run(messages, speed, t0_ms=scenario.start_ms, progress=progress)
        except Exception as exc:  # reported on the board and below; the demo must not hang
            state["error"] = exc
        finally:
            state["done"] = True
            publisher.close()

    store_path = cfg.resolve_path(cfg.alerting.store_path)
    thread = threading.Thread(target=publish, name="demo-publisher", daemon=True)
    started = time.monotonic()
    thread.start()

    def frame():
        span = max(1, scenario.end_ms - scenario.start_ms)
        done = min(1.0, (state["sim_ms"] - scenario.start_ms) / span)
        bar = "#" * int(done * 40) + "-" * (40 - int(done * 40))
        head = Text(f"simulated {_clock(state['sim_ms'], scenario.tz)}  [{bar}] {done:4.0%}  "
                    f"{state['readings']:,}/{readings:,} readings  {time.monotonic() - started:5.1f} s")
        alerts = []
        if store_path.exists():
            try:
                alerts = AlertStore(store_path).alerts(("pending", "firing"))
            except Exception:  # the service may be mid-write; the next refresh shows it
                alerts = []
        return Group(head, _board(alerts, state["sim_ms"] * 1_000_000, f"active alerts ({len(alerts)})", scenario.tz))

    with Live(frame(), console=console, refresh_per_second=2, screen=False) as live:
        while not state["done"]:
            time.sleep(0.5)
            live.update(frame())
        live.update(frame())
    if state["error"]:
        console.print(f"[red]publishing failed: {state['error']}[/]")
        return 1

    # Let the service land and evaluate everything before scoring: points in InfluxDB stop changing.
    db = env["CITYWATCH_INFLUX_DATABASE"]
    last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + 120
    while time.monotonic() < deadline:
        n = _count_points(cfg.connections.influx.url, db, cfg.connections.influx.credentials(env))
        if n != last:
            last, stable_since = n, time.monotonic()
        elif time.monotonic() - stable_since > 3:
            break
        time.sleep(0.5)
    console.print(f"landed in InfluxDB: {last:,} of {readings:,} published readings "
                  f"(the rest were refused with a reason: bad HJ 212 frames, a reset clock, rows flagged D; "
                  f"see {work}/var/deadletter)")
    service.send_signal(signal.SIGTERM)
    service.wait(60)

    all_alerts = AlertStore(store_path).alerts(None)
    console.print(_board(all_alerts, scenario.end_ms * 1_000_000, f"every alert of the day ({len(all_alerts)})",
                         scenario.tz))
    console.print(f"[bold]scorecard[/] (citywatch score --truth {truth} --alerts sqlite:{store_path})")
    return subprocess.call([sys.executable, "-m", "citywatch", "score", "--truth", str(truth),
                            "--alerts", f"sqlite:{store_path}"], env=env, cwd=ROOT)


SEVERITY_STYLE = {4: "bold red", 3: "bold dark_orange", 2: "yellow", 1: "blue"}
SEVERITY_WORD = {4: "red", 3: "orange", 2: "yellow", 1: "blue", 0: "-"}


def _board(alerts, now_ns: int, title: str, tz):
    """A compact alert board for an 80-column terminal: the duty officer's columns, red first."""
    import datetime as dt

    from rich.table import Table

    table = Table(title=title, expand=True, pad_edge=False)
    for col in ("sev", "state", "site", "device", "rule", "value/limit", "since", "for"):
        table.add_column(col, no_wrap=True, overflow="ellipsis")
    rows = sorted(alerts, key=lambda a: (a.state == "resolved", -a.severity, a.started_ns))
    for a in rows[:25]:
        end = a.resolved_ns or now_ns
        minutes = max(0, int((end - a.started_ns) / 60e9))
        since = dt.datetime.fromtimestamp(a.started_ns / 1e9, tz).strftime("%H:%M")
        value = "-" if a.value is None or a.value != a.value else f"{a.value:.4g}"
        limit = "-" if a.limit is None or a.limit != a.limit else f"{a.limit:.4g}"
        table.add_row(f"[{SEVERITY_STYLE.get(a.severity, '')}]{SEVERITY_WORD.get(a.severity, '?')}[/]", a.state,
                      a.site.get("name", a.site.get("id", "")), a.device_id, a.rule_id, f"{value}/{limit}", since,
                      f"{minutes // 60}h{minutes % 60:02d}")
    if len(rows) > 25:
        table.caption = f"... and {len(rows) - 25} more (citywatch alerts list --all)"
    return table


if __name__ == "__main__":
    raise SystemExit(main())
