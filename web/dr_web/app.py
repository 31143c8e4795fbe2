"""Flask application factory of the status page and REST API."""

from __future__ import annotations

from typing import Any, Callable

from flask import Flask

from dr_web.blueprints.api import api
from dr_web.config import WebConfig
from dr_web.livestate import LiveState


def create_app(config: WebConfig, live: LiveState, health: Callable[[], dict[str, Any]]) -> Flask:
    app = Flask(__name__)
    app.config["DR_CONFIG"] = config
    app.config["DR_LIVE"] = live
    app.config["DR_HEALTH"] = health
    app.register_blueprint(api, url_prefix="/api")
    return app
