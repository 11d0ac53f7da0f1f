// The site page: the site's active alerts, live from the board's event stream (/events), with a banner that says
// how old the data is; and one chart per noise monitor from /api/devices/<id>/series (energy-mean Leq, Lmax,
// L90 computed by the server with the detectors' code, and the limit in force as a step line).
"use strict";
const RANK = {red: 4, orange: 3, yellow: 2, blue: 1};
const STALE_MS = 10 * 60 * 1000;   // a chart whose newest reading is older says so in red, as on the device page
const alerts = new Map();
let status = null, statusAt = 0, streamUp = false;
let hours = boot.hours;
const charts = {};
window.cwSiteCharts = charts;

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function num(v) { return v === null || v === undefined ? "–" : (Number.isInteger(v) ? String(v) : v.toFixed(1)); }

function renderAlerts() {
  const rows = document.getElementById("site-alert-rows");
  const list = [...alerts.values()].filter((a) => a.site && a.site.id === boot.site_id)
    .sort((a, b) => (RANK[b.severity] || 0) - (RANK[a.severity] || 0));
  rows.replaceChildren();
  for (const a of list) {
    const tr = el("tr", "sev-row sev-" + a.severity);
    tr.dataset.alertId = a.alert_id;
    const sev = el("td");
    sev.append(el("span", "sev sev-" + a.severity, t("sev." + a.severity)));
    const rule = el("td");
    const link = el("a", "", (W.rules && W.rules[a.rule_id]) || a.rule_id);
    link.href = "/alerts/" + encodeURIComponent(a.alert_id);
    rule.append(link);
    const since = a.start_ts ? Date.parse(a.start_ts) : 0;
    tr.append(sev, rule, el("td", "device", (a.device && a.device.id) || ""),
      el("td", "value", `${num(a.value)} / ${num(a.limit)} ${a.unit || ""}`.trim()),
      el("td", "since", since ? fmt.format(new Date(since)) + " CST" : "–"),
      el("td", "ack-state", a.ack ? t("acked_by", {who: a.ack.name || a.ack.by}) : t("not_acked")));
    rows.append(tr);
  }
  document.getElementById("site-no-alerts").hidden = list.length > 0;
  document.getElementById("site-alert-count").textContent = `(${list.length})`;
  banner();
}
function banner() {
  const b = document.getElementById("banner");
  const {text, bad} = feedBanner(status, streamUp, statusAt);
  b.textContent = text;
  b.className = "banner " + (bad ? "stale" : "fresh");
}

const pairs = (ts, ys) => ts.map((x, i) => [x, ys[i]]);
function option(d) {
  const s = d.series, L = d.limit;
  return {
    animation: false, backgroundColor: "transparent",
    legend: {top: 0, textStyle: {fontSize: 13}},
    tooltip: {trigger: "axis", valueFormatter: (v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " dB(A)")},
    grid: {left: 50, right: 70, top: 30, bottom: 28},
    xAxis: {type: "time", min: d.from_ms, max: d.to_ms, axisLabel: {formatter: (v) => fmt.format(new Date(v)).slice(-8, -3)}},
    yAxis: {type: "value", name: t("unit_db"), scale: true, splitLine: {lineStyle: {color: "#2a3340"}}},
    series: [
      {name: t("leq"), type: "line", showSymbol: s.t_ms.length < 20, data: pairs(s.t_ms, s.leq), color: "#4fc3f7",
        lineStyle: {width: 2.5}},
      {name: t("lmax"), type: "line", showSymbol: false, data: pairs(s.t_ms, s.lmax), color: "#ef6c00", lineStyle: {width: 1}},
      {name: t("l90"), type: "line", showSymbol: false, data: pairs(s.t_ms, s.l90), color: "#2e7d32", lineStyle: {width: 1}},
      {name: t("limit"), type: "line", step: "end", showSymbol: false, data: pairs(L.t_ms, L.limit_db), color: "#ff5252",
        lineStyle: {width: 3}, z: 5, endLabel: {show: true, color: "#ff5252", formatter: (p) => p.value[1] + " dB(A)"}},
    ],
  };
}
async function loadChart(id, box) {
  const age = document.querySelector(`.chart-age[data-for="${CSS.escape(id)}"]`);
  try {
    const r = await fetch(`/api/devices/${encodeURIComponent(id)}/series?hours=${hours}`, {credentials: "same-origin"});
    const d = await r.json();
    if (!r.ok) throw new Error(d.error || r.status);
    charts[id].setOption(option(d), true);
    box.dataset.points = String(d.series.t_ms.length);
    box.dataset.hours = String(d.hours);
    const fresh = d.newest_ms !== null && Date.now() - d.newest_ms < STALE_MS;
    age.textContent = d.error ? t("chart_error", {why: d.error}) : d.newest_ms === null ? t("no_readings_range")
      : t("newest_reading", {t: fmt.format(new Date(d.newest_ms)), ago: ago((Date.now() - d.newest_ms) / 1000)});
    age.className = "chart-age " + (fresh && !d.error ? "muted" : "error");
  } catch (e) {
    age.textContent = t("chart_error", {why: String(e.message || e)});
    age.className = "chart-age error";
  }
}
function loadCharts() {
  for (const box of document.querySelectorAll(".site-chart")) loadChart(box.dataset.device, box);
}

if (typeof echarts !== "undefined") {
  for (const box of document.querySelectorAll(".site-chart")) {
    charts[box.dataset.device] = echarts.init(box, "dark", {renderer: "canvas"});
  }
  for (const b of document.querySelectorAll("#ranges button")) {
    b.addEventListener("click", () => {
      hours = Number(b.dataset.hours);
      for (const o of document.querySelectorAll("#ranges button")) o.classList.toggle("on", o === b);
      loadCharts();
    });
  }
  window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
  loadCharts();
  setInterval(loadCharts, 60000);
}
const es = new EventSource("/events");
es.addEventListener("open", () => { streamUp = true; banner(); });
es.addEventListener("error", () => { streamUp = false; banner(); });
es.addEventListener("snapshot", (e) => {
  const d = JSON.parse(e.data);
  alerts.clear();
  for (const a of d.alerts) alerts.set(a.alert_id, a);
  status = d.status; statusAt = Date.now(); streamUp = true;
  renderAlerts();
  document.body.dataset.alertsReady = "1";   // tests wait for the first snapshot
});
es.addEventListener("alert", (e) => { const a = JSON.parse(e.data); alerts.set(a.alert_id, a); renderAlerts(); });
es.addEventListener("gone", (e) => { alerts.delete(JSON.parse(e.data).alert_id); renderAlerts(); });
es.addEventListener("status", (e) => { status = JSON.parse(e.data); statusAt = Date.now(); banner(); });
es.addEventListener("logout", () => { es.close(); location.href = "/login"; });
setInterval(banner, 1000);
