"""Errors of the dr.vtn API and their wire form.

Every RPC returns either its result or, on failure, `{"error": message, "field": name, "code": code}`
(a successful result never has an `error` key). `code` is one of `invalid` (bad input, HTTP 400),
`not_found` (HTTP 404), `conflict` (the request contradicts the current state, HTTP 409) and `internal`
(the VTN could not complete it, e.g. its database is unreachable; HTTP 500).

An internal failure answers with a generic message and an `errorId`; the detail (exception, SQL, parameters)
goes to the log under that id only, never to the caller.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from dr_common.schema import PayloadError

_log = logging.getLogger(__name__)

INVALID = "invalid"
INTERNAL = "internal"
NOT_FOUND = "not_found"
CONFLICT = "conflict"


class ApiError(ValueError):
    """A refused request; nothing was written."""

    def __init__(self, code: str, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.code = code
        self.field = field
        self.message = message

    @classmethod
    def from_payload_error(cls, exc: PayloadError) -> ApiError:
        """The `invalid` error of a refused payload field."""
        return cls(INVALID, exc.field, exc.reason)

    def to_dict(self) -> dict[str, Any]:
        """The wire form."""
        return {"error": str(self), "field": self.field, "code": self.code}


def invalid(field: str, message: str) -> ApiError:
    """Bad input (HTTP 400)."""
    return ApiError(INVALID, field, message)


def not_found(field: str, message: str) -> ApiError:
    """Nothing with that id (HTTP 404)."""
    return ApiError(NOT_FOUND, field, message)


def conflict(field: str, message: str) -> ApiError:
    """Contradicts the current state (HTTP 409)."""
    return ApiError(CONFLICT, field, message)


def internal_error(name: str) -> dict[str, Any]:
    """Log the exception being handled under a new error id; the caller's answer carries only the id."""
    error_id = uuid.uuid4().hex[:12]
    _log.exception("%s failed (errorId %s)", name, error_id)
    return {"error": f"internal error (errorId {error_id}); the VTN's log has the detail", "field": "<internal>",
            "code": INTERNAL, "errorId": error_id}


def api_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an API method and return its result, or the error dict of the convention above."""
    name = str(getattr(fn, "__name__", "call"))
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        return exc.to_dict()
    except TypeError as exc:  # wrong arguments from an RPC caller
        if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
            return {"error": f"<arguments>: {exc}", "field": "<arguments>", "code": INVALID}
        return internal_error(name)
    except Exception:  # the caller gets a generic error with an id; the log has the traceback
        return internal_error(name)
