"""A small line chart written as a PNG with the standard library only (zlib + struct): baselines vs metered
power with the event window shaded. Text uses a built-in 5x7 bitmap font (upper case, digits, punctuation)."""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

Color = tuple[int, int, int]
WHITE: Color = (255, 255, 255)
BLACK: Color = (30, 30, 30)
GRID: Color = (225, 225, 225)
SHADE: Color = (255, 226, 190)
METERED: Color = (25, 60, 150)
PALETTE: tuple[Color, ...] = ((214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14), (23, 190, 207))

_FONT_ROWS = {
    "0": (14, 17, 19, 21, 25, 17, 14), "1": (4, 12, 4, 4, 4, 4, 14), "2": (14, 17, 1, 2, 4, 8, 31),
    "3": (31, 2, 4, 2, 1, 17, 14), "4": (2, 6, 10, 18, 31, 2, 2), "5": (31, 16, 30, 1, 1, 17, 14),
    "6": (6, 8, 16, 30, 17, 17, 14), "7": (31, 1, 2, 4, 8, 8, 8), "8": (14, 17, 17, 14, 17, 17, 14),
    "9": (14, 17, 17, 15, 1, 2, 12), "A": (14, 17, 17, 17, 31, 17, 17), "B": (30, 17, 17, 30, 17, 17, 30),
    "C": (14, 17, 16, 16, 16, 17, 14), "D": (28, 18, 17, 17, 17, 18, 28), "E": (31, 16, 16, 30, 16, 16, 31),
    "F": (31, 16, 16, 30, 16, 16, 16), "G": (14, 17, 16, 23, 17, 17, 15), "H": (17, 17, 17, 31, 17, 17, 17),
    "I": (14, 4, 4, 4, 4, 4, 14), "J": (7, 2, 2, 2, 2, 18, 12), "K": (17, 18, 20, 24, 20, 18, 17),
    "L": (16, 16, 16, 16, 16, 16, 31), "M": (17, 27, 21, 21, 17, 17, 17), "N": (17, 17, 25, 21, 19, 17, 17),
    "O": (14, 17, 17, 17, 17, 17, 14), "P": (30, 17, 17, 30, 16, 16, 16), "Q": (14, 17, 17, 17, 21, 18, 13),
    "R": (30, 17, 17, 30, 20, 18, 17), "S": (15, 16, 16, 14, 1, 1, 30), "T": (31, 4, 4, 4, 4, 4, 4),
    "U": (17, 17, 17, 17, 17, 17, 14), "V": (17, 17, 17, 17, 17, 10, 4), "W": (17, 17, 17, 21, 21, 21, 10),
    "X": (17, 17, 10, 4, 10, 17, 17), "Y": (17, 17, 17, 10, 4, 4, 4), "Z": (31, 1, 2, 4, 8, 16, 31),
    " ": (0, 0, 0, 0, 0, 0, 0), ".": (0, 0, 0, 0, 0, 12, 12), ":": (0, 12, 12, 0, 12, 12, 0),
    "-": (0, 0, 0, 31, 0, 0, 0), "/": (0, 1, 2, 4, 8, 16, 0), "%": (24, 25, 2, 4, 8, 19, 3),
    "(": (2, 4, 8, 8, 8, 4, 2), ")": (8, 4, 2, 2, 2, 4, 8), "_": (0, 0, 0, 0, 0, 0, 31),
    "+": (0, 4, 4, 31, 4, 4, 0), ",": (0, 0, 0, 0, 12, 4, 8), "=": (0, 0, 31, 0, 31, 0, 0),
    "?": (14, 17, 1, 2, 4, 0, 4),
}


class Canvas:
    def __init__(self, width: int, height: int, background: Color = WHITE) -> None:
        self.width = width
        self.height = height
        self.pixels = bytearray(bytes(background) * (width * height))

    def set(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i:i + 3] = bytes(color)

    def get(self, x: int, y: int) -> Color:
        i = (y * self.width + x) * 3
        return self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]

    def fill(self, x0: int, y0: int, x1: int, y1: int, color: Color) -> None:
        x0, x1 = max(0, min(x0, x1)), min(self.width, max(x0, x1))
        y0, y1 = max(0, min(y0, y1)), min(self.height, max(y0, y1))
        row = bytes(color) * (x1 - x0)
        for y in range(y0, y1):
            i = (y * self.width + x0) * 3
            self.pixels[i:i + len(row)] = row

    def line(self, x0: float, y0: float, x1: float, y1: float, color: Color, width: int = 1, dash: int = 0) -> None:
        x0, y0, x1, y1 = round(x0), round(y0), round(x1), round(y1)
        dx, dy = abs(x1 - x0), -abs(y1 - y0)
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        step = 0
        half = width // 2
        while True:
            if not dash or (step // dash) % 2 == 0:
                self.fill(x0 - half, y0 - half, x0 - half + width, y0 - half + width, color)
            if x0 == x1 and y0 == y1:
                break
            e2 = 2 * err
            if e2 >= dy:
                err += dy
                x0 += sx
            if e2 <= dx:
                err += dx
                y0 += sy
            step += 1

    def text(self, x: int, y: int, text: str, color: Color = BLACK, scale: int = 2) -> int:
        """Draw text with its top-left at (x, y); returns the x after it."""
        for char in text.upper():
            rows = _FONT_ROWS.get(char, _FONT_ROWS["?"])
            for r, bits in enumerate(rows):
                for c in range(5):
                    if bits & (16 >> c):
                        self.fill(x + c * scale, y + r * scale, x + (c + 1) * scale, y + (r + 1) * scale, color)
            x += 6 * scale
        return x

    @staticmethod
    def text_width(text: str, scale: int = 2) -> int:
        return len(text) * 6 * scale

    def png(self) -> bytes:
        raw = b"".join(b"\x00" + bytes(self.pixels[y * self.width * 3:(y + 1) * self.width * 3])
                       for y in range(self.height))

        def chunk(tag: bytes, data: bytes) -> bytes:
            return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 6)) + \
            chunk(b"IEND", b"")


@dataclass
class StepSeries:
    """A baseline: one value per interval (None where unknown)."""

    label: str
    starts: list[datetime]
    interval: timedelta
    values: list[float | None]


@dataclass
class Chart:
    title: str
    window_start: datetime
    window_end: datetime
    metered: list[tuple[datetime, float]]
    baselines: list[StepSeries] = field(default_factory=list)
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    width: int = 1100
    height: int = 560


def _nice_step(span: float, ticks: int = 5) -> float:
    raw = span / ticks
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for mult in (1, 2, 2.5, 5, 10):
        if raw <= mult * magnitude:
            return mult * magnitude
    return 10 * magnitude


def render(chart: Chart) -> Canvas:
    """Draw the chart: metered power (line), baselines (steps), the event window (shaded)."""
    canvas = Canvas(chart.width, chart.height)
    left, right, top, bottom = 80, chart.width - 20, 60, chart.height - 60
    # the x range covers the event and whatever data there is around it (not empty margins)
    times = [t for t, _ in chart.metered]
    times += [t for b in chart.baselines for t, v in zip(b.starts, b.values, strict=True) if v is not None]
    times += [t + b.interval for b in chart.baselines for t, v in zip(b.starts, b.values, strict=True)
              if v is not None]
    pad = (chart.window_end - chart.window_start) / 10
    t0 = min(times + [chart.window_start - pad])
    t1 = max(times + [chart.window_end + pad])
    values = [v for _, v in chart.metered] + [v for b in chart.baselines for v in b.values if v is not None]
    vmax = max(values + [0.0]) * 1.1 or 1.0
    vmin = min(values + [0.0])
    step = _nice_step(vmax - vmin)
    vmin = math.floor(vmin / step) * step
    vmax = math.ceil(vmax / step) * step
    span_s = max(1.0, (t1 - t0).total_seconds())

    def px(t: datetime) -> float:
        return left + (right - left) * (t - t0).total_seconds() / span_s

    def py(v: float) -> float:
        return bottom - (bottom - top) * (v - vmin) / (vmax - vmin)

    canvas.fill(round(px(chart.window_start)), top, round(px(chart.window_end)), bottom, SHADE)
    v = vmin
    while v <= vmax + 1e-9:
        y = round(py(v))
        canvas.line(left, y, right, y, GRID)
        label = f"{v:g}"
        canvas.text(left - 8 - canvas.text_width(label), y - 7, label)
        v += step
    tick = timedelta(minutes=next((m for m in (1, 2, 5, 10, 15, 30, 60, 120, 240, 480, 1440)
                                   if span_s / (m * 60) <= 10), 2880))
    first = t0.astimezone(chart.tz)
    mark = first.replace(minute=0, second=0, microsecond=0)
    while mark < first:
        mark += tick
    while mark <= t1:
        x = round(px(mark))
        canvas.line(x, top, x, bottom, GRID)
        label = mark.astimezone(chart.tz).strftime("%H:%M")
        if x + canvas.text_width(label) // 2 < chart.width:
            canvas.text(x - canvas.text_width(label) // 2, bottom + 10, label)
        mark += tick
    canvas.line(left, top, left, bottom, BLACK)
    canvas.line(left, bottom, right, bottom, BLACK)
    canvas.text(left, 14, chart.title, scale=2)
    canvas.text(8, top - 22, "KW")
    canvas.text(right - canvas.text_width(chart.tz.key) , bottom + 34, chart.tz.key)
    for index, series in enumerate(chart.baselines):
        color = PALETTE[index % len(PALETTE)]
        prev: tuple[float, float] | None = None
        for start, value in zip(series.starts, series.values, strict=True):
            if value is None:
                prev = None
                continue
            x0, x1, y = px(start), px(start + series.interval), py(value)
            if prev is not None:
                canvas.line(prev[0], prev[1], x0, y, color, width=2)
            canvas.line(x0, y, x1, y, color, width=3)
            prev = (x1, y)
    previous: tuple[datetime, float] | None = None
    for t, value in chart.metered:
        if previous is not None and (t - previous[0]) <= timedelta(minutes=5):
            canvas.line(px(previous[0]), py(previous[1]), px(t), py(value), METERED, width=2)
        elif len(chart.metered) < 60:  # sparse data: mark each reading
            canvas.fill(round(px(t)) - 2, round(py(value)) - 2, round(px(t)) + 3, round(py(value)) + 3, METERED)
        previous = (t, value)
    legend = [("METERED", METERED)] + [(s.label, PALETTE[i % len(PALETTE)]) for i, s in enumerate(chart.baselines)]
    x = left
    for label, color in legend + [("EVENT", SHADE)]:
        canvas.fill(x, 40, x + 18, 52, color)
        x = canvas.text(x + 24, 40, label) + 18
    return canvas


def write_png(chart: Chart, path: str) -> None:
    with open(path, "wb") as handle:
        handle.write(render(chart).png())


def series_from(points: Sequence[tuple[str, float]]) -> list[tuple[datetime, float]]:
    return [(datetime.fromisoformat(t), v) for t, v in points]
