/* The live chart: site power against baseline, with the event windows, drawn on a canvas. */
"use strict";

const DRChart = (() => {
  const COLORS = { used: "#1f6feb", baseline: "#8b949e", shed: "rgba(46,160,67,0.18)", grid: "#e5e7eb",
                   text: "#57606a", active: "rgba(251,140,0,0.16)", activeEdge: "#fb8c00",
                   other: "rgba(130,80,223,0.10)", otherEdge: "#8250df", now: "#cf222e" };

  function niceStep(range, ticks) {
    const raw = range / ticks;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
    return 10 * mag;
  }

  /* opts: {series: [{ts, usedPowerKw, baselinePowerKw}], events: [{eventId, name, status, startTime, endTime}],
             now: ISO, windowS: seconds shown before now, aheadS: seconds shown after now} */
  function draw(canvas, opts) {
    const dpr = window.devicePixelRatio || 1;
    const cssW = canvas.clientWidth || 800;
    const cssH = Number(canvas.getAttribute("height")) || 280;
    canvas.style.height = cssH + "px";
    canvas.width = Math.round(cssW * dpr);
    canvas.height = Math.round(cssH * dpr);
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, cssW, cssH);

    const now = Date.parse(opts.now) || Date.now();
    const x0 = now - opts.windowS * 1000;
    const x1 = now + (opts.aheadS ?? opts.windowS * 0.2) * 1000;
    const pad = { l: 52, r: 12, t: 12, b: 28 };
    const w = cssW - pad.l - pad.r, h = cssH - pad.t - pad.b;
    const pts = (opts.series || []).map((p) => ({ t: Date.parse(p.ts), u: p.usedPowerKw, b: p.baselinePowerKw }))
      .filter((p) => isFinite(p.t) && p.t >= x0 && p.t <= x1);
    let ymax = 1;
    for (const p of pts) ymax = Math.max(ymax, p.u || 0, p.b || 0);
    ymax *= 1.15;
    const X = (t) => pad.l + (t - x0) / (x1 - x0) * w;
    const Y = (v) => pad.t + h - v / ymax * h;

    // grid and axes
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = COLORS.text;
    g.strokeStyle = COLORS.grid;
    g.lineWidth = 1;
    const ystep = niceStep(ymax, 5);
    g.textAlign = "right"; g.textBaseline = "middle";
    for (let v = 0; v <= ymax; v += ystep) {
      g.beginPath(); g.moveTo(pad.l, Y(v)); g.lineTo(pad.l + w, Y(v)); g.stroke();
      g.fillText(v.toFixed(Number.isInteger(ystep) ? 0 : ystep < 1 ? 2 : 1) + " kW", pad.l - 6, Y(v));
    }
    const tstep = niceStep((x1 - x0) / 60000, 6) * 60000;
    g.textAlign = "center"; g.textBaseline = "top";
    for (let t = Math.ceil(x0 / tstep) * tstep; t <= x1; t += tstep) {
      g.beginPath(); g.moveTo(X(t), pad.t); g.lineTo(X(t), pad.t + h); g.stroke();
      const d = new Date(t);
      g.fillText(d.getHours().toString().padStart(2, "0") + ":" + d.getMinutes().toString().padStart(2, "0"),
                 X(t), pad.t + h + 6);
    }

    // event windows
    let windows = 0;
    const drawn = [];
    for (const ev of opts.events || []) {
      const s = Date.parse(ev.startTime), e = Date.parse(ev.endedAt || ev.endTime);
      if (!isFinite(s) || !isFinite(e) || e < x0 || s > x1) continue;
      const a = X(Math.max(s, x0)), b = X(Math.min(e, x1));
      const active = ev.status === "active";
      g.fillStyle = active ? COLORS.active : COLORS.other;
      g.fillRect(a, pad.t, Math.max(b - a, 2), h);
      g.strokeStyle = active ? COLORS.activeEdge : COLORS.otherEdge;
      g.setLineDash([4, 3]);
      for (const [edge, t] of [[a, s], [b, e]]) {
        if (t >= x0 && t <= x1) { g.beginPath(); g.moveTo(edge, pad.t); g.lineTo(edge, pad.t + h); g.stroke(); }
      }
      g.setLineDash([]);
      g.fillStyle = active ? COLORS.activeEdge : COLORS.otherEdge;
      g.textAlign = "left"; g.textBaseline = "top";
      const label = (ev.name || ev.eventId) + " · " + ev.requestedReductionKw + " kW";
      g.fillText(label, Math.min(a + 4, pad.l + w - 80), pad.t + 4 + (windows % 3) * 14);
      windows++;
      drawn.push(ev.eventId);
    }

    // shed area between baseline and power, then the two lines
    if (pts.length > 1) {
      g.fillStyle = COLORS.shed;
      g.beginPath();
      pts.forEach((p, i) => (i ? g.lineTo(X(p.t), Y(p.b)) : g.moveTo(X(p.t), Y(p.b))));
      for (let i = pts.length - 1; i >= 0; i--) g.lineTo(X(pts[i].t), Y(pts[i].u));
      g.closePath(); g.fill();
    }
    const line = (key, color, dash) => {
      g.strokeStyle = color; g.lineWidth = 2; g.setLineDash(dash);
      g.beginPath();
      let started = false;
      for (const p of pts) {
        const v = p[key];
        if (typeof v !== "number") { started = false; continue; }
        if (started) g.lineTo(X(p.t), Y(v)); else { g.moveTo(X(p.t), Y(v)); started = true; }
      }
      g.stroke(); g.setLineDash([]);
    };
    line("b", COLORS.baseline, [6, 4]);
    line("u", COLORS.used, []);
    if (pts.length === 1) {
      g.fillStyle = COLORS.used; g.beginPath(); g.arc(X(pts[0].t), Y(pts[0].u), 3, 0, 7); g.fill();
    }

    // now
    g.strokeStyle = COLORS.now; g.lineWidth = 1;
    g.beginPath(); g.moveTo(X(now), pad.t); g.lineTo(X(now), pad.t + h); g.stroke();
    if (!pts.length) {
      g.fillStyle = COLORS.text; g.textAlign = "center"; g.textBaseline = "middle";
      g.fillText("no telemetry in this window yet", pad.l + w / 2, pad.t + h / 2);
    }
    canvas.dataset.points = String(pts.length);
    canvas.dataset.windows = String(windows);
    canvas.dataset.eventIds = drawn.join(" ");
    canvas.dataset.drawnAt = new Date(now).toISOString();
  }

  return { draw };
})();
