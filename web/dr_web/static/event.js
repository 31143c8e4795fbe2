/* One event: its fields, live metrics, per-VEN acks and response times, the M&V report, a stop button. */
"use strict";

(() => {
  const { el, kw, time, badge } = DR;
  const eventId = document.getElementById("event-head").dataset.eventId;
  const base = "/api/events/" + encodeURIComponent(eventId);
  const chart = document.getElementById("site-chart");
  const stopButton = document.getElementById("stop-button");
  let event = null;

  stopButton.addEventListener("click", async () => {
    stopButton.disabled = true;
    await DR.stopEvent(eventId, document.getElementById("stop-result"));
    stopButton.disabled = false;
    poller.now();
  });

  function fields(ev) {
    const items = [["Name", ev.name || "–"], ["Start", time(ev.startTime)], ["End", time(ev.endTime)],
      ["Ended", ev.endedAt ? time(ev.endedAt) : "–"], ["Signal", ev.signal + (ev.level != null ? " level " + ev.level : "")],
      ["Targets", ev.allVens ? "all VENs" : (ev.venIds || []).concat(ev.groups || []).join(", ")],
      ["Priority", ev.priority], ["Modification", ev.modificationNumber], ["Program", ev.programId || "–"]];
    return items.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]);
  }

  function participant(p) {
    const ack = p.ok === true ? badge("ok", "online") : p.ok === false ? badge("refused", "offline") : badge("no ack", "unknown");
    return el("tr", { dataset: { venId: p.venId } },
      el("td", {}, p.venId), el("td", {}, badge(p.state)),
      el("td", { class: "num" }, kw(p.allocatedKw)), el("td", { class: "num" }, kw(p.acceptedKw)),
      el("td", { class: "num" }, kw(p.deliveredKw)), el("td", {}, ack),
      el("td", { class: "num" }, kw(p.responseMs, 0)), el("td", { class: "num" }, String(p.attempts ?? "–")),
      el("td", {}, p.error || ""));
  }

  /* The historian's report is shown as it comes: scalars as a list, lists of records as tables. */
  function report(value) {
    const scalars = [], tables = [];
    for (const [key, v] of Object.entries(value)) {
      if (Array.isArray(v) && v.length && typeof v[0] === "object" && v[0] !== null) tables.push([key, v]);
      else if (v !== null && typeof v === "object" && !Array.isArray(v)) tables.push([key, [v]]);
      else scalars.push([key, Array.isArray(v) ? v.join(", ") : v]);
    }
    const out = [el("dl", { class: "fields-list" },
      scalars.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, typeof v === "number" ? String(Math.round(v * 1000) / 1000) : String(v ?? "–"))]))];
    for (const [key, rows] of tables) {
      const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
      const cell = (v) => typeof v === "number" ? String(Math.round(v * 1000) / 1000) : (v !== null && typeof v === "object") ? JSON.stringify(v) : String(v ?? "");
      out.push(el("h3", {}, key), el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c)))),
        el("tbody", {}, rows.slice(0, 200).map((r) => el("tr", {}, cols.map((c) => el("td", {}, cell(r[c]))))))));
    }
    return out;
  }

  async function loadPerformance() {
    const box = document.getElementById("mv");
    try {
      box.replaceChildren(...report(await DR.api("GET", base + "/performance")));
    } catch (err) {
      const why = err.status === 503 ? "The historian (platform.historian) did not answer, so there is no M&V report yet: "
        : err.status === 404 ? "The historian has no report for this event yet: " : "No M&V report: ";
      box.replaceChildren(el("p", { class: "note" }, why + err.message));
    }
  }

  let perfLoadedFor = null;
  const poller = DR.poll(async () => {
    try {
      event = await DR.api("GET", base);
    } catch (err) {
      if (err.status === 404) { DR.setNotes([err.message]); return; }
      throw err;
    }
    DR.setNotes([]);
    const status = document.getElementById("event-status");
    status.textContent = event.status;
    status.className = "badge " + event.status;
    stopButton.hidden = !["far", "near", "active"].includes(event.status);
    document.getElementById("event-fields").replaceChildren(...fields(event));
    const m = await DR.api("GET", base + "/metrics");
    document.getElementById("m-current").textContent = kw(m.currentReductionKw) + " kW";
    document.getElementById("m-requested").textContent = kw(m.requestedReductionKw) + " kW";
    document.getElementById("m-accepted").textContent = kw(m.acceptedKw) + " kW";
    document.getElementById("m-responding").textContent = m.vensResponding + " / " + m.vensTargeted;
    document.getElementById("m-avg").textContent = m.avgResponseMs == null ? "–" : kw(m.avgResponseMs, 0) + " ms";
    DR.fillTable(document.querySelector("#participant-table tbody"), (m.vens || []).map(participant),
                 "no VEN dispatched yet", 9);
    const series = await DR.api("GET", "/api/telemetry/site?minutes=240");
    const now = new Date().toISOString();
    const end = Date.parse(event.endedAt || event.endTime), start = Date.parse(event.startTime);
    const from = Math.min(start - 5 * 60000, Date.now() - 5 * 60000);
    const to = Math.max(Date.now(), end + 2 * 60000);
    DRChart.draw(chart, { series, events: [event], now, windowS: (Date.now() - from) / 1000,
                          aheadS: Math.max(0, (to - Date.now()) / 1000) });
    // the M&V report is worth re-reading while the event runs and once after it ends
    const key = event.status + ":" + Math.floor(Date.now() / 30000);
    if (perfLoadedFor !== key) { perfLoadedFor = key; loadPerformance(); }
  });
})();
