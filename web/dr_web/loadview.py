"""Which loads a VEN shed: one row per load from the `loads` of its latest telemetry, for the VEN page.

The VEN documents the shape (agents/ven_load_control/README.md, "Telemetry loads"): per load `kind`,
`priority`, `state`, `powerKw`, `shedKw`, `capacityKw`, `action` `{type, points, from, since, restoring}`,
`constraint` `{type, limiting, text, ...}`, `override`, `optOut`, `critical`, `blocked`, `setPoints`. Older
VENs send only `powerKw`, `shedKw`, `capacityKw`, `setPoints`, `blocked`, `override`, `critical`: their rows
are derived from those. Anything of the wrong type is left out, never raised.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

from dr_web.shapes import LOAD_ROW, LOAD_STATES, VEN_LOADS

TEXT_MAX = 300
STATES = tuple(LOAD_STATES)
CONSTRAINT_LABELS = {"departureEnergy": "departure energy", "tankTemperature": "tank temperature",
                     "comfortBand": "comfort band", "reserve": "reserve", "critical": "critical circuit"}
ACTION_LABELS = {"powerLimit": "power limit", "elementOff": "element off", "setpointRaise": "setpoint raised",
                 "circuitOff": "circuit off", "powerSetpoint": "power setpoint"}
ROW_KEYS = tuple(LOAD_ROW)
DOC_KEYS = tuple(VEN_LOADS)


def ven_loads(telemetry: Mapping[str, Any], fresh: bool) -> dict[str, Any]:
    """The VEN page's document: the VEN's latest figures and one row per load, in shed order."""
    raw = telemetry.get("loads")
    loads = raw if isinstance(raw, Mapping) else {}
    ven_opt_out = telemetry.get("optOut") is True
    rows = [load_row(str(name), entry, ven_opt_out) for name, entry in loads.items() if isinstance(entry, Mapping)]
    rows.sort(key=lambda r: (r["priority"] if r["priority"] is not None else math.inf, r["load"]))
    return {"venId": telemetry.get("venId"), "ts": telemetry.get("ts"), "online": fresh,
            "eventId": telemetry.get("eventId"), "optOut": ven_opt_out,
            "usedPowerKw": _num(telemetry.get("usedPowerKw")), "shedPowerKw": _num(telemetry.get("shedPowerKw")),
            "requestedReductionKw": _num(telemetry.get("requestedReductionKw")),
            "baselinePowerKw": _num(telemetry.get("baselinePowerKw")), "loads": rows}


def load_row(name: str, entry: Mapping[str, Any], ven_opt_out: bool = False) -> dict[str, Any]:
    """One load as the page shows it: power now, shed action and amount, the constraint, override/opt-out."""
    shed = _num(entry.get("shedKw"))
    action = entry.get("action") if isinstance(entry.get("action"), Mapping) else None
    points = action.get("points") if action is not None else entry.get("setPoints")
    constraint = entry.get("constraint") if isinstance(entry.get("constraint"), Mapping) else None
    blocked = _text(entry.get("blocked"))
    override = entry.get("override") is True
    opt_out = entry.get("optOut") is True or ven_opt_out
    critical = entry.get("critical") is True
    state = entry.get("state") if entry.get("state") in STATES else _derive_state(entry, shed, override, opt_out,
                                                                                    critical, blocked)
    action_type = _text(action.get("type")) if action is not None else None
    action_text = _action_text(action_type, points, action)
    constraint_type = _text(constraint.get("type")) if constraint is not None else None
    constraint_text = _text(constraint.get("text")) if constraint is not None else None
    if constraint_text is None and constraint_type is not None:
        constraint_text = CONSTRAINT_LABELS.get(constraint_type, constraint_type)
    if constraint_text is None and blocked is not None:
        constraint_text = blocked
    limiting = (constraint.get("limiting") is True) if constraint is not None else blocked is not None
    return {"load": name[:TEXT_MAX], "kind": _text(entry.get("kind")), "priority": _num(entry.get("priority")),
            "state": state, "powerKw": _num(entry.get("powerKw")), "shedKw": shed,
            "capacityKw": _num(entry.get("capacityKw")), "action": action_text, "actionType": action_type,
            "constraint": constraint_text, "constraintType": constraint_type, "limiting": limiting,
            "override": override, "optOut": opt_out, "critical": critical}


def _derive_state(entry: Mapping[str, Any], shed: float | None, override: bool, opt_out: bool, critical: bool,
                  blocked: str | None) -> str:
    if critical:
        return "critical"
    if override:
        return "override"
    if opt_out:
        return "optedOut"
    if shed is not None and shed > 0 or entry.get("setPoints"):
        return "shed"
    if blocked is not None:
        return "limited"
    if _num(entry.get("powerKw")) is None:
        return "unknown"
    return "available"


def _action_text(action_type: str | None, points: Any, action: Mapping[str, Any] | None) -> str | None:
    parts = []
    if action_type is not None:
        parts.append(ACTION_LABELS.get(action_type, action_type))
    if isinstance(points, Mapping) and points:
        before = action.get("from") if action is not None and isinstance(action.get("from"), Mapping) else {}
        for point, value in list(points.items())[:8]:
            old = before.get(point)
            parts.append(f"{point} {_value(old)} -> {_value(value)}" if old is not None else
                         f"{point} = {_value(value)}")
    if action is not None and action.get("restoring") is True:
        parts.append("restoring")
    return "; ".join(parts)[:TEXT_MAX] if parts else None


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)[:40]


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _text(value: Any) -> str | None:
    return value[:TEXT_MAX] if isinstance(value, str) and value else None
