"""Priority shed planner: which loads give how many kW to cover a needed amount.

Loads are taken in priority order (lower number first). A continuous load (EV power limit, HVAC setpoint
offset, battery discharge) gives exactly what is still missing; an all-or-nothing load (water heater element,
panel circuit) is taken only when its whole power fits under the need plus the margin. When the ordered pass
still falls short, a skipped all-or-nothing load is taken after all if trimming the continuous allocations
made so far keeps the total within the margin. The total never exceeds `need + margin`.

A continuous load that moves in steps (`step_kw`, e.g. an HVAC setpoint resolution) gets a whole number of
steps, rounded to the nearest when that stays within the margin; a need smaller than half its step is left to
the next load, so a coarse actuator never chases a residual it cannot meet.

The same function plans releases: pass the currently shed amounts as the candidates, the kW to give back as
the need, and `reverse=True` so that the last loads in the shed order are released first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

EPS_KW = 1e-6


@dataclass(frozen=True)
class Candidate:
    """A load the planner may use: priority, what it can give, continuous or all-or-nothing."""

    load_id: str
    priority: int
    available_kw: float
    continuous: bool
    step_kw: float = 0.0  # a continuous load moves in steps of about this much (HVAC: a setpoint increment)


@dataclass
class Plan:
    """Allocations per load for a need, and what was skipped."""

    need_kw: float
    allocations: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def total_kw(self) -> float:
        """The sum of the allocations."""
        return sum(self.allocations.values())

    @property
    def shortfall_kw(self) -> float:
        """How much of the need is not allocated."""
        return max(0.0, self.need_kw - self.total_kw)

    @property
    def overshoot_kw(self) -> float:
        """How much the allocations exceed the need."""
        return max(0.0, self.total_kw - self.need_kw)


def plan(candidates: Iterable[Candidate], need_kw: float, margin_kw: float = 0.0, tolerance_kw: float = 1e-3,
         reverse: bool = False) -> Plan:
    """Allocate `need_kw` over the candidates; see the module docstring for the rules."""
    result = Plan(need_kw=max(0.0, need_kw))
    if result.need_kw <= tolerance_kw:
        return result
    margin_kw = max(0.0, margin_kw)
    ordered = sorted((c for c in candidates if c.available_kw > EPS_KW),
                     key=lambda c: (c.priority, c.load_id), reverse=reverse)
    allocations: dict[str, float] = {}
    skipped: list[Candidate] = []
    remaining = result.need_kw
    for cand in ordered:
        if remaining <= tolerance_kw:
            break
        if cand.continuous:
            take = _in_steps(min(cand.available_kw, remaining), cand, remaining + margin_kw)
            if take <= EPS_KW:
                continue
            allocations[cand.load_id] = take
            remaining -= take
        elif cand.available_kw <= remaining + margin_kw:
            allocations[cand.load_id] = cand.available_kw
            remaining -= cand.available_kw
        else:
            skipped.append(cand)
    if remaining > tolerance_kw:
        by_id = {c.load_id: c for c in ordered}
        for cand in skipped:
            excess = cand.available_kw - remaining
            trim_order = [lid for lid in reversed(list(allocations))
                          if by_id[lid].continuous]
            trimmable = sum(allocations[lid] for lid in trim_order)
            if excess > trimmable + margin_kw + EPS_KW:  # never past need + margin (the module rule)
                continue
            to_trim = min(excess, trimmable)
            for lid in trim_order:
                if to_trim <= EPS_KW:
                    break
                cut = min(allocations[lid], to_trim)
                allocations[lid] -= cut
                to_trim -= cut
                if allocations[lid] <= EPS_KW:
                    del allocations[lid]
            allocations[cand.load_id] = cand.available_kw
            break
    for cand in skipped:
        if cand.load_id not in allocations:
            result.skipped[cand.load_id] = (f"all-or-nothing {cand.available_kw:.3f} kW would overshoot the need by "
                                            f"more than the {margin_kw:.3f} kW margin")
    for lid in [lid for lid, kw in allocations.items() if kw <= EPS_KW]:
        del allocations[lid]
    # keep the priority order in the result
    result.allocations = {c.load_id: allocations[c.load_id] for c in ordered if c.load_id in allocations}
    return result


def _in_steps(kw: float, cand: Candidate, ceiling: float) -> float:
    """`kw` as a whole number of the candidate's steps: the nearest one if it fits under `ceiling` and the
    candidate's availability, else the one below."""
    step = cand.step_kw
    if step <= EPS_KW:
        return kw
    nearest = round(kw / step) * step
    if nearest <= min(ceiling, cand.available_kw) + EPS_KW:
        return max(0.0, nearest)
    return max(0.0, math.floor(kw / step + EPS_KW) * step)
