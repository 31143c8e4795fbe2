"""Flask application factory of the status page and REST API."""

from __future__ import annotations

import logging
from typing import Any, Callable

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from dr_common.rejects import RejectCounter

from dr_web.blueprints.api import api
from dr_web.blueprints.pages import pages
from dr_web.config import WebConfig
from dr_web.context import EXTENSION, WebContext
from dr_web.gateway import Gateway
from dr_web.jsonsafe import StrictJSONProvider
from dr_web.livestate import LiveState
from dr_web.oadr3 import BASE_PATH as OADR3_PATH
from dr_web.oadr3.auth import TokenIssuer
from dr_web.oadr3.blueprint import Problem as Oadr3Problem
from dr_web.oadr3.blueprint import install as install_oadr3
from dr_web.problems import INTERNAL, INVALID, NOT_FOUND, TOO_LARGE, ApiProblem, error_id
from dr_web.upstream import Upstream
from dr_web.validation import MAX_BODY_BYTES

_log = logging.getLogger(__name__)

_HTTP_CODES = {400: INVALID, 404: NOT_FOUND, 413: TOO_LARGE}


class _App(Flask):
    json_provider_class = StrictJSONProvider


def create_app(config: WebConfig, live: LiveState, gateway: Gateway, health: Callable[[], dict[str, Any]],
               dropped: RejectCounter | None = None) -> Flask:
    """The Flask app of the status page and REST API; `dropped` counts values JSON could not carry."""
    dropped = dropped if dropped is not None else RejectCounter()
    app = _App(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.json.sort_keys = False
    app.json.counter = dropped  # type: ignore[attr-defined]
    upstream = Upstream(gateway, config.vtn_identity, config.historian_identity, config.rpc_timeout_s)
    app.extensions[EXTENSION] = WebContext(config=config, live=live, upstream=upstream, health=health,
                                           dropped=dropped)
    app.register_blueprint(api, url_prefix="/api")
    app.register_blueprint(pages)
    if config.openadr3 is not None:
        install_oadr3(app, TokenIssuer(config.openadr3), gateway, config.vtn_identity, config.rpc_timeout_s)

    @app.errorhandler(ApiProblem)
    def _problem(exc: ApiProblem):
        return jsonify(exc.to_dict()), exc.status

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if request.path.startswith(OADR3_PATH + "/") and config.openadr3 is not None:  # the spec's problem
            return Oadr3Problem(exc.code or 500, str(exc.description)[:300]).response()
        if not request.path.startswith("/api/"):
            return exc
        code = _HTTP_CODES.get(exc.code or 500, INVALID if (exc.code or 500) < 500 else INTERNAL)
        field = "<payload>" if exc.code == 413 else "<path>" if exc.code in (404, 405) else "<request>"
        message = {404: f"no endpoint {request.path}; see /api/openapi.json",
                   405: f"{request.method} is not allowed on {request.path}",
                   413: f"body larger than {MAX_BODY_BYTES} bytes"}.get(exc.code or 0, exc.description)
        response = jsonify({"error": f"{field}: {message}", "field": field, "code": code})
        response.status_code = exc.code or 500
        if exc.code == 405 and exc.valid_methods:
            response.headers["Allow"] = ", ".join(exc.valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        ref = error_id()
        _log.exception("dr.web: %s %s failed (error id %s)", request.method, request.path, ref)
        message = f"internal error (error id {ref}; the detail is in dr.web's log)"
        if not request.path.startswith("/api/"):
            return message, 500
        return jsonify({"error": f"<internal>: {message}", "field": "<internal>", "code": INTERNAL}), 500

    return app
