/* Events page: the list with a stop button per open event, and the create form. */
"use strict";

(() => {
  const { el, kw, time, badge } = DR;
  const filter = document.getElementById("status-filter");
  const OPEN = ["far", "near", "active"];
  const METRICS_ROWS = 20;
  const finished = new Map();  // metrics of ended events do not change: fetched once

  async function metricsOf(ev) {
    if (finished.has(ev.eventId)) return finished.get(ev.eventId);
    try {
      const m = await DR.api("GET", "/api/events/" + encodeURIComponent(ev.eventId) + "/metrics");
      if (!OPEN.includes(ev.status)) finished.set(ev.eventId, m);
      return m;
    } catch (err) {
      return null;
    }
  }

  function row(ev, m) {
    const result = el("span", { class: "form-result" });
    const stop = OPEN.includes(ev.status)
      ? el("button", { class: "danger small", onclick: async () => { await DR.stopEvent(ev.eventId, result); poller.now(); } },
           "Stop") : null;
    return el("tr", { dataset: { eventId: ev.eventId } },
      el("td", {}, el("a", { href: "/events/" + encodeURIComponent(ev.eventId) }, ev.eventId)),
      el("td", {}, ev.name || ""),
      el("td", {}, badge(ev.status)),
      el("td", {}, time(ev.startTime)),
      el("td", {}, time(ev.endedAt || ev.endTime)),
      el("td", { class: "num" }, kw(ev.requestedReductionKw, 1)),
      el("td", { class: "num" }, m ? kw(m.currentReductionKw) : "–"),
      el("td", { class: "num" }, m ? m.vensResponding + " / " + m.vensTargeted : "–"),
      el("td", { class: "num" }, m && m.avgResponseMs != null ? kw(m.avgResponseMs, 0) + " ms" : "–"),
      el("td", {}, ev.allVens ? "all" : (ev.venIds || []).concat(ev.groups || []).join(", ")),
      el("td", {}, stop, result));
  }

  const poller = DR.poll(async () => {
    const query = filter.value ? "?status=" + encodeURIComponent(filter.value) : "";
    let events;
    try {
      events = await DR.api("GET", "/api/events/" + query);
      DR.setNotes([]);
    } catch (err) {
      if (err.status === 503 || err.status === 502) { DR.setNotes([err.message]); return; }
      throw err;
    }
    const metrics = await Promise.all(events.map((ev, i) => (i < METRICS_ROWS ? metricsOf(ev) : null)));
    DR.fillTable(document.querySelector("#event-table tbody"), events.map((ev, i) => row(ev, metrics[i])),
                 "no events", 11);
  });
  filter.addEventListener("change", () => poller.now());
  DR.initEventForm(() => poller.now());
})();
