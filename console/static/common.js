// What every live console page shares: its boot data (the words of the page's language), times in China
// Standard Time as the duty officers read them, and ages. Loaded before the page's own script.
"use strict";
const boot = JSON.parse(document.getElementById("boot").textContent);
const W = boot.words;
const fmt = new Intl.DateTimeFormat("zh-CN", {timeZone: "Asia/Shanghai", month: "2-digit", day: "2-digit",
  hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});

function t(key, args) {
  let s = W[key] || key;
  for (const [k, v] of Object.entries(args || {})) s = s.replace("{" + k + "}", v);
  return s;
}
function ago(seconds) {
  seconds = Math.max(0, Math.round(seconds));
  const h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
  if (h) return `${h}h${String(m).padStart(2, "0")}m`;
  if (m) return `${m}m${String(s).padStart(2, "0")}s`;
  return `${s}s`;
}
// InfluxDB as the console last found it (status.influx, pinged by the server every few seconds): the text of a
// red banner while it is unreachable, else "". Every live page's banner asks this after the broker and service.
function influxDown(status) {
  const x = status && status.influx;
  if (!x || x.ok !== false) return "";
  return t("influx_down", {t: fmt.format(new Date(x.since * 1000)),
    ago: ago(status.now - x.since), why: x.error || "?"});
}

// The banner of every live page (board, map, site) for the console's last status: its text and whether it is
// red. The console itself, the broker link, the service, InfluxDB, then the age of the data, in that order: a
// stale or broken feed never looks like an all-clear. `tail` adds to a red text (the board: how old its data is).
function feedBanner(status, streamUp, statusAt, tail) {
  const more = tail || (() => "");
  if (!streamUp || !status || Date.now() - statusAt > 10000) return {text: t("console_down"), bad: true};
  if (!status.connected) return {text: t("link_down", {why: status.link_error || "?"}) + more(), bad: true};
  if (status.service !== "online") {
    return {text: t(status.service === "offline" ? "service_down" : "service_unknown") + more(), bad: true};
  }
  if (influxDown(status)) return {text: influxDown(status) + more(), bad: true};
  if (!status.last_heard) return {text: t("no_data"), bad: true};
  // The server's own clock says how old the last message is; our clock only adds the time since.
  const age = status.now - status.last_heard + (Date.now() - statusAt) / 1000;
  if (age > boot.stale_after_s) return {text: t("stale", {ago: ago(age)}) + more(), bad: true};
  return {text: t("data_as_of", {t: fmt.format(new Date(status.last_heard * 1000)), ago: ago(age)}), bad: false};
}
