"""Allocation of an event's kW across VENs: equal, weighted by capacity, and re-allocation of shortfalls."""


import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from dr_vtn_dispatcher.allocation import Candidate, allocate, reallocate, water_fill


def test_equal_split_without_capacities():
    result = allocate("equal", 9.0, [Candidate("a", None), Candidate("b", None), Candidate("c", None)])
    assert result.shares == pytest.approx({"a": 3.0, "b": 3.0, "c": 3.0})
    assert result.unallocated_kw == pytest.approx(0.0)


def test_equal_split_spills_over_a_small_capacity():
    result = allocate("equal", 9.0, [Candidate("a", 1.0), Candidate("b", 10.0), Candidate("c", None)])
    assert result.shares == pytest.approx({"a": 1.0, "b": 4.0, "c": 4.0})


def test_weighted_split_follows_capacity():
    result = allocate("weighted", 6.0, [Candidate("a", 1.0), Candidate("b", 2.0), Candidate("c", 3.0)])
    assert result.shares == pytest.approx({"a": 1.0, "b": 2.0, "c": 3.0})
    half = allocate("weighted", 3.0, [Candidate("a", 1.0), Candidate("b", 2.0), Candidate("c", 3.0)])
    assert half.shares == pytest.approx({"a": 0.5, "b": 1.0, "c": 1.5})


def test_weighted_unknown_capacity_weighs_the_mean_of_known_ones():
    result = allocate("weighted", 8.0, [Candidate("a", 2.0), Candidate("b", 6.0), Candidate("c", None)])
    # weights 2, 6, 4 (mean of known) -> 8 kW split 4/3: a is capped at 2 only if its share exceeds it
    assert result.shares == pytest.approx({"a": 8 * 2 / 12, "b": 8 * 6 / 12, "c": 8 * 4 / 12})


def test_more_than_total_capacity_is_reported_unallocated():
    result = allocate("weighted", 10.0, [Candidate("a", 1.0), Candidate("b", 2.0)])
    assert result.shares == pytest.approx({"a": 1.0, "b": 2.0})
    assert result.unallocated_kw == pytest.approx(7.0)
    equal = allocate("equal", 10.0, [Candidate("a", 1.0), Candidate("b", 2.0)])
    assert equal.unallocated_kw == pytest.approx(7.0)


def test_zero_capacity_gets_nothing():
    result = allocate("weighted", 2.0, [Candidate("a", 0.0), Candidate("b", 5.0)])
    assert result.shares == pytest.approx({"a": 0.0, "b": 2.0})


def test_no_candidates():
    result = allocate("equal", 5.0, [])
    assert result.shares == {}
    assert result.unallocated_kw == pytest.approx(5.0)


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="unknown allocation rule"):
        allocate("fancy", 1.0, [Candidate("a", 1.0)])


def test_reallocate_uses_headroom_only():
    # a carries 2 of its 3 (headroom 1); b carries 1 of 5 (headroom 4); c unknown (unbounded)
    candidates = [Candidate("a", 3.0, 2.0), Candidate("b", 5.0, 1.0)]
    result = reallocate("equal", 4.0, candidates)
    assert result.shares == pytest.approx({"a": 1.0, "b": 3.0})
    assert result.unallocated_kw == pytest.approx(0.0)
    weighted = reallocate("weighted", 2.5, candidates)
    assert weighted.shares == pytest.approx({"a": 0.5, "b": 2.0})


def test_reallocate_reports_what_no_one_can_take():
    result = reallocate("equal", 5.0, [Candidate("a", 3.0, 3.0), Candidate("b", 2.0, 1.0)])
    assert result.shares == pytest.approx({"a": 0.0, "b": 1.0})
    assert result.unallocated_kw == pytest.approx(4.0)


@settings(max_examples=300, deadline=None)
@given(requested=st.floats(min_value=0, max_value=1e4, allow_nan=False),
       caps=st.lists(st.one_of(st.none(), st.floats(min_value=0, max_value=1e3, allow_nan=False)),
                     min_size=1, max_size=30),
       rule=st.sampled_from(["equal", "weighted"]))
def test_allocation_invariants(requested, caps, rule):
    candidates = [Candidate(f"v{i}", cap) for i, cap in enumerate(caps)]
    result = allocate(rule, requested, candidates)
    for candidate in candidates:
        share = result.shares[candidate.ven_id]
        assert share >= 0
        if candidate.capacity_kw is not None:
            assert share <= candidate.capacity_kw + 1e-6
    assert result.total_kw + result.unallocated_kw == pytest.approx(requested, rel=1e-9, abs=1e-6)
    known = [c for c in caps if c is not None]
    if any(c is None for c in caps):  # a VEN of unknown capacity takes whatever is left
        assert result.unallocated_kw == pytest.approx(0.0, abs=1e-6)
    else:
        assert result.unallocated_kw == pytest.approx(max(0.0, requested - sum(known)), rel=1e-9, abs=1e-6)


def test_water_fill_equal_shares_among_uncapped():
    result = water_fill(10.0, {"a": 1.0, "b": 1.0, "c": 1.0, "d": 1.0}, {"a": 1.0, "b": None, "c": 2.0, "d": None})
    assert result.shares == pytest.approx({"a": 1.0, "b": 3.5, "c": 2.0, "d": 3.5})
