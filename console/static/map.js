// The city map: Xiamen's districts (public data from the npm registry, served by the console itself) with every
// site of the inventory at its coordinates, coloured by its worst active alert, fed by the same event stream as
// the board. A click opens the site's page; pointing at a site lists its alerts with links to their evidence.
"use strict";
const COLOURS = {red: "#d32f2f", orange: "#ef6c00", yellow: "#f9a825", blue: "#1565c0"};
const RANK = {red: 4, orange: 3, yellow: 2, blue: 1};
const alerts = new Map();
let sites = [];
let status = null, statusAt = 0, streamUp = false;
const chart = echarts.init(document.getElementById("map"), "dark", {renderer: "canvas"});
window.cwMap = chart;

function worst(siteId) {
  let best = null;
  for (const a of alerts.values()) {
    if (a.site && a.site.id === siteId && (!best || (RANK[a.severity] || 0) > (RANK[best.severity] || 0))) best = a;
  }
  return best;
}
function draw() {
  const data = sites.map((s) => {
    const w = worst(s.id);
    return {name: s.name, value: [s.lon, s.lat], site: s, severity: w ? w.severity : null,
      itemStyle: {color: w ? COLOURS[w.severity] : "#4caf50", borderColor: "#fff", borderWidth: 1},
      symbolSize: w ? (w.severity === "red" ? 22 : 16) : 10,
      // A site with an alert is named on the map, so the officer need not hover to find it.
      label: {show: !!w, position: "right", formatter: s.name, color: "#fff", fontSize: 15, fontWeight: "bold",
        backgroundColor: "rgba(16,22,29,.8)", padding: [2, 4]}};
  });
  chart.setOption({series: [{id: "sites", data}]});
  banner();
}
function banner() {
  const b = document.getElementById("banner");
  const {text, bad} = feedBanner(status, streamUp, statusAt);
  b.textContent = text;
  b.className = "banner " + (bad ? "stale" : "fresh");
}
function showSite(s) {
  const box = document.getElementById("site-info");
  box.replaceChildren();
  const h = document.createElement("h3");
  h.textContent = `${s.name} (${s.id})`;
  const p = document.createElement("p");
  p.textContent = `${s.address} · ${s.district}`;
  box.append(h, p);
  const list = [...alerts.values()].filter((a) => a.site && a.site.id === s.id)
    .sort((a, b) => (RANK[b.severity] || 0) - (RANK[a.severity] || 0));
  if (!list.length) { const e = document.createElement("p"); e.textContent = t("no_alert"); box.append(e); }
  for (const a of list) {
    const row = document.createElement("p");
    const badge = document.createElement("span");
    badge.className = "sev sev-" + a.severity;
    badge.textContent = t("sev." + a.severity);
    const link = document.createElement("a");
    link.href = "/alerts/" + encodeURIComponent(a.alert_id);
    link.textContent = ` ${(W.rules && W.rules[a.rule_id]) || a.rule_id} · ${a.device && a.device.id}`;
    row.append(badge, link);
    box.append(row);
  }
}

async function start() {
  const [geo, siteList] = await Promise.all([
    fetch("/vendor/xiamen.geojson", {credentials: "same-origin"}).then((r) => r.json()),
    fetch("/api/sites", {credentials: "same-origin"}).then((r) => r.json()),
  ]);
  echarts.registerMap("xiamen", geo);
  sites = siteList.sites;
  chart.setOption({
    backgroundColor: "#10161d",
    animation: false,   // an operations screen shows the state now, not a transition into it
    tooltip: {trigger: "item", formatter: (p) => p.data && p.data.site
      ? `${p.data.site.name}<br>${p.data.site.district} · ${p.data.severity ? t("sev." + p.data.severity) : t("no_alert")}`
      : p.name},
    geo: {map: "xiamen", roam: true, layoutCenter: ["50%", "50%"], layoutSize: "95%", label: {show: true, color: "#9aa8b5", fontSize: 14},
      itemStyle: {areaColor: "#1c2733", borderColor: "#3d5166"}, emphasis: {itemStyle: {areaColor: "#24313d"}}},
    series: [{id: "sites", type: "scatter", coordinateSystem: "geo", data: [], zlevel: 2}],
  });
  // A click opens the site page; pointing at a marker lists its alerts in the side panel.
  chart.on("click", (p) => { if (p.data && p.data.site) location.href = "/sites/" + encodeURIComponent(p.data.site.id); });
  chart.on("mouseover", (p) => { if (p.data && p.data.site) showSite(p.data.site); });
  window.addEventListener("resize", () => chart.resize());
  draw();
  window.cwMapReady = true;
  document.body.dataset.mapReady = "1";   // tests and screen captures wait for this
  const es = new EventSource("/events");
  es.addEventListener("open", () => { streamUp = true; banner(); });
  es.addEventListener("error", () => { streamUp = false; banner(); });
  es.addEventListener("snapshot", (e) => {
    const d = JSON.parse(e.data);
    alerts.clear();
    for (const a of d.alerts) alerts.set(a.alert_id, a);
    status = d.status; statusAt = Date.now(); streamUp = true;
    draw();
  });
  es.addEventListener("alert", (e) => { const a = JSON.parse(e.data); alerts.set(a.alert_id, a); draw(); });
  es.addEventListener("gone", (e) => { alerts.delete(JSON.parse(e.data).alert_id); draw(); });
  es.addEventListener("status", (e) => { status = JSON.parse(e.data); statusAt = Date.now(); banner(); });
  es.addEventListener("logout", () => { es.close(); location.href = "/login"; });
  setInterval(banner, 1000);
}
start();
