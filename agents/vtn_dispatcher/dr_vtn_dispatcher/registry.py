"""The VEN registry: who is registered, how each is reached, when it was last heard from.

Writes go through the `Journal`; nothing here sends commands (coming back online triggers a resend, which
is the dispatcher's job: `apply_status` returns the VENs that came back).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping
from typing import Any

from dr_common.payloads import TRANSPORT_OADR, VEN_FIELDS, VenRegistration, VenStatus
from dr_common.schema import PayloadError, check_id, parse_fields
from dr_vtn_dispatcher.errors import ApiError, invalid, not_found
from dr_vtn_dispatcher.journal import Journal
from dr_vtn_dispatcher.store import Store
from dr_vtn_dispatcher.model import Ven

_VEN_UPDATE_FIELDS = tuple(dataclasses.replace(f, required=False) for f in VEN_FIELDS)
VEN_STATES = ("online", "offline", "unknown")


def shared_strings(ven: Ven) -> Ven:
    """`ven` with its site, group and transport strings shared with every other VEN's (`sys.intern`): a registry
    of 100,000 VENs in a few sites and groups holds each of those strings once, not once per VEN."""
    for attr in ("site", "group", "transport"):
        value = getattr(ven, attr)
        if isinstance(value, str):
            setattr(ven, attr, sys.intern(value))
    return ven


def checked_id(value: Any, field: str) -> str:
    """`value` when it is a valid identifier, else an `invalid` ApiError naming `field`."""
    if not isinstance(value, str):
        raise invalid(field, f"expected a string, got {type(value).__name__}")
    try:
        return check_id(value, field)
    except PayloadError as exc:
        raise ApiError.from_payload_error(exc) from None


class Registry:
    """Registered VENs by venId, with their online state and latest telemetry summary."""

    def __init__(self, journal: Journal, clock: Callable[[], float], offline_timeout_s: float,
                 store: Store | None = None) -> None:
        self._store = store
        self.vens: dict[str, Ven] = {}
        self._journal = journal
        self._now = clock
        self.offline_timeout_s = offline_timeout_s

    def load(self, vens: list[Ven]) -> None:
        """Take the VENs read from the store."""
        self.vens = {ven.ven_id: shared_strings(ven) for ven in vens}

    def __contains__(self, ven_id: object) -> bool:
        return ven_id in self.vens

    def get(self, ven_id: str) -> Ven | None:
        """The VEN of a venId, or None."""
        return self.vens.get(ven_id)

    # ------------------------------------------------------------------------------- API ----------
    def register(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Register a VEN, or update it when its venId is known. Returns the VEN with `created`."""
        try:
            reg = VenRegistration.from_payload(payload)
            values, _ = parse_fields(_VEN_UPDATE_FIELDS, payload)
        except PayloadError as exc:
            raise ApiError.from_payload_error(exc) from None
        now = self._now()
        known = self.vens.get(reg.ven_id)
        ven = dataclasses.replace(known) if known else Ven(ven_id=reg.ven_id, registered_at=now)
        ven.name, ven.site, ven.group, ven.max_shed_kw = reg.name, reg.site, reg.group, reg.max_shed_kw
        ven.transport = reg.transport
        shared_strings(ven)
        ven.updated_at = now
        self._apply_status_field(ven, values.get("status"), now)
        self._journal.save(vens=[ven])
        self.vens[ven.ven_id] = ven
        return {**ven.to_dict(now, self.offline_timeout_s), "created": known is None}

    def update(self, ven_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Change a registered VEN's fields (its venId stays)."""
        known = self.require(ven_id)
        try:
            values, _ = parse_fields(_VEN_UPDATE_FIELDS, payload)
        except PayloadError as exc:
            raise ApiError.from_payload_error(exc) from None
        if values.get("venId", ven_id) != ven_id:
            raise invalid("venId", f"cannot be changed (is {ven_id!r})")
        now = self._now()
        ven = dataclasses.replace(known)
        for key, attr in (("name", "name"), ("site", "site"), ("group", "group"), ("maxShedKw", "max_shed_kw"),
                          ("transport", "transport")):
            if key in values:
                setattr(ven, attr, values[key])
        shared_strings(ven)
        self._apply_status_field(ven, values.get("status"), now)
        ven.updated_at = now
        self._journal.save(vens=[ven])
        self.vens[ven_id] = ven
        return ven.to_dict(now, self.offline_timeout_s)

    @staticmethod
    def _apply_status_field(ven: Ven, status: str | None, now: float) -> None:
        if status == "online":
            ven.reported_online, ven.last_seen = True, now
        elif status == "offline":
            ven.reported_online = False

    def list(self, status: str | None = None, group: str | None = None, site: str | None = None,
             transport: str | None = None) -> list[dict[str, Any]]:
        """Registered VENs, filtered, sorted by venId."""
        if status is not None and status not in VEN_STATES:
            raise invalid("status", f"must be online, offline or unknown; got {status!r}")
        if group is not None:
            checked_id(group, "group")
        for name, value in (("site", site), ("transport", transport)):
            if value is not None and not isinstance(value, str):
                raise invalid(name, f"expected a string, got {type(value).__name__}")
        now = self._now()
        timeout = self.offline_timeout_s
        out = []
        for ven in sorted(self.vens.values(), key=lambda v: v.ven_id):
            if group is not None and ven.group != group or site is not None and ven.site != site:
                continue
            if transport is not None and ven.transport != transport:
                continue
            if status is not None and ven.online_state(now, timeout) != status:
                continue
            out.append(ven.to_dict(now, timeout))
        return out

    # ------------------------------------------------------------------------------- OpenADR VENs -
    def register_oadr(self, ven_name: str) -> bool:
        """An OpenADR VEN object named `ven_name` was created: register it as a dr.vtn VEN of transport `oadr`
        (dispatched nothing; it reads its events and reports over OpenADR). A venId already registered stays
        as it is (a seed VEN that also speaks OpenADR keeps its transport). True when it was registered now."""
        checked_id(ven_name, "venName")
        if ven_name in self.vens:
            return False
        self.register({"venId": ven_name, "name": ven_name, "transport": TRANSPORT_OADR})
        return True

    def deregister_oadr(self, ven_name: str) -> bool:
        """The OpenADR VEN object of `ven_name` was deleted: forget its dr.vtn VEN when it is one of transport
        `oadr` (a seed VEN stays). True when it was deregistered."""
        ven = self.vens.get(ven_name)
        if ven is None or ven.transport != TRANSPORT_OADR:
            return False
        self._journal.forget_ven(ven_name)
        if self._store is not None:
            self._store.delete_ven(ven_name)
        del self.vens[ven_name]
        return True

    def keep_oadr(self, ven_names: set[str]) -> list[str]:
        """At start: deregister the VENs of transport `oadr` whose VEN object is gone (a write of their state
        that was in flight when the object was deleted can bring the row back). Returns their venIds."""
        gone = [ven_id for ven_id, ven in self.vens.items()
                if ven.transport == TRANSPORT_OADR and ven_id not in ven_names]
        for ven_id in gone:
            self.deregister_oadr(ven_id)
        return gone

    def seen_oadr(self, ven_name: str | None) -> None:
        """An OpenADR VEN client read or wrote through the API: its VEN (when registered) was just heard from."""
        ven = self.vens.get(ven_name) if ven_name else None
        if ven is not None:
            self.seen(ven, self._now())

    def require(self, ven_id: Any) -> Ven:
        """The registered VEN of `ven_id`; ApiError invalid (bad id) or not_found."""
        ven = self.vens.get(checked_id(ven_id, "venId"))
        if ven is None:
            raise not_found("venId", f"no VEN {ven_id!r} is registered")
        return ven

    # ------------------------------------------------------------------------------- state --------
    def online_state(self, ven: Ven, now: float) -> str:
        """online / offline / unknown at `now`."""
        return ven.online_state(now, self.offline_timeout_s)

    def transport(self, ven_id: str) -> str:
        """How a VEN is reached (`bus` or `mqtt`; unknown VENs are remote)."""
        ven = self.vens.get(ven_id)
        return ven.transport if ven is not None else "mqtt"

    def seen(self, ven: Ven, now: float) -> None:
        """The VEN was just heard from."""
        ven.last_seen = now
        if ven.reported_online is False:
            ven.reported_online = True
        self._journal.ven(ven)

    def apply_status(self, items: list[VenStatus], now: float) -> tuple[list[str], int]:
        """Apply online/offline notices; returns (venIds that came back online, notices of unknown VENs)."""
        back: list[str] = []
        unknown = 0
        for status in items:
            ven = self.vens.get(status.ven_id)
            if ven is None:
                unknown += 1
                continue
            was_online = ven.online_state(now, self.offline_timeout_s) == "online"
            ven.reported_online = status.online
            if status.online:
                ven.last_seen = now
                if not was_online:
                    back.append(ven.ven_id)
            self._journal.ven(ven)
        return back, unknown
