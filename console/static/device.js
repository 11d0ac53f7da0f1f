// The device page: one ECharts chart of /api/devices/<id>/series. Noise: Leq (energy mean per minute, computed
// by the server with the detectors' code), Lmax and L90, the limit in force as a step line and the prohibited
// (no permit) and exam minutes as bands. Gas: pressure with the set pressure and the alert levels as lines.
// The banner says how old the newest reading is, and turns red when it is older than 10 minutes or missing.
"use strict";
const STALE_MS = 10 * 60 * 1000;
// The console is dark: ECharts' dark theme keeps the axis labels and the legend readable on it.
const chart = echarts.init(document.getElementById("chart"), "dark", {renderer: "canvas"});
window.cwChart = chart;
let hours = boot.hours, newestMs = null, loadError = null;

function banner() {
  const b = document.getElementById("data-age");
  let text, fresh = false;
  if (loadError) text = t("chart_error", {why: loadError});
  else if (newestMs === null) text = t("no_readings_range");
  else {
    text = t("newest_reading", {t: fmt.format(new Date(newestMs)), ago: ago((Date.now() - newestMs) / 1000)});
    fresh = Date.now() - newestMs < STALE_MS;
  }
  b.textContent = text;
  b.className = "banner " + (fresh ? "fresh" : "stale");
}
function pairs(ts, ys) { return ts.map((x, i) => [x, ys[i]]); }
// Consecutive minutes where flag[i] holds, as [[start, end]] for markArea bands.
function bands(ts, flag) {
  const out = [];
  let start = null;
  for (let i = 0; i < ts.length; i++) {
    if (flag[i] && start === null) start = ts[i];
    if (!flag[i] && start !== null) { out.push([{xAxis: start}, {xAxis: ts[i]}]); start = null; }
  }
  if (start !== null) out.push([{xAxis: start}, {xAxis: ts[ts.length - 1]}]);
  return out;
}
function noiseOption(d) {
  const s = d.series, L = d.limit;
  return {
    animation: false, backgroundColor: "transparent",
    legend: {top: 0, textStyle: {fontSize: 15}},
    tooltip: {trigger: "axis", valueFormatter: (v) => (v === null || v === undefined ? "–" : v.toFixed(1) + " dB(A)")},
    grid: {left: 60, right: 90, top: 40, bottom: 40},
    xAxis: {type: "time", min: d.from_ms, max: d.to_ms,
      axisLabel: {formatter: (v) => fmt.format(new Date(v)).slice(-8, -3)}},
    yAxis: {type: "value", name: t("unit_db"), scale: true, splitLine: {lineStyle: {color: "#2a3340"}}},
    series: [
      {name: t("leq"), type: "line", showSymbol: s.t_ms.length < 20, symbolSize: 7, connectNulls: false,
        data: pairs(s.t_ms, s.leq),
        lineStyle: {width: 2.5}, color: "#4fc3f7",
        markArea: {silent: true, itemStyle: {color: "rgba(211,47,47,0.10)"}, label: {show: true, position: "insideTop",
          color: "#b71c1c"}, data: bands(L.t_ms, L.prohibited).map((b) => [{...b[0], name: t("prohibited")}, b[1]])}},
      {name: t("lmax"), type: "line", showSymbol: false, data: pairs(s.t_ms, s.lmax), color: "#ef6c00",
        lineStyle: {width: 1}},
      {name: t("l90"), type: "line", showSymbol: false, data: pairs(s.t_ms, s.l90), color: "#2e7d32",
        lineStyle: {width: 1}},
      {name: t("limit"), type: "line", step: "end", showSymbol: false, data: pairs(L.t_ms, L.limit_db),
        color: "#ff5252", lineStyle: {width: 3}, z: 5,
        endLabel: {show: true, color: "#ff5252", fontSize: 14, formatter: (p) => p.value[1] + " dB(A)"},
        markArea: {silent: true, itemStyle: {color: "rgba(21,101,192,0.07)"}, label: {show: true,
          position: "insideTop"}, data: bands(L.t_ms, L.exam).map((b) => [{...b[0], name: t("exam")}, b[1]])}},
    ],
  };
}
function gasOption(d) {
  const s = d.series, g = d.gas;
  const flat = (v) => [[d.from_ms, v], [d.to_ms, v]];
  const level = (name, v, color, type) => ({name, type: "line", showSymbol: false, data: flat(v), color,
    lineStyle: {width: 1.5, type}, endLabel: {show: true, color, formatter: () => v + " kPa"}});
  return {
    animation: false, backgroundColor: "transparent",
    legend: {top: 0, textStyle: {fontSize: 15}},
    tooltip: {trigger: "axis"},
    grid: {left: 60, right: 90, top: 40, bottom: 40},
    xAxis: {type: "time", min: d.from_ms, max: d.to_ms,
      axisLabel: {formatter: (v) => fmt.format(new Date(v)).slice(-8, -3)}},
    yAxis: {type: "value", name: t("unit_kpa"), scale: true, splitLine: {lineStyle: {color: "#2a3340"}}},
    series: [
      // Few readings (a gas logger reports every 15 min): draw each as a dot, or a lone alarm reading is invisible.
      {name: t("pressure"), type: "line", showSymbol: s.t_ms.length < 120, symbolSize: 9,
        data: pairs(s.t_ms, s.p_kpa), color: "#4fc3f7",
        lineStyle: {width: 2.5}},
      level(t("set_pressure"), g.set_kpa, "#607d8b", "solid"),
      level(t("g_high"), g.high_kpa, "#f9a825", "dashed"),
      level(t("g_highhigh"), g.highhigh_kpa, "#d32f2f", "dashed"),
      ...g.low_kpa.map((v, i) => level(t("g_low") + (g.low_kpa.length > 1 ? " " + (i + 1) : ""), v,
        ["#f9a825", "#ef6c00", "#d32f2f"][Math.min(i, 2)], "dotted")),
    ],
  };
}
async function load() {
  try {
    const r = await fetch(`/api/devices/${encodeURIComponent(boot.device_id)}/series?hours=${hours}`,
      {credentials: "same-origin"});
    const d = await r.json();
    if (!r.ok) throw new Error(d.error || r.status);
    loadError = d.error || null;
    newestMs = d.newest_ms;
    chart.setOption(d.device.kind === "noise" ? noiseOption(d) : gasOption(d), true);
    document.getElementById("chart").dataset.points = String(d.series.t_ms.length);
    document.getElementById("chart").dataset.hours = String(d.hours);
  } catch (e) {
    loadError = String(e.message || e);
  }
  banner();
}
for (const b of document.querySelectorAll("#ranges button")) {
  b.addEventListener("click", () => {
    hours = Number(b.dataset.hours);
    for (const o of document.querySelectorAll("#ranges button")) o.classList.toggle("on", o === b);
    load();
  });
}
window.addEventListener("resize", () => chart.resize());
setInterval(banner, 1000);
setInterval(load, 60000);
load();
