// The silences page: times in CST, the time each silence has left (ticking, from the store's clock), and for
// operators the form: preview what the matchers mute now, confirm, or end a silence. Every change is a POST
// with the X-CSRF-Token header; the server sends it through the alert store's command inbox.
"use strict";
const loadedAt = Date.now();

for (const el of document.querySelectorAll(".ts")) {
  const ns = Number(el.dataset.ns);
  if (ns > 0) el.textContent = fmt.format(new Date(ns / 1e6)) + " CST";
}
function tick() {
  const now = boot.now_ns / 1e6 + (Date.now() - loadedAt);
  for (const el of document.querySelectorAll("td.remaining")) {
    const left = (Number(el.dataset.expiresNs) / 1e6 - now) / 1000;
    el.textContent = left > 0 ? ago(left) : t("expired");
  }
}
tick();
setInterval(tick, 1000);

async function post(url, body) {
  const r = await fetch(url, {method: "POST", credentials: "same-origin",
    headers: {"Content-Type": "application/json", "X-CSRF-Token": boot.csrf}, body: JSON.stringify(body || {})});
  let answer;
  try { answer = await r.json(); } catch (e) { answer = {ok: false, result: `HTTP ${r.status}`}; }
  return {status: r.status, body: answer};
}

if (boot.may_silence) {
  const form = document.getElementById("silence-form");
  const preview = document.getElementById("preview");
  const errEl = document.getElementById("silence-error");

  function draft() {
    const matchers = {};
    for (const key of ["site_id", "device_id", "rule_id"]) {
      const v = document.getElementById("m-" + key).value.trim();
      if (v) matchers[key] = v;
    }
    return {matchers, expires: document.getElementById("expires").value.trim(),
      comment: document.getElementById("comment").value.trim()};
  }
  function li(a) {
    const item = document.createElement("li");
    item.className = "sev-" + a.severity;
    const link = document.createElement("a");
    link.href = "/alerts/" + encodeURIComponent(a.alert_id);
    link.textContent = a.short_id;
    const sev = document.createElement("span");
    sev.className = "sev sev-" + a.severity;
    sev.textContent = t("sev." + a.severity);
    item.append(sev, " ", link, ` · ${a.rule} · ${a.site} · ${a.value}`);
    return item;
  }
  async function runPreview() {
    errEl.textContent = "";
    const {body} = await post("/api/silences/preview", draft());
    if (!body.ok) { preview.hidden = true; errEl.textContent = t("silence_failed", {why: body.result}); return; }
    document.getElementById("preview-what").textContent = t("preview_until", {what: body.labels.join(" · "),
      dur: body.expires, t: fmt.format(new Date(body.until_ns / 1e6)) + " CST"});
    document.getElementById("preview-count").textContent = body.count ? t("preview_n", {n: body.count})
      : t("preview_none");
    document.getElementById("preview-alerts").replaceChildren(...body.alerts.map(li));
    preview.hidden = false;
    preview.dataset.previewed = JSON.stringify(draft().matchers) + draft().expires;
  }
  document.getElementById("silence-preview").addEventListener("click", runPreview);
  // A preview is of these matchers and this duration: once they change, confirm waits for a new preview.
  form.addEventListener("input", () => {
    if (!preview.hidden && preview.dataset.previewed !== JSON.stringify(draft().matchers) + draft().expires) {
      preview.hidden = true;
      errEl.textContent = t("preview_stale");
    }
  });
  document.getElementById("silence-confirm").addEventListener("click", async (ev) => {
    ev.target.disabled = true;
    try {
      const {status, body} = await post("/api/silences", draft());
      if (!body.ok) { errEl.textContent = t("silence_failed", {why: body.result}); return; }
      if (status === 202) { errEl.textContent = body.result; return; }   // queued: the service is not running
      location.href = "/silences?created=" + encodeURIComponent(body.silence_id) + "#silence-" +
        encodeURIComponent(body.silence_id);
    } catch (e) {
      errEl.textContent = t("silence_failed", {why: String(e)});
    } finally {
      ev.target.disabled = false;
    }
  });

  const dialog = document.getElementById("unsilence-dialog");
  let target = null;
  for (const b of document.querySelectorAll(".unsilence-button")) {
    b.addEventListener("click", () => {
      target = b.dataset.silenceId;
      document.getElementById("unsilence-what").textContent = t("unsilence_ask", {id: target}) +
        " (" + b.dataset.what + ")";
      document.getElementById("unsilence-error").textContent = "";
      dialog.showModal();
    });
  }
  document.getElementById("unsilence-cancel").addEventListener("click", (ev) => { ev.preventDefault(); dialog.close(); });
  document.getElementById("unsilence-send").addEventListener("click", async (ev) => {
    ev.preventDefault();
    const err = document.getElementById("unsilence-error");
    try {
      const {status, body} = await post("/api/silences/" + encodeURIComponent(target) + "/unsilence");
      if (!body.ok) { err.textContent = t("unsilence_failed", {why: body.result}); return; }
      if (status === 202) { err.textContent = body.result; return; }
      location.href = "/silences?ended=" + encodeURIComponent(target);
    } catch (e) {
      err.textContent = t("unsilence_failed", {why: String(e)});
    }
  });
  if (boot.autopreview) runPreview();
}
