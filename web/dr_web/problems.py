"""The one error shape of the REST API: `{"error": message, "field": name, "code": code}`.

It is dr.vtn's RPC error convention, so an error from dr.vtn reaches the HTTP client unchanged, with the
HTTP status its code stands for.
"""

from __future__ import annotations

import secrets
from typing import Any

from dr_common.schema import PayloadError

INVALID = "invalid"
NOT_FOUND = "not_found"
CONFLICT = "conflict"
INTERNAL = "internal"
UNAUTHORIZED = "unauthorized"
FORBIDDEN = "forbidden"
UNAVAILABLE = "unavailable"
UPSTREAM = "upstream"
TOO_LARGE = "too_large"

STATUS_OF_CODE = {INVALID: 400, UNAUTHORIZED: 401, FORBIDDEN: 403, NOT_FOUND: 404, CONFLICT: 409,
                  TOO_LARGE: 413, INTERNAL: 500, UPSTREAM: 502, UNAVAILABLE: 503}


def error_id() -> str:
    """A short random id that ties an error answer to the log line holding its detail."""
    return secrets.token_hex(6)


class ApiProblem(Exception):
    """A request that could not be served; nothing was written."""

    def __init__(self, code: str, field: str, message: str, status: int | None = None) -> None:
        super().__init__(f"{field}: {message}")
        self.code = code
        self.field = field
        self.message = message
        self.status = status or STATUS_OF_CODE.get(code, 500)

    @classmethod
    def from_payload_error(cls, exc: PayloadError) -> "ApiProblem":
        """A 400 naming the payload's field."""
        return cls(INVALID, exc.field, exc.reason)

    @classmethod
    def from_rpc_error(cls, result: dict[str, Any]) -> "ApiProblem":
        """dr.vtn's `{"error", "field", "code"}`; an unknown code is an upstream failure (502)."""
        code = result.get("code")
        field = str(result.get("field") or "<payload>")
        message = str(result.get("error"))
        prefix = f"{field}: "
        if message.startswith(prefix):
            message = message[len(prefix):]
        if code not in (INVALID, NOT_FOUND, CONFLICT, INTERNAL):
            return cls(UPSTREAM, field, f"unexpected error code {code!r}: {message}")
        return cls(code, field, message)

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": f"{self.field}: {self.message}", "field": self.field, "code": self.code}
