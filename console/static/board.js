// The live alert board: a snapshot and then every change over server-sent events (/events); rows sorted by
// severity (red first) then age (oldest first); a banner that says how old the data is and turns red when
// the broker link is down, nothing was heard for stale_after_s, or the console itself cannot be reached.
"use strict";
const RANK = {red: 4, orange: 3, yellow: 2, blue: 1};
const alerts = new Map();
let status = null;            // the feed's last status (server clock)
let statusAt = 0;             // when we received it (our clock)
let streamUp = false;

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

function render() {
  const rows = document.getElementById("rows");
  const list = [...alerts.values()].sort((a, b) =>
    (RANK[b.severity] || 0) - (RANK[a.severity] || 0) || startMs(a) - startMs(b));
  rows.replaceChildren();
  const now = Date.now();
  for (const a of list) {
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
    tr.append(el("td", "for", since ? ago((now - since) / 1000) : "–"));
    tr.append(el("td", "ack-state", a.ack ? t("acked_by", {who: a.ack.name || a.ack.by}) +
      (a.ack.note ? ": " + a.ack.note : "") : t("not_acked")));
    const act = el("td", "action");
    if (boot.may_ack && !a.ack) {
      const b = el("button", "ack-button", t("ack"));
      b.addEventListener("click", () => openAck(a));
      act.append(b);
    }
    tr.append(act);
    rows.append(tr);
  }
  document.getElementById("empty").hidden = list.length > 0;
  document.getElementById("count").textContent = t("active_alerts", {n: list.length});
  banner();
}

function banner() {
  const b = document.getElementById("banner");
  let text, bad = true;
  if (!streamUp || !status || Date.now() - statusAt > 10000) {
    text = t("console_down");
  } else if (!status.connected) {
    text = t("link_down", {why: status.link_error || "?"}) + lastHeard();
  } else if (status.service !== "online") {
    text = t(status.service === "offline" ? "service_down" : "service_unknown") + lastHeard();
  } else if (!status.last_heard) {
    text = t("no_data");
  } else {
    // The server's own clock says how old the last message is; our clock only adds the time since.
    const age = status.now - status.last_heard + (Date.now() - statusAt) / 1000;
    if (age > boot.stale_after_s) {
      text = t("stale", {ago: ago(age)}) + lastHeard();
    } else {
      text = t("data_as_of", {t: fmt.format(new Date(status.last_heard * 1000)), ago: ago(age)});
      bad = false;
    }
  }
  b.textContent = text;
  b.className = "banner " + (bad ? "stale" : "fresh");
}

// What the board still shows is this old: said on every red banner, so a stale board never passes for a live one.
function lastHeard() {
  if (!status || !status.last_heard) return "";
  const age = status.now - status.last_heard + (Date.now() - statusAt) / 1000;
  return " · " + t("data_as_of", {t: fmt.format(new Date(status.last_heard * 1000)), ago: ago(age)});
}

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
    alerts.clear();
    for (const a of d.alerts) alerts.set(a.alert_id, a);
    status = d.status; statusAt = Date.now(); streamUp = true;
    render();
  });
  es.addEventListener("alert", (e) => { const a = JSON.parse(e.data); alerts.set(a.alert_id, a); render(); });
  es.addEventListener("gone", (e) => { alerts.delete(JSON.parse(e.data).alert_id); render(); });
  es.addEventListener("status", (e) => { status = JSON.parse(e.data); statusAt = Date.now(); banner(); });
  es.addEventListener("logout", () => { es.close(); location.href = "/login"; });
}
connect();
setInterval(render, 1000);   // durations and the data age tick on
