"""The synthetic meter history generator, the PNG chart, and scripts/mv_report.py end to end on SQLite."""

from __future__ import annotations

import importlib.util
import struct
import zlib
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from statistics import mean

import pytest
from dr_historian.mv.calendar import HolidayCalendar
from dr_historian.plot import METERED, SHADE, Chart, StepSeries, render
from dr_historian.synth import MeterProfile, generate

ROOT = Path(__file__).resolve().parents[2]
UTC = timezone.utc
START = datetime(2026, 7, 6, tzinfo=UTC)  # a Monday


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def decode_png(data: bytes) -> tuple[int, int, bytes]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(data):
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        assert struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])[0] == zlib.crc32(tag + body) & 0xFFFFFFFF
        if tag == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
            assert body[8:10] == b"\x08\x02"
        elif tag == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    assert len(raw) == height * (1 + width * 3)
    return width, height, raw


def pixel(raw: bytes, width: int, x: int, y: int) -> tuple[int, int, int]:
    i = y * (1 + width * 3) + 1 + x * 3
    return raw[i], raw[i + 1], raw[i + 2]


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
def test_chart_png_shades_the_event_and_draws_the_series():
    t0 = datetime(2026, 7, 15, 12, tzinfo=UTC)
    metered = [(t0 + timedelta(minutes=i), 4.0 if 120 <= i < 180 else 6.0) for i in range(300)]
    starts = [t0 + timedelta(minutes=15 * i) for i in range(20)]
    chart = Chart("EV1 TEST", t0 + timedelta(hours=2), t0 + timedelta(hours=3), metered,
                  [StepSeries("CAISO", starts, timedelta(minutes=15), [6.0] * 20)], width=600, height=300)
    width, height, raw = decode_png(render(chart).png())
    assert (width, height) == (600, 300)
    colors = {pixel(raw, width, x, y) for x in range(width) for y in range(height)}
    assert SHADE in colors and METERED in colors
    # along a row no series passes through, the event hour (14:00-15:00 of 12:00-17:00) is shaded, the rest not
    left, right = 80, 580

    def x_at(minutes: float) -> int:
        return round(left + (right - left) * minutes / 300)

    inside = [pixel(raw, width, x, 70) for x in range(x_at(125), x_at(175))]
    assert sum(c == SHADE for c in inside) > 0.8 * len(inside)
    assert all(pixel(raw, width, x, 70) != SHADE for x in range(left + 1, x_at(115)))
    assert all(pixel(raw, width, x, 70) != SHADE for x in range(x_at(185), right))


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
    width, height, _ = decode_png(png.read_bytes())
    assert (width, height) == (1100, 560)
    assert report.main(["ev-t1", "--db", str(db), "--method", "pjm-high4of5", "--json", "--no-png"]) == 0
    assert '"pjm-high4of5"' in capsys.readouterr().out
    assert report.main(["nope", "--db", str(db), "--no-png"]) == 1
    assert "no event" in capsys.readouterr().err
    assert report.main(["ev-t1", "--db", str(tmp_path / "missing.sqlite"), "--no-png"]) == 1
    assert "no historian database" in capsys.readouterr().err
    assert not (tmp_path / "missing.sqlite").exists()
