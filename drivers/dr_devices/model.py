"""Base class of every simulated device: simulated clock, point table, validated reads and writes."""
from __future__ import annotations

import abc
import random
import time
from collections.abc import Mapping
from typing import ClassVar

from .points import ConfigError, PointError, PointSpec, Value, check_range, coerce


class DeviceModel(abc.ABC):
    """A device whose state advances with simulated time.

    Simulated time runs `time_scale` times faster than the wall clock handed to `sync`. `start_hour` is the simulated
    local hour of day at creation (default: the wall clock's current local hour); profiles such as the outdoor
    temperature use it. `seed` makes random events (hot-water draws, EV arrivals) repeatable.
    """

    kind: ClassVar[str] = ""
    #: longest simulated step handed to `_step`; None means the model integrates any step exactly.
    max_step_s: ClassVar[float | None] = None

    def __init__(self, *, time_scale: float = 1.0, start_hour: float | None = None, seed: int | None = None) -> None:
        if not time_scale > 0:
            raise ConfigError(f"{self.kind}.time_scale", f"time_scale must be > 0, got {time_scale!r}")
        if start_hour is None:
            now = time.localtime()
            start_hour = now.tm_hour + now.tm_min / 60 + now.tm_sec / 3600
        if not 0 <= start_hour < 24:
            raise ConfigError(f"{self.kind}.start_hour", f"start_hour must be in [0, 24), got {start_hour!r}")
        self.time_scale = float(time_scale)
        self.start_hour = float(start_hour)
        self.sim_seconds = 0.0
        self.rng = random.Random(seed)
        self._wall: float | None = None
        self._specs: dict[str, PointSpec] = {}

    # -- time ---------------------------------------------------------------------------------------------------
    @property
    def hour_of_day(self) -> float:
        return (self.start_hour + self.sim_seconds / 3600.0) % 24.0

    def sync(self, wall_now: float) -> None:
        """Advance to wall-clock time `wall_now` (seconds, monotonic); the first call only sets the reference."""
        if self._wall is None:
            self._wall = wall_now
            return
        elapsed = wall_now - self._wall
        if elapsed <= 0:
            return
        self._wall = wall_now
        self.advance(elapsed * self.time_scale)

    def advance(self, dt_s: float) -> None:
        """Advance the simulation by `dt_s` simulated seconds."""
        remaining = float(dt_s)
        while remaining > 0:
            step = remaining if self.max_step_s is None else min(remaining, self.max_step_s)
            self._step(step)
            self.sim_seconds += step
            remaining -= step

    @abc.abstractmethod
    def _step(self, dt_s: float) -> None:
        """Advance the physics by dt_s simulated seconds (at most max_step_s)."""

    # -- power --------------------------------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def power_kw(self) -> float:
        """Electrical power drawn now, kW; negative when the device feeds the site (battery discharge)."""

    # -- points -------------------------------------------------------------------------------------------------
    def _define(self, spec: PointSpec) -> None:
        self._specs[spec.name] = spec

    @property
    def points(self) -> Mapping[str, PointSpec]:
        return self._specs

    def spec(self, name: str) -> PointSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise PointError(f"{name}: not a point of this {self.kind}; points: {', '.join(self._specs)}") from None

    def read(self, name: str) -> Value:
        return self.spec(name).getter()

    def write(self, name: str, value: object) -> Value:
        """Validate and apply a write; on any error nothing changes. Returns the point's new value."""
        spec = self.spec(name)
        if spec.setter is None:
            raise PointError(f"{name}: read only")
        typed = coerce(spec, value)
        if spec.kind == "float":
            check_range(name, float(typed), spec.minimum, spec.maximum, spec.units)
        spec.setter(typed)
        return spec.getter()

    @abc.abstractmethod
    def defaults(self) -> dict[str, Value]:
        """Value of every writable point as configured: what revert returns to."""
