"""The OpenAPI 3.1 document of the REST API, served at /api/openapi.json.

Every schema comes from `dr_web.shapes`, where each request and response shape is declared once: request
schemas are generated from the shared library's field definitions (the same ones the API validates with),
and the shapes dr.web builds itself (dashboard rows, a VEN's loads, health) are the ones its code fills in.
"""

from __future__ import annotations

from typing import Any

from dr_web import __version__
from dr_common.schema import ID_PATTERN

from dr_web.shapes import EVENT_STATUS, SCHEMAS, VEN_STATUS, S, _ref

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


_ID = {"type": "string", "pattern": ID_PATTERN}
_EVENT_ID = _param("event_id", "path", _ID, "the event's eventId (400 when it breaks the identifier rule)",
                   required=True)
_VEN_ID = _param("ven_id", "path", _ID, "the VEN's venId (400 when it breaks the identifier rule)", required=True)
_MINUTES = _param("minutes", "query", {"type": "integer", "minimum": 1, "maximum": 1440, "default": 15},
                  "how far back")


def document(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.1 document, with `server_url` as its server when given."""
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
                _param("transport", "query", {"type": "string", "enum": ["bus", "mqtt", "oadr"]}, "only this transport")],
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
        "/api/telemetry/vens/{ven_id}/loads": {"get": {
            "summary": "Every load of one VEN from its latest telemetry: power now, shed action and amount, the "
                       "constraint that limits it, override or opt-out", "operationId": "venLoads",
            "parameters": [_VEN_ID],
            "responses": {"200": _resp("the VEN's figures and its loads in shed order", _ref("VenLoads")),
                          "400": _resp("venId does not follow the identifier rule", ERR),
                          "404": _resp("no telemetry from this VEN (or it is not registered with dr.vtn)", ERR)}}},
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
