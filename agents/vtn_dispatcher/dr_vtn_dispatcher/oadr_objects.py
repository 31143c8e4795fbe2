"""OpenADR 3 objects the VTN keeps besides its events: programs, VENs, resources, subscriptions, reports, the
OpenADR clients dr.web serves (without their secrets), and the OpenADR side of events (name, targets, descriptors as the client gave them). Held in memory, written through to
the store table `vtn_oadr_objects` at once (they change at an operator's pace), loaded at start. Bounded per kind.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dr_vtn_dispatcher.errors import ApiError, invalid
from dr_vtn_dispatcher.model import iso
from dr_vtn_dispatcher.store import Store

_log = logging.getLogger(__name__)

PROGRAM, EVENT, VEN, RESOURCE, SUBSCRIPTION = "PROGRAM", "EVENT", "VEN", "RESOURCE", "SUBSCRIPTION"
REPORT = "REPORT"
CLIENT = "CLIENT"   # an OpenADR client of dr.web's config: clientId, role, venName, scopes (never its secret)
KINDS = (PROGRAM, EVENT, VEN, RESOURCE, SUBSCRIPTION, REPORT, CLIENT)
MAX_OBJECTS = 100_000          # of one kind
DEFAULT_PROGRAM_ID = "default"  # events without a program (e.g. from the seed API) belong to it
ID_PREFIX = {PROGRAM: "prg", EVENT: "evt", VEN: "ven", RESOURCE: "res", SUBSCRIPTION: "sub", REPORT: "rpt",
             CLIENT: "cli"}


@dataclass
class OadrObject:
    """One stored object: its body (camelCase, no metadata) and its times (epoch seconds)."""
    kind: str
    object_id: str
    body: dict[str, Any]
    created_at: float
    modified_at: float

    def to_dict(self) -> dict[str, Any]:
        """The spec's form: metadata first, then the body (keys starting with `_` are the VTN's own, not shown)."""
        return {"id": self.object_id, "createdDateTime": iso(self.created_at),
                "modificationDateTime": iso(self.modified_at), "objectType": self.kind,
                **{key: value for key, value in self.body.items() if not key.startswith("_")}}


class ObjectBook:
    """Programs, VENs, resources and event extras by kind and id."""

    def __init__(self, store: Store, now: Callable[[], float]) -> None:
        self.store = store
        self.now = now
        self.objects: dict[str, dict[str, OadrObject]] = {kind: {} for kind in KINDS}

    def load(self) -> None:
        """Read every object from the store; create the default program when it is missing."""
        for kind in KINDS:
            self.objects[kind].clear()
        for row in sorted(self.store.load_oadr_objects(), key=lambda r: (r["created_at"], r["object_id"])):
            if row["object_type"] not in self.objects:
                continue
            try:
                body = json.loads(row["body"])
            except ValueError:
                _log.error("dr.vtn: stored OpenADR %s %s is not JSON; skipped", row["object_type"], row["object_id"])
                continue
            self.objects[row["object_type"]][row["object_id"]] = OadrObject(
                row["object_type"], row["object_id"], body, row["created_at"], row["modified_at"])
        if DEFAULT_PROGRAM_ID not in self.objects[PROGRAM]:
            self.put(PROGRAM, DEFAULT_PROGRAM_ID, {"programName": DEFAULT_PROGRAM_ID})

    def get(self, kind: str, object_id: str) -> OadrObject | None:
        """One object, or None."""
        return self.objects[kind].get(object_id)

    def all(self, kind: str) -> list[OadrObject]:
        """Every object of a kind, oldest first (in the order they were created)."""
        return list(self.objects[kind].values())

    def new_id(self, kind: str) -> str:
        """A fresh id for a new object."""
        return f"{ID_PREFIX[kind]}-{uuid.uuid4().hex[:12]}"

    def find(self, kind: str, key: str, value: Any) -> OadrObject | None:
        """The object whose body has `key` == `value`, or None."""
        return next((o for o in self.objects[kind].values() if o.body.get(key) == value), None)

    def put(self, kind: str, object_id: str, body: dict[str, Any]) -> OadrObject:
        """Create or replace an object (written to the store before it is kept)."""
        now = self.now()
        old = self.objects[kind].get(object_id)
        if old is None and len(self.objects[kind]) >= MAX_OBJECTS:
            raise ApiError("conflict", "<payload>", f"the VTN holds {MAX_OBJECTS} {kind.lower()}s already")
        created = old.created_at if old is not None else now
        self.store.save_oadr_object(kind, object_id, json.dumps(body), created, now)
        obj = OadrObject(kind, object_id, body, created, now)
        self.objects[kind][object_id] = obj
        return obj

    def delete(self, kind: str, object_id: str) -> OadrObject | None:
        """Remove an object; returns it (None when it was not there)."""
        if object_id not in self.objects[kind]:
            return None
        self.store.delete_oadr_object(kind, object_id)
        return self.objects[kind].pop(object_id)


MAX_CLIENTS = 1_000
CLIENT_ROLES = ("bl", "ven")


def _client(index: int, raw: Any) -> dict[str, Any]:
    """One client as kept: clientId, role, venName, scopes; anything else (a secret above all) is refused."""
    where = f"clients[{index}]"
    if not isinstance(raw, dict):
        raise invalid(where, "expected an object")
    extra = sorted(set(raw) - {"clientId", "role", "venName", "scopes"})
    if extra:
        raise invalid(f"{where}.{extra[0]}", "not kept by dr.vtn (a client's secret never leaves dr.web)")
    client_id, role, ven_name, scopes = raw.get("clientId"), raw.get("role"), raw.get("venName"), raw.get("scopes")
    if not isinstance(client_id, str) or not 1 <= len(client_id) <= 128:
        raise invalid(f"{where}.clientId", "expected 1-128 characters")
    if role not in CLIENT_ROLES:
        raise invalid(f"{where}.role", "expected bl or ven")
    if ven_name is not None and (not isinstance(ven_name, str) or not 1 <= len(ven_name) <= 128):
        raise invalid(f"{where}.venName", "expected 1-128 characters or null")
    if not isinstance(scopes, list) or len(scopes) > 16 or not all(isinstance(x, str) and len(x) <= 64
                                                                  for x in scopes):
        raise invalid(f"{where}.scopes", "expected at most 16 scope names")
    return {"clientId": client_id, "role": role, "venName": ven_name, "scopes": sorted(scopes)}


def keep_clients(book: ObjectBook, clients: Any) -> dict[str, Any]:
    """Make the stored OpenADR clients exactly `clients` (dr.web's configured ones, without secrets): new and
    changed ones written, gone ones deleted, the rest left as they are. Returns the counts."""
    if not isinstance(clients, list) or len(clients) > MAX_CLIENTS:
        raise invalid("clients", f"expected a list of at most {MAX_CLIENTS} clients")
    wanted = {}
    for index, raw in enumerate(clients):
        body = _client(index, raw)
        wanted[body["clientId"]] = body
    gone = [c.object_id for c in book.all(CLIENT) if c.object_id not in wanted]
    for client_id in gone:
        book.delete(CLIENT, client_id)
    written = 0
    for client_id, body in wanted.items():
        old = book.get(CLIENT, client_id)
        if old is None or old.body != body:
            book.put(CLIENT, client_id, body)
            written += 1
    return {"clients": len(wanted), "written": written, "deleted": len(gone)}
