// synthloop web app: live updates over server-sent events, and the write actions.
// No framework and nothing fetched from the internet: the lab network may have no route out.
"use strict";
(function () {
  const content = document.getElementById("content");
  const flash = document.getElementById("flash");
  const live = document.getElementById("live");
  const eventList = document.getElementById("event-list");
  const tokenInput = document.getElementById("token");
  const TOKEN_KEY = "synthloop-token";

  const userInput = document.getElementById("user");
  const USER_KEY = "synthloop-user";
  if (tokenInput) {
    tokenInput.value = sessionStorage.getItem(TOKEN_KEY) || "";
    tokenInput.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, tokenInput.value));
  }
  if (userInput) {
    userInput.value = localStorage.getItem(USER_KEY) || "";
    userInput.addEventListener("input", () => localStorage.setItem(USER_KEY, userInput.value));
  }

  function say(text, ok) {
    flash.innerHTML = "";
    const p = document.createElement("p");
    p.className = ok ? "ok" : "err";
    p.textContent = text;
    flash.appendChild(p);
  }

  // Re-render the page body from the server (same HTML a reload would give), unless the user is typing.
  let refreshTimer = null;
  async function refresh() {
    refreshTimer = null;
    const active = document.activeElement;
    if (active && content.contains(active) && active.tagName === "INPUT") {
      refreshTimer = setTimeout(refresh, 1500);
      return;
    }
    try {
      const resp = await fetch(location.href, { headers: { "Accept": "text/html" } });
      if (!resp.ok) return;
      const doc = new DOMParser().parseFromString(await resp.text(), "text/html");
      const fresh = doc.getElementById("content");
      if (fresh) { content.innerHTML = fresh.innerHTML; fillLazy(); }
      document.body.dataset.refreshed = String(Date.now());
    } catch (err) { /* the next event retries */ }
  }
  // Slow figures (the lab-time replay) load after the page, so they never hold a page up.
  async function fillLazy() {
    const el = document.getElementById("lab-days");
    if (!el) return;
    try {
      const resp = await fetch(el.dataset.src);
      const data = await resp.json();
      el.textContent = data.lab_days === null ? "–" : data.lab_days.toFixed(2);
    } catch (err) { el.textContent = "?"; }
  }
  fillLazy();

  function scheduleRefresh() { if (!refreshTimer) refreshTimer = setTimeout(refresh, 300); }

  async function write(method, url, body) {
    const token = tokenInput ? tokenInput.value.trim() : "";
    const headers = { "Content-Type": "application/json" };
    if (token) headers["Authorization"] = "Bearer " + token;
    const payload = Object.assign({}, body || {});
    if (userInput && userInput.value.trim()) payload.user = userInput.value.trim();
    const resp = await fetch(url, { method, headers, body: JSON.stringify(payload) });
    let data = {};
    try { data = await resp.json(); } catch (err) { /* not JSON */ }
    if (!resp.ok) throw new Error(data.detail || ("HTTP " + resp.status));
    return data;
  }

  content.addEventListener("click", async (ev) => {
    const control = ev.target.closest("button[data-campaign-action]");
    if (control) {
      const action = control.dataset.campaignAction;
      if (action === "stop" && !confirm("Stop the campaign? Unstarted experiments are cancelled.")) return;
      try {
        const c = await write("POST", "/api/campaign/" + action, {});
        say("campaign is now " + c.status, true);
        scheduleRefresh();
      } catch (err) { say(action + ": " + err.message, false); }
      return;
    }
    const button = ev.target.closest("button[data-action]");
    if (!button) return;
    const id = button.dataset.id, action = button.dataset.action;
    let body = {};
    if (action === "reject") {
      const reason = prompt("Why reject experiment " + id + "?", "not worth the furnace time");
      if (reason === null) return;
      body = { reason: reason || "rejected in the web app" };
    }
    button.disabled = true;
    try {
      const exp = await write("POST", "/api/experiments/" + id + "/" + action, body);
      say("experiment " + id + " is now " + exp.state, true);
      scheduleRefresh();
    } catch (err) { say(action + " experiment " + id + ": " + err.message, false); button.disabled = false; }
  });

  content.addEventListener("submit", async (ev) => {
    const form = ev.target.closest("form.edit");
    if (!form) return;
    ev.preventDefault();
    const recipeId = form.dataset.recipeId;
    const body = { segment: -1 };
    const sp = form.elements.setpoint_c.value, dw = form.elements.dwell_min.value;
    if (sp !== "") body.setpoint_c = Number(sp);
    if (dw !== "") body.dwell_min = Number(dw);
    try {
      const r = await write("PATCH", "/api/recipes/" + recipeId + "/conditions", body);
      const seg = r.profile[r.profile.length - 1];
      say("recipe " + recipeId + ": " + seg.setpoint_c + " °C for " + seg.dwell_min + " min", true);
      document.activeElement.blur();
      scheduleRefresh();
    } catch (err) { say("edit recipe " + recipeId + ": " + err.message, false); }
  });

  function showEvent(e) {
    const li = document.createElement("li");
    const what = (e.entity ? e.entity + " " + (e.entity_id ?? "") : "") +
      (e.to_state ? " " + (e.from_state || "") + "→" + e.to_state : "");
    li.textContent = "#" + e.id + " " + e.kind + " " + what + (e.actor ? " (" + e.actor + ")" : "");
    eventList.prepend(li);
    while (eventList.children.length > 100) eventList.lastChild.remove();
  }

  if (window.EventSource) {
    const after = document.body.dataset.lastEventId || "0";
    const source = new EventSource("/api/events/stream?after=" + encodeURIComponent(after));
    source.onopen = () => { live.className = "live on"; live.title = "live: connected"; };
    source.onerror = () => { live.className = "live off"; live.title = "live: reconnecting"; };
    source.addEventListener("campaign", (msg) => {
      try { showEvent(JSON.parse(msg.data)); } catch (err) { return; }
      scheduleRefresh();
    });
  }
})();
