"""Edge validation of the REST API: a request body is a JSON object that parses with the shared schema,
or the answer is a 400 naming the field. What is forwarded to dr.vtn holds only the schema's fields."""

from __future__ import annotations

import hmac
from datetime import datetime, timezone
from typing import Any, Iterable, Mapping

from dr_common.payloads import EVENT_FIELDS, VEN_FIELDS, EventRequest, VenRegistration
from dr_common.schema import Field, PayloadError, check_id, decode_json, normalize_key
from dr_common.timeutil import parse_time

from dr_web.problems import FORBIDDEN, INVALID, UNAUTHORIZED, ApiProblem

MAX_BODY_BYTES = 64 * 1024
VEN_STATUSES = ("online", "offline", "unknown")
EARLIEST = datetime(1970, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(9000, 1, 1, tzinfo=timezone.utc)
EVENT_STATUSES = ("far", "near", "active", "completed", "cancelled")
OPEN_EVENT_STATUSES = ("active", "near", "far")


def json_object(data: bytes) -> dict[str, Any]:
    """The body as a JSON object (strict numbers: no NaN, Infinity or out-of-range values), or a 400."""
    if not data.strip():
        raise ApiProblem(INVALID, "<payload>", "empty body; expected a JSON object")
    try:
        return decode_json(data)
    except PayloadError as exc:
        raise ApiProblem.from_payload_error(exc) from None
    except ValueError as exc:  # e.g. an integer literal longer than Python's digit limit
        raise ApiProblem(INVALID, "<payload>", f"not valid JSON ({exc})") from None


def path_id(value: str, field: str) -> str:
    """An identifier from the URL (`venId`, `eventId`), checked before anything else: a 400 naming it."""
    try:
        return check_id(value, field)
    except PayloadError as exc:
        raise ApiProblem.from_payload_error(exc) from None


def query_id(args: Mapping[str, str], name: str) -> str | None:
    """An identifier in the query string (e.g. `group`), or None when absent; a 400 naming it when bad."""
    value = args.get(name)
    if value is None or value == "":
        return None
    return path_id(value, name)


def known_fields(fields: Iterable[Field], body: Mapping[str, Any]) -> dict[str, Any]:
    """Only the schema's fields of the body."""
    keys = set().union(*(f.keys() for f in fields))
    return {key: value for key, value in body.items() if normalize_key(key) in keys}


def check_times(fields: Iterable[Field], body: Mapping[str, Any]) -> None:
    """Every time in the body is one the whole chain can store and render: 1970 to 9000 (UTC)."""
    for f in fields:
        if f.kind != "time":
            continue
        keys = f.keys()
        for key, value in body.items():
            if value is None or not isinstance(key, str) or normalize_key(key) not in keys:
                continue
            try:
                when = parse_time(value).astimezone(timezone.utc)
            except ValueError:
                continue  # the schema's parser names the problem
            except (OverflowError, OSError):
                when = None
            if when is None or not EARLIEST <= when < LATEST:
                raise ApiProblem(INVALID, f.name, f"must be between {EARLIEST.year} and {LATEST.year}; got {value!r}")


def ven_registration(body: Mapping[str, Any]) -> dict[str, Any]:
    """A registration as forwarded to dr.vtn, or a 400 naming the field."""
    try:
        VenRegistration.from_payload(body)
    except PayloadError as exc:
        raise ApiProblem.from_payload_error(exc) from None
    return known_fields(VEN_FIELDS, body)


def event_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """An event as forwarded to dr.vtn, or a 400 naming the field."""
    check_times(EVENT_FIELDS, body)
    try:
        request = EventRequest.from_payload(body)
    except PayloadError as exc:
        raise ApiProblem.from_payload_error(exc) from None
    except OverflowError:  # startTime + durationS beyond what a datetime holds
        raise ApiProblem(INVALID, "durationS", f"ends after {LATEST.year}") from None
    if request.end_time >= LATEST:
        raise ApiProblem(INVALID, "durationS", f"ends after {LATEST.year}")
    return known_fields(EVENT_FIELDS, body)


def choice(args: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str | None:
    """A query parameter that must be one of `choices`, or None when absent."""
    value = args.get(name)
    if value is None or value == "":
        return None
    if value not in choices:
        raise ApiProblem(INVALID, name, f"must be one of {', '.join(choices)}; got {value!r}")
    return value


def text(args: Mapping[str, str], name: str, max_length: int = 200) -> str | None:
    """A free-text query parameter of at most `max_length` characters, or None when absent."""
    value = args.get(name)
    if value is None or value == "":
        return None
    if len(value) > max_length:
        raise ApiProblem(INVALID, name, f"longer than {max_length} characters")
    return value


def whole_number(args: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    """An integer query parameter within [low, high]."""
    raw = args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiProblem(INVALID, name, f"expected a whole number, got {raw!r}") from None
    if not low <= value <= high:
        raise ApiProblem(INVALID, name, f"must be from {low} to {high}, got {value}")
    return value


def check_bearer(header: str | None, token: str | None) -> None:
    """Writes need `Authorization: Bearer <api_token>`; without a configured token they are refused."""
    if token is None:
        raise ApiProblem(FORBIDDEN, "Authorization", "writes are disabled: dr.web has no api_token configured")
    if not header:
        raise ApiProblem(UNAUTHORIZED, "Authorization", "missing; send 'Authorization: Bearer <api_token>'")
    scheme, _, given = header.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiProblem(UNAUTHORIZED, "Authorization", "expected 'Bearer <api_token>'")
    if not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise ApiProblem(UNAUTHORIZED, "Authorization", "wrong token")
