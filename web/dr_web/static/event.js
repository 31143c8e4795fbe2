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
      el("td", {}, el("a", { href: "/vens/" + encodeURIComponent(p.venId), title: "which loads this VEN shed" },
                      p.venId)), el("td", {}, badge(p.state)),
      el("td", { class: "num" }, kw(p.allocatedKw)), el("td", { class: "num" }, kw(p.acceptedKw)),
      el("td", { class: "num" }, kw(p.deliveredKw)), el("td", {}, ack),
      el("td", { class: "num" }, kw(p.responseMs, 0)), el("td", { class: "num" }, String(p.attempts ?? "–")),
      el("td", {}, p.error || ""));
  }

  const num = (v, d = 2) => (typeof v === "number" && isFinite(v)) ? v.toFixed(d) : "–";

  /* platform.historian's event_performance: for the total, each VEN and each site meter, one row per baseline
     method (baseline and metered energy, average and peak reduction, percent of requested). */
  function mvRows(label, run) {
    return Object.entries((run && run.methods) || {}).map(([method, m]) => el("tr", {},
      el("td", {}, label), el("td", {}, method),
      el("td", { class: "num" }, num(m.baselineKwh, 3)), el("td", { class: "num" }, num(m.actualKwh, 3)),
      el("td", { class: "num" }, num(m.avgReductionKw)), el("td", { class: "num" }, num(m.peakReductionKw)),
      el("td", { class: "num" }, m.percentOfRequested == null ? "–" : num(m.percentOfRequested, 1) + " %"),
      el("td", { class: "muted" }, m.error || "")));
  }

  /* The chosen baseline method and its accuracy: platform.historian backcasts it on the non-event days before
     the event at the event's hours (relative RMSE, bias, share of days within 10 %). */
  function accuracyText(a) {
    if (!a || !a.chosenMethod) return "–";
    if (a.error) return a.chosenMethod + " (accuracy unknown: " + a.error + ")";
    if (!a.days) return a.chosenMethod + " (no non-event day to check it on yet)";
    const pct = (v) => (typeof v === "number" && isFinite(v)) ? (100 * v).toFixed(1) + " %" : "–";
    return a.chosenMethod + ": relative RMSE " + pct(a.relativeRmse) + ", bias " + pct(a.bias) + ", within 10 % on "
      + pct(a.within10Pct) + " of " + a.days + " non-event days" + (a.under20 === false ? " (above 20 %)" : "");
  }

  function mvReport(r) {
    const head = el("dl", { class: "fields-list" },
      el("dt", {}, "Window"), el("dd", {}, r.window ? time(r.window.start) + " – " + time(r.window.end) : "–"),
      el("dt", {}, "Requested"), el("dd", {}, num(r.requestedKw) + " kW"),
      el("dt", {}, "Interval"), el("dd", {}, (r.intervalMinutes ?? "–") + " min, " + (r.timezone || "")),
      el("dt", {}, "Chosen method"), el("dd", { id: "mv-accuracy" }, accuracyText(r.accuracy)));
    const rows = [...mvRows("total", r.total)];
    for (const [venId, run] of Object.entries(r.vens || {})) rows.push(...mvRows(venId, run));
    for (const [topic, run] of Object.entries(r.meters || {})) rows.push(...mvRows(topic, run));
    const table = el("table", { class: "grid", id: "mv-table" },
      el("thead", {}, el("tr", {}, ["Scope", "Method", "Baseline kWh", "Metered kWh", "Avg reduction kW",
        "Peak reduction kW", "Of requested", "Note"].map((h, i) => el("th", { class: i > 1 && i < 7 ? "num" : "" }, h)))),
      el("tbody", {}, rows));
    return [head, table];
  }

  /* Any other report shape is shown as it comes: scalars as a list, lists of records as tables. */
  function genericReport(value) {
    const scalars = [], tables = [];
    for (const [key, v] of Object.entries(value)) {
      if (Array.isArray(v) && v.length && typeof v[0] === "object" && v[0] !== null) tables.push([key, v]);
      else if (v !== null && typeof v === "object" && !Array.isArray(v)) tables.push([key, [v]]);
      else scalars.push([key, Array.isArray(v) ? v.join(", ") : v]);
    }
    const cell = (v) => typeof v === "number" ? String(Math.round(v * 1000) / 1000)
      : (v !== null && typeof v === "object") ? JSON.stringify(v) : String(v ?? "");
    const out = [el("dl", { class: "fields-list" }, scalars.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, cell(v))]))];
    for (const [key, rows] of tables) {
      const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
      out.push(el("h3", {}, key), el("table", { class: "grid" },
        el("thead", {}, el("tr", {}, cols.map((c) => el("th", {}, c)))),
        el("tbody", {}, rows.slice(0, 200).map((r) => el("tr", {}, cols.map((c) => el("td", {}, cell(r[c]))))))));
    }
    return out;
  }

  function report(value) {
    return value && value.total && value.vens ? mvReport(value) : genericReport(value || {});
  }

  async function loadPerformance() {
    const box = document.getElementById("mv");
    try {
      box.replaceChildren(...report(await DR.api("GET", base + "/performance")));
    } catch (err) {
      const why = err.status === 503 ? "The historian (platform.historian) did not answer, so there is no M&V report yet: "
        : err.status === 404 ? "The historian has no report for this event yet: "
        : "The historian could not compute a report for this event: ";
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
    // the M&V report is re-read every 10 s while the event is open or the report is missing, and at once
    // when the status changes
    const settled = !["far", "near", "active"].includes(event.status) && document.getElementById("mv-table");
    const key = event.status + ":" + (settled ? "" : Math.floor(Date.now() / 10000));
    if (perfLoadedFor !== key) { perfLoadedFor = key; loadPerformance(); }
  });
})();
