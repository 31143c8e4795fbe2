"""Every request and response shape of the REST API, declared once.

Request schemas are generated from `dr_common`'s field definitions, the ones the API validates with. The
shapes dr.web fills in itself take their keys from here (`DASHBOARD_TELEMETRY`, `LOAD_ROW`, `VEN_LOADS`),
and `dr_web.openapi` serves them all; dr.vtn's answers (`Ven`, `Event`, metrics) are described as it sends
them.
"""

from __future__ import annotations

from typing import Any, Iterable

from dr_common.payloads import EVENT_FIELDS, VEN_FIELDS
from dr_common.schema import ID_PATTERN, Field

_KIND = {"str": {"type": "string"}, "float": {"type": "number"}, "int": {"type": "integer"},
         "bool": {"type": "boolean"}, "dict": {"type": "object"}, "list": {"type": "array"},
         "time": {"type": "string", "format": "date-time"},
         "strlist": {"type": "array", "items": {"type": "string", "minLength": 1}},
         "id": {"type": "string", "pattern": ID_PATTERN},
         "idlist": {"type": "array", "items": {"type": "string", "pattern": ID_PATTERN}}}

_NOTES = {"time": "ISO 8601 (a time without zone is UTC) or epoch seconds / milliseconds",
          "strlist": "a single string is taken as a list of one",
          "idlist": "a single string is taken as a list of one"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    kind = schema.get("type")
    if kind is None:
        return {"anyOf": [schema, {"type": "null"}]}
    out = dict(schema)
    out["type"] = [kind, "null"] if isinstance(kind, str) else [*kind, "null"]
    return out


def request_schema(fields: Iterable[Field], description: str) -> dict[str, Any]:
    """The JSON schema of a request body, from the shared library's field definitions."""
    properties: dict[str, Any] = {}
    required = []
    for f in fields:
        prop = dict(_KIND[f.kind])
        if f.kind == "str":
            prop["maxLength"] = f.max_length
            prop["minLength"] = 1
            if f.choices:
                prop["enum"] = list(f.choices)
        if f.minimum is not None:
            prop["minimum"] = f.minimum
        if f.maximum is not None:
            prop["maximum"] = f.maximum
        notes = [_NOTES[f.kind]] if f.kind in _NOTES else []
        if f.aliases:
            notes.append("also accepted as " + ", ".join(f.aliases))
        if notes:
            prop["description"] = "; ".join(notes)
        properties[f.name] = prop
        if f.required:
            required.append(f.name)
    return {"type": "object", "description": description, "properties": properties, "required": required,
            "additionalProperties": True}


def _obj(properties: dict[str, Any], required: Iterable[str] = (), description: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties, "required": list(required)}
    if description:
        out["description"] = description
    return out


S, N, I, B = {"type": "string"}, {"type": "number"}, {"type": "integer"}, {"type": "boolean"}
T = {"type": "string", "format": "date-time"}
n = _nullable

EVENT_STATUS = {"type": "string", "enum": ["far", "near", "active", "completed", "cancelled"]}

# --- shapes dr.web fills in itself: the code takes its keys from these --------------------------------------
DASHBOARD_TELEMETRY: dict[str, Any] = {
    "ts": T, "usedPowerKw": N, "shedPowerKw": N, "baselinePowerKw": n(N), "requestedReductionKw": N,
    "eventId": n(S), "availableShedKw": n(N), "optOut": n(B)}
LOAD_STATES = ["shed", "restoring", "available", "idle", "limited", "critical", "override", "optedOut", "unknown"]
LOAD_ROW: dict[str, Any] = {
    "load": S, "kind": n(S), "priority": n(N),
    "state": {"type": "string", "enum": LOAD_STATES},
    "powerKw": n(N), "shedKw": n(N), "capacityKw": n(N),
    "action": {**n(S), "description": "what the VEN did, e.g. 'power limit; PowerLimitKw 7.2 -> 3'"},
    "actionType": {**n(S), "description": "powerLimit, elementOff, setpointRaise, circuitOff, powerSetpoint"},
    "constraint": {**n(S), "description": "the constraint on the load, in one line"},
    "constraintType": {**n(S), "description": "departureEnergy, tankTemperature, comfortBand, reserve, critical"},
    "limiting": {**B, "description": "the constraint is what caps the load's shed now"},
    "override": B, "optOut": B, "critical": B}
VEN_LOADS: dict[str, Any] = {
    "venId": S, "ts": n(T), "online": B, "eventId": n(S), "optOut": B, "usedPowerKw": n(N), "shedPowerKw": n(N),
    "requestedReductionKw": n(N), "baselinePowerKw": n(N),
    "loads": {"type": "array", "items": {"$ref": "#/components/schemas/LoadRow"}}}
HEALTH: dict[str, Any] = {
    "identity": S, "ok": B, "configError": n(S), "url": n(S), "version": S, "telemetryReceived": I,
    "telemetryRejected": I, "telemetryRejectedByReason": {"type": "object", "additionalProperties": I},
    "lastError": n(S), "vensSeen": I, "vensEvicted": I, "registryKnown": B, "valuesDropped": I,
    "writesEnabled": B, "peers": {"type": "object", "additionalProperties": {
        "type": "object", "properties": {"reachable": B, "health": {}, "error": S}, "required": ["reachable"]}}}
VEN_STATUS = {"type": "string", "enum": ["online", "offline", "unknown"]}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": S, "field": S, "code": {"type": "string", "enum": [
        "invalid", "unauthorized", "forbidden", "not_found", "conflict", "too_large", "internal", "upstream",
        "unavailable"]}}, ("error", "field", "code"),
        "Every error: a message, the field it is about ('<payload>' for the whole body, '<dr.vtn>' for a peer) "
        "and a code: invalid 400, unauthorized 401, forbidden 403, not_found 404, conflict 409, too_large 413, "
        "internal 500, upstream 502 (a peer failed), unavailable 503 (a peer did not answer). An internal or "
        "upstream failure is never described: its message carries an error id, and dr.web's log line with that id "
        "the detail."),
    "VenRegistration": request_schema(VEN_FIELDS, "Register a VEN, or update it when its venId is known. Field "
                                                  "names are matched ignoring case, '_' and '-'."),
    "Ven": _obj({"venId": {"type": "string", "pattern": ID_PATTERN}, "name": n(S), "site": n(S),
                 "group": n(S), "maxShedKw": n(N), "transport": {"type": "string", "enum": ["bus", "mqtt", "oadr"]},
                 "status": VEN_STATUS, "online": B, "lastSeen": n(T), "availableShedKw": n(N),
                 "usedPowerKw": n(N), "shedPowerKw": n(N), "registeredAt": n(T), "updatedAt": n(T),
                 "created": {"type": "boolean", "description": "in the answer to a registration: a new VEN"},
                 "servingEventId": n(S)}, ("venId", "status", "online")),
    "EventRequest": {**request_schema(EVENT_FIELDS, "Create a DR event. Give endTime or durationS, and "
                                                    "requestedReductionKw (LOAD_DISPATCH), a SIMPLE level 0-3 or "
                                                    "capKw (IMPORT_CAPACITY_LIMIT: each targeted VEN imports at "
                                                    "most that). "
                                                    "Target venIds, groups, or every VEN with allVens: true (an event "
                                                    "that targets nobody is a 400)."),
                     "anyOf": [{"required": ["endTime"]}, {"required": ["durationS"]}]},
    "Event": _obj({"eventId": S, "programId": n(S), "name": n(S), "status": EVENT_STATUS,
                   "signal": {"type": "string", "enum": ["LOAD_DISPATCH", "SIMPLE", "IMPORT_CAPACITY_LIMIT"]},
                   "level": n(I), "capKw": n(N),
                   "requestedReductionKw": N, "startTime": T, "endTime": T, "durationS": N, "rampUpS": N,
                   "randomizeStartS": N, "priority": I, "test": B, "venIds": {"type": "array", "items": S},
                   "groups": {"type": "array", "items": S}, "allVens": B, "modificationNumber": I,
                   "createdAt": n(T), "updatedAt": n(T), "endedAt": n(T)},
                  ("eventId", "status", "startTime", "endTime", "requestedReductionKw")),
    "VenParticipation": _obj({"venId": S, "state": {"type": "string", "enum": [
        "planned", "dispatched", "acked", "rejected", "superseded", "released", "dropped"]},
        "allocatedKw": N, "acceptedKw": n(N), "deliveredKw": n(N), "deliveredAt": n(T), "startOffsetS": N,
        "lastSeen": n(T), "online": n(B), "correlationId": n(S), "attempts": I, "responseMs": n(N), "ok": n(B),
        "error": n(S)}, ("venId", "state"), "One VEN in one event: its share, its ack and its response time."),
    "EventMetrics": _obj({"eventId": S, "status": EVENT_STATUS, "modificationNumber": I, "requestedReductionKw": N,
                          "allocatedKw": N, "acceptedKw": N, "currentReductionKw": N, "vensTargeted": I,
                          "vensDispatched": I, "vensResponding": I, "vensRejected": I, "avgResponseMs": n(N),
                          "maxResponseMs": n(N), "vens": {"type": "array", "items": _ref("VenParticipation")}},
                         ("eventId", "currentReductionKw", "vensResponding", "avgResponseMs")),
    "EventPerformance": {"type": "object", "additionalProperties": True,
                         "description": "The historian's M&V report of one event (platform.historian "
                                        "event_performance): baseline method, baseline and metered kW, reduction."},
    "Telemetry": _obj({"venId": S, "ts": T, "usedPowerKw": N, "shedPowerKw": N, "requestedReductionKw": N,
                       "eventId": n(S), "baselinePowerKw": n(N), "availableShedKw": n(N),
                       "loads": {"type": "object"}, "optOut": B}, ("venId", "ts", "usedPowerKw")),
    "VenPoint": _obj({"ts": T, "usedPowerKw": N, "baselinePowerKw": n(N), "shedPowerKw": N, "eventId": n(S)},
                     ("ts", "usedPowerKw")),
    "SitePoint": _obj({"ts": T, "usedPowerKw": N, "baselinePowerKw": N, "shedPowerKw": N,
                       "vens": {"type": "integer", "description": "VENs in the sum (heard in the last 30 s)"}},
                      ("ts", "usedPowerKw", "baselinePowerKw", "vens"),
                      "The site: the sum over VENs of their latest telemetry."),
    "DashboardVen": {"allOf": [_ref("Ven"), _obj({"registered": B, "telemetry": n(_obj(DASHBOARD_TELEMETRY))},
                                                  ("registered", "telemetry"))]},
    "LoadRow": _obj(LOAD_ROW, tuple(LOAD_ROW), "One load of a VEN: power now, the shed action and its amount, "
                                               "the constraint that limits it, override or opt-out."),
    "VenLoads": _obj(VEN_LOADS, tuple(VEN_LOADS), "A VEN's latest telemetry with every load, in shed order."),
    "Dashboard": _obj({"vens": {"type": "array", "items": _ref("DashboardVen")},
                       "events": {"type": "array", "items": _ref("Event")},
                       "site": _obj({"series": {"type": "array", "items": _ref("SitePoint")},
                                     "latest": n(_ref("SitePoint"))}, ("series", "latest")),
                       "counts": _obj({"vens": I, "online": I, "activeEvents": I}),
                       "notes": {"type": "array", "items": S,
                                 "description": "what could not be shown, e.g. dr.vtn did not answer"},
                       "now": T, "refreshS": N},
                      ("vens", "events", "site", "counts", "notes", "now")),
    "Health": _obj(HEALTH, ("identity", "ok", "peers")),
}

