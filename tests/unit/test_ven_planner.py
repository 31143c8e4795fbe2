"""The priority shed planner: order, partial actions, all-or-nothing loads, impossible targets, never over-shed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from dr_ven_load_control.planner import Candidate, plan

EV = Candidate("ev", 10, 7.2, True)
WH = Candidate("wh", 20, 4.5, False)
HVAC = Candidate("hvac", 30, 1.5, True)
LAUNDRY = Candidate("laundry", 40, 0.8, False)
KITCHEN = Candidate("kitchen", 41, 1.2, False)
BATTERY = Candidate("battery", 50, 5.0, True)
SITE = [BATTERY, KITCHEN, LAUNDRY, HVAC, WH, EV]  # deliberately not in priority order


def test_first_priority_covers_the_need_with_a_partial_action():
    result = plan(SITE, 2.0, margin_kw=0.05)
    assert result.allocations == {"ev": pytest.approx(2.0)}
    assert result.shortfall_kw == 0.0 and result.overshoot_kw == 0.0


def test_loads_are_taken_in_priority_order_and_the_last_one_partially():
    result = plan(SITE, 12.5, margin_kw=0.05)
    assert list(result.allocations) == ["ev", "wh", "hvac"]
    assert result.allocations["ev"] == pytest.approx(7.2)
    assert result.allocations["wh"] == pytest.approx(4.5)
    assert result.allocations["hvac"] == pytest.approx(0.8)
    assert result.total_kw == pytest.approx(12.5)


def test_an_all_or_nothing_load_that_would_overshoot_is_skipped_for_a_later_partial_one():
    # 7.2 from the EV leaves 1.3: the 4.5 kW water heater would overshoot, the HVAC gives 1.3
    result = plan(SITE, 8.5, margin_kw=0.05)
    assert result.allocations == {"ev": pytest.approx(7.2), "hvac": pytest.approx(1.3)}
    assert "wh" in result.skipped and "overshoot" in result.skipped["wh"]


def test_an_all_or_nothing_load_within_the_margin_is_taken():
    result = plan([WH], 4.45, margin_kw=0.1)
    assert result.allocations == {"wh": 4.5}
    assert result.overshoot_kw == pytest.approx(0.05)


def test_a_skipped_all_or_nothing_load_is_used_when_trimming_partials_lands_on_target():
    # EV 1 kW, then only all-or-nothing loads: 3 kW needs the 4.5 kW heater with the EV trimmed away... which is
    # impossible (1.5 kW over); with a bigger partial load before it, it lands exactly.
    ev = Candidate("ev", 10, 3.0, True)
    heater = Candidate("wh", 20, 4.5, False)
    result = plan([ev, heater], 5.0, margin_kw=0.05)
    assert result.allocations == {"ev": pytest.approx(0.5), "wh": 4.5}
    assert result.total_kw == pytest.approx(5.0)


def test_impossible_target_sheds_everything_allowed_and_reports_the_shortfall():
    result = plan(SITE, 50.0, margin_kw=0.5)
    assert result.total_kw == pytest.approx(7.2 + 4.5 + 1.5 + 0.8 + 1.2 + 5.0)
    assert result.shortfall_kw == pytest.approx(50.0 - result.total_kw)


def test_nothing_is_planned_for_no_need():
    assert plan(SITE, 0.0).allocations == {}
    assert plan(SITE, -3.0).allocations == {}
    assert plan([], 2.0).shortfall_kw == 2.0


def test_release_gives_back_the_last_loads_in_the_shed_order_first():
    current = [Candidate("ev", 10, 2.0, True), Candidate("wh", 20, 4.5, False), Candidate("battery", 50, 1.0, True)]
    result = plan(current, 1.5, margin_kw=0.02, reverse=True)
    # the battery goes first, then 0.5 of the EV; the heater (4.5) would under-shed by far too much
    assert result.allocations == {"battery": pytest.approx(1.0), "ev": pytest.approx(0.5)}


def test_equal_priorities_are_ordered_by_name_so_plans_are_repeatable():
    a = Candidate("a", 10, 1.0, True)
    b = Candidate("b", 10, 1.0, True)
    assert list(plan([b, a], 1.5).allocations) == ["a", "b"]


candidates = st.lists(
    st.builds(Candidate, load_id=st.text("abcdefgh", min_size=1, max_size=4), priority=st.integers(0, 60),
              available_kw=st.floats(0.0, 20.0), continuous=st.booleans()),
    max_size=12, unique_by=lambda c: c.load_id)


@settings(max_examples=400, deadline=None)
@given(candidates, st.floats(0.0, 60.0), st.floats(0.0, 2.0), st.booleans())
def test_never_more_than_need_plus_margin_and_never_more_than_a_load_has(cands, need, margin, reverse):
    result = plan(cands, need, margin_kw=margin, reverse=reverse)
    by_id = {c.load_id: c for c in cands}
    assert result.total_kw <= need + margin + 1e-6
    for lid, kw in result.allocations.items():
        cand = by_id[lid]
        assert 0.0 < kw <= cand.available_kw + 1e-9
        if not cand.continuous:
            assert kw == cand.available_kw  # all or nothing
    # continuous capacity alone is always used before reporting a shortfall
    continuous = sum(c.available_kw for c in cands if c.continuous and c.available_kw > 1e-6)  # planner's EPS_KW
    if result.shortfall_kw > 1e-3:
        assert result.total_kw >= min(need, continuous) - 1e-6


@settings(max_examples=200, deadline=None)
@given(candidates, st.floats(0.0, 60.0))
def test_a_reachable_need_is_met_when_partial_loads_alone_reach_it(cands, need):
    continuous = sum(c.available_kw for c in cands if c.continuous and c.available_kw > 1e-6)  # planner's EPS_KW
    result = plan(cands, need, margin_kw=0.05)
    if continuous >= need:
        assert result.shortfall_kw <= 1e-3


def test_a_stepped_load_gets_whole_steps_and_leaves_a_small_residual_to_a_finer_one():
    hvac = Candidate("hvac", 30, 2.0, True, step_kw=0.23)
    battery = Candidate("battery", 50, 5.0, True, step_kw=0.01)
    result = plan([hvac, battery], 0.6, margin_kw=0.02)
    assert result.allocations["hvac"] == pytest.approx(0.46)  # 2 steps; 3 would overshoot past the margin
    assert result.allocations["battery"] == pytest.approx(0.14)
    # a need below half a step is not chased by the coarse load at all
    assert plan([hvac, battery], 0.1, margin_kw=0.02).allocations == {"battery": pytest.approx(0.1)}
    # the nearest whole step is taken when it stays within the margin
    assert plan([hvac], 0.45, margin_kw=0.02).allocations == {"hvac": pytest.approx(0.46)}
