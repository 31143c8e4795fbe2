"""One closed-loop step: from the reduction error and the loads' views, the new shed amount of every load.

`error_kw` is requested reduction minus measured reduction (positive: shed more). A step first applies the
constraints (a blocked, overridden or excluded load is released; a continuous load shed beyond its capacity is
trimmed to it) and adds what that gives back to the error; then, outside the deadband, it adds shed with the
priority planner (new loads and the headroom of continuous ones) or releases shed in reverse priority order.
Within the deadband nothing changes, so a site on target is left alone.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

from dr_ven_load_control.loads import LoadView
from dr_ven_load_control.planner import Candidate, plan

EPS_KW = 1e-4


@dataclass
class StepResult:
    """What one closed-loop step decided: targets per load, forced releases, skipped loads, residual."""

    targets: dict[str, float] = field(default_factory=dict)  # load_id -> new shed kW (0: release); changes only
    forced: dict[str, str] = field(default_factory=dict)  # load_id -> why it was released or trimmed
    error_kw: float = 0.0  # the error once forced changes are counted
    added_kw: float = 0.0
    released_kw: float = 0.0
    shortfall_kw: float = 0.0
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def residual_kw(self) -> float:
        """Error expected after this step (positive: still short of the request)."""
        return self.error_kw - self.added_kw + self.released_kw


def step(views: Mapping[str, LoadView], current: Mapping[str, float], error_kw: float, margin_kw: float,
         deadband_kw: float, excluded: Mapping[str, str] | Collection[str] = ()) -> StepResult:
    """Compute the next shed amounts. `current` maps load_id -> kW shed now; `excluded` lists loads that may not
    be shed now (override, opt-out, not named by the command), optionally with the reason."""
    reasons = dict(excluded) if isinstance(excluded, Mapping) else {lid: "excluded" for lid in excluded}
    result = StepResult()
    new: dict[str, float] = {lid: kw for lid, kw in current.items() if kw > EPS_KW}
    error = error_kw
    for lid, shed in list(new.items()):
        view = views.get(lid)
        if lid in reasons:
            new[lid] = 0.0
            result.forced[lid] = reasons[lid]
        elif view is None:
            new[lid] = 0.0
            result.forced[lid] = "no longer configured"
        elif not view.known:
            continue
        elif view.blocked:
            new[lid] = 0.0
            result.forced[lid] = view.blocked
        elif view.continuous and shed > view.capacity_kw + EPS_KW:
            new[lid] = view.capacity_kw
            result.forced[lid] = f"constraint allows {view.capacity_kw:.3f} kW"
        error += shed - new[lid]
    result.error_kw = error
    if error > deadband_kw:
        candidates = []
        for lid, view in views.items():
            if lid in reasons or view.blocked or view.critical or not view.known:
                continue
            shed = new.get(lid, 0.0)
            if shed > EPS_KW:
                if not view.continuous:
                    continue
                available = view.capacity_kw - shed
            else:
                available = view.capacity_kw
            if available > EPS_KW:
                candidates.append(Candidate(lid, view.priority, available, view.continuous, view.step_kw))
        added = plan(candidates, error, margin_kw=margin_kw)
        for lid, kw in added.allocations.items():
            new[lid] = new.get(lid, 0.0) + kw
        result.added_kw = added.total_kw
        result.shortfall_kw = added.shortfall_kw
        result.skipped = added.skipped
    elif error < -deadband_kw:
        candidates = []
        for lid, shed in new.items():
            if shed <= EPS_KW:
                continue
            view = views.get(lid)
            priority = view.priority if view else 0
            continuous = view.continuous if view else False
            candidates.append(Candidate(lid, priority, shed, continuous, view.step_kw if view else 0.0))
        released = plan(candidates, -error, margin_kw=deadband_kw, reverse=True)
        for lid, kw in released.allocations.items():
            new[lid] = max(0.0, new[lid] - kw)
        result.released_kw = released.total_kw
    for lid, kw in new.items():
        before = current.get(lid, 0.0)
        if abs(kw - before) > EPS_KW:
            result.targets[lid] = kw if kw > EPS_KW else 0.0
    return result
