// The live alert board: a snapshot and then every change over server-sent events (/events); rows sorted by
// severity (red first) then age (oldest first); a banner that says how old the data is and turns red when
// the broker link is down, nothing was heard for stale_after_s, or the console itself cannot be reached.
// Rows are rendered incrementally: an event marks its alert dirty and one pass per animation frame rebuilds
// only the dirty rows and moves rows only where the order changed (bench/bench_console.py: with 500 rows a
// full rebuild per event kept the main thread busy for seconds under load). A new red alert beeps (Web Audio,
// generated in the page) unless muted; browsers let a page play sound only after one click on it.
"use strict";
const RANK = {red: 4, orange: 3, yellow: 2, blue: 1};
const alerts = new Map();     // alert_id -> the latest state
const rowOf = new Map();      // alert_id -> its <tr>
const dirty = new Set();      // alert ids whose row must be rebuilt (or removed) on the next pass
let status = null;            // the feed's last status (server clock)
let statusAt = 0;             // when we received it (our clock)
let streamUp = false;
let snapshots = 0;            // snapshots received; the first one (page load) never beeps

function num(v) {
  if (v === null || v === undefined) return "–";
  return Number.isInteger(v) ? String(v) : Number(v).toFixed(Math.abs(v) < 10 ? 2 : 1);
}
function startMs(a) { return a.start_ts ? Date.parse(a.start_ts) : 0; }
function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function forText(a, now) {
  const since = startMs(a);
  return since ? ago((now - since) / 1000) : "–";
}

function silenceOf(id) { return (status && status.silenced && status.silenced[id]) || null; }

function buildRow(a, now) {
  const tr = el("tr", "sev-row sev-" + a.severity);
  tr.dataset.alertId = a.alert_id;
  if (a.severity === "red" && !a.ack) tr.classList.add("unacked-red");
  const sev = el("td");
  sev.append(el("span", "sev sev-" + a.severity, t("sev." + a.severity)));
  if (a.flapping) sev.append(el("span", "flap", " " + t("flapping")));
  tr.append(sev);
  tr.append(el("td", "site", (a.site && a.site.name) || (a.site && a.site.id) || ""));
  tr.append(el("td", "address", (a.site && a.site.address) || ""));
  // The device id stays the cell's own text; a short link beside it opens the device's charts.
  const dev = el("td", "device", a.device && a.device.id || "");
  if (a.device && a.device.id) {
    const dl = el("a", "device-link", t("chart_link"));
    dl.href = "/devices/" + encodeURIComponent(a.device.id);
    dl.title = t("device_charts");
    dev.append(dl);
  }
  tr.append(dev);
  const rule = el("td", "rule");
  const link = el("a", "", (W.rules && W.rules[a.rule_id]) || a.rule_id);
  link.href = "/alerts/" + encodeURIComponent(a.alert_id);
  link.title = a.rule_id;
  rule.append(link);
  tr.append(rule);
  const unit = a.unit || "";
  tr.append(el("td", "value", `${num(a.value)} / ${num(a.limit)} ${unit}`.trim()));
  const since = startMs(a);
  tr.append(el("td", "since", since ? fmt.format(new Date(since)) + " CST" : "–"));
  tr.append(el("td", "for", forText(a, now)));
  const ackCell = el("td", "ack-state", a.ack ? t("acked_by", {who: a.ack.name || a.ack.by}) +
    (a.ack.note ? ": " + a.ack.note : "") : t("not_acked"));
  // A silence mutes the alert's notices, not the board: say so on the row, with who and until when.
  const sil = silenceOf(a.alert_id);
  if (sil) {
    tr.classList.add("silenced");
    const tag = el("a", "silenced-tag", t("silenced_until", {t: fmt.format(new Date(sil.expires_ns / 1e6)), who: sil.by}));
    tag.href = "/silences";
    ackCell.append(tag);
  }
  tr.append(ackCell);
  const act = el("td", "action");
  if (boot.may_ack && !a.ack) {
    const b = el("button", "ack-button", t("ack"));
    b.addEventListener("click", () => openAck(a));
    act.append(b);
  }
  tr.append(act);
  return tr;
}

function order(a, b) {
  return (RANK[b.severity] || 0) - (RANK[a.severity] || 0) || startMs(a) - startMs(b) ||
    (a.alert_id < b.alert_id ? -1 : a.alert_id > b.alert_id ? 1 : 0);
}

// One pass: rebuild the dirty rows, then put the rows in order, touching only those out of place.
let pending = 0;
function schedule() {
  if (pending) return;
  // The next frame; a timer as well, since frames stop in a hidden tab and a wall screen may be one.
  pending = requestAnimationFrame(due);
  setTimeout(due, 250);
}
function due() { if (pending) flush(); }
function flush() {
  if (pending) cancelAnimationFrame(pending);
  pending = 0;
  const rows = document.getElementById("rows");
  const now = Date.now();
  for (const id of dirty) {
    const old = rowOf.get(id);
    const a = alerts.get(id);
    if (!a) {
      if (old) old.remove();
      rowOf.delete(id);
      continue;
    }
    const tr = buildRow(a, now);
    if (old) old.replaceWith(tr);
    rowOf.set(id, tr);
  }
  dirty.clear();
  const list = [...alerts.values()].sort(order);
  let at = rows.firstElementChild;
  for (const a of list) {
    const tr = rowOf.get(a.alert_id);
    if (tr === at) at = at.nextElementSibling;
    else rows.insertBefore(tr, at);
  }
  document.getElementById("empty").hidden = list.length > 0;
  document.getElementById("count").textContent = t("active_alerts", {n: list.length});
  banner();
}
function changed(id) { dirty.add(id); schedule(); }

// Every second the durations and the data age tick on; only the cells whose text changes are written.
function tick() {
  const now = Date.now();
  for (const [id, tr] of rowOf) {
    const a = alerts.get(id);
    const cell = a && tr.querySelector("td.for");
    if (!cell) continue;
    const text = forText(a, now);
    if (cell.textContent !== text) cell.textContent = text;
  }
  banner();
}

function banner() {
  const b = document.getElementById("banner");
  const {text, bad} = feedBanner(status, streamUp, statusAt, lastHeard);
  if (b.textContent !== text) b.textContent = text;
  const cls = "banner " + (bad ? "stale" : "fresh");
  if (b.className !== cls) b.className = cls;
}

// What the board still shows is this old: said on every red banner, so a stale board never passes for a live one.
function lastHeard() {
  if (!status || !status.last_heard) return "";
  const age = status.now - status.last_heard + (Date.now() - statusAt) / 1000;
  return " · " + t("data_as_of", {t: fmt.format(new Date(status.last_heard * 1000)), ago: ago(age)});
}

// ----- sound: a beep for each new red alert (at most one a second), muted per browser ----------------------
const SOUND_KEY = "citywatch.sound";     // localStorage: "off" while muted
const BEEP_GAP_MS = 1000;
let muted = localStorage.getItem(SOUND_KEY) === "off";
let audio = null, lastBeep = 0, beepTimer = 0;
// Counters for tests and benchmarks: beeps played, and those the browser would not play yet (no click).
window.__cwBeeps = 0;
window.__cwBeepsBlocked = 0;

function audioCtx() {
  const AC = window.AudioContext || window.webkitAudioContext;
  if (!audio && AC) audio = new AC();
  return audio;
}
function soundBlocked() { const a = audioCtx(); return !a || a.state !== "running"; }
function beep() {
  if (muted) return;
  const wait = lastBeep + BEEP_GAP_MS - Date.now();
  if (wait > 0) {
    // Reds arriving together get one beep; one arriving just after gets its own, a moment later.
    if (!beepTimer) beepTimer = setTimeout(() => { beepTimer = 0; beep(); }, wait);
    return;
  }
  lastBeep = Date.now();
  const ac = audioCtx();
  if (soundBlocked()) {
    window.__cwBeepsBlocked++;
    if (ac) ac.resume().then(soundControls, () => {});
    return;
  }
  window.__cwBeeps++;
  // Two falling square-wave tones, 0.2 s each: heard across an operations room, unlike any page sound.
  const t0 = ac.currentTime;
  for (const [freq, at] of [[988, 0], [784, 0.25]]) {
    const osc = ac.createOscillator(), gain = ac.createGain();
    osc.type = "square";
    osc.frequency.value = freq;
    gain.gain.setValueAtTime(0.0001, t0 + at);
    gain.gain.exponentialRampToValueAtTime(0.25, t0 + at + 0.02);
    gain.gain.exponentialRampToValueAtTime(0.0001, t0 + at + 0.2);
    osc.connect(gain).connect(ac.destination);
    osc.start(t0 + at);
    osc.stop(t0 + at + 0.22);
  }
}
// An alert that was not red (or not known) and now is, unacknowledged: a new red alert.
function newRed(old, a) { return a.severity === "red" && !a.ack && !(old && old.severity === "red"); }

function soundControls() {
  let bar = document.getElementById("sound-bar");
  if (!bar) {
    bar = el("div", "sound-bar");
    bar.id = "sound-bar";
    const b = el("button", "sound-toggle");
    b.id = "sound-toggle";
    b.type = "button";
    b.addEventListener("click", () => {
      muted = !muted;
      localStorage.setItem(SOUND_KEY, muted ? "off" : "on");
      soundControls();
    });
    const hint = el("span", "sound-hint");
    hint.id = "sound-hint";
    bar.append(b, hint);
    document.getElementById("count").before(bar);
  }
  const b = document.getElementById("sound-toggle");
  b.textContent = t(muted ? "sound_off" : "sound_on");
  b.setAttribute("aria-pressed", String(muted));
  b.classList.toggle("off", muted);
  const hint = document.getElementById("sound-hint");
  hint.textContent = t("sound_hint");
  hint.hidden = muted || !soundBlocked();
}
// The first click or key on the page lets the audio context run (the browsers' autoplay rule).
function unlock() {
  const ac = audioCtx();
  if (ac && ac.state !== "running") ac.resume().then(soundControls, () => {});
}
document.addEventListener("pointerdown", unlock, true);
document.addEventListener("keydown", unlock, true);
if (audioCtx()) audio.addEventListener("statechange", soundControls);
soundControls();

// ----- ack -------------------------------------------------------------------------------------------------
let ackTarget = null;
function openAck(a) {
  ackTarget = a;
  document.getElementById("ack-what").textContent =
    `${t("sev." + a.severity)} · ${(W.rules && W.rules[a.rule_id]) || a.rule_id} · ${(a.site && a.site.name) || ""} · ${a.device && a.device.id}`;
  document.getElementById("ack-note").value = "";
  document.getElementById("ack-error").textContent = "";
  document.getElementById("ack-dialog").showModal();
}
document.getElementById("ack-send").addEventListener("click", async (ev) => {
  ev.preventDefault();
  const a = ackTarget;
  if (!a) return;
  const errEl = document.getElementById("ack-error");
  try {
    const r = await fetch("/api/alerts/" + encodeURIComponent(a.alert_id) + "/ack", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": boot.csrf},
      body: JSON.stringify({note: document.getElementById("ack-note").value}),
    });
    const body = await r.json();
    if (!body.ok) { errEl.textContent = t("ack_failed", {why: body.result}); return; }
    document.getElementById("ack-dialog").close();
  } catch (e) {
    errEl.textContent = t("ack_failed", {why: String(e)});
  }
});
document.getElementById("ack-cancel").addEventListener("click", (ev) => {
  ev.preventDefault();
  document.getElementById("ack-dialog").close();
});

// ----- the stream ------------------------------------------------------------------------------------------
function connect() {
  const es = new EventSource("/events");
  es.addEventListener("open", () => { streamUp = true; banner(); });
  es.addEventListener("error", () => {
    streamUp = false; banner();
    // The browser retries by itself unless the answer was an HTTP error: then we try again, bounded by 3 s.
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 3000);
  });
  es.addEventListener("snapshot", (e) => {
    const d = JSON.parse(e.data);
    // After a reconnect, a red alert we had not seen yet is new; on the page's first snapshot none is.
    let red = false;
    const fresh = new Map(d.alerts.map((a) => [a.alert_id, a]));
    for (const [id, a] of fresh) {
      if (snapshots > 0 && newRed(alerts.get(id), a)) red = true;
      dirty.add(id);
    }
    for (const id of alerts.keys()) dirty.add(id);
    alerts.clear();
    for (const [id, a] of fresh) alerts.set(id, a);
    snapshots++;
    status = d.status; statusAt = Date.now(); streamUp = true;
    if (red) beep();
    // The first snapshot is drawn at once: the page has nothing else to show yet.
    if (snapshots === 1) flush(); else schedule();
  });
  es.addEventListener("alert", (e) => {
    const a = JSON.parse(e.data);
    if (newRed(alerts.get(a.alert_id), a)) beep();
    alerts.set(a.alert_id, a);
    changed(a.alert_id);
  });
  es.addEventListener("gone", (e) => {
    const id = JSON.parse(e.data).alert_id;
    alerts.delete(id);
    changed(id);
  });
  es.addEventListener("status", (e) => {
    const before = (status && status.silenced) || {};
    status = JSON.parse(e.data); statusAt = Date.now(); banner();
    // Rows whose silence began, ended or changed are drawn again.
    const now = status.silenced || {};
    for (const id of new Set([...Object.keys(before), ...Object.keys(now)])) {
      const x = before[id], y = now[id];
      if (!x || !y || x.id !== y.id || x.expires_ns !== y.expires_ns) changed(id);
    }
  });
  es.addEventListener("logout", () => { es.close(); location.href = "/login"; });
}
connect();
setInterval(tick, 1000);
