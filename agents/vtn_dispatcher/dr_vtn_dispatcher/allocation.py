"""Splitting an event's requested kW across its VENs.

Two rules (chosen per program in the config):
  equal     every VEN gets the same share;
  weighted  shares are proportional to each VEN's available capacity (its latest reported
            `availableShedKw`, else its registered `maxShedKw`; a VEN with neither weighs the mean of the
            known ones, or 1 when none is known).
Under both rules a VEN never gets more than its known capacity: what it cannot take is spread over the
others (water-filling). What nobody can take is reported as `unallocated_kw`.

Re-allocation spreads a shortfall (a VEN rejected, or accepted less) over the VENs that still have
headroom (capacity minus what they already carry; unknown capacity counts as unbounded), by the same rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dr_vtn_dispatcher.config import ALLOCATION_EQUAL, ALLOCATION_WEIGHTED

EPS = 1e-9


@dataclass(frozen=True)
class Candidate:
    """A VEN that may get a share: its capacity and what it already has."""
    ven_id: str
    capacity_kw: float | None  # None: unknown (unbounded)
    allocated_kw: float = 0.0  # what it already carries (for re-allocation)

    @property
    def headroom_kw(self) -> float | None:
        """kW it can still take (None: unknown capacity)."""
        if self.capacity_kw is None:
            return None
        return max(0.0, self.capacity_kw - self.allocated_kw)


@dataclass(frozen=True)
class Allocation:
    """Shares by venId and what could not be placed."""
    shares: dict[str, float]
    unallocated_kw: float

    @property
    def total_kw(self) -> float:
        """Sum of the shares."""
        return sum(self.shares.values())


def water_fill(amount: float, weights: dict[str, float], caps: dict[str, float | None]) -> Allocation:
    """Split `amount` proportionally to `weights`, never giving a key more than its cap (None = no cap)."""
    shares = {key: 0.0 for key in weights}
    remaining = max(0.0, amount)
    open_keys = [key for key in weights if caps.get(key) is None or caps[key] > EPS]
    while remaining > EPS and open_keys:
        weight_sum = sum(weights[key] for key in open_keys)
        if weight_sum > EPS:
            tentative = {key: remaining * weights[key] / weight_sum for key in open_keys}
        else:  # only weightless keys are left with room: share equally
            tentative = {key: remaining / len(open_keys) for key in open_keys}
        full = [key for key in open_keys
                if caps.get(key) is not None and shares[key] + tentative[key] >= caps[key] - EPS]  # type: ignore
        if not full:
            for key in open_keys:
                shares[key] += tentative[key]
            remaining = 0.0
            break
        for key in full:
            give = max(0.0, caps[key] - shares[key])  # type: ignore[operator]
            shares[key] += give
            remaining -= give
            open_keys.remove(key)
    return Allocation(shares=shares, unallocated_kw=max(0.0, remaining))


def _weights(rule: str, values: dict[str, float | None]) -> dict[str, float]:
    if rule == ALLOCATION_EQUAL:
        return {key: 1.0 for key in values}
    if rule != ALLOCATION_WEIGHTED:
        raise ValueError(f"unknown allocation rule {rule!r}")
    known = [value for value in values.values() if value is not None]
    fallback = (sum(known) / len(known)) if known else 1.0
    return {key: (value if value is not None else fallback) for key, value in values.items()}


def allocate(rule: str, requested_kw: float, candidates: Sequence[Candidate]) -> Allocation:
    """Initial allocation of `requested_kw` over `candidates` (their `allocated_kw` is ignored)."""
    capacities = {c.ven_id: c.capacity_kw for c in candidates}
    return water_fill(requested_kw, _weights(rule, capacities), capacities)


def reallocate(rule: str, shortfall_kw: float, candidates: Sequence[Candidate]) -> Allocation:
    """Extra kW for each candidate so that together they cover `shortfall_kw` within their headroom.

    Under the weighted rule the weights are the headrooms, so the fuller a VEN already is the less it gets.
    """
    headrooms = {c.ven_id: c.headroom_kw for c in candidates}
    return water_fill(shortfall_kw, _weights(rule, headrooms), headrooms)
