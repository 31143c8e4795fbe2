"""REST API blueprint: JSON in and out, DESIGN.md field names."""

from __future__ import annotations

from flask import Blueprint, current_app, jsonify

api = Blueprint("api", __name__)


@api.get("/health")
def health():
    return jsonify(current_app.config["DR_HEALTH"]())


@api.get("/telemetry/latest")
def latest_telemetry():
    return jsonify(current_app.config["DR_LIVE"].latest)
