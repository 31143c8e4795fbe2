"""Day types for baseline day matching: weekdays, Saturdays, Sundays and holidays.

The default holidays are the six NERC holidays that PJM and most day-matching baselines use: New Year's Day,
Memorial Day (last Monday of May), Independence Day, Labor Day (first Monday of September), Thanksgiving Day
(fourth Thursday of November) and Christmas Day. A fixed-date holiday on a Sunday is observed on the Monday
after; on a Saturday it is not moved (NERC's rule). Sites add their own dates (config `mv.holidays`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta
from functools import lru_cache

WEEKDAY = "weekday"
SATURDAY = "saturday"
SUNDAY_HOLIDAY = "sunday/holiday"


def _nth_weekday(year: int, month: int, weekday: int, n: int) -> date:
    first = date(year, month, 1)
    return first + timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))


def _last_weekday(year: int, month: int, weekday: int) -> date:
    nxt = date(year + (month == 12), month % 12 + 1, 1)
    last = nxt - timedelta(days=1)
    return last - timedelta(days=(last.weekday() - weekday) % 7)


def _observed(day: date) -> date:
    return day + timedelta(days=1) if day.weekday() == 6 else day


@lru_cache(maxsize=64)
def nerc_holidays(year: int) -> frozenset[date]:
    """The NERC holidays of a year (observed dates)."""
    return frozenset({
        _observed(date(year, 1, 1)),
        _last_weekday(year, 5, 0),
        _observed(date(year, 7, 4)),
        _nth_weekday(year, 9, 0, 1),
        _nth_weekday(year, 11, 3, 4),
        _observed(date(year, 12, 25)),
    })


class HolidayCalendar:
    """NERC holidays (unless disabled) plus a site's own dates."""

    def __init__(self, extra: Iterable[date] = (), nerc: bool = True) -> None:
        self._extra = frozenset(extra)
        self._nerc = nerc

    def is_holiday(self, day: date) -> bool:
        """True for a NERC or site holiday."""
        return day in self._extra or (self._nerc and day in nerc_holidays(day.year))

    def is_business_day(self, day: date) -> bool:
        """True for a weekday that is not a holiday."""
        return day.weekday() < 5 and not self.is_holiday(day)

    def day_kind(self, day: date) -> str:
        """weekday, saturday or sunday/holiday (a holiday on a Saturday counts as a holiday)."""
        if self.is_holiday(day) or day.weekday() == 6:
            return SUNDAY_HOLIDAY
        if day.weekday() == 5:
            return SATURDAY
        return WEEKDAY
