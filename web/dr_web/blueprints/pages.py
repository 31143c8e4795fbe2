"""The status page: dashboard, events list, one event. The pages are shells; their scripts draw them from
the REST API and keep them live by polling."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from dr_web.context import ctx
from dr_web.validation import path_id

pages = Blueprint("pages", __name__)


def _common() -> dict[str, Any]:
    config = ctx().config
    return {"refresh_ms": int(config.refresh_s * 1000), "writes_enabled": config.writes_enabled}


@pages.get("/")
def dashboard():
    """The dashboard page."""
    return render_template("dashboard.html", page="dashboard", **_common())


@pages.get("/events")
def events():
    """The events page."""
    return render_template("events.html", page="events", **_common())


@pages.get("/events/<event_id>")
def event(event_id: str):
    """One event's page."""
    path_id(event_id, "eventId")
    return render_template("event.html", page="event", event_id=event_id, **_common())


@pages.get("/vens/<ven_id>")
def ven(ven_id: str):
    """One VEN's page: every load, what was shed and why."""
    path_id(ven_id, "venId")
    return render_template("ven.html", page="ven", ven_id=ven_id, **_common())
