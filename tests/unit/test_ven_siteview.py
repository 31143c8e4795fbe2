"""The VEN's picture of its site under the driver's publish lag: readings dated back, writes laid over them,
the meter now from the last reading plus the writes it does not show, shed periods kept out of baselines."""

from __future__ import annotations

import pytest
from dr_ven_load_control.siteview import AMBIGUITY_S, SiteView


def view() -> SiteView:
    return SiteView(lag_s=5.0, history_s=1800.0)


def test_a_publish_shows_the_site_one_lag_earlier_and_a_live_read_shows_it_now():
    site = view()
    assert site.device("s/ev", {"PowerKw": 7.2}, now=100.0) == 95.0
    assert site.device("s/ev", {"PowerKw": 7.2}, now=100.0, live=True) == 100.0


def test_our_writes_are_laid_over_readings_that_do_not_show_them_yet():
    site = view()
    site.device("s/ev", {"PowerLimitKw": 7.2, "PowerKw": 7.2}, now=100.0)
    site.wrote("s/ev", "PowerLimitKw", 5.2, now=98.0)
    site.wrote("s/ev", "PowerKw", 5.2, now=98.0)
    assert site.reading("s/ev") == {"PowerLimitKw": 5.2, "PowerKw": 5.2}  # the reading shows 95.0 < 98.0
    site.device("s/ev", {"PowerLimitKw": 5.2, "PowerKw": 5.19}, now=104.0)  # shows 99.0: after the write
    assert site.reading("s/ev") == {"PowerLimitKw": 5.2, "PowerKw": 5.19}
    assert site.reading("s/none") is None


def test_the_meter_now_adds_the_writes_a_publish_does_not_show():
    site = view()
    site.effect(97.0, -2.0)
    site.sent(97.0)
    site.meter_reading(12.0, shows=95.0, now=100.0)  # before the write
    assert site.meter_now() == pytest.approx(10.0)
    assert not site.shows_last_write(95.0) and site.shows_last_write(97.0 + AMBIGUITY_S + 0.01)
    site.meter_reading(10.0, shows=99.0, now=104.0)  # after it
    assert site.meter_now() == pytest.approx(10.0)


def test_a_write_about_the_instant_a_publish_shows_is_ambiguous_until_read_live():
    site = view()
    site.meter_reading(12.0, shows=95.0, now=100.0)
    site.effect(95.1, -2.0)
    assert site.meter_uncertain()
    site.meter_live_read(10.0, now=100.2)
    assert not site.meter_uncertain() and site.meter_now() == pytest.approx(10.0)
    site.effect(100.2, +2.0)  # a write sent after the live read (same instant) still counts
    assert site.meter_now() == pytest.approx(12.0)


def test_readings_that_show_a_shed_period_stay_out_of_baselines():
    site = view()
    for t in range(0, 60, 5):
        site.meter_reading(12.0, shows=float(t), now=t + 5.0)
    site.shed_started(60.0)
    site.meter_reading(10.0, shows=65.0, now=70.0)
    site.shed_ended(80.0)
    site.meter_reading(10.0, shows=80.1, now=85.1)  # still the shed, within the driver's jitter
    site.meter_reading(12.0, shows=90.0, now=95.0)
    assert site.curtailed(70.0) and site.curtailed(80.2) and not site.curtailed(81.0)
    assert site.baseline(at=100.0, window_s=100.0).kw == pytest.approx(12.0)


def test_a_restarted_view_takes_over_the_previous_picture():
    old = view()
    old.shed_started(50.0)
    old.effect(50.0, -2.0)
    old.sent(50.0)
    old.wrote("s/ev", "PowerLimitKw", 5.2, 50.0)
    new = view()
    new.meter_reading(9.9, shows=51.0, now=51.0, live=True)  # read live on start, before the state is loaded
    new.load_state(old.to_state(), shedding=True, now=51.0)
    assert new.history.samples()[-1][2] is True  # that reading shows the shed: not a baseline sample
    assert new.meter_now() == pytest.approx(9.9)  # the old write happened before the live read
    assert not new.shows_last_write(50.0) and new.reading("s/x") is None
    new.device("s/ev", {"PowerLimitKw": 7.2}, now=53.0)  # a publish from before the old write
    assert new.reading("s/ev") == {"PowerLimitKw": 5.2}
    with pytest.raises((ValueError, TypeError)):
        view().load_state({"written": [["a", "b"]]}, shedding=False, now=1.0)


def test_shed_periods_closer_than_a_reading_can_tell_apart_are_one():
    site = view()
    for i in range(50):
        site.shed_started(100.0 + 2 * i)
        site.shed_ended(101.0 + 2 * i)
    assert site.shed_periods == [[100.0, 199.0]]
    site.shed_started(300.0)
    assert site.shed_periods == [[100.0, 199.0], [300.0, None]]
