"""What the VEN reports: its status and the 5-second telemetry with every load's detail (the shape is in the README,
"Telemetry `loads`"), read from the shed-control room; nothing here changes state."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from dr_common.payloads import Telemetry
from dr_common.timeutil import UTC
from dr_ven_load_control.config import KIND_BATTERY, KIND_CIRCUIT, KIND_EV, KIND_HVAC, KIND_WATER_HEATER, VenConfig
from dr_ven_load_control.control import ShedControl
from dr_ven_load_control.loads import Action, LoadModel, LoadView, as_float
from dr_ven_load_control.state import EPS_KW, EventState, dt, iso

ACTION_TYPES = {KIND_EV: "powerLimit", KIND_WATER_HEATER: "elementOff", KIND_HVAC: "setpointRaise",
                KIND_CIRCUIT: "circuitOff", KIND_BATTERY: "powerSetpoint"}


def telemetry(cfg: VenConfig, control: ShedControl, event: EventState | None, now: float) -> Telemetry | None:
    """The 5-second report, or None before the first meter reading; `event` is the event held (active or not)."""
    site = control.site
    if site.meter is None:
        return None
    used = site.meter[1]
    active = event if event is not None and event.started else None
    views = control.views(event, now)
    opted_out = control.opted_out(event)
    overrides = control.excluded_overrides()
    loads = {lid: load_entry(control.models[lid], view, control.actions.get(lid), site.reading(view_path(control, lid)),
                             lid in overrides, opted_out)
             for lid, view in views.items()}
    if active is not None:
        baseline = active.baseline_kw
        shed = (baseline - used) if baseline is not None else 0.0
        requested = active.requested_kw
    else:
        rolling = site.baseline(now + 1e-6, cfg.baseline_window_s)
        baseline = rolling.kw if rolling else None
        shed = 0.0
        requested = 0.0
    return Telemetry(ven_id=cfg.ven_id, used_power_kw=round(used, 4), ts=dt(now) or datetime.now(UTC),
                     shed_power_kw=round(shed, 4), requested_reduction_kw=requested,
                     event_id=active.event_id if active else None,
                     baseline_power_kw=round(baseline, 4) if baseline is not None else None,
                     available_shed_kw=round(control.available_kw(event, views), 3),
                     loads=loads, opt_out=opted_out)


def view_path(control: ShedControl, lid: str) -> str:
    """The device path of load `lid`."""
    return control.models[lid].cfg.path


def load_entry(model: LoadModel, view: LoadView, action: Action | None, values: dict[str, Any] | None,
               overridden: bool, opted_out: bool) -> dict[str, Any]:
    """One load's telemetry detail: state, power, shed, action, constraint, override, opt-out."""
    return {"kind": view.kind, "priority": view.priority, "state": load_state(view, action, overridden, opted_out),
            "powerKw": view.power_kw, "shedKw": round(action.shed_kw, 3) if action else 0.0,
            "capacityKw": round(view.capacity_kw, 3), "action": action_entry(model, action),
            "constraint": constraint_entry(model, view, values), "override": overridden, "optOut": opted_out,
            "critical": view.critical, "blocked": view.blocked,
            "setPoints": dict(action.commanded) if action is not None else {}}


def load_state(view: LoadView, action: Action | None, overridden: bool, opted_out: bool) -> str:
    """One word for the load (see the README)."""
    if action is not None:
        return "restoring" if action.restoring else "shed"
    if not view.known:
        return "unknown"
    if opted_out:
        return "optedOut"
    if overridden:
        return "override"
    if view.critical:
        return "critical"
    if view.blocked:
        return "limited"
    if view.free_kw <= EPS_KW and view.capacity_kw <= EPS_KW:
        return "idle"
    if view.capacity_kw <= EPS_KW:
        return "limited"
    return "available"


def action_entry(model: LoadModel, action: Action | None) -> dict[str, Any] | None:
    """What the VEN wrote on this load and what it will restore, or None."""
    if action is None:
        return None
    entry: dict[str, Any] = {"type": ACTION_TYPES.get(model.cfg.kind, "set"), "points": dict(action.commanded),
                             "from": dict(action.originals), "since": iso(action.since),
                             "restoring": action.restoring, "possiblyWritten": dict(action.uncertain)}
    if model.cfg.kind == KIND_HVAC:
        point = model.cfg.points["setpoint"]
        now_c, from_c = as_float(action.commanded, point), as_float(action.originals, point)
        if now_c is not None and from_c is not None:
            entry["offsetC"] = round(now_c - from_c, 3)
    return entry


def constraint_entry(model: LoadModel, view: LoadView, values: dict[str, Any] | None) -> dict[str, Any] | None:
    """The constraint that bounds this load's shed, whether it binds now, and one line of text."""
    kind, detail = model.cfg.kind, view.detail
    if kind == KIND_CIRCUIT:
        if not view.critical:
            return None
        return {"type": "critical", "limiting": True, "text": "critical circuit, never shed"}
    if not view.known:
        return None
    if kind == KIND_EV:
        min_kw, needed, departure = detail.get("minKw", 0.0), detail.get("energyNeededKwh"), detail.get("departureHours")
        if detail.get("pluggedIn") is False or (needed is not None and needed <= 1e-3):
            text = "not plugged in" if detail.get("pluggedIn") is False else "charged: nothing left to add"
            return {"type": "departureEnergy", "limiting": False, "energyNeededKwh": needed,
                    "departureHours": departure, "minKw": 0.0, "text": text}
        text = (f"keeps {min_kw:.1f} kW to add {needed:.1f} kWh by departure in {departure:.1f} h"
                if needed is not None and departure is not None else "no departure target")
        return {"type": "departureEnergy", "limiting": min_kw > EPS_KW, "energyNeededKwh": needed,
                "departureHours": departure, "minKw": min_kw, "text": text}
    if kind == KIND_WATER_HEATER:
        tank, minimum = detail.get("tankTempC"), detail.get("minTankTempC")
        text = f"tank at {tank:.1f} C, released at {minimum:.1f} C" if tank is not None else "tank temperature unknown"
        return {"type": "tankTemperature", "limiting": view.blocked is not None, "tankTempC": tank,
                "minTankTempC": minimum, "text": text}
    if kind == KIND_HVAC:
        zone, max_zone, offset = detail.get("zoneTempC"), detail.get("maxZoneTempC"), detail.get("maxOffsetC")
        zone_text = f"zone at {zone:.1f} C" if zone is not None else "zone temperature unknown"
        return {"type": "comfortBand", "limiting": view.blocked is not None or view.capacity_kw < view.free_kw - EPS_KW,
                "zoneTempC": zone, "maxZoneTempC": max_zone, "maxOffsetC": offset,
                "text": f"{zone_text}, at most {max_zone:.1f} C; setpoint may rise {offset:.1f} C"}
    if kind == KIND_BATTERY:
        soc, reserve, discharge = detail.get("socPercent"), detail.get("reserveSocPercent"), detail.get("maxDischargeKw")
        max_kw = as_float(values, model.cfg.points["max"]) or 0.0
        soc_text = f"charge {soc:.0f} %" if soc is not None else "charge unknown"
        return {"type": "reserve", "limiting": (discharge or 0.0) < max_kw - EPS_KW, "socPercent": soc,
                "reserveSocPercent": reserve, "maxDischargeKw": discharge,
                "text": f"{soc_text}, reserve {reserve:.0f} %: may discharge {discharge or 0.0:.1f} kW"}
    return None


def status(cfg: VenConfig, control: ShedControl, event: EventState | None) -> dict[str, Any]:
    """The event, shed actions, restore queue, overrides and meter of the status RPC."""
    site = control.site
    return {
        "venId": cfg.ven_id,
        "event": None if event is None else {**event.to_dict(), "startTime": iso(event.start),
                                             "untilTime": iso(event.until), "active": event.started},
        "actions": {lid: a.to_dict() for lid, a in control.actions.items()},
        "restoreQueue": [[t, lid] for t, lid in control.restore_queue],
        "overrides": sorted(control.excluded_overrides()),
        "optOut": control.opted_out(event),
        "meterKw": site.meter[1] if site.meter else None,
        "historySamples": len(site.history),
    }
