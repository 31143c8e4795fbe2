"""The OpenADR 3.1 REST API (`openadr3.yaml`) at /openadr3/3.1.0, as a Flask blueprint of dr.web.

dr.web authenticates (OAuth2 client credentials, bearer tokens), checks the spec's scopes and parses the
request; the objects live in dr.vtn, reached over RPC (`VtnRpc.OADR_*`) with the client as principal, so the
privacy rules are applied where the data is. Every error is the spec's `problem` object
(`{type, title, status, detail}`) with its status: 400 bad input, 401 no or bad token, 403 scope or role,
404 unknown or not visible, 409 conflict, 500 internal (an error id, never the detail), 502/503 dr.vtn failed
or is not reachable.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from dr_common.rejects import RateLimitedLog, RejectCounter
from dr_common.schema import PayloadError, decode_json
from dr_common.topics import VtnRpc

from dr_web.gateway import Gateway, PeerFailed, PeerUnavailable
from dr_web.oadr3 import BASE_PATH
from dr_web.oadr3.auth import AuthFailure, Principal, TokenIssuer
from dr_web.problems import error_id

_log = logging.getLogger(__name__)

EXTENSION = "dr_web.oadr3"
KINDS = ("programs", "events", "vens", "resources", "subscriptions", "reports")
READ_SCOPES = {"programs": {"read_all", "read_targets"}, "events": {"read_all", "read_targets"},
               "vens": {"read_all", "read_ven_objects"}, "resources": {"read_all", "read_ven_objects"},
               "subscriptions": {"read_all", "read_ven_objects"}, "reports": {"read_all", "read_ven_objects"}}
WRITE_SCOPE = {"programs": "write_programs", "events": "write_events", "vens": "write_vens",
               "resources": "write_vens", "subscriptions": "write_subscriptions", "reports": "write_reports"}
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
          429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
STATUS_OF_CODE = {"invalid": 400, "forbidden": 403, "not_found": 404, "conflict": 409, "internal": 500}
INT_QUERY = ("skip", "limit")
_DIGITS = re.compile(r"[0-9]{1,10}")
STR_QUERY = ("programID", "eventID", "venName", "venID", "resourceName", "clientName")
OBJECT_TYPES = ("PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE")


@dataclass
class Oadr3Context:
    """What the blueprint needs, kept in `app.extensions[EXTENSION]` (replaced on reconfiguration)."""
    issuer: TokenIssuer
    gateway: Gateway
    vtn_identity: str
    timeout: float
    rejects: RejectCounter
    log: RateLimitedLog


class Problem(Exception):
    """An error answer in the spec's `problem` form."""

    def __init__(self, status: int, detail: str, extra: dict[str, Any] | None = None,
                 retry_after_s: int | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.extra = extra or {}
        self.retry_after_s = retry_after_s

    def response(self) -> Response:
        """The JSON response."""
        body = {"type": "about:blank", "title": TITLES.get(self.status, "Error"), "status": self.status,
                "detail": self.detail, **self.extra}
        answer = jsonify(body)
        answer.status_code = self.status
        if self.status == 401:
            answer.headers["WWW-Authenticate"] = 'Bearer realm="openadr3"'
        if self.retry_after_s is not None:
            answer.headers["Retry-After"] = str(max(1, int(self.retry_after_s)))
        return answer


def _ctx() -> Oadr3Context:
    return current_app.extensions[EXTENSION]


def _principal(scopes: set[str]) -> Principal:
    ctx = _ctx()
    who = ctx.issuer.verify(request.headers.get("Authorization"))
    if who is None:
        ctx.rejects.count("unauthorized")
        raise Problem(401, "a valid bearer token is required (POST auth/token)")
    if not who.scopes & scopes:
        ctx.rejects.count("forbidden")
        raise Problem(403, f"needs one of the scopes {', '.join(sorted(scopes))}")
    return who


def _vtn(method: str, *args: Any) -> Any:
    ctx = _ctx()
    try:
        result = ctx.gateway.call(ctx.vtn_identity, method, *args, timeout=ctx.timeout)
    except PeerUnavailable as exc:
        raise Problem(503, f"{exc.identity} is not reachable") from None
    except PeerFailed as exc:
        ref = error_id()
        _log.error("dr.web openadr3: %s.%s raised (error id %s): %s", exc.identity, method, ref, exc.reason)
        raise Problem(502, f"the VTN failed (error id {ref}; the detail is in dr.web's log)") from None
    if isinstance(result, dict) and "error" in result:
        status = STATUS_OF_CODE.get(str(result.get("code")), 502)
        if status >= 500:
            ref = error_id()
            _log.error("dr.web openadr3: %s answered an error (error id %s): %s", method, ref,
                       str(result.get("error"))[:500])
            raise Problem(status, f"the VTN failed (error id {ref}; the detail is in dr.web's log)")
        ctx.rejects.count(f"vtn:{result.get('code')}")
        raise Problem(status, str(result.get("error"))[:500])
    return result


def _query() -> dict[str, Any]:
    """The spec's query parameters; unknown ones are ignored."""
    out: dict[str, Any] = {}
    for name in INT_QUERY:
        raw = request.args.get(name)
        if raw is not None:
            if not _DIGITS.fullmatch(raw):
                raise Problem(400, f"{name}: must be a whole number from 0")
            out[name] = int(raw)
    for name in STR_QUERY:
        raw = request.args.get(name)
        if raw is not None:
            if not 1 <= len(raw) <= 128:
                raise Problem(400, f"{name}: must be 1-128 characters")
            out[name] = raw
    targets = [t for value in request.args.getlist("targets") for t in value.split(",") if t]
    if targets:
        if len(targets) > 100 or any(len(t) > 128 for t in targets):
            raise Problem(400, "targets: at most 100 targets of 1-128 characters")
        out["targets"] = targets
    objects = [o for value in request.args.getlist("objects") for o in value.split(",") if o]
    if objects:
        if any(o not in OBJECT_TYPES for o in objects):
            raise Problem(400, f"objects: each is one of {', '.join(OBJECT_TYPES)}")
        out["objects"] = sorted(set(objects))
    active = request.args.get("active")
    if active is not None:
        if active.lower() not in ("true", "false"):
            raise Problem(400, "active: must be true or false")
        out["active"] = active.lower() == "true"
    return out


def _body() -> Any:
    try:
        return decode_json(request.get_data(cache=False))
    except PayloadError as exc:
        raise Problem(400, f"{exc.field}: {exc.reason}") from None


def _kind(kind: str) -> str:
    if kind not in KINDS:
        raise Problem(404, f"no endpoint {request.path}")
    return kind


def create_blueprint() -> Blueprint:
    """The blueprint; the app must hold an `Oadr3Context` in `app.extensions[EXTENSION]`."""
    bp = Blueprint("oadr3", __name__, url_prefix=BASE_PATH)

    @bp.errorhandler(Problem)
    def _problem(exc: Problem) -> Response:
        if exc.status < 500:
            _ctx().log.warning(f"{exc.status}", "dr.web openadr3: %s %s refused (%d): %s", request.method,
                               request.path[:200], exc.status, exc.detail[:200])
        return exc.response()

    @bp.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        if isinstance(exc, HTTPException):
            return Problem(exc.code or 500, str(exc.description)[:300]).response()
        ref = error_id()
        _log.exception("dr.web openadr3: %s %s failed (error id %s)", request.method, request.path[:200], ref)
        return Problem(500, f"internal error (error id {ref}; the detail is in dr.web's log)").response()

    @bp.get("/auth/server")
    def auth_server() -> Response:
        """The token endpoint's URL."""
        return jsonify({"tokenURL": request.host_url.rstrip("/") + BASE_PATH + "/auth/token"})

    @bp.post("/auth/token")
    def auth_token() -> Response:
        """OAuth2 client credentials (form-encoded) -> a bearer token."""
        if request.mimetype != "application/x-www-form-urlencoded":
            raise Problem(400, "the body must be application/x-www-form-urlencoded",
                          {"error": "invalid_request", "error_description": "form-encoded body expected"})
        try:
            answer = jsonify(_ctx().issuer.issue(request.form))
        except AuthFailure as exc:
            _ctx().rejects.count(exc.error)
            raise Problem(exc.status, exc.description, {"error": exc.error, "error_description": exc.description},
                          retry_after_s=exc.retry_after_s) from None
        answer.headers["Cache-Control"] = "no-store"
        return answer

    @bp.get("/notifiers")
    def notifiers() -> Response:
        """The notifier bindings this VTN offers."""
        who = _principal({"read_all", "read_targets", "read_ven_objects"})
        return jsonify(_vtn(VtnRpc.OADR_NOTIFIERS, who.to_rpc()))

    @bp.get("/notifiers/mqtt/topics/<path:path>")
    def mqtt_topics(path: str) -> Response:
        """The MQTT topic names for operations on a kind of object (a VEN asks only for its own VEN's)."""
        if path.startswith("vens/"):
            who = _principal({"read_all", "read_ven_objects"})
        elif path.startswith("programs"):   # dr.vtn answers a VEN 404 (the spec lists no 403 here)
            who = _principal({"read_all", "read_targets"})
        else:
            who = _principal({"read_all"})
        if len(path) > 300:
            raise Problem(400, "the topics path is too long")
        return jsonify(_vtn(VtnRpc.OADR_MQTT_TOPICS, path, who.to_rpc()))

    @bp.get("/<kind>")
    def search(kind: str) -> Response:
        """Objects of a kind the client may see, by the spec's query parameters."""
        who = _principal(READ_SCOPES[_kind(kind)])
        return jsonify(_vtn(VtnRpc.OADR_SEARCH, kind, who.to_rpc(), _query()))

    @bp.post("/<kind>")
    def create(kind: str) -> tuple[Response, int]:
        """Create an object (201)."""
        who = _principal({WRITE_SCOPE[_kind(kind)]})
        return jsonify(_vtn(VtnRpc.OADR_CREATE, kind, _body(), who.to_rpc())), 201

    @bp.get("/<kind>/<object_id>")
    def read(kind: str, object_id: str) -> Response:
        """One object."""
        who = _principal(READ_SCOPES[_kind(kind)])
        return jsonify(_vtn(VtnRpc.OADR_GET, kind, object_id, who.to_rpc()))

    @bp.put("/<kind>/<object_id>")
    def update(kind: str, object_id: str) -> Response:
        """Replace an object's client-provided fields."""
        who = _principal({WRITE_SCOPE[_kind(kind)]})
        return jsonify(_vtn(VtnRpc.OADR_UPDATE, kind, object_id, _body(), who.to_rpc()))

    @bp.delete("/<kind>/<object_id>")
    def delete(kind: str, object_id: str) -> Response:
        """Delete an object; answers it as it was."""
        who = _principal({WRITE_SCOPE[_kind(kind)]})
        return jsonify(_vtn(VtnRpc.OADR_DELETE, kind, object_id, who.to_rpc()))

    return bp


def install(app: Any, issuer: TokenIssuer, gateway: Gateway, vtn_identity: str, timeout: float,
            clock: Callable[[], float] | None = None) -> Oadr3Context:
    """Register the blueprint on `app` (once) and set its context; returns the context."""
    kwargs = {"clock": clock} if clock is not None else {}
    ctx = Oadr3Context(issuer, gateway, vtn_identity, timeout, RejectCounter(), RateLimitedLog(_log, **kwargs))
    app.extensions[EXTENSION] = ctx
    if "oadr3" not in app.blueprints:
        app.register_blueprint(create_blueprint())
    return ctx
