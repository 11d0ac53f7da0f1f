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
