"""The OpenADR 3.1 object API of dr.vtn: programs, events, VENs and resources, searched, read, created,
updated and deleted on behalf of a principal, with the spec's privacy.

The principal is what dr.web authenticated: `{"clientId", "role": "bl" | "ven", "venName"}`. Business logic
(`bl`) sees everything. A VEN client sees the programs and events that target it (no targets, its venName, or
a target of the VEN objects named like it), its own VEN objects (clientID is its clientId) and their
resources; an object it may not see is answered as not found. Scopes (who may write what) are dr.web's check;
the checks here that depend on the objects (a VEN names only itself, a resource only of its own VEN) are
`forbidden`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from dataclasses import dataclass
from typing import Any

from dr_common.payloads import Telemetry
from dr_common.timeutil import UTC
from dr_vtn_dispatcher.config import VtnConfig
from dr_vtn_dispatcher.errors import ApiError, conflict, invalid, not_found
from dr_vtn_dispatcher.events import EventManager
from dr_vtn_dispatcher.model import CANCELLED, COMPLETED
from dr_vtn_dispatcher.oadr_events import extras_of, step_changes, to_oadr_event, to_vtn_plan
from dr_vtn_dispatcher.oadr_models import check_object_id, parse_request
from dr_vtn_dispatcher.oadr_notify import WebhookNotifier, matching
from dr_vtn_dispatcher.oadr_reports import report_telemetry
from dr_vtn_dispatcher.oadr_objects import (DEFAULT_PROGRAM_ID, EVENT, PROGRAM, REPORT, RESOURCE, SUBSCRIPTION, VEN,
                                             ObjectBook)
from dr_vtn_dispatcher.registry import Registry, checked_id

_log = logging.getLogger(__name__)

FORBIDDEN = "forbidden"
KIND_OF_PATH = {"programs": PROGRAM, "events": EVENT, "vens": VEN, "resources": RESOURCE,
                "subscriptions": SUBSCRIPTION, "reports": REPORT}
ID_FIELD = {"programs": "programID", "events": "eventID", "vens": "venID", "resources": "resourceID",
            "subscriptions": "subscriptionID", "reports": "reportID"}
LIMIT_MAX = 50
EVENT_SCAN_MAX = 10_000     # events read per search (latest start first)
EVENT_PAGE = 500
ROLES = ("bl", "ven")


def forbidden(field: str, message: str) -> ApiError:
    """Not allowed for this client (HTTP 403)."""
    return ApiError(FORBIDDEN, field, message)


@dataclass(frozen=True)
class Principal:
    """The client dr.web authenticated."""
    client_id: str
    role: str
    ven_name: str | None = None

    @classmethod
    def parse(cls, raw: object) -> Principal:
        """Refuse anything but `{"clientId": str, "role": "bl"|"ven", "venName": str|None}`."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("clientId"), str) or \
                raw.get("role") not in ROLES or not isinstance(raw.get("venName"), (str, type(None))):
            raise invalid("<principal>", "must be {clientId, role: bl|ven, venName}")
        return cls(raw["clientId"][:128], raw["role"], raw.get("venName"))

    @property
    def is_ven(self) -> bool:
        """True for a VEN client."""
        return self.role == "ven"


def _page(query: Mapping[str, Any]) -> tuple[int, int]:
    skip, limit = query.get("skip", 0), query.get("limit", LIMIT_MAX)
    if isinstance(skip, bool) or not isinstance(skip, int) or not 0 <= skip <= 1_000_000_000:
        raise invalid("skip", "must be a whole number from 0")
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= LIMIT_MAX:
        raise invalid("limit", f"must be a whole number from 0 to {LIMIT_MAX}")
    return skip, limit


class OadrApi:
    """The operations behind /openadr3/3.1.0 for programs, events, VENs and resources."""

    def __init__(self, book: ObjectBook, events: EventManager, registry: Registry, config: VtnConfig,
                 now: Callable[[], float], notifier: WebhookNotifier | None = None,
                 on_telemetry: Callable[[list[Telemetry]], None] | None = None) -> None:
        self.notifier = notifier
        self.on_telemetry = on_telemetry
        self.book = book
        self.events = events
        self.registry = registry
        self.config = config
        self.now = now

    # ------------------------------------------------------------------------------- privacy ------
    def _identities(self, who: Principal) -> set[str]:
        names = {who.ven_name} if who.ven_name else set()
        for ven in self.book.all(VEN):
            if ven.body.get("venName") == who.ven_name or ven.body.get("clientID") == who.client_id:
                names.add(ven.body["venName"])
                names.update(ven.body.get("targets") or [])
        return names

    def _own_ven_ids(self, who: Principal) -> set[str]:
        return {v.object_id for v in self.book.all(VEN) if v.body.get("clientID") == who.client_id}

    def _visible(self, kind: str, obj: Mapping[str, Any], who: Principal, names: set[str] | None = None) -> bool:
        if not who.is_ven:
            return True
        if kind in (PROGRAM, EVENT):
            targets = obj.get("targets") or []
            return not targets or bool(set(targets) & (names if names is not None else self._identities(who)))
        if kind in (VEN, SUBSCRIPTION, REPORT):
            return obj.get("clientID") == who.client_id
        return obj.get("venID") in self._own_ven_ids(who)

    # ------------------------------------------------------------------------------- reading ------
    def search(self, path: str, who: Principal, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Objects of `path` the principal may see, filtered by the spec's query parameters, paged."""
        kind = self._kind(path)
        skip, limit = _page(query)
        self._polled(who)
        targets = query.get("targets")
        if targets is not None and (not isinstance(targets, list) or not all(isinstance(t, str) for t in targets)):
            raise invalid("targets", "must be a list of strings")
        names = self._identities(who) if who.is_ven else None
        rows = self._all_events(query) if kind == EVENT else [o.to_dict() for o in self.book.all(kind)]
        out = []
        for row in rows:
            if not self._visible(kind, row, who, names):
                continue
            if targets and not set(targets) & set(row.get("targets") or []):
                continue
            if kind == VEN and query.get("venName") is not None and row.get("venName") != query["venName"]:
                continue
            if kind == RESOURCE and query.get("venID") is not None and row.get("venID") != query["venID"]:
                continue
            if kind == RESOURCE and query.get("resourceName") is not None and \
                    row.get("resourceName") != query["resourceName"]:
                continue
            if kind == SUBSCRIPTION and not _subscription_matches(row, query):
                continue
            if kind == REPORT and not self._report_matches(row, query):
                continue
            out.append(_redacted(kind, row, who))
        return out[skip:skip + limit]

    def _all_events(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        program = query.get("programID")
        active = query.get("active")
        out = []
        for offset in range(0, EVENT_SCAN_MAX, EVENT_PAGE):
            page = self.events.list(None, EVENT_PAGE, offset)
            for event in page:
                if event["status"] == CANCELLED or (active is True and event["status"] == COMPLETED):
                    continue
                oadr = self._oadr_event(event)
                if program is None or oadr["programID"] == program:
                    out.append(oadr)
            if len(page) < EVENT_PAGE:
                break
        return out

    def _oadr_event(self, event: Mapping[str, Any]) -> dict[str, Any]:
        extras = self.book.get(EVENT, event["eventId"])
        return to_oadr_event(event, extras.body if extras else {}, lambda pid: self.book.get(PROGRAM, pid) is not None)

    def get(self, path: str, object_id: str, who: Principal) -> dict[str, Any]:
        """One object the principal may see."""
        kind = self._kind(path)
        check_object_id(object_id, ID_FIELD[path])
        self._polled(who)
        row = self._read(kind, object_id)
        if row is None or not self._visible(kind, row, who):
            raise not_found(ID_FIELD[path], f"no {kind.lower()} {object_id!r}")
        return _redacted(kind, row, who)

    def _read(self, kind: str, object_id: str) -> dict[str, Any] | None:
        if kind != EVENT:
            obj = self.book.get(kind, object_id)
            return obj.to_dict() if obj else None
        try:
            event = self.events.get(object_id)
        except ApiError:
            return None
        return None if event["status"] == CANCELLED else self._oadr_event(event)

    # ------------------------------------------------------------------------------- writing ------
    def create(self, path: str, body: object, who: Principal) -> dict[str, Any]:
        """Create an object; the VTN gives it its id and metadata."""
        kind = self._kind(path)
        data = parse_request(path, body)
        if kind == EVENT:
            return self._notify(kind, "CREATE", self._put_event(self.book.new_id(EVENT), data, create=True))
        data = self._checked(kind, data, who, None)
        made = self.book.put(kind, self.book.new_id(kind), data).to_dict()
        if kind == VEN:
            self.registry.register_oadr(data["venName"])
        self._feed(kind, data, who)
        return self._notify(kind, "CREATE", made)

    def update(self, path: str, object_id: str, body: object, who: Principal) -> dict[str, Any]:
        """Replace an object's client-provided fields (an event's update is a dr.vtn modification)."""
        current = self.get(path, object_id, who)
        kind = self._kind(path)
        data = parse_request(path, body)
        if kind == EVENT:
            return self._notify(kind, "UPDATE", self._put_event(object_id, data, create=False))
        data = self._checked(kind, data, who, object_id)
        if kind == VEN and current.get("clientID") and who.is_ven:
            data["clientID"] = current["clientID"]
        changed = self.book.put(kind, object_id, data).to_dict()
        if kind == VEN and current.get("venName") != data["venName"]:
            self.registry.deregister_oadr(current["venName"])
            self.registry.register_oadr(data["venName"])
        self._feed(kind, data, who)
        return self._notify(kind, "UPDATE", changed)

    def delete(self, path: str, object_id: str, who: Principal) -> dict[str, Any]:
        """Delete an object and return it as it was (deleting an event cancels it in dr.vtn)."""
        current = self.get(path, object_id, who)
        kind = self._kind(path)
        if kind == EVENT:
            self.events.cancel(object_id)
            self.book.delete(EVENT, object_id)
            return self._notify(kind, "DELETE", current)
        if kind == PROGRAM:
            if object_id == DEFAULT_PROGRAM_ID:
                raise invalid("programID", "the default program cannot be deleted")
            if self._all_events({"programID": object_id, "active": True}):
                raise invalid("programID", "the program has events that have not ended")
        if kind == VEN and any(r.body.get("venID") == object_id for r in self.book.all(RESOURCE)):
            raise invalid("venID", "the VEN still has resources; delete them first")
        if kind == VEN and self.events.parts.serving.get(current["venName"]) is not None:
            raise invalid("venID", "the VEN serves an event that has not ended; cancel it or wait for its end")
        self.book.delete(kind, object_id)
        if kind == VEN:
            self.registry.deregister_oadr(current["venName"])
        return self._notify(kind, "DELETE", current)

    def _feed(self, kind: str, report: Mapping[str, Any], who: Principal) -> None:
        """A VEN's report, when its venName is a registered VEN, is that VEN's telemetry (oadr_reports)."""
        if kind != REPORT or not who.is_ven or self.on_telemetry is None or not who.ven_name or \
                who.ven_name not in self.registry:
            return
        telemetry = report_telemetry(who.ven_name, report, datetime.fromtimestamp(self.now(), UTC))
        if telemetry is not None:
            self.on_telemetry([telemetry])

    def _polled(self, who: Principal) -> None:
        """A VEN client reading is a VEN heard from (online while it polls)."""
        if who.is_ven:
            self.registry.seen_oadr(who.ven_name)

    def seed_changed(self, operation: str, event: dict[str, Any]) -> dict[str, Any]:
        """Notify OpenADR subscribers of a change made to an event through the seed API; returns `event`
        unchanged. A failure here is logged and never fails the seed call."""
        if self.notifier is None:
            return event
        try:
            self._notify(EVENT, operation, self._oadr_event(event))
        except Exception:  # the event is created/changed whatever happens to its notification
            _log.exception("dr.vtn: OpenADR notification of event %s failed", event.get("eventId"))
        return event

    def _notify(self, kind: str, operation: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Queue the webhooks of the subscriptions this operation concerns; returns `obj`."""
        if self.notifier is None:
            return obj
        subscriptions = [{**s.body, "id": s.object_id} for s in self.book.all(SUBSCRIPTION)]

        def visible(sub: Mapping[str, Any]) -> bool:
            return self._visible(kind, obj, _subscriber(sub))

        deliveries = [(sub["id"], op["callbackUrl"], op.get("bearerToken"),
                       {"objectType": kind, "operation": operation, "object": _redacted(kind, obj, _subscriber(sub)),
                        "targets": obj.get("targets")})
                      for sub, op in matching(subscriptions, kind, operation, obj, visible)]
        if deliveries:
            self.notifier.submit_many(deliveries)
        return obj

    def _put_event(self, event_id: str, data: dict[str, Any], create: bool) -> dict[str, Any]:
        if self.book.get(PROGRAM, data["programID"]) is None:
            raise invalid("programID", f"no program {data['programID']!r}")
        request, steps = to_vtn_plan(data, event_id, self.now(), self.config.max_event_duration_s,
                                     lambda name: name in self.registry)
        extras = extras_of(data, steps)
        if create:
            event = self.events.create(request, step_changes(steps))
        else:
            request.pop("eventId")
            request.setdefault("priority", 0)
            request.setdefault("randomizeStartS", 0.0)
            if "allVens" not in request:
                request.setdefault("venIds", [])
                request.setdefault("groups", [])
            event = self.events.update(event_id, request, step_changes(steps))
        self.book.put(EVENT, event_id, extras)
        return self._oadr_event(event)

    def _checked(self, kind: str, data: dict[str, Any], who: Principal, object_id: str | None) -> dict[str, Any]:
        if kind == PROGRAM:
            other = self.book.find(PROGRAM, "programName", data["programName"])
            if other is not None and other.object_id != object_id:
                raise conflict("programName", f"a program named {data['programName']!r} exists")
        elif kind == VEN:
            if who.is_ven:
                if data["venName"] != who.ven_name:
                    raise forbidden("venName", "a VEN client registers only its own venName")
                data.pop("targets", None)
                data["clientID"] = who.client_id
            elif not data.get("clientID"):
                raise invalid("clientID", "is required in a BL_VEN_REQUEST")
            other = self.book.find(VEN, "venName", data["venName"])
            if other is not None and other.object_id != object_id:
                raise conflict("venName", f"a VEN named {data['venName']!r} exists")
            checked_id(data["venName"], "venName")   # it is the VEN's venId in dr.vtn's registry
        elif kind == SUBSCRIPTION:
            if data.get("programID") is not None and self.book.get(PROGRAM, data["programID"]) is None:
                raise invalid("programID", f"no program {data['programID']!r}")
            data["clientID"] = who.client_id
            data["_role"], data["_venName"] = who.role, who.ven_name   # whose privacy its notifications keep
        elif kind == REPORT:
            try:
                event = self.get("events", data["eventID"], who)
            except ApiError:
                raise invalid("eventID", f"no event {data['eventID']!r}") from None
            data["clientID"] = who.client_id
            data["_programID"] = event["programID"]
        elif kind == RESOURCE:
            ven = self.book.get(VEN, data["venID"])
            if ven is None:
                raise not_found("venID", f"no VEN {data['venID']!r}")
            if who.is_ven:
                if ven.body.get("clientID") != who.client_id:
                    raise forbidden("venID", "a VEN client adds resources to its own VEN only")
                data.pop("targets", None)
                data["clientID"] = who.client_id
            elif not data.get("clientID"):
                data["clientID"] = ven.body.get("clientID")
        data.pop("objectType", None)
        return data

    def _report_matches(self, row: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
        for key in ("eventID", "clientName"):
            if query.get(key) is not None and row.get(key) != query[key]:
                return False
        if query.get("programID") is not None:
            stored = self.book.get(REPORT, str(row.get("id")))
            return stored is not None and stored.body.get("_programID") == query["programID"]
        return True

    @staticmethod
    def _kind(path: str) -> str:
        if path not in KIND_OF_PATH:
            raise invalid("<path>", f"unknown object kind {path!r}")
        return KIND_OF_PATH[path]


def _subscription_matches(row: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
    if query.get("programID") is not None and row.get("programID") != query["programID"]:
        return False
    if query.get("clientName") is not None and row.get("clientName") != query["clientName"]:
        return False
    wanted = query.get("objects")
    if wanted:
        kinds = {o for op in row.get("objectOperations") or [] for o in op.get("objects") or []}
        return bool(kinds & set(wanted))
    return True


def _redacted(kind: str, row: dict[str, Any], who: Principal) -> dict[str, Any]:
    """A subscription's callback bearer tokens are shown to the client that owns it only."""
    if kind != SUBSCRIPTION or row.get("clientID") == who.client_id:
        return row
    operations = [{**op, "bearerToken": None} if op.get("bearerToken") else op
                  for op in row.get("objectOperations") or []]
    return {**row, "objectOperations": operations}


def _subscriber(sub: Mapping[str, Any]) -> Principal:
    """The principal a subscription was made by (VEN privacy applies to what it is told)."""
    return Principal(str(sub.get("clientID")), str(sub.get("_role") or "ven"), sub.get("_venName"))
