// Times on the alert page in China Standard Time, as the duty officers read them.
"use strict";
const fmt = new Intl.DateTimeFormat("zh-CN", {timeZone: "Asia/Shanghai", year: "numeric", month: "2-digit",
  day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
for (const el of document.querySelectorAll(".ts")) {
  const ms = el.dataset.ms ? Number(el.dataset.ms) : el.dataset.ns ? Number(el.dataset.ns) / 1e6 : Number(el.dataset.s) * 1000;
  if (ms > 0) el.textContent = fmt.format(new Date(ms)) + " CST";
}
