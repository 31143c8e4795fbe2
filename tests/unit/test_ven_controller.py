"""One closed-loop step: deadband, add, release, constraint-forced releases, and convergence without oscillation."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from dr_ven_load_control.controller import step
from dr_ven_load_control.loads import LoadView


def view(lid, priority, capacity, continuous=True, blocked=None, critical=False, known=True):
    return LoadView(load_id=lid, kind="x", priority=priority, continuous=continuous, known=known, power_kw=capacity,
                    free_kw=capacity, capacity_kw=0.0 if blocked else capacity, blocked=blocked, critical=critical)


VIEWS = {"ev": view("ev", 10, 7.2), "wh": view("wh", 20, 4.5, continuous=False), "hvac": view("hvac", 30, 1.5),
         "fridge": view("fridge", 43, 0.15, continuous=False, blocked="critical circuit", critical=True),
         "bat": view("bat", 50, 5.0)}


def test_within_the_deadband_nothing_changes():
    result = step(VIEWS, {"ev": 2.0}, error_kw=0.015, margin_kw=0.05, deadband_kw=0.02)
    assert result.targets == {}


def test_more_shed_goes_to_the_headroom_of_the_first_priority():
    result = step(VIEWS, {"ev": 2.0}, error_kw=0.5, margin_kw=0.05, deadband_kw=0.02)
    assert result.targets == {"ev": pytest.approx(2.5)}
    assert result.residual_kw == pytest.approx(0.0)


def test_over_shed_releases_from_the_end_of_the_order():
    result = step(VIEWS, {"ev": 2.0, "bat": 1.0}, error_kw=-1.5, margin_kw=0.05, deadband_kw=0.02)
    assert result.targets == {"bat": 0.0, "ev": pytest.approx(1.5)}


def test_a_blocked_load_is_released_and_its_power_made_up_elsewhere():
    views = dict(VIEWS, wh=view("wh", 20, 4.5, continuous=False, blocked="tank at 45 C"))
    result = step(views, {"ev": 7.2, "wh": 4.5}, error_kw=0.0, margin_kw=0.05, deadband_kw=0.02)
    assert result.targets["wh"] == 0.0 and "tank" in result.forced["wh"]
    # 4.5 kW to make up: HVAC 1.5 then battery 3.0 (the EV has no headroom)
    assert result.targets["hvac"] == pytest.approx(1.5) and result.targets["bat"] == pytest.approx(3.0)


def test_a_continuous_load_beyond_its_capacity_is_trimmed():
    views = dict(VIEWS, ev=view("ev", 10, 1.0))  # departure now needs most of the charger
    result = step(views, {"ev": 2.0}, error_kw=0.0, margin_kw=0.05, deadband_kw=0.02)
    assert result.targets["ev"] == pytest.approx(1.0)
    assert "wh" not in result.targets  # 4.5 kW all-or-nothing would overshoot the 1 kW to make up
    assert result.targets["hvac"] == pytest.approx(1.0)


def test_excluded_loads_are_released_and_never_added():
    result = step(VIEWS, {"ev": 2.0}, error_kw=0.0, margin_kw=0.05, deadband_kw=0.02, excluded={"ev": "override"})
    assert result.targets["ev"] == 0.0 and result.forced["ev"] == "override"
    assert "ev" not in [lid for lid, kw in result.targets.items() if kw > 0]
    assert result.targets["hvac"] == pytest.approx(1.5) and result.targets["bat"] == pytest.approx(0.5)


def test_critical_and_unknown_loads_are_never_added():
    views = {"fridge": VIEWS["fridge"], "ev": view("ev", 10, 7.2, known=False)}
    result = step(views, {}, error_kw=2.0, margin_kw=0.05, deadband_kw=0.02)
    assert result.targets == {} and result.shortfall_kw == pytest.approx(2.0)


def test_a_load_without_a_fresh_reading_keeps_its_shed():
    views = dict(VIEWS, ev=view("ev", 10, 0.0, known=False))
    assert step(views, {"ev": 2.0}, error_kw=0.0, margin_kw=0.05, deadband_kw=0.02).targets == {}


@settings(max_examples=200, deadline=None)
@given(st.floats(0.1, 15.0), st.floats(0.6, 1.4), st.floats(-3.0, 3.0))
def test_closed_loop_on_a_plant_with_a_wrong_gain_converges_and_then_stays_put(requested, hvac_gain, drift):
    """The HVAC gives `hvac_gain` times what the model expects; the base load jumps by `drift` once."""
    views = {"ev": view("ev", 10, 2.0), "hvac": view("hvac", 30, 3.0), "bat": view("bat", 50, 5.0)}
    gains = {"ev": 1.0, "hvac": hvac_gain, "bat": 1.0}
    shed: dict[str, float] = {}
    deadband = max(0.01, requested * 0.01)
    history = []
    for i in range(40):
        base_extra = drift if i >= 10 else 0.0
        measured = sum(kw * gains[lid] for lid, kw in shed.items()) - base_extra
        result = step(views, shed, requested - measured, margin_kw=max(0.05, requested * 0.02),
                      deadband_kw=deadband)
        for lid, kw in result.targets.items():
            shed[lid] = kw
        history.append(dict(shed))
    capacity = 2.0 + 3.0 * hvac_gain + 5.0
    final_measured = sum(kw * gains[lid] for lid, kw in shed.items()) - drift
    if requested + drift <= capacity - 0.1 and requested + drift >= 0.1:
        assert abs(final_measured - requested) <= deadband + 1e-6
    # settled: the last ten steps changed nothing
    assert all(h == history[-1] for h in history[-10:])
