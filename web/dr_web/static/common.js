/* volttron-dr status page: helpers shared by every page (API calls, formatting, token, event form). */
"use strict";

const DR = (() => {
  const TOKEN_KEY = "drWebToken";
  const body = document.body;
  const refreshMs = Number(body.dataset.refreshMs) || 2000;

  function token() { return localStorage.getItem(TOKEN_KEY) || ""; }

  class ApiError extends Error {
    constructor(status, payload) {
      super((payload && payload.error) || `HTTP ${status}`);
      this.status = status;
      this.field = payload && payload.field;
      this.code = payload && payload.code;
    }
  }

  async function api(method, path, payload) {
    const headers = { "Accept": "application/json" };
    const init = { method, headers, cache: "no-store" };
    if (payload !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(payload);
    }
    if (method !== "GET" && token()) headers["Authorization"] = "Bearer " + token();
    let response;
    try {
      response = await fetch(path, init);
    } catch (err) {
      throw new ApiError(0, { error: "dr.web did not answer (" + err.message + ")", code: "unavailable" });
    }
    let data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : value);
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function kw(value, digits = 2) {
    return (typeof value === "number" && isFinite(value)) ? value.toFixed(digits) : "–";
  }

  function time(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleString();
  }

  function clock(iso) {
    if (!iso) return "–";
    const d = new Date(iso);
    return isNaN(d) ? String(iso) : d.toLocaleTimeString();
  }

  function age(iso, nowIso) {
    if (!iso) return "never";
    const seconds = ((nowIso ? Date.parse(nowIso) : Date.now()) - Date.parse(iso)) / 1000;
    if (!isFinite(seconds)) return String(iso);
    if (seconds < 1) return "just now";
    if (seconds < 90) return Math.round(seconds) + " s ago";
    if (seconds < 5400) return Math.round(seconds / 60) + " min ago";
    return Math.round(seconds / 3600) + " h ago";
  }

  function badge(text, kind) { return el("span", { class: "badge " + (kind || text) }, text); }

  function fillTable(tbody, rows, emptyText, columns) {
    tbody.replaceChildren();
    if (!rows.length) {
      tbody.append(el("tr", {}, el("td", { colspan: columns, class: "muted" }, emptyText)));
      return;
    }
    for (const row of rows) tbody.append(row);
  }

  function setNotes(notes) {
    const box = document.getElementById("notes");
    if (!box) return;
    box.replaceChildren(...notes.map((text) => el("p", { class: "note" }, text)));
  }

  function connection(ok, message) {
    const bar = document.getElementById("conn");
    bar.hidden = ok;
    bar.textContent = ok ? "" : message;
    if (ok) document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
  }

  /* Run `fn` now and again `refreshMs` after each run finishes; a failed run shows a bar, never stops it. */
  function poll(fn) {
    let timer = null;
    async function tick() {
      clearTimeout(timer);
      try {
        await fn();
        connection(true);
      } catch (err) {
        connection(false, "Live update failed: " + err.message);
      }
      timer = setTimeout(tick, refreshMs);
    }
    tick();
    return { now: tick };
  }

  function initToken() {
    const form = document.getElementById("token-form");
    const input = document.getElementById("token-input");
    const state = document.getElementById("token-state");
    const show = () => { state.textContent = token() ? "saved" : "not set"; };
    input.value = token();
    show();
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      const value = input.value.trim();
      if (value) localStorage.setItem(TOKEN_KEY, value); else localStorage.removeItem(TOKEN_KEY);
      show();
    });
  }

  /* The create-event form: POST /api/events/ with the start relative to now. */
  function initEventForm(onCreated) {
    const form = document.getElementById("event-form");
    if (!form) return;
    const result = document.getElementById("event-form-result");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const data = new FormData(form);
      const startIn = Number(data.get("startInMin") || 0);
      const payload = {
        startTime: new Date(Date.now() + startIn * 60000).toISOString(),
        durationS: Math.round(Number(data.get("durationMin")) * 60),
        requestedReductionKw: Number(data.get("requestedReductionKw")),
      };
      const name = String(data.get("name") || "").trim();
      if (name) payload.name = name;
      const vens = String(data.get("venIds") || "").split(/[\s,]+/).filter((v) => v && v.toLowerCase() !== "all");
      if (vens.length) payload.venIds = vens; else payload.allVens = true;  // a fleet-wide event says so
      result.className = "form-result";
      result.textContent = "creating…";
      try {
        const event = await api("POST", "/api/events/", payload);
        result.className = "form-result ok";
        result.replaceChildren("created ", el("a", { href: "/events/" + encodeURIComponent(event.eventId) },
          event.eventId), " (" + event.status + ")");
        if (onCreated) onCreated(event);
      } catch (err) {
        result.className = "form-result error";
        result.textContent = err.status === 401 ? "Refused: set the API token above (" + err.message + ")"
          : err.message;
      }
    });
  }

  async function stopEvent(eventId, resultNode) {
    try {
      const event = await api("POST", "/api/events/" + encodeURIComponent(eventId) + "/stop");
      if (resultNode) { resultNode.className = "form-result ok"; resultNode.textContent = "stopped: " + event.status; }
      return event;
    } catch (err) {
      if (resultNode) {
        resultNode.className = "form-result error";
        resultNode.textContent = err.status === 401 ? "Refused: set the API token above (" + err.message + ")"
          : err.message;
      }
      return null;
    }
  }

  initToken();
  return { api, el, kw, time, clock, age, badge, fillTable, setNotes, poll, initEventForm, stopEvent, refreshMs };
})();
