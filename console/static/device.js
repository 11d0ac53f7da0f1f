// The device page: ECharts charts of /api/devices/<id>/series. Noise: Leq (energy mean per minute, computed
// by the server with the detectors' code), Lmax and L90, the limit in force as a step line and the prohibited
// (no permit) and exam minutes as bands. Gas: pressure with the set pressure and the alert levels as lines, and
// the learned time-of-week profile with G-leak's band (the detectors' own profile, from their saved state).
// Below, for every device: battery voltage with the battery rule's levels, and data quality per hour (valid
// readings against what the reporting period promises, N-data's minimum, silences the Offline rule would flag).
// The banner says how old the newest reading is, and turns red when it is older than 10 minutes or missing.
"use strict";
const STALE_MS = 10 * 60 * 1000;
// The console is dark: ECharts' dark theme keeps the axis labels and the legend readable on it.
const chart = echarts.init(document.getElementById("chart"), "dark", {renderer: "canvas"});
const batteryChart = echarts.init(document.getElementById("battery-chart"), "dark", {renderer: "canvas"});
const qualityChart = echarts.init(document.getElementById("quality-chart"), "dark", {renderer: "canvas"});
window.cwChart = chart;
window.cwBattery = batteryChart;
window.cwQuality = qualityChart;
const HHMM = (v) => fmt.format(new Date(v)).slice(-8, -3);
let hours = boot.hours, newestMs = null, loadError = null;
// ?end=<ms>: the charts of the hours before that moment (a link from a silent device, or a replayed day).
const endMs = new URLSearchParams(location.search).get("end");

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
// Pairs with a break (a null point) wherever two readings are more than maxGapMs apart: a line drawn across a
// silence would show data that never came.
function gapped(ts, ys, maxGapMs) {
  const out = [];
  for (let i = 0; i < ts.length; i++) {
    if (i && ts[i] - ts[i - 1] > maxGapMs) out.push([(ts[i] + ts[i - 1]) / 2, null]);
    out.push([ts[i], ys[i]]);
  }
  return out;
}
// A silence is longer than two sample intervals (and than two chart minutes).
function maxGap(d) { return 2000 * Math.max(60, d.device.sample_s || 60); }
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
        data: gapped(s.t_ms, s.leq, maxGap(d)),
        lineStyle: {width: 2.5}, color: "#4fc3f7",
        markArea: {silent: true, itemStyle: {color: "rgba(211,47,47,0.10)"}, label: {show: true, position: "insideTop",
          color: "#b71c1c"}, data: bands(L.t_ms, L.prohibited).map((b) => [{...b[0], name: t("prohibited")}, b[1]])}},
      {name: t("lmax"), type: "line", showSymbol: false, data: gapped(s.t_ms, s.lmax, maxGap(d)), color: "#ef6c00",
        lineStyle: {width: 1}},
      {name: t("l90"), type: "line", showSymbol: false, data: gapped(s.t_ms, s.l90, maxGap(d)), color: "#2e7d32",
        lineStyle: {width: 1}},
      {name: t("limit"), type: "line", step: "end", showSymbol: false, data: pairs(L.t_ms, L.limit_db),
        color: "#ff5252", lineStyle: {width: 3}, z: 5,
        endLabel: {show: true, color: "#ff5252", fontSize: 14, formatter: (p) => p.value[1] + " dB(A)"},
        markArea: {silent: true, itemStyle: {color: "rgba(21,101,192,0.07)"}, label: {show: true,
          position: "insideTop"}, data: bands(L.t_ms, L.exam).map((b) => [{...b[0], name: t("exam")}, b[1]])}},
    ],
  };
}
// The pressure axis spans the readings, the profile band, the set pressure, G-high and the first G-low level:
// the levels further out (G-highhigh, the deeper G-low levels) would squeeze a leak of 1 % into a few pixels.
// Those are left off the chart only while every reading is inside; the note under the chart names them.
function gasFocus(d) {
  const g = d.gas, P = d.profile || {lo_kpa: [], hi_kpa: []};
  const vals = [...d.series.p_kpa, ...P.lo_kpa, ...P.hi_kpa, g.set_kpa, g.high_kpa, g.low_kpa[0]]
    .filter((v) => v !== null && v !== undefined);
  let lo = Math.min(...vals), hi = Math.max(...vals);
  const pad = Math.max(0.02 * g.set_kpa, (hi - lo) * 0.05);
  lo -= pad; hi += pad;
  const inside = (v) => v >= lo && v <= hi;
  const hidden = [[t("g_highhigh"), g.highhigh_kpa], ...g.low_kpa.map((v, i) => [t("g_low") +
    (g.low_kpa.length > 1 ? " " + (i + 1) : ""), v])].filter(([, v]) => !inside(v));
  return {min: +lo.toFixed(3), max: +hi.toFixed(3), inside, hidden};
}
function gasOption(d) {
  const s = d.series, g = d.gas, focus = gasFocus(d);
  const flat = (v) => [[d.from_ms, v], [d.to_ms, v]];
  const level = (name, v, color, type) => ({name, type: "line", showSymbol: false, data: flat(v), color,
    lineStyle: {width: 1.5, type}, endLabel: {show: true, color, formatter: () => v + " kPa"}});
  return {
    animation: false, backgroundColor: "transparent",
    legend: {top: 0, type: "scroll", textStyle: {fontSize: 15}},
    tooltip: {trigger: "axis"},
    grid: {left: 60, right: 90, top: 40, bottom: 40},
    xAxis: {type: "time", min: d.from_ms, max: d.to_ms,
      axisLabel: {formatter: (v) => fmt.format(new Date(v)).slice(-8, -3)}},
    yAxis: {type: "value", name: t("unit_kpa"), scale: true, splitLine: {lineStyle: {color: "#2a3340"}},
      min: focus.min, max: focus.max, axisLabel: {showMinLabel: false, showMaxLabel: false}},
    series: [
      // Few readings (a gas logger reports every 15 min): draw each as a dot, or a lone alarm reading is invisible.
      {name: t("pressure"), type: "line", showSymbol: s.t_ms.length < 120, symbolSize: 9,
        data: gapped(s.t_ms, s.p_kpa, maxGap(d)), color: "#4fc3f7",
        lineStyle: {width: 2.5}},
      level(t("set_pressure"), g.set_kpa, "#607d8b", "solid"),
      level(t("g_high"), g.high_kpa, "#f9a825", "dashed"),
      ...(focus.inside(g.highhigh_kpa) ? [level(t("g_highhigh"), g.highhigh_kpa, "#d32f2f", "dashed")] : []),
      ...g.low_kpa.map((v, i) => level(t("g_low") + (g.low_kpa.length > 1 ? " " + (i + 1) : ""), v,
        ["#f9a825", "#ef6c00", "#d32f2f"][Math.min(i, 2)], "dotted")).filter((_, i) => focus.inside(g.low_kpa[i])),
      ...profileSeries(d.profile),
    ],
  };
}
// The learned profile as a dashed line, and G-leak's band (profile -/+ k sigma) as an area stacked on its
// lower edge; minutes not learned are gaps. Both band series share one legend entry.
function profileSeries(P) {
  if (!P || P.p_kpa.every((v) => v === null)) return [];   // nothing learned here: no empty legend entries
  const band = P.k_sigma === null ? t("profile") : t("profile_band", {k: P.k_sigma, s: P.sigma_kpa});
  const width = P.hi_kpa.map((v, i) => (v === null || P.lo_kpa[i] === null ? null : +(v - P.lo_kpa[i]).toFixed(3)));
  const quiet = {showSymbol: false, silent: true, connectNulls: false};
  return [
    {name: band, type: "line", stack: "profile-band", data: pairs(P.t_ms, P.lo_kpa), ...quiet,
      lineStyle: {opacity: 0}, color: "#80cbc4", tooltip: {show: false}},
    {name: band, type: "line", stack: "profile-band", data: pairs(P.t_ms, width), ...quiet,
      lineStyle: {opacity: 0}, areaStyle: {color: "rgba(128,203,196,0.25)"}, color: "#80cbc4", tooltip: {show: false}},
    {name: t("profile"), type: "line", data: pairs(P.t_ms, P.p_kpa), ...quiet, color: "#80cbc4",
      lineStyle: {width: 2, type: "dashed"}},
  ];
}
function profileNote(d) {
  const P = d.profile, el = document.getElementById("profile-note");
  if (!P) { el.textContent = ""; return; }
  const parts = gasFocus(d).hidden.map(([name, v]) => `${name} ${v} kPa`);
  if (P.p_kpa.every((v) => v === null)) parts.push(t("profile_none", {n: P.learned_hours}));
  if (P.saved_ms) parts.push(t("profile_state", {t: fmt.format(new Date(P.saved_ms))}));
  else if (P.error) parts.push(P.error.startsWith("no detector state") ? t("profile_no_state") : P.error);
  el.textContent = parts.join(" · ");
}
// Where the page looks: the past (with a way back to now), or nothing in range and where the data ends.
function rangeNote(d) {
  const el = document.getElementById("range-note");
  el.replaceChildren();
  const link = (text, href) => { const a = document.createElement("a"); a.textContent = text; a.href = href; return a; };
  if (endMs) {
    el.append(t("viewing_end", {t: fmt.format(new Date(d.to_ms))}) + " · ", link(t("back_to_now"), location.pathname));
  } else if (d.newest_ms === null && d.latest_ms) {
    const a = link(t("jump_latest", {t: fmt.format(new Date(d.latest_ms))}), `${location.pathname}?end=${d.latest_ms + 60000}`);
    a.id = "jump-latest";
    el.append(a);
  }
}
function emptyTitle(text) {
  return {text, left: "center", top: "middle", textStyle: {color: "#9aa8b5", fontSize: 14, fontWeight: "normal"}};
}
const small = (d) => ({animation: false, backgroundColor: "transparent", grid: {left: 48, right: 16, top: 28, bottom: 24},
  xAxis: {type: "time", min: d.from_ms, max: d.to_ms, axisLabel: {formatter: HHMM}}});
function batteryOption(d) {
  const b = d.battery;
  const lvl = (v, color, key) => ({yAxis: v, lineStyle: {color, type: "dashed"},
    label: {formatter: t(key, {v}), color, position: "insideEndTop"}});
  const marks = b.rule ? [lvl(b.yellow_v, "#f9a825", "batt_yellow"), lvl(b.orange_v, "#ef6c00", "batt_orange")] : [];
  return {
    ...small(d),
    title: b.v.length ? {text: t("battery") + (b.rule ? " · " + b.rule : t("no_battery_rule")), left: 8, top: 2,
      textStyle: {fontSize: 13}} : emptyTitle(t("battery") + " — " + t("no_battery")),
    tooltip: {trigger: "axis", valueFormatter: (v) => (v === null || v === undefined ? "–" : v.toFixed(2) + " V")},
    yAxis: {type: "value", scale: true, splitLine: {lineStyle: {color: "#2a3340"}},
      axisLabel: {formatter: (v) => v.toFixed(2) + " V", showMinLabel: false, showMaxLabel: false},
      min: (v) => Math.min(v.min, b.orange_v || v.min) - 0.05, max: (v) => Math.max(v.max, (b.yellow_v || v.max) + 0.1)},
    series: [{name: t("battery"), type: "line", showSymbol: b.v.length < 60, data: gapped(b.t_ms, b.v, maxGap(d)), color: "#aed581",
      markLine: {silent: true, symbol: "none", data: marks}}],
  };
}
function qualityOption(d) {
  const q = d.quality, half = q.bucket_s * 500;
  const min = q.min_vdr === null ? null : q.min_vdr * 100;
  const bars = q.t_ms.map((x, i) => ({value: [x + half, q.vdr[i] === null ? null : Math.min(100, q.vdr[i] * 100)],
    itemStyle: {color: q.partial[i] ? "#607d8b" : (min !== null && q.vdr[i] * 100 < min) ? "#f9a825" : "#43a047"},
    i}));
  return {
    ...small(d),
    title: {text: t("data_quality"), left: 8, top: 2, textStyle: {fontSize: 13}},
    tooltip: {trigger: "axis", formatter: (ps) => ps.filter((p) => p.data && p.data.i !== undefined).map((p) => {
      const i = p.data.i;
      return `${HHMM(q.t_ms[i])}–${HHMM(q.t_ms[i] + q.bucket_s * 1000)} ${q.vdr[i] === null ? "–" :
        Math.round(q.vdr[i] * 100) + "%"}<br>` + t("dq_tip", {r: q.received[i], v: q.valid[i], e: q.expected[i]}) +
        (q.partial[i] ? t("dq_partial") : "");
    }).join("<br>")},
    xAxis: {type: "time", min: q.t_ms[0], max: q.t_ms[q.t_ms.length - 1] + q.bucket_s * 1000,
      axisLabel: {formatter: HHMM}},
    yAxis: {type: "value", min: 0, max: 100, splitLine: {lineStyle: {color: "#2a3340"}},
      axisLabel: {formatter: "{value}%"}},
    series: [{name: t("dq_valid"), type: "bar", barWidth: "60%", data: bars,
      markLine: min === null ? undefined : {silent: true, symbol: "none", data: [{yAxis: min,
        lineStyle: {color: "#f9a825", type: "dashed"}, label: {formatter: t("dq_min", {p: min}), color: "#f9a825",
          position: "insideEndTop"}}]},
      markArea: {silent: true, itemStyle: {color: "rgba(211,47,47,0.28)"},
        data: q.gaps.map((g) => [{xAxis: g.from_ms}, {xAxis: g.to_ms}])}}],
  };
}
function qualityNote(d) {
  const q = d.quality, mins = Math.round(q.gap_after_s / 60);
  const el = document.getElementById("quality-note");
  if (!q.gaps.length) { el.textContent = ""; return; }
  el.textContent = t("dq_gap", {m: mins, rule: q.gap_rule || "2× " + d.device.sample_s + " s"}) + ": " +
    q.gaps.map((g) => `${HHMM(g.from_ms)}–${g.open ? "…" : HHMM(g.to_ms)}`).join(", ");
}
async function load() {
  try {
    const r = await fetch(`/api/devices/${encodeURIComponent(boot.device_id)}/series?hours=${hours}` +
      (endMs ? `&end=${encodeURIComponent(endMs)}` : ""),
      {credentials: "same-origin"});
    const d = await r.json();
    if (!r.ok) throw new Error(d.error || r.status);
    loadError = d.error || null;
    newestMs = d.newest_ms;
    chart.setOption(d.device.kind === "noise" ? noiseOption(d) : gasOption(d), true);
    batteryChart.setOption(batteryOption(d), true);
    qualityChart.setOption(qualityOption(d), true);
    profileNote(d);
    rangeNote(d);
    qualityNote(d);
    document.getElementById("battery-chart").dataset.points = String(d.battery.v.length);
    document.getElementById("quality-chart").dataset.gaps = String(d.quality.gaps.length);
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
window.addEventListener("resize", () => { chart.resize(); batteryChart.resize(); qualityChart.resize(); });
setInterval(banner, 1000);
setInterval(load, 60000);
load();
