"""OpenADR 3.1 request bodies (`openadr3.yaml`, components/schemas) as pydantic models, and their checks.

Only what a client provides is modelled; the metadata (`id`, `createdDateTime`, `modificationDateTime`,
`objectType`) is the VTN's. Unknown properties are dropped (the spec's objects are open), wrong types and
out-of-range values are refused with the field named (`ApiError` `invalid`, HTTP 400).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Union

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError,
                      field_validator)

from dr_common.schema import PayloadError, check_tree
from dr_vtn_dispatcher.errors import ApiError, invalid

OBJECT_ID_RE = re.compile(r"\A[a-zA-Z0-9_-]{1,128}\Z")
_DURATION_RE = re.compile(r"\A(-?)P(?=\d|T\d)(?:(\d+)Y)?(?:(\d+)M)?(?:(\d+)([DW]))?"
                          r"(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?\Z")
LIST_MAX = 1000            # items in any list of a request (targets, intervals, payloads, values ...)

Str128 = Annotated[StrictStr, Field(min_length=1, max_length=128)]
ObjectId = Annotated[StrictStr, Field(min_length=1, max_length=128, pattern=r"^[a-zA-Z0-9_-]*$")]
DurationText = Annotated[StrictStr, Field(max_length=64)]
Targets = Annotated[list[Str128], Field(max_length=LIST_MAX)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Point(_Model):
    x: StrictFloat | StrictInt
    y: StrictFloat | StrictInt


Value = Union[StrictBool, StrictInt, StrictFloat, Annotated[StrictStr, Field(max_length=4096)], Point]


class ValuesMap(_Model):
    type: Str128
    values: Annotated[list[Value], Field(max_length=LIST_MAX)]


class IntervalPeriod(_Model):
    start: Annotated[StrictStr, Field(max_length=64)] | None = None
    duration: DurationText | None = None
    randomizeStart: DurationText | None = None

    @field_validator("start")
    @classmethod
    def _start(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("0001-01-01"):
            try:
                parsed = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value)
            except ValueError:
                raise ValueError("is not an RFC 3339 date-time") from None
            if not 1970 <= parsed.year <= 9000:
                raise ValueError("must lie between 1970 and 9000 (or be 0001-01-01 for now)")
        return value

    @field_validator("duration", "randomizeStart")
    @classmethod
    def _duration(cls, value: str | None) -> str | None:
        if value is not None and not _DURATION_RE.match(value):
            raise ValueError("is not an ISO 8601 duration (e.g. PT1H)")
        return value


class Interval(_Model):
    id: Annotated[StrictInt, Field(ge=-2**31, lt=2**31)]
    intervalPeriod: IntervalPeriod | None = None
    payloads: Annotated[list[ValuesMap], Field(max_length=LIST_MAX)]


class ProgramRequest(_Model):
    programName: Str128
    intervalPeriod: IntervalPeriod | None = None
    programDescriptions: Annotated[list[dict[str, Any]], Field(max_length=LIST_MAX)] | None = None
    payloadDescriptors: Annotated[list[dict[str, Any]], Field(max_length=LIST_MAX)] | None = None
    attributes: Annotated[list[ValuesMap], Field(max_length=LIST_MAX)] | None = None
    targets: Targets | None = None


class EventRequest(_Model):
    programID: ObjectId
    eventName: Annotated[StrictStr, Field(max_length=200)] | None = None
    duration: DurationText | None = None
    priority: Annotated[StrictInt, Field(ge=0, le=1000)] | None = None
    targets: Targets | None = None
    reportDescriptors: Annotated[list[dict[str, Any]], Field(max_length=LIST_MAX)] | None = None
    payloadDescriptors: Annotated[list[dict[str, Any]], Field(max_length=LIST_MAX)] | None = None
    intervalPeriod: IntervalPeriod | None = None
    intervals: Annotated[list[Interval], Field(max_length=LIST_MAX)]


class VenRequest(_Model):
    """BL_VEN_REQUEST (business logic: clientID and targets) or VEN_VEN_REQUEST (a VEN registering itself)."""
    objectType: Literal["BL_VEN_REQUEST", "VEN_VEN_REQUEST"]
    venName: Str128
    clientID: Str128 | None = None
    targets: Targets | None = None
    attributes: Annotated[list[ValuesMap], Field(max_length=LIST_MAX)] | None = None


class ResourceRequest(_Model):
    """BL_RESOURCE_REQUEST or VEN_RESOURCE_REQUEST."""
    objectType: Literal["BL_RESOURCE_REQUEST", "VEN_RESOURCE_REQUEST"]
    resourceName: Str128
    venID: ObjectId
    clientID: Str128 | None = None
    targets: Targets | None = None
    attributes: Annotated[list[ValuesMap], Field(max_length=LIST_MAX)] | None = None


ObjectTypeName = Literal["PROGRAM", "EVENT", "REPORT", "SUBSCRIPTION", "VEN", "RESOURCE"]
Operation = Literal["READ", "CREATE", "UPDATE", "DELETE"]
_URL_RE = re.compile(r"\Ahttps?://[^\s/?#@]+(?:[/?#]\S*)?\Z", re.IGNORECASE)


class ObjectOperation(_Model):
    objects: Annotated[list[ObjectTypeName], Field(min_length=1, max_length=6)]
    operations: Annotated[list[Operation], Field(min_length=1, max_length=4)]
    callbackUrl: Annotated[StrictStr, Field(min_length=2, max_length=8000)]
    bearerToken: Annotated[StrictStr, Field(max_length=4096)] | None = None

    @field_validator("callbackUrl")
    @classmethod
    def _url(cls, value: str) -> str:
        if not _URL_RE.match(value):
            raise ValueError("must be an http or https URL")
        return value


class SubscriptionRequest(_Model):
    clientName: Str128
    programID: ObjectId | None = None
    objectOperations: Annotated[list[ObjectOperation], Field(max_length=100)]
    targets: Targets | None = None


class ReportResource(_Model):
    resourceName: Str128
    intervalPeriod: IntervalPeriod | None = None
    intervals: Annotated[list[Interval], Field(max_length=LIST_MAX)]


class ReportRequest(_Model):
    eventID: ObjectId
    clientName: Str128
    reportName: Annotated[StrictStr, Field(max_length=200)] | None = None
    payloadDescriptors: Annotated[list[dict[str, Any]], Field(max_length=LIST_MAX)] | None = None
    resources: Annotated[list[ReportResource], Field(max_length=LIST_MAX)]


MODELS: dict[str, type[_Model]] = {"programs": ProgramRequest, "events": EventRequest, "vens": VenRequest,
                                   "resources": ResourceRequest, "subscriptions": SubscriptionRequest,
                                   "reports": ReportRequest}


def parse_request(kind: str, body: object) -> dict[str, Any]:
    """Validate a request body of object kind `kind`; returns it as plain JSON (unknown keys dropped, None left
    out). Raises ApiError naming the first bad field."""
    if not isinstance(body, dict):
        raise invalid("<payload>", "must be a JSON object")
    try:
        check_tree(body, "<payload>")
    except PayloadError as exc:
        raise ApiError.from_payload_error(exc) from None
    try:
        model = MODELS[kind].model_validate(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in first["loc"]) or "<payload>"
        raise invalid(field, str(first["msg"])[:200]) from None
    return model.model_dump(mode="json", exclude_none=True)


def check_object_id(value: object, field: str) -> str:
    """An OpenADR objectID (1-128 of letters, digits, _ and -), else ApiError naming `field`."""
    if not isinstance(value, str) or not OBJECT_ID_RE.match(value):
        raise invalid(field, "must be 1-128 letters, digits, _ or -")
    return value


OPEN_ENDED = "P9999Y"


def duration_seconds(text: str, field: str) -> float | None:
    """Seconds of an ISO 8601 duration as the spec writes them; None for the open-ended `P9999Y`. Years and
    months (other than P9999Y) and negative durations are refused: their length depends on the calendar."""
    if text == OPEN_ENDED:
        return None
    match = _DURATION_RE.match(text)
    if match is None:
        raise invalid(field, "is not an ISO 8601 duration (e.g. PT1H)")
    sign, years, months, days, unit, hours, minutes, seconds = match.groups()
    if sign or years or months:
        raise invalid(field, "negative durations, years and months are not accepted (P9999Y means open-ended)")
    total = float(seconds or 0) + 60 * int(minutes or 0) + 3600 * int(hours or 0)
    if days:
        total += int(days) * 86400 * (7 if unit == "W" else 1)
    if total > 1e9:
        raise invalid(field, "is too long")
    return total


def seconds_duration(seconds: float) -> str:
    """The ISO 8601 duration of a number of seconds (`PT90S`, `PT0.5S`)."""
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"PT{text}S"
