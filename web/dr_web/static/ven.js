/* One VEN: every load from its latest telemetry (power, shed action and amount, constraint, override);
   one GET /api/telemetry/vens/<venId>/loads per refresh. */
"use strict";

(() => {
  const { el, kw, age, badge } = DR;
  const venId = document.getElementById("ven-head").dataset.venId;
  const path = "/api/telemetry/vens/" + encodeURIComponent(venId) + "/loads";

  function flags(load) {
    const out = [];
    if (load.override) out.push(badge("override", "override"));
    if (load.optOut) out.push(badge("opted out", "optedOut"));
    if (load.critical) out.push(badge("critical", "critical"));
    return out.length ? out : "–";
  }

  function constraint(load) {
    if (!load.constraint) return "–";
    return el("span", { class: load.limiting ? "limiting" : "", title: load.constraintType || "" },
      load.constraint, load.limiting ? el("span", { class: "muted" }, " (limiting)") : null);
  }

  function loadRow(load) {
    return el("tr", { dataset: { load: load.load, state: load.state } },
      el("td", {}, load.load),
      el("td", {}, load.kind || ""),
      el("td", {}, badge(load.state, "load-" + load.state)),
      el("td", { class: "num" }, kw(load.powerKw)),
      el("td", { class: "num" }, kw(load.shedKw)),
      el("td", { class: "num" }, kw(load.capacityKw)),
      el("td", { class: "action" }, load.action || "–"),
      el("td", { class: "constraint" }, constraint(load)),
      el("td", { class: "flags" }, flags(load)));
  }

  function render(data) {
    DR.setNotes([]);
    const status = data.online ? "online" : "offline";
    const badgeNode = document.getElementById("ven-status");
    badgeNode.className = "badge " + status;
    badgeNode.textContent = status;
    document.getElementById("ven-updated").textContent = "last telemetry " + age(data.ts);
    const fields = document.getElementById("ven-fields");
    fields.replaceChildren(
      el("dt", {}, "Event"), el("dd", {}, data.eventId
        ? el("a", { href: "/events/" + encodeURIComponent(data.eventId) }, data.eventId) : "none"),
      el("dt", {}, "Opted out"), el("dd", {}, data.optOut ? "yes" : "no"),
      el("dt", {}, "Loads shed"), el("dd", {}, String(data.loads.filter((l) => l.state === "shed").length)
        + " of " + data.loads.length));
    document.getElementById("v-used").textContent = kw(data.usedPowerKw) + " kW";
    document.getElementById("v-baseline").textContent = kw(data.baselinePowerKw) + " kW";
    document.getElementById("v-shed").textContent = kw(data.shedPowerKw) + " kW";
    document.getElementById("v-requested").textContent = kw(data.requestedReductionKw) + " kW";
    DR.fillTable(document.querySelector("#load-table tbody"), data.loads.map(loadRow),
                 "this VEN reports no per-load detail", 9);
  }

  DR.poll(async () => {
    try {
      render(await DR.api("GET", path));
    } catch (err) {
      if (err.status !== 404) throw err;
      DR.setNotes(["No telemetry from this VEN since dr.web started (or it is not registered with dr.vtn)."]);
    }
  });
})();
