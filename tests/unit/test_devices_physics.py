"""Physics of the simulated devices (dr_devices): no platform, simulated time only."""
from __future__ import annotations

import math

import pytest
from dr_devices import ConfigError, PointError, SiteModel, build_device
from dr_devices.water_heater import WATER_J_PER_LITER_K
from hypothesis import given, settings
from hypothesis import strategies as st

DEMO = {
    "ev_charger": {"rated_power_kw": 7.2, "capacity_kwh": 75, "soc_percent": 35, "target_soc_percent": 90,
                   "departure_hours": 10, "charge_efficiency": 0.92, "away_hours": 2, "arrival_soc_jitter_percent": 10,
                   "dwell_hours": 3},
    "water_heater": {"tank_temp_c": 49, "draws_per_hour": 3, "draw_liters": 30},
    "hvac": {},
    "panel": {"circuits": [{"name": "Lighting", "nominal_kw": 0.3}, {"name": "Kitchen", "nominal_kw": 1.2},
                           {"name": "Laundry", "nominal_kw": 0.8},
                           {"name": "Fridge", "nominal_kw": 0.15, "critical": True}]},
    "battery": {"capacity_kwh": 13.5, "max_power_kw": 5, "soc_percent": 60, "charge_efficiency": 0.96,
                "discharge_efficiency": 0.96},
    "site_meter": {"base_load_kw": 0.5},
}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def demo_site(time_scale: float = 1.0, seed: int = 7) -> tuple[SiteModel, FakeClock, dict]:
    clock = FakeClock()
    site = SiteModel("t", clock)
    models = {}
    for kind, params in DEMO.items():
        models[kind] = build_device(kind, params, time_scale=time_scale, start_hour=14.0, seed=seed)
        site.add(f"devices/t/{kind}", models[kind])
    return site, clock, models


# -- the meter ---------------------------------------------------------------------------------------------------
WRITES = st.one_of(
    st.tuples(st.just("ev_charger"), st.just("PowerLimitKw"), st.floats(0, 7.2)),
    st.tuples(st.just("water_heater"), st.just("SetpointC"), st.floats(40, 65)),
    st.tuples(st.just("water_heater"), st.just("ElementEnable"), st.booleans()),
    st.tuples(st.just("hvac"), st.just("CoolingSetpointC"), st.floats(20, 28)),
    st.tuples(st.just("panel"), st.sampled_from(["LightingEnable", "KitchenEnable", "LaundryEnable"]), st.booleans()),
    st.tuples(st.just("battery"), st.just("PowerSetpointKw"), st.floats(-5, 5)),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1800), st.none() | WRITES), min_size=1, max_size=40))
def test_meter_equals_base_load_plus_every_device_at_every_step(steps):
    site, clock, models = demo_site(time_scale=4.0)
    meter = models["site_meter"]
    for dt, write in steps:
        clock.now += dt
        site.sync()
        if write is not None:
            kind, point, value = write
            models[kind].write(point, value)
        device_points = sum(float(models[k].read("PowerKw")) for k in models if k != "site_meter")
        assert meter.read("PowerKw") == pytest.approx(0.5 + device_points, abs=1e-9)
        assert meter.read("BaseLoadKw") == 0.5


def test_battery_discharge_lowers_the_meter_and_a_write_shows_at_once():
    site, clock, models = demo_site()
    meter = models["site_meter"]
    before = meter.read("PowerKw")
    models["battery"].write("PowerSetpointKw", -4.0)
    assert models["battery"].read("PowerKw") == -4.0
    assert meter.read("PowerKw") == pytest.approx(before - 4.0)
    ev_share = models["ev_charger"].read("PowerKw")
    models["ev_charger"].write("PowerLimitKw", 0)
    assert meter.read("PowerKw") == pytest.approx(before - 4.0 - ev_share)


def test_site_advances_every_device_by_wall_time_times_time_scale():
    site, clock, models = demo_site(time_scale=60.0)
    clock.now += 30.0  # 30 s of wall time = 30 simulated minutes
    site.sync()
    for model in models.values():
        assert model.sim_seconds == pytest.approx(1800.0)
    assert models["hvac"].hour_of_day == pytest.approx(14.5)


# -- water heater ------------------------------------------------------------------------------------------------
def test_water_heater_with_element_disabled_cools_at_its_standby_rate():
    params = {"tank_liters": 190, "ua_w_per_k": 2.0, "ambient_c": 20, "tank_temp_c": 55, "element_enable": False}
    heater = build_device("water_heater", params, start_hour=0)
    capacity = 190 * WATER_J_PER_LITER_K
    assert heater.power_kw == 0.0
    for hour in range(1, 49):
        heater.advance(3600.0)
        expected = 20 + 35 * math.exp(-2.0 * hour * 3600.0 / capacity)
        assert heater.read("TankTempC") == pytest.approx(expected, rel=1e-9)
        assert heater.read("PowerKw") == 0.0
    # the thermostat calls for heat (far below setpoint - deadband) but the disabled element stays off
    assert heater.read("TankTempC") < 50
    heater.write("ElementEnable", True)
    assert heater.read("PowerKw") == 4.5


def test_water_heater_thermostat_holds_the_deadband_and_heats_part_of_the_time():
    heater = build_device("water_heater", {"draws_per_hour": 2, "draw_liters": 25, "tank_temp_c": 52}, seed=3,
                          start_hour=0)
    on_samples = 0
    for _ in range(24 * 60):
        heater.advance(60.0)
        assert heater.read("TankTempC") <= 55.0 + 1e-9
        on_samples += heater.power_kw > 0
    assert 0.05 < on_samples / (24 * 60) < 0.9


def test_water_heater_heats_to_setpoint_at_the_analytic_time():
    heater = build_device("water_heater", {"tank_temp_c": 45, "setpoint_c": 55, "deadband_c": 5}, start_hour=0)
    capacity, ua, power = 190 * WATER_J_PER_LITER_K, 2.0, 4500.0
    equilibrium = 20 + power / ua
    t_full = capacity / ua * math.log((45 - equilibrium) / (55 - equilibrium))
    heater.advance(t_full - 1)
    assert heater.power_kw == 4.5
    heater.advance(2)
    assert heater.power_kw == 0.0 and heater.read("TankTempC") <= 55.0


def test_water_heater_draws_are_repeatable_with_a_seed():
    def run(seed: int) -> list[float]:
        heater = build_device("water_heater", {"draws_per_hour": 4}, seed=seed, start_hour=0)
        out = []
        for _ in range(12):
            heater.advance(600)
            out.append(heater.read("TankTempC"))
        return out
    assert run(11) == run(11)
    assert run(11) != run(12)


def test_raising_the_setpoint_turns_the_element_on_and_lowering_off():
    heater = build_device("water_heater", {"tank_temp_c": 53}, start_hour=0)
    assert heater.power_kw == 0.0
    heater.write("SetpointC", 65)
    assert heater.power_kw == 4.5
    heater.write("SetpointC", 50)
    assert heater.power_kw == 0.0


# -- HVAC --------------------------------------------------------------------------------------------------------
def test_raising_the_cooling_setpoint_lowers_compressor_power_and_the_zone_warms():
    hvac = build_device("hvac", {"outdoor_amplitude_c": 0, "outdoor_mean_c": 35}, start_hour=14)
    hvac.advance(4 * 3600)
    steady_power, steady_zone = hvac.read("PowerKw"), hvac.read("ZoneTempC")
    assert 0 < steady_power < 3.5
    # at steady state the compressor removes exactly the heat gain: ((T_out - T) / R + gains) / COP
    assert steady_power == pytest.approx(((35 - steady_zone) / 2.5 + 0.6) / 3.0, rel=1e-3)
    hvac.write("CoolingSetpointC", 26)
    assert hvac.read("PowerKw") < steady_power
    hvac.advance(1800)
    assert hvac.read("ZoneTempC") > steady_zone + 0.5
    hvac.advance(6 * 3600)
    new_power, new_zone = hvac.read("PowerKw"), hvac.read("ZoneTempC")
    assert new_zone == pytest.approx(26, abs=0.8)
    assert 0 < new_power < steady_power
    assert new_power == pytest.approx(((35 - new_zone) / 2.5 + 0.6) / 3.0, rel=1e-3)


def test_hvac_outdoor_profile_peaks_in_the_afternoon():
    hvac = build_device("hvac", {"outdoor_mean_c": 29, "outdoor_amplitude_c": 7, "outdoor_peak_hour": 15},
                        start_hour=3)
    assert hvac.read("OutdoorTempC") == pytest.approx(22)
    hvac.advance(12 * 3600)
    assert hvac.read("OutdoorTempC") == pytest.approx(36)


# -- battery -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("efficiency", [1.0, 0.95])
@settings(max_examples=40, deadline=None)
@given(schedule=st.lists(st.tuples(st.floats(-5, 5), st.floats(1, 200)), min_size=1, max_size=20))
def test_battery_soc_changes_by_the_integral_of_power_over_capacity(efficiency, schedule):
    # at most 20 x 200 s at 5 kW (5.9 kWh after losses): never reaches 0 % or 100 % from 50 % of 13.5 kWh
    battery = build_device("battery", {"capacity_kwh": 13.5, "max_power_kw": 5, "soc_percent": 50,
                                       "reserve_soc_percent": 0, "charge_efficiency": efficiency,
                                       "discharge_efficiency": efficiency}, start_hour=0)
    stored_kwh = 0.0
    for setpoint, seconds in schedule:
        battery.write("PowerSetpointKw", setpoint)
        power = battery.read("PowerKw")
        assert power == pytest.approx(setpoint)
        stored_kwh += (power * efficiency if power > 0 else power / efficiency) * seconds / 3600.0
        battery.advance(seconds)
    expected = 50 + 100.0 * stored_kwh / 13.5
    assert battery.read("SocPercent") == pytest.approx(expected, abs=0.1)  # 0.1 % of capacity


def test_battery_soc_integral_over_a_day_of_one_second_steps():
    battery = build_device("battery", {"capacity_kwh": 13.5, "max_power_kw": 5, "soc_percent": 50}, start_hour=0)
    integral = 0.0
    for second in range(6 * 3600):
        if second % 600 == 0:
            battery.write("PowerSetpointKw", 2.0 * math.sin(second / 3600.0))
        integral += battery.read("PowerKw") / 3600.0
        battery.advance(1.0)
    assert battery.read("SocPercent") == pytest.approx(50 + 100 * integral / 13.5, abs=0.1)


def test_battery_never_discharges_below_reserve():
    battery = build_device("battery", {"capacity_kwh": 13.5, "max_power_kw": 5, "soc_percent": 25,
                                       "reserve_soc_percent": 20}, start_hour=0)
    battery.write("PowerSetpointKw", -5)
    reach_s = 0.05 * 13.5 / 5 * 3600  # 5 % of 13.5 kWh at 5 kW
    battery.advance(reach_s - 1)
    assert battery.read("PowerKw") == -5
    battery.advance(3600)
    assert battery.read("SocPercent") == pytest.approx(20.0, abs=1e-9)
    assert battery.read("PowerKw") == 0.0
    for _ in range(24):
        battery.advance(3600)
        assert battery.read("SocPercent") >= 20.0 - 1e-9
    battery.write("PowerSetpointKw", 2)
    assert battery.read("PowerKw") == 2
    battery.advance(3600)
    assert battery.read("SocPercent") == pytest.approx(20 + 100 * 2 / 13.5)


def test_battery_stops_charging_when_full():
    battery = build_device("battery", {"capacity_kwh": 10, "max_power_kw": 5, "soc_percent": 95}, start_hour=0)
    battery.write("PowerSetpointKw", 5)
    battery.advance(3600)
    assert battery.read("SocPercent") == pytest.approx(100.0)
    assert battery.read("PowerKw") == 0.0


# -- EV charger --------------------------------------------------------------------------------------------------
def test_ev_charging_at_its_limit_reaches_departure_energy_at_the_computed_time():
    ev = build_device("ev_charger", {"rated_power_kw": 7.2, "capacity_kwh": 60, "soc_percent": 40,
                                     "target_soc_percent": 80, "departure_hours": 12, "charge_efficiency": 0.9},
                      start_hour=0)
    ev.write("PowerLimitKw", 3.3)
    needed = ev.read("EnergyNeededKwh")
    assert needed == pytest.approx(24.0)
    t_done = needed / (3.3 * 0.9) * 3600.0  # 8.08 h, before the 12 h departure
    elapsed = 0.0
    while elapsed + 300 < t_done - 1:
        ev.advance(300)
        elapsed += 300
        assert ev.read("PowerKw") == 3.3
    ev.advance(t_done - 1 - elapsed)
    assert ev.read("PowerKw") == 3.3
    assert ev.read("EnergyNeededKwh") == pytest.approx(3.3 * 0.9 / 3600, rel=1e-6)
    ev.advance(2)
    assert ev.read("PowerKw") == 0.0
    assert ev.read("EnergyNeededKwh") == 0.0
    assert ev.read("SocPercent") == pytest.approx(80.0)
    assert ev.read("DepartureHours") == pytest.approx(12 - (t_done + 1) / 3600)


def test_ev_power_is_the_lesser_of_rated_and_limit_and_limits_are_enforced():
    ev = build_device("ev_charger", {"rated_power_kw": 7.2}, start_hour=0)
    assert ev.read("PowerKw") == 7.2 and ev.read("PowerLimitKw") == 7.2
    ev.write("PowerLimitKw", 0)
    assert ev.read("PowerKw") == 0.0
    with pytest.raises(PointError, match="above the maximum 7.2"):
        ev.write("PowerLimitKw", 7.5)
    with pytest.raises(PointError, match="below the minimum 0"):
        ev.write("PowerLimitKw", -1)
    with pytest.raises(PointError, match="read only"):
        ev.write("PowerKw", 1)
    assert ev.read("PowerLimitKw") == 0.0


def test_ev_departs_unfinished_and_returns_after_the_away_time():
    ev = build_device("ev_charger", {"capacity_kwh": 75, "soc_percent": 10, "departure_hours": 1, "away_hours": 2,
                                     "arrival_soc_percent": 30, "dwell_hours": 5}, start_hour=0, seed=1)
    ev.advance(3600 + 1)
    assert ev.read("PluggedIn") is False and ev.read("PowerKw") == 0.0
    assert ev.read("DepartureHours") == 0.0 and ev.read("EnergyNeededKwh") == 0.0
    ev.advance(2 * 3600)
    assert ev.read("PluggedIn") is True and ev.read("PowerKw") == 7.2
    assert ev.read("DepartureHours") == pytest.approx(5 - 1 / 3600)
    assert ev.read("SocPercent") == pytest.approx(30 + 100 * 7.2 * (1 / 3600) / 75)


# -- panel -------------------------------------------------------------------------------------------------------
def test_panel_circuits_switch_and_critical_circuits_refuse_off():
    panel = build_device("panel", DEMO["panel"], start_hour=0)
    assert panel.read("PowerKw") == pytest.approx(2.45)
    panel.write("LaundryEnable", "off")
    assert panel.read("LaundryPowerKw") == 0.0 and panel.read("PowerKw") == pytest.approx(1.65)
    with pytest.raises(PointError, match="critical"):
        panel.write("FridgeEnable", False)
    assert panel.read("FridgeEnable") is True and panel.read("FridgeCritical") is True
    assert panel.defaults() == {"LightingEnable": True, "KitchenEnable": True, "LaundryEnable": True,
                                "FridgeEnable": True}


# -- validation --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind, point, bad", [
    ("water_heater", "SetpointC", 90), ("water_heater", "SetpointC", "warm"), ("water_heater", "ElementEnable", 2),
    ("hvac", "CoolingSetpointC", 5), ("hvac", "CoolingSetpointC", float("nan")),
    ("battery", "PowerSetpointKw", -6), ("battery", "SocPercent", 50), ("ev_charger", "PowerLimitKw", True),
    ("panel", "NoSuchEnable", True),
])
def test_a_bad_write_raises_and_changes_nothing(kind, point, bad):
    model = build_device(kind, DEMO[kind], start_hour=0)
    before = {name: model.read(name) for name in model.points}
    with pytest.raises(PointError):
        model.write(point, bad)
    assert {name: model.read(name) for name in model.points} == before


@pytest.mark.parametrize("kind, params, match", [
    ("ev_charger", {"rated_power_kw": -1}, "rated_power_kw"),
    ("ev_charger", {"rated_powr_kw": 7}, "unknown parameter"),
    ("water_heater", {"setpoint_c": "hot"}, "setpoint_c"),
    ("battery", {"reserve_soc_percent": 100}, "reserve_soc_percent"),
    ("panel", {"circuits": [{"name": "lighting", "nominal_kw": 1}]}, "CamelCase"),
    ("panel", {"circuits": []}, "at least one"),
    ("hvac", {"cop": 0}, "cop"),
    ("toaster", {}, "unknown device type"),
])
def test_bad_physics_parameters_raise_config_errors_naming_the_field(kind, params, match):
    with pytest.raises(ConfigError, match=match):
        build_device(kind, params, start_hour=0)


def test_time_scale_must_be_positive():
    with pytest.raises(ConfigError, match="time_scale"):
        build_device("battery", {}, time_scale=0, start_hour=0)
