"""The status page: dashboard, events list, one event. The pages are shells; their scripts draw them from
the REST API and keep them live by polling."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template

from dr_web.context import ctx

pages = Blueprint("pages", __name__)


def _common() -> dict[str, Any]:
    config = ctx().config
    return {"refresh_ms": int(config.refresh_s * 1000), "writes_enabled": config.api_token is not None}


@pages.get("/")
def dashboard():
    return render_template("dashboard.html", page="dashboard", **_common())


@pages.get("/events")
def events():
    return render_template("events.html", page="events", **_common())


@pages.get("/events/<event_id>")
def event(event_id: str):
    return render_template("event.html", page="event", event_id=event_id, **_common())
