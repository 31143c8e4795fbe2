"""The synthetic meter history generator, the M&V chart (matplotlib), and scripts/mv_report.py end to end on SQLite.

The chart of a synthetic event is written to test-artifacts/mv_plot/ (ignored by git; VDR_ARTIFACTS overrides
the folder) and its path printed with the run's measured figures."""

from __future__ import annotations

import importlib.util
import io
import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from statistics import mean

import matplotlib.dates as mdates
import pytest
from dr_historian.mv.calendar import HolidayCalendar
from dr_historian.mv.performance import MvOptions, event_performance
from dr_historian.schema import Point
from dr_historian.store import Store
from dr_historian.writer import Writer
from dr_tools.mv_plot import (
    EVENT_COLOR,
    METERED_COLOR,
    METHOD_COLORS,
    Chart,
    PlotError,
    StepSeries,
    chart_from_report,
    png_bytes,
    render,
)
from dr_tools.synth import MeterProfile, generate
from matplotlib.colors import to_rgb
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]
UTC = timezone.utc
START = datetime(2026, 7, 6, tzinfo=UTC)  # a Monday


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- generator -------------------------------------------------------------------------------------------
def test_generator_is_seeded_and_non_negative():
    a = list(generate(START, START + timedelta(days=2), 60, seed=3))
    assert a == list(generate(START, START + timedelta(days=2), 60, seed=3))
    assert a != list(generate(START, START + timedelta(days=2), 60, seed=4))
    assert len(a) == 2 * 1440 and all(v >= 0 for _, v in a)
    assert a[1][0] - a[0][0] == timedelta(minutes=1)


def test_office_load_follows_business_days_and_hours():
    readings = list(generate(START, START + timedelta(days=7), 300, MeterProfile(kind="office", cooling_kw_per_c=0)))
    weekday_noon = mean(v for t, v in readings if t.weekday() < 5 and 11 <= t.hour < 14)
    weekday_night = mean(v for t, v in readings if t.weekday() < 5 and t.hour < 5)
    weekend_noon = mean(v for t, v in readings if t.weekday() >= 5 and 11 <= t.hour < 14)
    assert weekday_noon > 3 * weekday_night and weekday_noon > 3 * weekend_noon


def test_residential_evening_peak_and_holiday_like_weekend():
    profile = MeterProfile(cooling_kw_per_c=0, noise_kw=0, wander_kw=0)
    cal = HolidayCalendar([date(2026, 7, 8)])
    day = {t: v for t, v in generate(START, START + timedelta(days=7), 900, profile, seed=1, calendar=cal)}
    monday = [day[START + timedelta(hours=h)] for h in range(24)]
    assert max(range(24), key=lambda h: monday[h]) == 19
    holiday = [day[datetime(2026, 7, 8, h, tzinfo=UTC)] for h in range(24)]
    sunday = [day[datetime(2026, 7, 12, h, tzinfo=UTC)] for h in range(24)]
    assert holiday == pytest.approx(sunday)


def test_hotter_weather_means_more_load():
    cool = mean(v for _, v in generate(START, START + timedelta(days=3), 600, MeterProfile(cooling_kw_per_c=0)))
    warm = mean(v for _, v in generate(START, START + timedelta(days=3), 600, MeterProfile(cooling_kw_per_c=0.5)))
    assert warm > cool + 0.1


# --- chart ---------------------------------------------------------------------------------------------
def _rgb(color: str) -> tuple[int, int, int]:
    r, g, b = to_rgb(color)
    return round(r * 255), round(g * 255), round(b * 255)


def _image(data: bytes) -> Image.Image:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(data)).convert("RGB")


def _x_pixel(fig, ax, t: datetime) -> int:
    x, _ = ax.transData.transform((mdates.date2num(t), 0))
    return round(x)


def _ax_rows(fig, ax) -> tuple[int, int]:
    bbox = ax.get_window_extent()
    height = fig.bbox.height
    return round(height - bbox.y1), round(height - bbox.y0)


def test_chart_shades_the_event_window_and_draws_each_series():
    t0 = datetime(2026, 7, 15, 12, tzinfo=UTC)
    metered = [(t0 + timedelta(minutes=i), 4.0 if 120 <= i < 180 else 6.0) for i in range(300)]
    starts = [t0 + timedelta(minutes=15 * i) for i in range(20)]
    chart = Chart("ev-1", "VEN home-1", t0 + timedelta(hours=2), t0 + timedelta(hours=3), metered,
                  [StepSeries("caiso-10in10", starts, timedelta(minutes=15), [6.5] * 20),
                   StepSeries("meter-before", starts, timedelta(minutes=15), [None] * 8 + [6.0] * 12)],
                  requested_kw=2.0, width_px=900, height_px=480)
    fig = render(chart)
    ax = fig.axes[0]
    image = _image(png_bytes(chart))
    assert image.size == (900, 480)
    colors = set(image.getdata())
    for color in (EVENT_COLOR, METERED_COLOR, METHOD_COLORS["caiso-10in10"], METHOD_COLORS["meter-before"]):
        assert _rgb(color) in colors, color
    # a row near the top of the axes (above every series): shaded inside the event hour, not outside it
    top, _ = _ax_rows(fig, ax)
    row = top + 3
    inside = [image.getpixel((x, row)) for x in range(_x_pixel(fig, ax, t0 + timedelta(minutes=125)),
                                                       _x_pixel(fig, ax, t0 + timedelta(minutes=175)))]
    assert sum(c == _rgb(EVENT_COLOR) for c in inside) > 0.9 * len(inside)
    outside = [image.getpixel((x, row)) for x in range(_x_pixel(fig, ax, t0 + timedelta(minutes=5)),
                                                        _x_pixel(fig, ax, t0 + timedelta(minutes=110)))]
    assert not any(c == _rgb(EVENT_COLOR) for c in outside)
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == "Event window 14:00-15:00" and "Metered power" in legend
    assert "CAISO 10-in-10 baseline" in legend and "Meter-before baseline" in legend
    assert any(text.startswith("Target: baseline - 2 kW") for text in legend)
    assert ax.get_ylabel() == "Power (kW)" and ax.get_xlabel() == "Time (UTC)"
    assert ax.get_title().startswith("Event ev-1: VEN home-1")


def _artifact_dir() -> Path:
    folder = Path(os.environ.get("VDR_ARTIFACTS") or ROOT / "test-artifacts") / "mv_plot"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_event_report_chart_is_a_real_png(tmp_path, figure):
    """A synthetic 46-day history, one event, event_performance with plot series, the chart from it."""
    store = Store(f"sqlite:///{tmp_path / 'h.sqlite'}")
    store.setup()
    end = datetime(2026, 7, 16, tzinfo=UTC)
    ev_start, ev_end, kw = datetime(2026, 7, 15, 14, tzinfo=UTC), datetime(2026, 7, 15, 15, tzinfo=UTC), 1.5
    points = []
    for ts, value in generate(end - timedelta(days=46), end, 300, MeterProfile(), seed=7):
        used = max(0.0, value - (kw if ev_start <= ts < ev_end else 0.0))
        points += [Point("demo/meter/PowerKw", ts, used), Point("dr/telemetry/home-1/usedPowerKw", ts, used),
                   Point("dr/telemetry/home-1/baselinePowerKw", ts, value)]
    store.write(points)
    command = {"op": "event", "correlationId": "ev-art-home-1", "eventId": "ev-art", "venId": "home-1",
               "requestedReductionKw": kw, "startTime": ev_start.isoformat(), "until": ev_end.isoformat(),
               "issuedAt": ev_start.isoformat()}
    assert Writer(store).publish([{"timestamp": ev_start, "topic": "dr/cmd/home-1", "value": command, "meta": {}}])
    report = event_performance(store, "ev-art", MvOptions(meter_topics=("demo/meter/PowerKw",),
                                                          plot_margin_minutes=120))
    store.dispose()
    with pytest.raises(PlotError):
        chart_from_report(report, "nobody")
    paths = []
    for who in ("demo/meter/PowerKw", "home-1"):
        chart = chart_from_report(report, who)
        data = png_bytes(chart)
        path = _artifact_dir() / f"mv_ev-art_{who.replace('/', '_')}.png"
        path.write_bytes(data)
        paths.append(str(path))
        image = _image(data)
        assert image.size == (1200, 640) and 30_000 < len(data) < 2_000_000
        colors = set(image.getdata())
        assert len(colors) > 50  # antialiased lines, text and fills, not a blank canvas
        for method in ("meter-before", "caiso-10in10", "pjm-high4of5"):
            assert _rgb(METHOD_COLORS[method]) in colors, method
        assert _rgb(EVENT_COLOR) in colors and _rgb(METERED_COLOR) in colors
        shaded = sum(1 for c in image.getdata() if c == _rgb(EVENT_COLOR))
        assert shaded > 0.02 * 1200 * 640  # the event hour of a 5-hour span
    figure("M&V chart artifacts", ", ".join(paths))


# --- scripts end to end ----------------------------------------------------------------------------------
def test_generator_and_report_scripts(tmp_path, capsys):
    db = tmp_path / "h.sqlite"
    gen = load_script("gen_meter_history")
    assert gen.main(["--db", str(db), "--days", "46", "--step", "300", "--end", "2026-07-16T00:00Z",
                     "--ven", "home-1", "--event", "2026-07-15T14:00/60/1.5", "--event-id", "ev-t1"]) == 0
    assert "event ev-t1: home-1 sheds 1.5 kW" in capsys.readouterr().out
    report = load_script("mv_report")
    png = tmp_path / "ev.png"
    assert report.main(["ev-t1", "--db", str(db), "--png", str(png), "--meter", "demo/meter/PowerKw"]) == 0
    out = capsys.readouterr().out
    assert "Event ev-t1: 2026-07-15 14:00 - 15:00 UTC (60 min)" in out
    for method in ("meter-before", "caiso-10in10", "pjm-high4of5", "ven-reported"):
        assert method in out
    ven_rows = [line for line in out.splitlines() if "ven-reported" in line]
    assert "1.50" in ven_rows[0] and "100.0" in ven_rows[0]  # the shed equals the reported baseline minus use
    assert _image(png.read_bytes()).size == (1200, 640)
    assert report.main(["ev-t1", "--db", str(db), "--method", "pjm-high4of5", "--json", "--no-png"]) == 0
    assert '"pjm-high4of5"' in capsys.readouterr().out
    assert report.main(["nope", "--db", str(db), "--no-png"]) == 1
    assert "no event" in capsys.readouterr().err
    assert report.main(["ev-t1", "--db", str(tmp_path / "missing.sqlite"), "--no-png"]) == 1
    assert "no historian database" in capsys.readouterr().err
    assert not (tmp_path / "missing.sqlite").exists()


def test_site_database_is_found_from_the_checkout(monkeypatch):
    from dr_tools import sitedb

    monkeypatch.setenv("VDR_REPO", str(ROOT))
    assert sitedb.repo_root() == ROOT
    config = sitedb.resolve(None, "demo")
    assert config.backend == "sqlite" and config.url.endswith("/data/historian.sqlite")
    with pytest.raises(FileNotFoundError):
        sitedb.resolve(None, "no-such-site")
    assert sitedb.resolve("/tmp/x.sqlite", "demo").url == "sqlite:////tmp/x.sqlite"
