"""What the VEN knows of its site, given that platform.driver's readings lag behind its own writes.

platform.driver 2.0 publishes `/all` from its previous poll (measured on the platform): a reading received at
t shows the device as it was at about t - `lag_s` (one scrape period). So every reading is dated by the
instant it shows; the VEN's own writes are kept with their time and laid over older readings (the written
value, and the power the load then draws); the meter "now" is the last reading plus the expected effect of
every write sent since the instant it shows; a reading within `AMBIGUITY_S` of a write may or may not show it
(the caller then reads the meter live); and the periods when loads were shed keep the readings that show them
out of baselines. Everything here that a restarted agent needs is part of `to_state()`.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

from dr_ven_load_control.baseline import Baseline, PowerHistory

AMBIGUITY_S = 0.25  # how precisely the instant a publish shows is known (the driver's poll jitter)
EPS_KW = 1e-4
MAX_PERIODS = 100  # shed periods kept (within the history window)


class SiteView:
    """What the VEN knows of its site's readings, its own writes and their effects."""

    def __init__(self, lag_s: float, history_s: float) -> None:
        self.lag_s = lag_s
        self.history_s = history_s
        self.history = PowerHistory(history_s)
        self.readings: dict[str, tuple[float, dict[str, Any]]] = {}  # path -> (instant shown, values)
        self.meter: tuple[float, float] | None = None  # (instant shown, kW)
        self.meter_live = False
        self.written: dict[tuple[str, str], tuple[Any, float]] = {}  # (path, point) -> (value, when)
        self.reverted: dict[tuple[str, str], float] = {}  # (path, point) -> when a driver revert of it was done
        self.effects: deque[tuple[float, float, int]] = deque()  # (when, meter change kW, sequence number)
        self.last_write_at = float("-inf")
        self.shed_periods: list[list[float | None]] = []  # [start, end]; end None while loads are shed
        self._seq = 0
        self._meter_seq: int | None = None  # a live meter reading shows every effect up to this number

    # --- readings ---------------------------------------------------------------------------------------------
    def device(self, path: str, values: dict[str, Any], now: float, live: bool = False) -> float:
        """Record a device's values; returns the instant they show."""
        shows = now if live else now - self.lag_s
        self.readings[path] = (shows, values)
        return shows

    def meter_reading(self, kw: float, shows: float, now: float, live: bool = False) -> None:
        """A meter value showing the site at `shows`; a live reading newer than it stays the site's power."""
        self.history.add(shows, kw, curtailed=self.curtailed(shows))
        if self.meter is not None and self.meter_live and self.meter[0] > shows:
            return  # a publish of the site before the last live read: history only
        self.meter = (shows, kw)
        self.meter_live = live
        self._meter_seq = self._seq if live else None
        self._prune(now)

    def meter_live_read(self, kw: float, now: float) -> None:
        """A meter value read just now, not a publish: the site as it is, after every write sent so far."""
        if math.isfinite(kw):
            self.meter = (now, kw)
            self.meter_live = True
            self._meter_seq = self._seq

    def reading(self, path: str) -> dict[str, Any] | None:
        """A device's last values with our writes since (or about when) the instant they show laid over them."""
        got = self.readings.get(path)
        if got is None:
            return None
        shows, values = got
        out = dict(values)
        for (wpath, point), (value, at) in self.written.items():
            if wpath == path and at > shows - AMBIGUITY_S:
                out[point] = value
        return out

    def shows_last_write(self, shows: float) -> bool:
        """Does a reading of instant `shows` surely show every write sent so far?"""
        return shows > self.last_write_at + AMBIGUITY_S

    # --- the meter now ----------------------------------------------------------------------------------------
    def meter_now(self) -> float | None:
        """The site's power now: the last meter reading plus the effect of the writes it does not show."""
        if self.meter is None:
            return None
        shows, kw_now = self.meter
        if self._meter_seq is not None:
            return kw_now + sum(kw for _, kw, seq in self.effects if seq > self._meter_seq)
        return kw_now + sum(kw for at, kw, _ in self.effects if at > shows)

    def meter_uncertain(self) -> bool:
        """Was a write sent so close to the instant the last meter reading shows that it may or may not show it?"""
        if self.meter is None or self.meter_live:
            return False
        shows = self.meter[0]
        return any(abs(at - shows) <= AMBIGUITY_S for at, _, _ in self.effects)

    # --- our writes -------------------------------------------------------------------------------------------
    def effect(self, now: float, kw: float) -> None:
        """Expect the meter to change by `kw` (+ = more load) from a write sent now."""
        if abs(kw) > EPS_KW:
            self._seq += 1
            self.effects.append((now, kw, self._seq))
        self._prune(now)

    def sent(self, now: float) -> None:
        """Writes went out now: readings that may predate them are not acted on."""
        self.last_write_at = max(self.last_write_at, now)

    def wrote(self, path: str, point: str, value: Any, now: float) -> None:
        """Record a point value the VEN wrote now."""
        self.written[(path, point)] = (value, now)

    def shows_write(self, path: str, point: str, shows: float) -> bool:
        """Does a reading of instant `shows` surely show the VEN's last write to `path/point`?"""
        got = self.written.get((path, point))
        return got is not None and shows > got[1] + AMBIGUITY_S

    def was_reverted(self, path: str, point: str, now: float) -> None:
        """The driver reverted this point now (a driver's revert goes back to the value it last read)."""
        self.reverted[(path, point)] = now

    def revert_unseen(self, path: str, points: Any) -> bool:
        """Was one of `points` reverted after the instant the device's last reading shows? Written again now, the
        driver would keep that older reading as the value to revert to (the stock Modbus interface does)."""
        shows = self.readings.get(path, (float("-inf"),))[0]
        for point in points:
            at = self.reverted.get((path, point))
            if at is not None:
                if at > shows - AMBIGUITY_S:
                    return True
                del self.reverted[(path, point)]  # a reading shows it: nothing left to wait for
        return False

    # --- shed periods and baselines ---------------------------------------------------------------------------
    def shed_started(self, now: float) -> None:
        """Loads are shed from now (a shed period opens)."""
        if self.shed_periods and self.shed_periods[-1][1] is None:
            return
        last_end = self.shed_periods[-1][1] if self.shed_periods else None
        if last_end is not None and now - last_end <= self.lag_s + AMBIGUITY_S:
            self.shed_periods[-1][1] = None  # so close that no reading can show the gap: one period
            return
        self.shed_periods.append([now, None])
        horizon = now - self.history_s
        self.shed_periods = [p for p in self.shed_periods if p[1] is None or p[1] >= horizon][-MAX_PERIODS:]

    def shed_ended(self, now: float) -> None:
        """No load is shed any more (the open shed period closes)."""
        if self.shed_periods and self.shed_periods[-1][1] is None:
            self.shed_periods[-1][1] = now

    def curtailed(self, shows: float) -> bool:
        """Were loads shed at the instant `shows` (give or take the driver's jitter)?"""
        for start, end in self.shed_periods:
            if start is not None and start - AMBIGUITY_S <= shows and (end is None or shows <= end + AMBIGUITY_S):
                return True
        return False

    def baseline(self, at: float, window_s: float) -> Baseline | None:
        """The mean uncurtailed meter power of the `window_s` before `at`, or None."""
        return self.history.baseline(at, window_s)

    # --- persistence ------------------------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        """What a restarted agent needs of this view."""
        return {"written": [[path, point, value, at] for (path, point), (value, at) in self.written.items()],
                "opEffects": [[at, kw] for at, kw, _ in self.effects],
                "shedPeriods": [list(p) for p in self.shed_periods]}

    def load_state(self, state: dict[str, Any], shedding: bool, now: float) -> None:
        """Take over a previous process's picture; `shedding` when it left loads shed. Raises ValueError,
        TypeError or KeyError on a malformed state."""
        written = {(str(path), str(point)): (value, float(at))
                   for path, point, value, at in state.get("written") or []}
        effects = [(float(at), float(kw)) for at, kw in state.get("opEffects") or []]
        periods: list[list[float | None]] = [[float(start), None if end is None else float(end)]
                                             for start, end in state.get("shedPeriods") or []]
        self.written.update(written)
        for at, kw in effects:  # sent by the previous process, before any live reading of this one (number 0)
            self.effects.append((at, kw, 0))
        if written:
            self.last_write_at = max(self.last_write_at, max(at for _, at in written.values()))
        self.shed_periods = periods + self.shed_periods
        if shedding:
            self.shed_started(now)
        self.history.reflag(self.curtailed)

    def _prune(self, now: float) -> None:
        horizon = now - 2 * self.lag_s - AMBIGUITY_S
        while self.effects and self.effects[0][0] < horizon:
            self.effects.popleft()
