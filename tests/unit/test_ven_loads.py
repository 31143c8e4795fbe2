"""Every load kind's constraint: what it may shed now and which point values shed it."""

from __future__ import annotations

import pytest
from dr_ven_load_control.config import parse_config
from dr_ven_load_control.loads import Action, build_model

CONFIG = parse_config({
    "venId": "v1", "meter": {"path": "s/meter"},
    "loads": [
        {"name": "ev", "kind": "ev_charger", "path": "s/ev", "energyMarginPercent": 0},
        {"name": "wh", "kind": "water_heater", "path": "s/wh", "minTankTempC": 45},
        {"name": "hvac", "kind": "hvac", "path": "s/hvac", "maxOffsetC": 2.0, "maxZoneTempC": 27.0, "kwPerDegC": 1.0},
        {"name": "panel", "kind": "panel", "path": "s/panel", "circuits": ["Kitchen", "Fridge", "Server"],
         "critical": ["Fridge"]},
        {"name": "bat", "kind": "battery", "path": "s/bat", "reserveSocPercent": 20},
    ]})
MODELS = {load.name: build_model(load) for load in CONFIG.loads}


def action(load_id, shed, free, originals, commanded=None):
    return Action(load_id=load_id, path="s/x", shed_kw=shed, free_kw=free, commanded=commanded or {},
                  originals=originals, since=0.0)


def ev_values(power=7.2, needed=30.0, departure=10.0, plugged=True, limit=7.2):
    return {"PowerKw": power, "PowerLimitKw": limit, "RatedPowerKw": 7.2, "PluggedIn": plugged, "SocPercent": 50.0,
            "EnergyNeededKwh": needed, "DepartureHours": departure}


# --- EV charger: energy needed by departure ---------------------------------------------------------------------

def test_ev_with_time_to_catch_up_after_the_event_may_stop_charging():
    view = MODELS["ev"].view(ev_values(needed=30.0, departure=10.0), None, hours_left=1.0)
    # after a 1 h event, 9 h at 7.2 kW deliver 64.8 kWh > 30 kWh needed
    assert view.capacity_kw == pytest.approx(7.2)
    assert view.continuous


def test_ev_keeps_what_departure_requires():
    # 40 kWh needed, leaves in 5 h, event lasts 2 h: 3 h after the event give 21.6 kWh, so the event's 2 h must
    # deliver 18.4 kWh: at least 9.2 kW... more than rated, so nothing may be shed
    view = MODELS["ev"].view(ev_values(needed=40.0, departure=5.0), None, hours_left=2.0)
    assert view.capacity_kw == pytest.approx(0.0)
    # 25 kWh: 3.4 kWh in 2 h = 1.7 kW must stay
    view = MODELS["ev"].view(ev_values(needed=25.0, departure=5.0), None, hours_left=2.0)
    assert view.capacity_kw == pytest.approx(7.2 - 1.7)
    assert view.detail["minKw"] == pytest.approx(1.7)


def test_ev_leaving_before_the_event_ends_needs_its_energy_before_it_leaves():
    view = MODELS["ev"].view(ev_values(needed=6.0, departure=1.0), None, hours_left=2.0)
    assert view.capacity_kw == pytest.approx(7.2 - 6.0)


def test_ev_energy_margin_is_kept_on_top():
    cfg = parse_config({"venId": "v", "meter": {"path": "s/m"},
                        "loads": [{"name": "ev", "kind": "ev_charger", "path": "s/ev", "energyMarginPercent": 20}]})
    model = build_model(cfg.loads[0])
    view = model.view(ev_values(needed=6.0, departure=1.0), None, hours_left=2.0)
    assert view.capacity_kw == pytest.approx(7.2 - 7.2)  # 6 kWh x 1.2 = 7.2 kWh in 1 h


def test_ev_unplugged_or_full_has_nothing_to_shed():
    assert MODELS["ev"].view(ev_values(power=0.0, plugged=False), None, 1.0).capacity_kw == 0.0
    assert MODELS["ev"].view(ev_values(power=0.0, needed=0.0), None, 1.0).capacity_kw == 0.0


def test_ev_partial_shed_sets_the_power_limit():
    view = MODELS["ev"].view(ev_values(), None, 1.0)
    expected, points = MODELS["ev"].command(2.0, view, None, ev_values())
    assert points == {"PowerLimitKw": 5.2}
    assert expected == pytest.approx(2.0)


def test_ev_limited_keeps_its_uncurtailed_power_estimate():
    act = action("ev", 2.0, 7.2, {"PowerLimitKw": 7.2}, {"PowerLimitKw": 5.2})
    view = MODELS["ev"].view(ev_values(power=5.2, limit=5.2), act, 1.0)
    assert view.free_kw == pytest.approx(7.2) and view.capacity_kw == pytest.approx(7.2)


# --- water heater: minimum tank temperature ---------------------------------------------------------------------

def wh_values(power=4.5, tank=50.0, enable=True):
    return {"PowerKw": power, "TankTempC": tank, "SetpointC": 55.0, "DeadbandC": 5.0, "ElementEnable": enable,
            "RatedPowerKw": 4.5}


def test_water_heater_is_all_or_nothing_while_heating():
    view = MODELS["wh"].view(wh_values(), None, 1.0)
    assert not view.continuous and view.capacity_kw == 4.5 and view.blocked is None
    assert MODELS["wh"].command(1.0, view, None, wh_values()) == (4.5, {"ElementEnable": False})


def test_water_heater_idle_has_nothing_to_shed():
    assert MODELS["wh"].view(wh_values(power=0.0, tank=53.0), None, 1.0).capacity_kw == 0.0


def test_water_heater_at_its_minimum_tank_temperature_is_blocked():
    view = MODELS["wh"].view(wh_values(tank=45.0), None, 1.0)
    assert view.blocked and "45.0" in view.blocked and view.capacity_kw == 0.0
    shed = action("wh", 4.5, 4.5, {"ElementEnable": True})
    assert MODELS["wh"].view(wh_values(power=0.0, tank=44.0, enable=False), shed, 1.0).blocked


def test_disabled_water_heater_below_its_band_counts_as_a_full_shed():
    shed = action("wh", 4.5, 0.0, {"ElementEnable": True})
    view = MODELS["wh"].view(wh_values(power=0.0, tank=49.0, enable=False), shed, 1.0)
    assert view.free_kw == 4.5


# --- HVAC: maximum offset and maximum zone temperature ----------------------------------------------------------

def hvac_values(power=2.0, zone=24.0, setpoint=24.0):
    return {"PowerKw": power, "ZoneTempC": zone, "CoolingSetpointC": setpoint, "OutdoorTempC": 33.0,
            "RatedPowerKw": 3.5}


def test_hvac_offset_is_capped_by_max_offset_and_by_the_power_it_draws():
    view = MODELS["hvac"].view(hvac_values(power=3.0), None, 1.0)
    assert view.capacity_kw == pytest.approx(2.0)  # 2 C x 1 kW/C
    view = MODELS["hvac"].view(hvac_values(power=0.7), None, 1.0)
    assert view.capacity_kw == pytest.approx(0.7)


def test_hvac_setpoint_never_goes_above_the_maximum_zone_temperature():
    values = hvac_values(power=3.0, setpoint=26.0)
    view = MODELS["hvac"].view(values, None, 1.0)
    assert view.capacity_kw == pytest.approx(1.0)  # only 1 C left below 27 C
    expected, points = MODELS["hvac"].command(3.0, view, None, values)
    assert points == {"CoolingSetpointC": 27.0} and expected == pytest.approx(1.0)


def test_hvac_partial_offset_rounds_to_the_setpoint_resolution_from_the_original_setpoint():
    values = hvac_values(power=3.0, setpoint=25.0)
    act = action("hvac", 0.5, 3.0, {"CoolingSetpointC": 24.0}, {"CoolingSetpointC": 25.0})
    view = MODELS["hvac"].view(values, act, 1.0)
    expected, points = MODELS["hvac"].command(1.23, view, act, values)
    assert points == {"CoolingSetpointC": pytest.approx(25.2)}
    assert expected == pytest.approx(1.2)


def test_hvac_zone_too_hot_is_blocked():
    view = MODELS["hvac"].view(hvac_values(zone=27.6), None, 1.0)
    assert view.blocked and "27.6" in view.blocked


# --- panel circuits: critical ones are never shed ---------------------------------------------------------------

def panel_values(server_critical=False):
    return {"PowerKw": 2.0, "KitchenPowerKw": 1.2, "KitchenEnable": True, "KitchenCritical": False,
            "FridgePowerKw": 0.15, "FridgeEnable": True, "FridgeCritical": False,
            "ServerPowerKw": 0.6, "ServerEnable": True, "ServerCritical": server_critical}


def test_a_circuit_sheds_by_switching_off():
    view = MODELS["panel.Kitchen"].view(panel_values(), None, 1.0)
    assert view.capacity_kw == 1.2 and not view.continuous
    assert MODELS["panel.Kitchen"].command(1.2, view, None, panel_values()) == (1.2, {"KitchenEnable": False})


def test_critical_in_the_config_or_on_the_device_is_never_shed():
    fridge = MODELS["panel.Fridge"].view(panel_values(), None, 1.0)
    assert fridge.critical and fridge.blocked and fridge.capacity_kw == 0.0
    server = MODELS["panel.Server"].view(panel_values(server_critical=True), None, 1.0)
    assert server.critical and server.capacity_kw == 0.0
    assert not MODELS["panel.Server"].view(panel_values(), None, 1.0).critical


# --- battery: reserve state of charge ---------------------------------------------------------------------------

def bat_values(power=0.0, soc=80.0, reserve=20.0, max_kw=5.0, capacity=13.5):
    return {"PowerKw": power, "PowerSetpointKw": power, "SocPercent": soc, "ReserveSocPercent": reserve,
            "MaxPowerKw": max_kw, "CapacityKwh": capacity}


def test_battery_discharges_up_to_its_power_limit():
    view = MODELS["bat"].view(bat_values(), None, 1.0)
    assert view.capacity_kw == pytest.approx(5.0)
    assert MODELS["bat"].command(2.0, view, None, bat_values()) == (pytest.approx(2.0), {"PowerSetpointKw": -2.0})


def test_battery_never_plans_to_go_below_its_reserve_by_the_event_end():
    # 30 % - 20 % of 13.5 kWh = 1.35 kWh over a 2 h event: 0.675 kW
    view = MODELS["bat"].view(bat_values(soc=30.0), None, 2.0)
    assert view.capacity_kw == pytest.approx(0.675)
    assert MODELS["bat"].view(bat_values(soc=20.0), None, 2.0).capacity_kw == 0.0


def test_battery_reserve_is_the_larger_of_config_and_device():
    view = MODELS["bat"].view(bat_values(soc=30.0, reserve=30.0), None, 1.0)
    assert view.capacity_kw == 0.0


def test_a_charging_battery_sheds_its_charge_first():
    view = MODELS["bat"].view(bat_values(power=2.0), None, 1.0)
    assert view.capacity_kw == pytest.approx(7.0)
    assert MODELS["bat"].command(1.5, view, None, bat_values(power=2.0))[1] == {"PowerSetpointKw": 0.5}


def test_no_reading_means_unknown_and_nothing_to_shed():
    for model in MODELS.values():
        view = model.view(None, None, 1.0)
        assert not view.known and view.capacity_kw == 0.0
