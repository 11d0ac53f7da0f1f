// The history page's chart: the search's resolved alerts per local day, one stacked bar per day coloured by
// peak severity (the page's table and counts are rendered by the server; this only draws boot.per_day).
"use strict";
(function () {
  const box = document.getElementById("day-chart");
  if (!box || typeof echarts === "undefined") { if (box) box.hidden = true; return; }
  const COLOURS = {red: "#d32f2f", orange: "#ef6c00", yellow: "#f9a825", blue: "#1565c0"};
  const chart = echarts.init(box, "dark", {renderer: "canvas"});
  window.cwDayChart = chart;
  const sevs = ["blue", "yellow", "orange", "red"];   // red on top of each bar, where the eye lands
  chart.setOption({
    animation: false, backgroundColor: "transparent",
    title: {text: t("per_day_chart"), left: 0, top: 0, textStyle: {fontSize: 14, color: "#9aa8b5"}},
    legend: {top: 0, right: 0, textStyle: {fontSize: 13}},
    tooltip: {trigger: "axis", axisPointer: {type: "shadow"}},
    grid: {left: 40, right: 10, top: 30, bottom: 24},
    xAxis: {type: "category", data: boot.days.map((d) => d.slice(5))},
    yAxis: {type: "value", minInterval: 1, splitLine: {lineStyle: {color: "#2a3340"}}},
    series: sevs.map((s) => ({name: t("sev." + s), type: "bar", stack: "day", color: COLOURS[s],
      data: boot.per_day[s] || [], barMaxWidth: 28})),
  });
  box.dataset.ready = "1";   // tests and screen captures wait for this
  window.addEventListener("resize", () => chart.resize());
})();
