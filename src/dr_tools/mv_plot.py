"""The M&V chart of one DR event: metered power against each method's baseline, drawn with matplotlib (Agg).

What it shows: the event window shaded, one stepped baseline per method (each interval's value), the metered
power, the reduction against one baseline (CAISO 10-in-10 when computed, else the next of PJM, meter-before,
VEN-reported) filled inside the window, the target (that baseline minus the requested kW) dashed, a legend, axes
with units, times in the M&V time zone, and a title naming the event.
No pyplot and no display: a Figure on an Agg canvas, safe in scripts and threads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import matplotlib.dates as mdates
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

METERED_COLOR = "#193c96"
EVENT_COLOR = "#ffe2be"
REDUCTION_COLOR = "#8fd19e"
METHOD_COLORS = {"meter-before": "#d62728", "caiso-10in10": "#2ca02c", "pjm-high4of5": "#9467bd",
                 "ven-reported": "#ff7f0e"}
METHOD_LABELS = {"meter-before": "Meter-before baseline", "caiso-10in10": "CAISO 10-in-10 baseline",
                 "pjm-high4of5": "PJM high 4 of 5 baseline", "ven-reported": "VEN-reported baseline"}
_OTHER_COLORS = ("#17becf", "#8c564b", "#e377c2", "#7f7f7f")
# the baseline the reduction is filled against: the first of these that the report has
_REFERENCE_ORDER = ("caiso-10in10", "pjm-high4of5", "meter-before", "ven-reported")
_GAP = timedelta(minutes=5)  # metered readings further apart than this are not joined


class PlotError(ValueError):
    """The report has nothing to plot for what was asked."""


@dataclass
class StepSeries:
    """A baseline: one value per interval starting at `starts[i]` (None where unknown)."""

    label: str
    starts: list[datetime]
    interval: timedelta
    values: list[float | None]


@dataclass
class Chart:
    """Everything one M&V chart shows."""

    event_id: str
    subject: str
    window_start: datetime
    window_end: datetime
    metered: list[tuple[datetime, float]]
    baselines: list[StepSeries] = field(default_factory=list)
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    requested_kw: float | None = None
    metered_label: str = "Metered power"
    width_px: int = 1200
    height_px: int = 640
    dpi: int = 100


def _baseline_at(series: StepSeries, t: datetime) -> float:
    for start, value in zip(series.starts, series.values, strict=True):
        if start <= t < start + series.interval:
            return math.nan if value is None else value
    return math.nan


def _metered_runs(points: Sequence[tuple[datetime, float]]) -> list[list[tuple[datetime, float]]]:
    runs: list[list[tuple[datetime, float]]] = []
    for t, v in points:
        if runs and t - runs[-1][-1][0] <= _GAP:
            runs[-1].append((t, v))
        else:
            runs.append([(t, v)])
    return runs


def render(chart: Chart) -> Figure:
    """The chart as a matplotlib Figure (on an Agg canvas)."""
    fig = Figure(figsize=(chart.width_px / chart.dpi, chart.height_px / chart.dpi), dpi=chart.dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    tz = chart.tz
    local_start, local_end = chart.window_start.astimezone(tz), chart.window_end.astimezone(tz)
    ax.axvspan(chart.window_start, chart.window_end, color=EVENT_COLOR, zorder=0, lw=0,
               label=f"Event window {local_start:%H:%M}-{local_end:%H:%M}")
    for index, series in enumerate(chart.baselines):
        color = METHOD_COLORS.get(series.label, _OTHER_COLORS[index % len(_OTHER_COLORS)])
        edges = [mdates.date2num(t) for t in series.starts] + [mdates.date2num(series.starts[-1] + series.interval)] \
            if series.starts else []
        if edges:
            values = [math.nan if v is None else v for v in series.values]
            ax.stairs(values, edges, baseline=None, color=color, lw=2.2, zorder=3,
                      label=METHOD_LABELS.get(series.label, series.label))
    in_window = [(t, v) for t, v in chart.metered if chart.window_start <= t < chart.window_end]
    known = [s for s in chart.baselines if any(v is not None for v in s.values)]
    reference = min(known, key=lambda s: _REFERENCE_ORDER.index(s.label) if s.label in _REFERENCE_ORDER else 99,
                    default=None)
    if reference is not None and in_window:
        times = [t for t, _ in in_window]
        used = [v for _, v in in_window]
        base = [_baseline_at(reference, t) for t in times]
        ax.fill_between(times, used, base, where=[b > u for b, u in zip(base, used, strict=True)],
                        color=REDUCTION_COLOR, alpha=0.6, lw=0, zorder=1, interpolate=True,
                        label=f"Reduction vs {METHOD_LABELS.get(reference.label, reference.label).lower()}")
        if chart.requested_kw:
            target = [b - chart.requested_kw for b in base]
            ax.plot(times, target, color="#444444", lw=1.2, ls="--", zorder=4,
                    label=f"Target: baseline - {chart.requested_kw:g} kW requested")
    for number, run in enumerate(_metered_runs(chart.metered)):
        ax.plot([t for t, _ in run], [v for _, v in run], color=METERED_COLOR, lw=1.5, zorder=5,
                marker="o" if len(chart.metered) < 60 else None, ms=3,
                label=chart.metered_label if number == 0 else None)
    values = [v for _, v in chart.metered] + [v for s in chart.baselines for v in s.values if v is not None]
    if values and min(values) >= 0:
        ax.set_ylim(bottom=0, top=max(values) * 1.12 or 1.0)
    span = _span(chart)
    ax.set_xlim(*span)
    locator = mdates.AutoDateLocator(tz=tz, minticks=5, maxticks=12)
    ax.xaxis.set_major_locator(locator)
    fmt = "%H:%M" if span[1] - span[0] <= timedelta(hours=26) else "%m-%d %H:%M"
    ax.xaxis.set_major_formatter(mdates.DateFormatter(fmt, tz=tz))
    ax.set_xlabel(f"Time ({tz.key})")
    ax.set_ylabel("Power (kW)")
    ax.grid(True, color="#dddddd", lw=0.8, zorder=-1)
    ax.set_axisbelow(True)
    requested = f", {chart.requested_kw:g} kW requested" if chart.requested_kw else ""
    ax.set_title(f"Event {chart.event_id}: {chart.subject}, baseline vs metered power\n"
                 f"{local_start:%Y-%m-%d %H:%M} - {local_end:%H:%M} {tz.key}"
                 f" ({(chart.window_end - chart.window_start).total_seconds() / 60:.0f} min){requested}",
                 fontsize=12)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=9, frameon=False)
    fig.tight_layout()
    return fig


def _span(chart: Chart) -> tuple[datetime, datetime]:
    times = [t for t, _ in chart.metered]
    for series in chart.baselines:
        known = [t for t, v in zip(series.starts, series.values, strict=True) if v is not None]
        times += known + [t + series.interval for t in known]
    pad = (chart.window_end - chart.window_start) / 10
    return min(times + [chart.window_start - pad]), max(times + [chart.window_end + pad])


def png_bytes(chart: Chart) -> bytes:
    """The chart as PNG bytes."""
    import io

    buffer = io.BytesIO()
    render(chart).savefig(buffer, format="png", dpi=chart.dpi)
    return buffer.getvalue()


def write_png(chart: Chart, path: str) -> None:
    """Write the chart as a PNG file."""
    with open(path, "wb") as handle:
        handle.write(png_bytes(chart))


# --- from an event_performance report (include_plot / plot_margin_minutes) ------------------------------------
def plot_source(report: Mapping[str, Any], who: str | None) -> tuple[str, Mapping[str, Any], float | None]:
    """(subject, plot series, requested kW) of a VEN, a meter topic, or by default the first meter, else the VENs."""
    vens, meters = report["vens"], report["meters"]
    if who:
        if who in vens:
            return f"VEN {who}", vens[who]["plot"], vens[who].get("requestedKw")
        if who in meters:
            return f"meter {who}", meters[who]["plot"], report.get("requestedKw")
        raise PlotError(f"--plot {who!r}: not a VEN of the event nor a meter topic")
    if meters:
        topic = next(iter(meters))
        return f"meter {topic}", meters[topic]["plot"], report.get("requestedKw")
    if len(vens) == 1:
        ven = next(iter(vens))
        return f"VEN {ven}", vens[ven]["plot"], vens[ven].get("requestedKw")
    if not vens:
        raise PlotError("the event has no VEN and no meter to plot")
    return f"all {len(vens)} VENs", sum_plots([run["plot"] for run in vens.values()]), report.get("requestedKw")


def sum_plots(plots: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The sum of several VENs' plot series (a baseline interval is unknown when any VEN's is)."""
    fine: dict[str, float] = {}
    for p in plots:
        for t, v in p["fine"]:
            fine[t] = fine.get(t, 0.0) + v
    grid = sorted({t for p in plots for t in p["grid"]})
    baselines: dict[str, list[float | None]] = {}
    for method in sorted({m for p in plots for m in p["baselines"]}):
        sums: dict[str, float | None] = {t: 0.0 for t in grid}
        for p in plots:
            values = dict(zip(p["grid"], p["baselines"].get(method, []), strict=False))
            for t in grid:
                v, s = values.get(t), sums[t]
                sums[t] = None if v is None or s is None else s + v
        baselines[method] = [sums[t] for t in grid]
    return {"grid": grid, "fine": sorted(fine.items()), "baselines": baselines}


def chart_from_report(report: Mapping[str, Any], who: str | None = None, timezone: str | None = None) -> Chart:
    """The chart of an event_performance report computed with plot series."""
    subject, plot, requested = plot_source(report, who)
    if "grid" not in plot:
        raise PlotError("the report was computed without plot series (include_plot)")
    interval = timedelta(minutes=report["intervalMinutes"])
    starts = [datetime.fromisoformat(t) for t in plot["grid"]]
    baselines = [StepSeries(method, starts, interval, list(values)) for method, values in plot["baselines"].items()]
    return Chart(event_id=report["eventId"], subject=subject, tz=ZoneInfo(timezone or report.get("timezone", "UTC")),
                 window_start=datetime.fromisoformat(report["window"]["start"]),
                 window_end=datetime.fromisoformat(report["window"]["end"]),
                 metered=[(datetime.fromisoformat(t), float(v)) for t, v in plot["fine"]], baselines=baselines,
                 requested_kw=requested,
                 metered_label="Used power (VEN telemetry)" if subject.startswith("VEN") else "Metered power")
