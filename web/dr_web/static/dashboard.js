/* Dashboard: VENs, a banner per event, the live chart; one GET /api/dashboard per refresh. */
"use strict";

(() => {
  const { el, kw, clock, age, badge } = DR;
  const chart = document.getElementById("site-chart");
  const minutesSelect = document.getElementById("chart-minutes");
  let last = null;

  function banner(ev, now) {
    const active = ev.status === "active";
    const end = Date.parse(ev.endTime), start = Date.parse(ev.startTime), t = Date.parse(now);
    const when = active ? "ends in " + Math.max(0, Math.round((end - t) / 60000)) + " min (" + clock(ev.endTime) + ")"
      : "starts in " + Math.max(0, Math.round((start - t) / 60000)) + " min (" + clock(ev.startTime) + ")";
    return el("div", { class: "event-banner " + (active ? "active" : "upcoming"), dataset: { eventId: ev.eventId } },
      el("strong", {}, active ? "DR event active" : ev.status === "near" ? "DR event starting soon" : "DR event scheduled"),
      el("a", { href: "/events/" + encodeURIComponent(ev.eventId) }, ev.name || ev.eventId),
      el("span", {}, "shed " + kw(ev.requestedReductionKw, 1) + " kW"),
      el("span", {}, when),
      el("span", { class: "muted" }, ev.allVens ? "all VENs" : (ev.venIds || []).concat(ev.groups || []).join(", ")));
  }

  function venRow(ven, now) {
    const tel = ven.telemetry || {};
    const status = ven.status || (ven.online ? "online" : "offline");
    return el("tr", { dataset: { venId: ven.venId } },
      el("td", {}, el("a", { href: "/vens/" + encodeURIComponent(ven.venId), title: "loads of this VEN" }, ven.venId),
         ven.registered ? null : el("span", { class: "muted" }, " (registry unknown)")),
      el("td", {}, ven.name || ""),
      el("td", {}, badge(status)),
      el("td", { title: tel.ts || "" }, age(tel.ts || ven.lastSeen, now)),
      el("td", { class: "num" }, kw(tel.usedPowerKw ?? ven.usedPowerKw)),
      el("td", { class: "num" }, kw(tel.baselinePowerKw)),
      el("td", { class: "num" }, kw(tel.shedPowerKw ?? ven.shedPowerKw)),
      el("td", {}, tel.eventId ? el("a", { href: "/events/" + encodeURIComponent(tel.eventId) }, tel.eventId) : ""));
  }

  function render(data) {
    last = data;
    DR.setNotes(data.notes || []);
    const banners = document.getElementById("banners");
    banners.replaceChildren(...data.events.map((ev) => banner(ev, data.now)));
    const site = data.site.latest;
    document.getElementById("stat-used").textContent = site ? kw(site.usedPowerKw) + " kW" : "–";
    document.getElementById("stat-baseline").textContent = site ? kw(site.baselinePowerKw) + " kW" : "–";
    document.getElementById("stat-shed").textContent = site ? kw(site.shedPowerKw) + " kW" : "–";
    document.getElementById("stat-vens").textContent = data.counts.online + " / " + data.counts.vens;
    document.getElementById("stat-events").textContent = String(data.counts.activeEvents);
    DR.fillTable(document.querySelector("#ven-table tbody"), data.vens.map((v) => venRow(v, data.now)),
                 "no VEN registered or heard yet", 8);
    drawChart();
  }

  function drawChart() {
    if (!last) return;
    DRChart.draw(chart, { series: last.site.series, events: last.events, now: last.now,
                          windowS: Number(minutesSelect.value) * 60 });
  }

  const poller = DR.poll(async () => {
    render(await DR.api("GET", "/api/dashboard?minutes=" + encodeURIComponent(minutesSelect.value)));
  });
  minutesSelect.addEventListener("change", () => poller.now());
  window.addEventListener("resize", drawChart);
  DR.initEventForm(() => poller.now());
})();
