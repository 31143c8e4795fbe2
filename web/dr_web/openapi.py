"""The OpenAPI 3.1 document of the REST API, served at /api/openapi.json.

Request schemas are generated from the shared library's field definitions (the same ones the API validates
with), so the document and the validation cannot drift apart; response schemas follow dr.vtn's answers.
"""

from __future__ import annotations

from typing import Any, Iterable

from dr_common.payloads import EVENT_FIELDS, VEN_FIELDS
from dr_common.schema import ID_PATTERN, Field

from dr_web import __version__

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
VEN_STATUS = {"type": "string", "enum": ["online", "offline", "unknown"]}

SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": S, "field": S, "code": {"type": "string", "enum": [
        "invalid", "unauthorized", "forbidden", "not_found", "conflict", "too_large", "internal", "upstream",
        "unavailable"]}}, ("error", "field", "code"),
        "Every error: a message, the field it is about ('<payload>' for the whole body, '<dr.vtn>' for a peer) "
        "and a code: invalid 400, unauthorized 401, forbidden 403, not_found 404, conflict 409, too_large 413, "
        "internal 500, upstream 502 (a peer failed), unavailable 503 (a peer did not answer)."),
    "VenRegistration": request_schema(VEN_FIELDS, "Register a VEN, or update it when its venId is known. Field "
                                                  "names are matched ignoring case, '_' and '-'."),
    "Ven": _obj({"venId": {"type": "string", "pattern": ID_PATTERN}, "name": n(S), "site": n(S),
                 "group": n(S), "maxShedKw": n(N), "transport": {"type": "string", "enum": ["bus", "mqtt"]},
                 "status": VEN_STATUS, "online": B, "lastSeen": n(T), "availableShedKw": n(N),
                 "usedPowerKw": n(N), "shedPowerKw": n(N), "registeredAt": n(T), "updatedAt": n(T),
                 "created": {"type": "boolean", "description": "in the answer to a registration: a new VEN"},
                 "servingEventId": n(S)}, ("venId", "status", "online")),
    "EventRequest": {**request_schema(EVENT_FIELDS, "Create a DR event. Give endTime or durationS, and "
                                                    "requestedReductionKw (LOAD_DISPATCH) or a SIMPLE level 0-3. "
                                                    "No venIds and no groups: every VEN is targeted."),
                     "anyOf": [{"required": ["endTime"]}, {"required": ["durationS"]}]},
    "Event": _obj({"eventId": S, "programId": n(S), "name": n(S), "status": EVENT_STATUS,
                   "signal": {"type": "string", "enum": ["LOAD_DISPATCH", "SIMPLE"]}, "level": n(I),
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
    "DashboardVen": {"allOf": [_ref("Ven"), _obj({"registered": B, "telemetry": n(_obj({
        "ts": T, "usedPowerKw": N, "shedPowerKw": N, "baselinePowerKw": n(N), "requestedReductionKw": N,
        "eventId": n(S), "availableShedKw": n(N)}))}, ("registered", "telemetry"))]},
    "Dashboard": _obj({"vens": {"type": "array", "items": _ref("DashboardVen")},
                       "events": {"type": "array", "items": _ref("Event")},
                       "site": _obj({"series": {"type": "array", "items": _ref("SitePoint")},
                                     "latest": n(_ref("SitePoint"))}, ("series", "latest")),
                       "counts": _obj({"vens": I, "online": I, "activeEvents": I}),
                       "notes": {"type": "array", "items": S,
                                 "description": "what could not be shown, e.g. dr.vtn did not answer"},
                       "now": T, "refreshS": N},
                      ("vens", "events", "site", "counts", "notes", "now")),
    "Health": _obj({"identity": S, "ok": B, "configError": n(S), "url": n(S), "version": S,
                    "telemetryReceived": I, "telemetryRejected": I, "lastError": n(S), "vensSeen": I,
                    "writesEnabled": B, "peers": {"type": "object", "additionalProperties": _obj(
                        {"reachable": B, "health": {}, "error": S}, ("reachable",))}},
                   ("identity", "ok", "peers")),
}

_JSON = "application/json"


def _content(schema: dict[str, Any]) -> dict[str, Any]:
    return {_JSON: {"schema": schema}}


def _resp(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description}
    if schema is not None:
        out["content"] = _content(schema)
    return out


ERR = _ref("Error")
_UP = {"502": _resp("dr.vtn answered with an exception", ERR),
       "503": _resp("dr.vtn did not answer (not running, not connected, timed out)", ERR)}
_WRITE = {"400": _resp("bad body: not JSON, not an object, or a field that does not parse; `field` names it", ERR),
          "401": _resp("missing or wrong bearer token", ERR),
          "403": _resp("writes are disabled (no api_token configured)", ERR),
          "413": _resp("body larger than 64 KiB", ERR)}
_SECURE = [{"bearer": []}]


def _param(name: str, where: str, schema: dict[str, Any], description: str, required: bool = False) -> dict:
    return {"name": name, "in": where, "schema": schema, "description": description, "required": required}


_EVENT_ID = _param("event_id", "path", S, "the event's eventId", required=True)
_VEN_ID = _param("ven_id", "path", S, "the VEN's venId", required=True)
_MINUTES = _param("minutes", "query", {"type": "integer", "minimum": 1, "maximum": 1440, "default": 15},
                  "how far back")


def document(server_url: str | None = None) -> dict[str, Any]:
    paths = {
        "/api/health": {"get": {
            "summary": "Health of dr.web and of the peers it calls", "operationId": "health",
            "responses": {"200": _resp("dr.web's own health and what dr.vtn and the historian answered",
                                       _ref("Health"))}}},
        "/api/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                      "responses": {"200": _resp("OpenAPI 3.1", {"type": "object"})}}},
        "/api/vens/": {
            "post": {"summary": "Register a VEN (or update a known one)", "operationId": "registerVen",
                     "security": _SECURE, "requestBody": {"required": True, "content": _content(
                         _ref("VenRegistration"))},
                     "responses": {"201": _resp("registered", _ref("Ven")),
                                   "200": _resp("updated (the venId was known)", _ref("Ven")), **_WRITE, **_UP}},
            "get": {"summary": "List VENs", "operationId": "listVens", "parameters": [
                _param("status", "query", VEN_STATUS, "only VENs in this state"),
                _param("group", "query", S, "only this group"), _param("site", "query", S, "only this site"),
                _param("transport", "query", {"type": "string", "enum": ["bus", "mqtt"]}, "only this transport")],
                    "responses": {"200": _resp("the VENs, by venId", {"type": "array", "items": _ref("Ven")}),
                                  "400": _resp("a bad query parameter", ERR), **_UP}}},
        "/api/vens/{ven_id}": {"get": {
            "summary": "One VEN", "operationId": "getVen", "parameters": [_VEN_ID],
            "responses": {"200": _resp("the VEN, with the event it serves", _ref("Ven")),
                          "404": _resp("no such VEN", ERR), **_UP}}},
        "/api/events/": {
            "post": {"summary": "Create a DR event", "operationId": "createEvent", "security": _SECURE,
                     "requestBody": {"required": True, "content": _content(_ref("EventRequest"))},
                     "responses": {"201": _resp("created; dispatched at its start", _ref("Event")),
                                   "409": _resp("an event with this eventId exists", ERR), **_WRITE, **_UP}},
            "get": {"summary": "List events, newest first", "operationId": "listEvents", "parameters": [
                _param("status", "query", EVENT_STATUS, "only events in this state"),
                _param("limit", "query", {"type": "integer", "minimum": 1, "maximum": 10000, "default": 100},
                       "at most this many"),
                _param("offset", "query", {"type": "integer", "minimum": 0, "default": 0}, "skip this many")],
                    "responses": {"200": _resp("events", {"type": "array", "items": _ref("Event")}),
                                  "400": _resp("a bad query parameter", ERR), **_UP}}},
        "/api/events/{event_id}": {"get": {
            "summary": "One event", "operationId": "getEvent", "parameters": [_EVENT_ID],
            "responses": {"200": _resp("the event", _ref("Event")), "404": _resp("no such event", ERR), **_UP}}},
        "/api/events/{event_id}/stop": {"post": {
            "summary": "End an event now (an active one completes and VENs are restored; a later one is "
                       "cancelled)", "operationId": "stopEvent", "security": _SECURE, "parameters": [_EVENT_ID],
            "responses": {"200": _resp("the event, completed or cancelled", _ref("Event")),
                          "404": _resp("no such event", ERR), "409": _resp("the event has already ended", ERR),
                          "401": _WRITE["401"], "403": _WRITE["403"], **_UP}}},
        "/api/events/{event_id}/metrics": {"get": {
            "summary": "Live metrics of an event: reduction, responding VENs, response times, per-VEN acks",
            "operationId": "eventMetrics", "parameters": [_EVENT_ID],
            "responses": {"200": _resp("metrics", _ref("EventMetrics")), "404": _resp("no such event", ERR),
                          **_UP}}},
        "/api/events/{event_id}/performance": {"get": {
            "summary": "The M&V report of an event from platform.historian", "operationId": "eventPerformance",
            "parameters": [_EVENT_ID],
            "responses": {"200": _resp("the historian's report", _ref("EventPerformance")),
                          "404": _resp("the historian knows no such event", ERR),
                          "502": _resp("the historian could not compute the report (e.g. no command of the "
                                       "event recorded yet) or failed", ERR),
                          "503": _resp("the historian did not answer", ERR)}}},
        "/api/telemetry/latest": {"get": {
            "summary": "The latest telemetry of every VEN heard on the bus", "operationId": "latestTelemetry",
            "responses": {"200": _resp("by venId", {"type": "object",
                                                    "additionalProperties": _ref("Telemetry")})}}},
        "/api/telemetry/site": {"get": {
            "summary": "Site power against baseline (sum over VENs) for the live chart", "operationId": "siteSeries",
            "parameters": [_MINUTES],
            "responses": {"200": _resp("oldest first", {"type": "array", "items": _ref("SitePoint")}),
                          "400": _resp("a bad query parameter", ERR)}}},
        "/api/telemetry/vens/{ven_id}": {"get": {
            "summary": "One VEN's recent telemetry", "operationId": "venSeries", "parameters": [_VEN_ID, _MINUTES],
            "responses": {"200": _resp("oldest first", {"type": "array", "items": _ref("VenPoint")}),
                          "400": _resp("a bad query parameter", ERR),
                          "404": _resp("no telemetry from this VEN", ERR)}}},
        "/api/dashboard": {"get": {
            "summary": "Everything the dashboard shows, in one poll", "operationId": "dashboard",
            "parameters": [_MINUTES],
            "responses": {"200": _resp("VENs, open events, site series; `notes` says what a silent peer left out",
                                       _ref("Dashboard")),
                          "400": _resp("a bad query parameter", ERR)}}},
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "volttron-dr REST API (dr.web)", "version": __version__,
                 "description": "Demand-response events and VENs. JSON in and out. Reads are open; writes need "
                                "`Authorization: Bearer <api_token>` from dr.web's configuration."},
        "paths": paths,
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
