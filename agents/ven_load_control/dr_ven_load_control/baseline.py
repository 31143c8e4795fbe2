"""Metered power history (a bounded window, 30 minutes by default) and the pre-event baseline taken from it."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Baseline:
    """A baseline figure: mean kW and how many readings it is made of."""

    kw: float
    samples: int
    window_s: float


class PowerHistory:
    """Samples of metered site power (epoch seconds, kW), oldest first, kept for `keep_s` seconds.

    A sample taken while the VEN had loads shed is marked curtailed; baselines leave those out, so that an
    event right after another one is measured against the site's uncurtailed power."""

    def __init__(self, keep_s: float = 1800.0) -> None:
        if keep_s <= 0:
            raise ValueError(f"keep_s must be > 0, got {keep_s!r}")
        self.keep_s = keep_s
        self._samples: deque[tuple[float, float, bool]] = deque()

    def __len__(self) -> int:
        return len(self._samples)

    def add(self, ts: float, kw: float, curtailed: bool = False) -> None:
        """Record one reading. Non-finite values are refused; an out-of-order reading is dropped."""
        if not (math.isfinite(ts) and math.isfinite(kw)):
            raise ValueError(f"a power sample must be finite, got ({ts!r}, {kw!r})")
        if self._samples and ts < self._samples[-1][0]:
            return
        self._samples.append((ts, kw, curtailed))
        horizon = ts - self.keep_s
        while self._samples and self._samples[0][0] < horizon:
            self._samples.popleft()

    def reflag(self, curtailed: Callable[[float], bool]) -> None:
        """Mark as curtailed every sample whose time `curtailed(ts)` says was (flags are never cleared)."""
        for index, (ts, kw, flag) in enumerate(self._samples):
            if not flag and curtailed(ts):
                self._samples[index] = (ts, kw, True)

    def latest(self) -> tuple[float, float] | None:
        """The newest reading (instant, kW), or None."""
        return self._samples[-1][:2] if self._samples else None

    def oldest(self) -> tuple[float, float] | None:
        """The oldest reading kept (instant, kW), or None."""
        return self._samples[0][:2] if self._samples else None

    def mean(self, start: float, end: float, include_curtailed: bool = False) -> Baseline | None:
        """Average of the samples with start <= ts < end (uncurtailed only unless asked), or None if none."""
        total = 0.0
        count = 0
        for ts, kw, curtailed in self._samples:
            if ts < start:
                continue
            if ts >= end:
                break
            if curtailed and not include_curtailed:
                continue
            total += kw
            count += 1
        if count == 0:
            return None
        return Baseline(kw=total / count, samples=count, window_s=end - start)

    def baseline(self, at: float, window_s: float) -> Baseline | None:
        """The pre-event baseline: the mean power over the `window_s` seconds before `at`."""
        return self.mean(at - window_s, at)

    def samples(self) -> list[tuple[float, float, bool]]:
        """The readings kept: (instant shown, kW, curtailed)."""
        return list(self._samples)
