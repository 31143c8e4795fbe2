"""Metered power history and the pre-event baseline."""

from __future__ import annotations

import math

import pytest
from dr_ven_load_control.baseline import PowerHistory


def test_baseline_is_the_mean_of_the_pre_event_window_only():
    history = PowerHistory(keep_s=1800)
    for i in range(120):  # every 5 s for 10 min: 10 kW, then 4 kW for the last 2 minutes
        history.add(1000.0 + 5 * i, 10.0 if i < 96 else 4.0)
    base = history.baseline(at=1000.0 + 5 * 96, window_s=300)
    assert base is not None and base.kw == pytest.approx(10.0) and base.samples == 60
    mixed = history.baseline(at=1000.0 + 5 * 120, window_s=240)
    assert mixed is not None and mixed.kw == pytest.approx((24 * 10 + 24 * 4) / 48)


def test_samples_at_or_after_the_event_start_are_not_part_of_its_baseline():
    history = PowerHistory()
    history.add(100.0, 5.0)
    history.add(105.0, 50.0)
    assert history.baseline(at=105.0, window_s=60).kw == 5.0


def test_history_keeps_thirty_minutes():
    history = PowerHistory(keep_s=1800)
    for i in range(800):
        history.add(5.0 * i, float(i))
    oldest, _ = history.oldest()
    latest, _ = history.latest()
    assert latest - oldest <= 1800 and latest - oldest >= 1795
    assert len(history) == 361


def test_curtailed_samples_are_left_out_of_a_baseline():
    history = PowerHistory()
    for i in range(10):
        history.add(10.0 * i, 8.0)
    for i in range(10, 20):
        history.add(10.0 * i, 3.0, curtailed=True)
    assert history.baseline(at=200.0, window_s=200).kw == pytest.approx(8.0)
    assert history.mean(0.0, 200.0, include_curtailed=True).kw == pytest.approx(5.5)


def test_no_sample_in_the_window_gives_none():
    history = PowerHistory()
    assert history.baseline(at=100.0, window_s=60) is None
    history.add(10.0, 1.0)
    assert history.baseline(at=100.0, window_s=60) is None


def test_bad_samples_are_refused_and_late_ones_dropped():
    history = PowerHistory()
    with pytest.raises(ValueError):
        history.add(1.0, math.nan)
    history.add(10.0, 1.0)
    history.add(5.0, 99.0)
    assert history.samples() == [(10.0, 1.0, False)]


def test_samples_can_be_marked_curtailed_after_the_fact():
    history = PowerHistory()
    for i in range(5):
        history.add(float(i), 10.0 - i)
    history.reflag(lambda ts: 2.5 <= ts <= 3.5)
    assert [c for _, _, c in history.samples()] == [False, False, False, True, False]
    assert history.baseline(at=5.0, window_s=10).kw == pytest.approx((10 + 9 + 8 + 6) / 4)
