"""Realistic synthetic meter history for tests, demos and benchmarks (seeded, so a run can be repeated).

Demand at local time t = base load + the daily shape of the building kind (residential: morning and evening
peaks, later and fuller on weekends and holidays; office: occupied hours on business days only) + cooling
load proportional to the outdoor temperature above a balance point + noise. The temperature has a seasonal
mean, a day-to-day weather anomaly (AR(1)), and a diurnal swing peaking mid-afternoon. Noise is an AR(1)
minute-scale wander plus white measurement noise. Demand never goes below zero. `readings` also gives the
outdoor temperature (degrees Fahrenheit, the unit of CalTRACK's regressions) that drove each reading's cooling.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from dr_historian.mv.calendar import HolidayCalendar

UTC = timezone.utc
KINDS = ("residential", "office")


@dataclass(frozen=True)
class MeterProfile:
    """The parameters of a synthetic meter (building kind, loads, weather, noise)."""

    kind: str = "residential"
    base_kw: float = 0.5
    shape_kw: float = 2.0            # height of the daily shape's peaks
    cooling_kw_per_c: float = 0.3    # cooling load per degree above the balance point
    balance_c: float = 22.0
    mean_temp_c: float = 20.0        # seasonal mean (mid-year)
    seasonal_swing_c: float = 8.0    # +- around the mean over the year (warmest late July)
    diurnal_swing_c: float = 6.0     # +- around the day's mean (warmest 15:00)
    weather_sd_c: float = 2.5        # day-to-day anomaly
    noise_kw: float = 0.08           # white measurement noise (standard deviation)
    wander_kw: float = 0.15          # minute-scale AR(1) wander (stationary standard deviation)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


def _bump(hour: float, center: float, width: float) -> float:
    return math.exp(-0.5 * ((hour - center) / width) ** 2)


def daily_shape(kind: str, hour: float, business_day: bool) -> float:
    """0..1 relative load of the building kind at a local hour of day."""
    if kind == "office":
        if not business_day:
            return 0.08
        occupied = 1.0 / (1.0 + math.exp(-(hour - 7.5) * 3)) * 1.0 / (1.0 + math.exp((hour - 18.0) * 3))
        return 0.1 + 0.85 * occupied * (1.0 - 0.12 * _bump(hour, 12.5, 0.7))
    if business_day:
        return 0.15 + 0.55 * _bump(hour, 7.25, 1.0) + 0.25 * _bump(hour, 12.5, 2.5) + 0.9 * _bump(hour, 19.0, 1.8)
    return 0.2 + 0.45 * _bump(hour, 9.5, 1.5) + 0.5 * _bump(hour, 13.5, 3.0) + 0.85 * _bump(hour, 19.0, 2.0)


class WeatherModel:
    """Outdoor temperature: seasonal mean + per-day AR(1) anomaly + diurnal sine."""

    def __init__(self, profile: MeterProfile, rng: random.Random) -> None:
        self.profile = profile
        self.rng = rng
        self._anomaly: dict[date, float] = {}
        self._last: float = 0.0

    def anomaly(self, day: date) -> float:
        """The day's weather anomaly (AR(1) from the previous day's)."""
        if day not in self._anomaly:
            self._last = 0.7 * self._last + self.rng.gauss(0.0, self.profile.weather_sd_c * math.sqrt(1 - 0.49))
            self._anomaly[day] = self._last
        return self._anomaly[day]

    def temperature(self, local: datetime) -> float:
        """The outdoor temperature at a local time."""
        p = self.profile
        season = p.mean_temp_c + p.seasonal_swing_c * math.cos(2 * math.pi * (local.timetuple().tm_yday - 205) / 365)
        hour = local.hour + local.minute / 60
        diurnal = p.diurnal_swing_c * math.cos(2 * math.pi * (hour - 15.0) / 24)
        return season + self.anomaly(local.date()) + diurnal


def fahrenheit(celsius: float) -> float:
    """Degrees Celsius in degrees Fahrenheit."""
    return celsius * 9.0 / 5.0 + 32.0


def generate(start: datetime, end: datetime, step_s: int = 60, profile: MeterProfile | None = None,
             tz: ZoneInfo | str = "UTC", seed: int = 1, calendar: HolidayCalendar | None = None,
             ) -> Iterator[tuple[datetime, float]]:
    """(UTC time, kW) readings every `step_s` seconds over [start, end)."""
    for t, kw, _ in readings(start, end, step_s, profile, tz, seed, calendar):
        yield t, kw


def readings(start: datetime, end: datetime, step_s: int = 60, profile: MeterProfile | None = None,
             tz: ZoneInfo | str = "UTC", seed: int = 1, calendar: HolidayCalendar | None = None,
             ) -> Iterator[tuple[datetime, float, float]]:
    """(UTC time, kW, outdoor temperature in deg F) every `step_s` seconds over [start, end); the kW are
    exactly `generate`'s for the same arguments."""
    profile = profile or MeterProfile()
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    calendar = calendar or HolidayCalendar()
    rng = random.Random(seed)
    weather = WeatherModel(profile, rng)
    phi = math.exp(-step_s / 900.0)  # the wander decorrelates over ~15 minutes
    wander = 0.0
    wander_sd = profile.wander_kw * math.sqrt(1 - phi * phi)
    t = start.astimezone(UTC)
    step = timedelta(seconds=step_s)
    while t < end:
        local = t.astimezone(zone)
        hour = local.hour + local.minute / 60 + local.second / 3600
        shape = daily_shape(profile.kind, hour, calendar.is_business_day(local.date()))
        temperature = weather.temperature(local)
        cooling = profile.cooling_kw_per_c * max(0.0, temperature - profile.balance_c)
        wander = phi * wander + rng.gauss(0.0, wander_sd)
        value = profile.base_kw + profile.shape_kw * shape + cooling + wander + rng.gauss(0.0, profile.noise_kw)
        yield t, round(max(0.0, value), 4), round(fahrenheit(temperature), 2)
        t += step
