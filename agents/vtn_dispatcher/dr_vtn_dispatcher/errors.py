"""Errors of the dr.vtn API and their wire form.

Every RPC returns either its result or, on failure, `{"error": message, "field": name, "code": code}`
(a successful result never has an `error` key). `code` is one of `invalid` (bad input, HTTP 400),
`not_found` (HTTP 404), `conflict` (the request contradicts the current state, HTTP 409) and `internal`
(the VTN could not complete it, e.g. its database is unreachable; HTTP 500).
"""

from __future__ import annotations

import logging
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
        return cls(INVALID, exc.field, exc.reason)

    def to_dict(self) -> dict[str, Any]:
        return {"error": str(self), "field": self.field, "code": self.code}


def invalid(field: str, message: str) -> ApiError:
    return ApiError(INVALID, field, message)


def not_found(field: str, message: str) -> ApiError:
    return ApiError(NOT_FOUND, field, message)


def conflict(field: str, message: str) -> ApiError:
    return ApiError(CONFLICT, field, message)


def api_call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run an API method and return its result, or the error dict of the convention above."""
    try:
        return fn(*args, **kwargs)
    except ApiError as exc:
        return exc.to_dict()
    except TypeError as exc:  # wrong arguments from an RPC caller
        if exc.__traceback__ is not None and exc.__traceback__.tb_next is None:
            return {"error": f"<arguments>: {exc}", "field": "<arguments>", "code": INVALID}
        _log.exception("%s failed", getattr(fn, "__name__", fn))
        return {"error": f"internal error: {exc}", "field": "<internal>", "code": INTERNAL}
    except Exception as exc:  # the caller gets a clear error; the log has the traceback
        _log.exception("%s failed", getattr(fn, "__name__", fn))
        return {"error": f"internal error: {exc.__class__.__name__}: {exc}", "field": "<internal>",
                "code": INTERNAL}
