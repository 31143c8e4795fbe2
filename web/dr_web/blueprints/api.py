"""REST API blueprint: JSON in and out, DESIGN.md field names; reads are open, writes need the bearer token."""

from __future__ import annotations

from functools import wraps
from typing import Any, Callable

from flask import Blueprint, jsonify, request, url_for

from dr_common.timeutil import to_iso, utcnow

from dr_web import dashboard, loadview, openapi, validation
from dr_web.context import ctx
from dr_web.problems import NOT_FOUND, ApiProblem

api = Blueprint("api", __name__)

HEALTH_TIMEOUT_S = 2.0
DASHBOARD_TIMEOUT_S = 3.0


def write(view: Callable[..., Any]) -> Callable[..., Any]:
    """A write: the bearer token is checked before the body is even read."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        """The view, once the token is checked."""
        validation.check_bearer(request.headers.get("Authorization"), ctx().config.token())
        return view(*args, **kwargs)

    return wrapper


def body() -> dict[str, Any]:
    """The request body as a JSON object, or a 400."""
    return validation.json_object(request.get_data(cache=False))


def _minutes() -> float:
    return validation.whole_number(request.args, "minutes", 15, 1, 1440) * 60.0


# --- health and the API's description --------------------------------------------------------------
@api.get("/health")
def health():
    """dr.web's health and its peers'."""
    c = ctx()
    out = dict(c.health())
    out["writesEnabled"] = c.config.writes_enabled
    out["valuesDropped"] = c.dropped.total
    out["peers"] = c.upstream.peer_health(timeout=min(HEALTH_TIMEOUT_S, c.config.rpc_timeout_s))
    return jsonify(out)


@api.get("/openapi.json")
def openapi_document():
    """The OpenAPI document."""
    return jsonify(openapi.document(request.host_url.rstrip("/")))


# --- VENs -----------------------------------------------------------------------------------------
@api.post("/vens/", strict_slashes=False)
@write
def register_ven():
    """Register a VEN (201) or update a known one (200)."""
    payload = validation.ven_registration(body())
    ven = ctx().upstream.register_ven(payload)
    if isinstance(ven.get("venId"), str):
        ctx().live.add_registered(ven["venId"])
    return jsonify(ven), 201 if ven.get("created") else 200


@api.get("/vens/", strict_slashes=False)
def list_vens():
    """Registered VENs, filtered by the query."""
    filters = {"status": validation.choice(request.args, "status", validation.VEN_STATUSES),
               "group": validation.query_id(request.args, "group"), "site": validation.text(request.args, "site"),
               "transport": validation.choice(request.args, "transport", ("bus", "mqtt"))}
    return jsonify(ctx().upstream.list_vens(**{k: v for k, v in filters.items() if v is not None}))


@api.get("/vens/<ven_id>")
def get_ven(ven_id: str):
    """One VEN."""
    validation.path_id(ven_id, "venId")
    return jsonify(ctx().upstream.get_ven(ven_id))


# --- events ---------------------------------------------------------------------------------------
@api.post("/events/", strict_slashes=False)
@write
def create_event():
    """Create an event (201 with Location)."""
    payload = validation.event_request(body())
    event = ctx().upstream.create_event(payload)
    response = jsonify(event)
    response.status_code = 201
    response.headers["Location"] = url_for("api.get_event", event_id=event["eventId"]) \
        if isinstance(event.get("eventId"), str) else ""
    return response


@api.get("/events/", strict_slashes=False)
def list_events():
    """Events, newest first."""
    status = validation.choice(request.args, "status", validation.EVENT_STATUSES)
    limit = validation.whole_number(request.args, "limit", 100, 1, 10_000)
    offset = validation.whole_number(request.args, "offset", 0, 0, 10**9)
    return jsonify(ctx().upstream.list_events(status=status, limit=limit, offset=offset))


@api.get("/events/<event_id>")
def get_event(event_id: str):
    """One event."""
    validation.path_id(event_id, "eventId")
    return jsonify(ctx().upstream.get_event(event_id))


@api.post("/events/<event_id>/stop")
@write
def stop_event(event_id: str):
    """End an event now."""
    validation.path_id(event_id, "eventId")
    return jsonify(ctx().upstream.stop_event(event_id))


@api.get("/events/<event_id>/metrics")
def event_metrics(event_id: str):
    """An event's live metrics."""
    validation.path_id(event_id, "eventId")
    return jsonify(ctx().upstream.event_metrics(event_id))


@api.get("/events/<event_id>/performance")
def event_performance(event_id: str):
    """The historian's M&V report of an event."""
    validation.path_id(event_id, "eventId")
    return jsonify(ctx().upstream.event_performance(event_id))


# --- live telemetry (from the bus, kept by dr.web) ------------------------------------------------
@api.get("/telemetry/latest")
def latest_telemetry():
    """The latest telemetry of every VEN held."""
    return jsonify(ctx().live.latest)


@api.get("/telemetry/site")
def site_series():
    """The site's series for the live chart."""
    since = utcnow().timestamp() - _minutes()
    return jsonify(ctx().live.site_series(since=since))


@api.get("/telemetry/vens/<ven_id>")
def ven_series(ven_id: str):
    """One VEN's recent telemetry."""
    validation.path_id(ven_id, "venId")
    live = ctx().live
    since = utcnow().timestamp() - _minutes()
    if ven_id not in live.history:
        raise ApiProblem(NOT_FOUND, "venId", f"no telemetry from VEN {ven_id!r} since dr.web started")
    return jsonify(live.series(ven_id, since=since))


@api.get("/telemetry/vens/<ven_id>/loads")
def ven_loads(ven_id: str):
    """Every load of one VEN from its latest telemetry: power, shed action and amount, constraint, override."""
    validation.path_id(ven_id, "venId")
    live = ctx().live
    latest = live.latest.get(ven_id)
    if latest is None:
        raise ApiProblem(NOT_FOUND, "venId", f"no telemetry from VEN {ven_id!r} since dr.web started")
    return jsonify(loadview.ven_loads(latest, live.is_fresh(ven_id)))


@api.get("/dashboard")
def dashboard_view():
    """Everything the dashboard shows, in one poll."""
    c = ctx()
    now = utcnow()
    out = dashboard.build(c.upstream, c.live, now.timestamp(), _minutes(),
                          timeout=min(DASHBOARD_TIMEOUT_S, c.config.rpc_timeout_s))
    out["now"] = to_iso(now)
    out["refreshS"] = c.config.refresh_s
    return jsonify(out)
