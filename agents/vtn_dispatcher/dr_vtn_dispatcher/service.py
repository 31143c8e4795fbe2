"""The VTN: a thin front over its rooms (see README, "Inside dr.vtn").

Plain Python, no platform import: the agent gives it a Store, a Scheduler (clock + timers) and a Sender
(the bus), and calls it from its RPCs and subscriptions. Every method runs on one thread of control.

  registry       VENs, online state                      participation  claims, allocation, hand-over
  events         validation, bounds, lifecycle timers    dispatcher     rounds, retries, resends, acks
  intake         inbound binding to the sending VEN      journal        pending writes and the flush
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

from dr_common.payloads import Ack, Telemetry, VenStatus
from dr_vtn_dispatcher.config import VtnConfig
from dr_vtn_dispatcher.dispatch import CommandBook, Sender
from dr_vtn_dispatcher.dispatcher import Dispatcher
from dr_vtn_dispatcher.events import EventManager
from dr_vtn_dispatcher.intake import Intake
from dr_vtn_dispatcher.journal import Journal
from dr_vtn_dispatcher.lifecycle import Scheduler, TimerHandle
from dr_vtn_dispatcher.model import ACTIVE, OPEN_STATUSES, Event, Participant, Ven
from dr_vtn_dispatcher.errors import ApiError
from dr_vtn_dispatcher.oadr_api import KIND_OF_PATH, OadrApi, Principal
from dr_vtn_dispatcher.oadr_mqtt import MqttNotifier, MqttRoom
from dr_vtn_dispatcher.oadr_callbacks import CallbackPolicy, check_subscription_callbacks
from dr_vtn_dispatcher.oadr_events import resume_steps
from dr_vtn_dispatcher.oadr_reports import report_publisher
from dr_vtn_dispatcher.oadr_notify import WebhookNotifier
from dr_vtn_dispatcher.oadr_objects import ObjectBook, keep_clients
from dr_vtn_dispatcher.participation import Participation
from dr_vtn_dispatcher.resume import load_live, resume_live
from dr_vtn_dispatcher.registry import Registry
from dr_vtn_dispatcher.store import Store

_log = logging.getLogger(__name__)

SECRET_NAME = "correlation-hmac"
SYSTEM_PRINCIPAL = Principal("dr.vtn", "bl")   # reads an event as business logic would, to notify of it


class VtnService:
    """Wires the rooms together and exposes the API the agent's RPCs call."""

    def __init__(self, store: Store, scheduler: Scheduler, sender: Sender, config: VtnConfig,
                 rng: random.Random | None = None,
                 offload: Callable[[Callable[[], None]], Any] | None = None,
                 notifier: WebhookNotifier | None = None, mqtt: MqttNotifier | None = None) -> None:
        """`offload(fn)` runs the flush's database write and returns when it is done; the agent runs it in a
        thread of its own (one, so writes stay in order) so the event loop goes on meanwhile. Default: in line."""
        self.store = store
        self.clock = scheduler
        self.sender = sender
        self.config = config
        self.counters: Counter[str] = Counter()
        self.events: dict[str, Event] = {}               # open events and recently finished ones
        self.journal = Journal(store, offload)
        self.registry = Registry(self.journal, scheduler.now, config.offline_timeout_s, store)
        self.book = CommandBook(config.retry_delay, store.secret(SECRET_NAME))
        self.parts = Participation(self.events, self.registry, self.book, self.journal, config, self.counters,
                                   rng or random.Random())
        self.dispatcher = Dispatcher(self.events, self.registry, self.parts, self.book, self.journal, scheduler,
                                     sender, config, self.counters)
        self.event_manager = EventManager(self.events, self.registry, self.parts, self.dispatcher, store,
                                          self.journal, scheduler, sender, config, self.counters)
        self.intake = Intake(self.registry, self.parts, self.dispatcher, self.journal, scheduler,
                             config.trusted_bridges, self.counters)
        self.oadr_book = ObjectBook(store, scheduler.now)
        self.notifier = notifier     # OpenADR webhooks (started and stopped with the service)
        self.callback_policy = CallbackPolicy.from_config(config.openadr3.callback_policy)
        if notifier is not None:
            notifier.set_policy(self.callback_policy)
        self.oadr = OadrApi(self.oadr_book, self.event_manager, self.registry, config, scheduler.now, notifier,
                            report_publisher(self.intake.on_telemetry, self.registry, sender, self.counters))
        self.mqtt = MqttRoom(self.oadr_book, mqtt)   # OpenADR MQTT notifications (started and stopped with it)
        self.started = False
        self._flush_timer: TimerHandle | None = None

    @property
    def vens(self) -> dict[str, Ven]:
        """Registered VENs by venId."""
        return self.registry.vens

    @property
    def participants(self) -> dict[str, dict[str, Participant]]:
        """Participants of the live events, by eventId then venId."""
        return self.parts.participants

    # ============================================================================ start / stop ====
    def start(self) -> None:
        """Load the registry and the live events from the store, finish what ended while down, resume
        dispatch and retries, and arm every timer."""
        now = self.clock.now()
        self.registry.load(self.store.load_vens())
        self.oadr_book.load()
        if self.notifier is not None:
            self.notifier.start()
        if self.mqtt.notifier is not None:
            self.mqtt.notifier.start()
        events = load_live(self.store, self.events, self.parts, self.book,
                           ended_since=now - self.config.restore_retry_window_s)
        self.started = self.dispatcher.running = True
        resume_live(events, self.event_manager, self.dispatcher)
        resume_steps(self.oadr_book, self.event_manager)     # several-interval OpenADR events step on
        self.dispatcher.arm_retry()
        self._arm_flush()
        _log.info("dr.vtn resumed: %d VENs, %d live events, %d pending commands", len(self.vens),
                  len(self.events), self.book.pending_count())

    def stop(self) -> None:
        """Cancel every timer and write what is pending."""
        self.event_manager.stop()
        self.dispatcher.stop()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
        self._flush_timer = None
        self.flush()
        if self.notifier is not None:
            self.notifier.stop()
        if self.mqtt.notifier is not None:
            self.mqtt.notifier.stop()
        self.started = False

    # ============================================================================ API ====
    def register_ven(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Register a VEN, or update it when its venId is known. Returns the VEN with `created`."""
        return self.registry.register(payload)

    def update_ven(self, ven_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Change a registered VEN's fields."""
        return self.registry.update(ven_id, payload)

    def list_vens(self, status: str | None = None, group: str | None = None, site: str | None = None,
                  transport: str | None = None) -> list[dict[str, Any]]:
        """Registered VENs, filtered."""
        return self.registry.list(status=status, group=group, site=site, transport=transport)

    def get_ven(self, ven_id: str) -> dict[str, Any]:
        """One VEN, with the event it serves."""
        ven = self.registry.require(ven_id)
        data = ven.to_dict(self.clock.now(), self.config.offline_timeout_s)
        data["servingEventId"] = self.parts.serving.get(ven.ven_id)
        return data

    def create_event(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Create an event (validated against the payload rules and the VTN's bounds)."""
        event = self.oadr.seed_changed("CREATE", self.event_manager.create(payload))
        self._seed_published("CREATE", event["eventId"])
        return event

    def update_event(self, event_id: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Change an open event; bumps its modificationNumber and re-dispatches an active one."""
        event = self.oadr.seed_changed("UPDATE", self.event_manager.update(event_id, payload))
        self._seed_published("UPDATE", event["eventId"])
        return event

    def stop_event(self, event_id: str) -> dict[str, Any]:
        """End an event now: an active one completes (restores go out), one not yet active is cancelled."""
        view = self._oadr_view(event_id)
        result = self.event_manager.stop_event(event_id)
        if result.get("status") != "cancelled":
            return result
        self._seed_published("DELETE", event_id, view)
        return self.oadr.seed_changed("DELETE", result)

    def cancel_event(self, event_id: str) -> dict[str, Any]:
        """Cancel an event; VENs already dispatched are restored."""
        view = self._oadr_view(event_id)
        result = self.oadr.seed_changed("DELETE", self.event_manager.cancel(event_id))
        self._seed_published("DELETE", event_id, view)
        return result

    def get_event(self, event_id: str) -> dict[str, Any]:
        """One event."""
        return self.event_manager.get(event_id)

    def list_events(self, status: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Events, latest start first."""
        return self.event_manager.list(status, limit, offset)

    def event_metrics(self, event_id: str) -> dict[str, Any]:
        """Per-event metrics with per-VEN detail."""
        return self.event_manager.metrics(event_id)

    def health(self) -> dict[str, Any]:
        """Counts, pending commands, the latest round's timings and the counters."""
        now = self.clock.now()
        open_events = [e for e in self.events.values() if e.status in OPEN_STATUSES]
        online = sum(1 for v in self.vens.values() if v.online_state(now, self.config.offline_timeout_s) == "online")
        counters = dict(self.counters)
        if self.journal.dropped_rows:
            counters["journalRowsDropped"] = self.journal.dropped_rows
        return {"status": "ok" if self.started else "stopped", "database": self.store.dialect,
                "vens": len(self.vens), "vensOnline": online, "openEvents": len(open_events),
                "activeEvents": sum(1 for e in open_events if e.status == ACTIVE),
                "pendingCommands": self.book.pending_count(), "lastRound": dict(self.dispatcher.last_round),
                "counters": counters, **({"webhooks": self.notifier.counters()} if self.notifier else {}),
                **({"mqtt": self.mqtt.counters()} if self.mqtt.notifier else {})}

    # ============================================================================ OpenADR 3 ====
    def oadr_search(self, kind: str, principal: Mapping[str, Any], query: Mapping[str, Any] | None = None) -> \
            list[dict[str, Any]]:
        """OpenADR objects of `kind` (programs, events, vens, resources) the principal may see, by query."""
        return self.oadr.search(kind, Principal.parse(principal), query or {})

    def oadr_get(self, kind: str, object_id: str, principal: Mapping[str, Any]) -> dict[str, Any]:
        """One OpenADR object the principal may see."""
        return self.oadr.get(kind, object_id, Principal.parse(principal))

    def oadr_create(self, kind: str, body: Any, principal: Mapping[str, Any]) -> dict[str, Any]:
        """Create an OpenADR object (an event is a dr.vtn event)."""
        self._check_callbacks(kind, body)
        return self._published(kind, "CREATE", self.oadr.create(kind, body, Principal.parse(principal)))

    def oadr_update(self, kind: str, object_id: str, body: Any, principal: Mapping[str, Any]) -> dict[str, Any]:
        """Replace an OpenADR object (an event's update is a modification)."""
        self._check_callbacks(kind, body)
        return self._published(kind, "UPDATE", self.oadr.update(kind, object_id, body, Principal.parse(principal)))

    def _check_callbacks(self, kind: str, body: Any) -> None:
        if kind == "subscriptions":
            check_subscription_callbacks(self.callback_policy, body)

    def oadr_delete(self, kind: str, object_id: str, principal: Mapping[str, Any]) -> dict[str, Any]:
        """Delete an OpenADR object (an event is cancelled)."""
        return self._published(kind, "DELETE", self.oadr.delete(kind, object_id, Principal.parse(principal)))

    def _published(self, kind: str, operation: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Publish an OpenADR object operation on the MQTT notifier's topics; returns `obj`."""
        self.mqtt.changed(KIND_OF_PATH[kind], operation, obj)
        return obj

    def _seed_published(self, operation: str, event_id: str, view: dict[str, Any] | None = None) -> None:
        """Publish a change made through the seed API: the event as OpenADR shows it (`view`: as it was)."""
        view = view if view is not None else self._oadr_view(event_id)
        if view is not None:
            self.mqtt.changed("EVENT", operation, view)

    def _oadr_view(self, event_id: str) -> dict[str, Any] | None:
        """An event as the business logic reads it over OpenADR (None when it is not there)."""
        if self.mqtt.notifier is None:
            return None
        try:
            return self.oadr.get("events", event_id, SYSTEM_PRINCIPAL)
        except ApiError:
            return None

    def oadr_notifiers(self, principal: Mapping[str, Any]) -> dict[str, Any]:
        """The spec's `notifiersResponse`: webhooks, and the MQTT binding when one is configured."""
        Principal.parse(principal)
        return self.mqtt.notifiers()

    def oadr_mqtt_topics(self, path: str, principal: Mapping[str, Any]) -> dict[str, Any]:
        """The MQTT topic names of `notifiers/mqtt/topics/{path}` (a VEN asks only for its own VEN objects)."""
        who = Principal.parse(principal)
        return self.mqtt.topics(path, who.is_ven, who.client_id)

    def oadr_clients(self, clients: Any) -> dict[str, Any]:
        """Keep dr.web's OpenADR clients (clientId, role, venName, scopes; never a secret) in the store."""
        return keep_clients(self.oadr_book, clients)

    # ============================================================================ inbound ====
    def ingest(self, kind: str, message: object, ven_id: str | None = None, *, sender: str) -> list[str]:
        """Parse, authenticate and apply one bus message (see `Intake.ingest`); returns the refused items' errors."""
        return self.intake.ingest(kind, message, ven_id, sender)

    def on_acks(self, acks: list[Ack]) -> None:
        """Apply acks whose venId the transport authenticated."""
        self.dispatcher.on_acks(acks)

    def on_telemetry(self, items: list[Telemetry]) -> None:
        """Apply telemetry whose venId the transport authenticated."""
        self.intake.on_telemetry(items)

    def on_status(self, items: list[VenStatus]) -> None:
        """Apply online/offline notices whose venId the transport authenticated."""
        self.intake.on_status(items)

    # ============================================================================ flushing ====
    def _arm_flush(self) -> None:
        if self.started:
            self._flush_timer = self.clock.call_at(self.clock.now() + self.config.flush_interval_s, self._on_flush)

    def _on_flush(self) -> None:
        try:
            self.journal.flush(deferrable=True)
            self.event_manager.prune()
        except Exception:  # the buffer is kept and written on the next flush
            self.counters["storeErrors"] += 1
            _log.exception("writing telemetry and VEN state failed")
        self._arm_flush()

    def flush(self) -> None:
        """Write buffered telemetry, acks, last-seen times, command and participant states in one transaction."""
        self.journal.flush()
