"""dr.vtn: the VOLTTRON shell around VtnService (config store, subscriptions, timers, RPC).

Timers are VOLTTRON core timers (`self.core.schedule` at absolute wall-clock instants); commands go out
on the bus: one message per local VEN on dr/cmd/<venId>, one message per round for the bridge on
dr/batch/cmd. Inbound acks, telemetry and status come per VEN (dr/ack/, dr/telemetry/) or batched by the
bridge (dr/batch/ack, dr/batch/telemetry, dr/batch/status). With a `commandLink` the remote VENs' commands
go from dr.vtn to the broker and what they send comes back the same way (`command_link`), no bus hop.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime
from types import MethodType
from typing import Any

import gevent
from gevent.threadpool import ThreadPool
from volttron.client.vip.agent import RPC, Agent, Core
from volttron.utils import load_config
from volttron.utils.commands import vip_main

from dr_common import topics
from dr_common.config import ConfigError
from dr_common.batches import compact_batch
from dr_common.rejects import RateLimitedLog
from dr_common.timeutil import UTC
from dr_common.vip_repr import bound_message_repr
from dr_vtn_dispatcher import __version__
from dr_vtn_dispatcher.command_link import CommandLink, Echo
from dr_vtn_dispatcher.config import VtnConfig, parse_config
from dr_vtn_dispatcher.errors import INTERNAL, api_call
from dr_vtn_dispatcher.oadr_mqtt import MqttNotifier
from dr_vtn_dispatcher.oadr_notify import StoreKeep, WebhookNotifier
from dr_vtn_dispatcher.service import VtnService
from dr_vtn_dispatcher.store import Store, sqlite_url

_log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_S = 10.0


class BusError(RuntimeError):
    """A bus publish that failed or timed out."""


class CoreScheduler:
    """The Scheduler of VtnService on VOLTTRON core timers (wall clock, absolute instants)."""

    def __init__(self, core: Any) -> None:
        self._core = core

    def now(self) -> float:
        """Wall-clock seconds since the epoch."""
        return time.time()

    def call_at(self, when: float, callback: Callable[[], None]) -> Any:
        """Run `callback` at the absolute instant `when` on a core timer."""
        return self._core.schedule(datetime.fromtimestamp(when, UTC), callback)

    def call_at_precise(self, when: float, callback: Callable[[], None]) -> Any:
        """Run `callback` at `when` to within a fraction of a millisecond (a held round's release): a greenlet
        sleeps until PRECISE_SPIN_S before, then yields to the loop until the instant."""
        return _PreciseTimer(when, callback)


PRECISE_SPIN_S = 0.002


class _PreciseTimer:
    """A greenlet that runs a callback at an absolute instant; `cancel` before it runs stops it."""

    def __init__(self, when: float, callback: Callable[[], None]) -> None:
        self._greenlet = gevent.spawn(self._run, when, callback)

    @staticmethod
    def _run(when: float, callback: Callable[[], None]) -> None:
        while True:
            left = when - time.time()
            if left <= 0:
                break
            gevent.sleep(left - PRECISE_SPIN_S if left > PRECISE_SPIN_S * 1.5 else 0)
        callback()

    def cancel(self) -> None:
        """Stop it unless it is the greenlet running now (a callback cancelling its own timer)."""
        if self._greenlet is not gevent.getcurrent():
            self._greenlet.kill(block=False)


class BusSender:
    """The Sender of VtnService on the VOLTTRON bus."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def publish(self, topic: str, message: Any) -> None:
        """Publish on the bus and wait (BusError after PUBLISH_TIMEOUT_S): the command link's `BusPort`."""
        self._publish(topic, message)

    def _publish(self, topic: str, message: Any) -> None:
        try:
            self._agent.vip.pubsub.publish("pubsub", topic, headers={"source": topics.VTN_IDENTITY},
                                           message=message).get(timeout=PUBLISH_TIMEOUT_S)
        except gevent.Timeout:
            raise BusError(f"publish on {topic} timed out after {PUBLISH_TIMEOUT_S:g} s") from None

    def send_local(self, ven_id: str, payload: dict[str, Any]) -> None:
        """One command on dr/cmd/<venId>."""
        self._publish(topics.bus_cmd(ven_id), payload)

    def send_batch(self, payloads: list[dict[str, Any]]) -> None:
        """A round's commands for the bridge on dr/batch/cmd, compacted."""
        self._publish(topics.BUS_CMD_BATCH, compact_batch(payloads, "commands"))

    def publish_event(self, event: dict[str, Any]) -> None:
        """An event's status on dr/event/<eventId>."""
        self._publish(topics.BUS_EVENT_STATUS.format(eventId=event["eventId"]), event)

    def publish_telemetry(self, ven_id: str, payload: dict[str, Any]) -> None:
        """An OpenADR VEN's report as its telemetry on dr/telemetry/<venId>."""
        self._publish(topics.bus_telemetry(ven_id), payload)


class LinkSender(BusSender):
    """The Sender with a command link: remote VENs' commands go straight to the broker; the rest on the bus."""

    def __init__(self, agent: Agent, link: CommandLink) -> None:
        super().__init__(agent)
        self._link = link

    can_hold = True

    def hold(self) -> bool:
        """Keep the commands handed over from now on back until `release` (see `CommandLink.hold`)."""
        return self._link.hold()

    def release(self) -> None:
        """Send what `hold` kept back."""
        self._link.release()

    def send_batch(self, payloads: list[dict[str, Any]]) -> None:
        """A round's commands to the broker (or the link's outbox); raises when some could not be taken (they
        stay pending and are retried)."""
        result = self._link.send_batch(payloads)
        if result["refused"] or result["rejected"]:
            raise BusError(f"the command link took {result['sent'] + result['queued']} of {len(payloads)} "
                           f"commands ({result['refused']} refused: outbox full, {result['rejected']} rejected)")


def _rss_kb() -> int | None:
    """This process's resident memory (Linux), for health and benches."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class VtnAgent(Agent):
    """dr.vtn: config store, subscriptions, core timers and RPCs around VtnService."""

    def __init__(self, config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        install_config = load_config(config_path) if config_path else {}
        self.config_error: str | None = None
        self.config: VtnConfig | None = None
        self.store: Store | None = None
        self._writer: ThreadPool | None = None
        self.service: VtnService | None = None
        self.link: CommandLink | None = None
        self.dropped = 0
        self._running = False
        self._refusals = RateLimitedLog(_log, 60.0)  # one line per kind and sender per minute
        self.vip.config.set_default("config", install_config or {})
        self.vip.config.subscribe(self._on_config, actions=["NEW", "UPDATE"], pattern="config")

    # ---------------------------------------------------------------------------- configuration --
    def _on_config(self, config_name: str, action: str, contents: Any) -> None:
        try:
            config = parse_config(contents)
        except ConfigError as exc:
            self.config_error = str(exc)
            _log.error("dr.vtn: bad configuration, keeping the previous one: %s", exc)
            return
        self.config_error = None
        if self._running and self.service is not None and config == self.config:
            return  # the same configuration again (the install's, then the store's): nothing to restart
        self.config = config
        if self._running:
            self._start_service()

    def _data_dir(self) -> str:
        home = os.environ.get("VOLTTRON_HOME", os.path.expanduser("~/.volttron"))
        return os.path.join(home, "agents", self.core.identity, "data")

    def _database_url(self, config: VtnConfig) -> str:
        if config.database_url is not None and config.database_url.get_secret_value():
            return config.database_url.get_secret_value()
        if config.sqlite_path:
            return sqlite_url(config.sqlite_path)
        return sqlite_url(os.path.join(self._data_dir(), "vtn.sqlite"))

    def _build_link(self, config: VtnConfig) -> CommandLink | None:
        """The command link of `config`, prepared (outbox open, MQTT client and TLS built), not connected."""
        if config.link is None:
            return None
        publisher = BusSender(self)
        os.makedirs(self._data_dir(), exist_ok=True)
        link = CommandLink(config.link, publisher, Echo(publisher.publish, config.echo_interval_s),
                           base_dir=self._data_dir())
        link.prepare()
        return link

    def _busy(self) -> bool:
        """True while commands wait for the broker's acknowledgement or the latest round's acks come in."""
        link, service = self.link, self.service
        return bool(link is not None and link.busy()) or bool(service is not None and service.dispatcher.settling())

    def _deliver(self, kind: str, items: list[Any]) -> None:
        """What the command link accepted (each item's venId bound to its MQTT topic) to the VTN."""
        service = self.service
        if service is None:
            self.dropped += len(items)
            return
        apply = {"ack": service.on_acks, "telemetry": service.on_telemetry, "status": service.on_status}[kind]
        try:
            apply(items)
        except Exception as exc:  # one bad hand-off must never stop the agent
            service.counters["ingestErrors"] += 1
            self._refusals.error(f"crash:link:{kind}", "dr.vtn: handling %d %s item(s) from the command link "
                                 "failed: %s", len(items), kind, repr(exc)[:300])

    def _start_service(self) -> None:
        """Open the new configuration's store first; only when it opens is the running VTN stopped (its
        pending writes flushed) and the new one started from the store."""
        config = self.config
        if config is None:
            return
        try:
            store = Store(self._database_url(config))
        except Exception as exc:  # e.g. an unreachable database: the running VTN stays; reported by health
            self.config_error = f"cannot open the store: {exc.__class__.__name__} (details in the log)"
            _log.exception("dr.vtn: cannot open the store of the new configuration; keeping the running VTN")
            return
        try:
            link = self._build_link(config)
        except Exception as exc:  # e.g. an unreadable TLS file or outbox: the running VTN stays
            store.close()
            self.config_error = f"cannot build the command link: {exc.__class__.__name__}: {str(exc)[:200]}"
            _log.error("dr.vtn: %s; keeping the running VTN", self.config_error)
            return
        self._stop_service()
        try:
            self.store, self.link = store, link
            # the flush's writes run in a thread of their own, one after another (the drivers release the GIL
            # while the database works): the event loop dispatches and takes acks meanwhile
            self._writer = ThreadPool(1)
            sender = BusSender(self) if link is None else LinkSender(self, link)
            self.service = VtnService(store, CoreScheduler(self.core), sender, config,
                                      offload=self._writer.apply, notifier=WebhookNotifier(keep=StoreKeep(store)),
                                      mqtt=MqttNotifier(config.openadr3.mqtt) if config.openadr3.mqtt else None)
            if link is not None:
                link.attach(self._deliver)
                # the timer flush and the bus echo wait while a fan-out is on its way and its acks come in
                self.service.journal.hold = link.echo.hold = self._busy
            self.service.start()
            if link is not None:
                link.start()
        except Exception as exc:  # reported by health, retried on reconfig
            self.config_error = f"cannot start: {exc.__class__.__name__} (details in the log)"
            _log.exception("dr.vtn: cannot start the VTN")
            self._stop_service()
            return
        _log.info("dr.vtn %s running on %s", __version__, store.dialect)

    def _stop_service(self) -> None:
        if self.service is not None:
            try:
                self.service.stop()
            except Exception:  # the store may be gone; stopping must still release it
                _log.exception("dr.vtn: stopping the VTN failed")
            self.service = None
        if self.link is not None:
            try:
                self.link.stop()
            except Exception:  # stopping must still release the store
                _log.exception("dr.vtn: stopping the command link failed")
            self.link = None
        if self._writer is not None:
            self._writer.kill()
            self._writer = None
        if self.store is not None:
            self.store.close()
            self.store = None

    # ---------------------------------------------------------------------------- lifecycle -------
    @Core.receiver("onstart")
    def onstart(self, sender: Any, **kwargs: Any) -> None:
        """Subscribe to the inbound topics and start the VTN when configured."""
        for prefix, kind, batched in ((topics.BUS_ACK_PREFIX, "ack", False),
                                      (topics.BUS_TELEMETRY_PREFIX, "telemetry", False),
                                      (topics.BUS_ACK_BATCH, "ack", True),
                                      (topics.BUS_TELEMETRY_BATCH, "telemetry", True),
                                      (topics.BUS_STATUS_BATCH, "status", True)):
            self.vip.pubsub.subscribe("pubsub", prefix, self._handler(prefix, kind, batched))
        self._running = True
        if self.config is not None and self.service is None:
            self._start_service()

    @Core.receiver("onstop")
    def onstop(self, sender: Any, **kwargs: Any) -> None:
        """Stop the VTN (timers, pending writes, store)."""
        self._running = False
        self._stop_service()

    def _handler(self, prefix: str, kind: str, batched: bool) -> Callable[..., None]:
        def on_message(peer: str, sender: str, bus: str, topic: str, headers: Any, message: Any) -> None:
            if self.service is None:
                self.dropped += 1
                return
            if sender == self.core.identity:   # an OpenADR report dr.vtn published itself, applied already
                return
            ven_id = None
            if not batched:
                ven_id = topics.ven_id_from_topic(topic, prefix)
                if ven_id is None:
                    return
            try:
                errors = self.service.ingest(kind, message, ven_id, sender=sender)
            except Exception as exc:  # one bad message must never stop the agent
                self.service.counters["ingestErrors"] += 1
                self._refusals.error(f"crash:{kind}", "dr.vtn: handling %s on %s failed: %s", kind, topic[:200],
                                     repr(exc)[:300])
                _log.debug("dr.vtn: handling %s on %s failed", kind, topic[:200], exc_info=True)
                return
            if errors:
                self._refusals.warning(f"{kind}:{str(sender)[:80]}", "dr.vtn: refused %d %s item(s) on %s from %s: %s",
                                       len(errors), kind, topic[:200], str(sender)[:80], errors[0][:300])

        return on_message

    # ---------------------------------------------------------------------------- RPC -------------
    def _call(self, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a VtnService method (given as `VtnService.x`) on the running service by the API convention."""
        if self.service is None:
            reason = self.config_error or "not started"
            return {"error": f"dr.vtn is not running: {reason}", "field": "<config>", "code": INTERNAL}
        return api_call(MethodType(method, self.service), *args, **kwargs)

    @RPC.export(topics.VtnRpc.REGISTER_VEN)
    def register_ven(self, ven: dict[str, Any]) -> Any:
        """Register a VEN, or update it when its venId is known."""
        return self._call(VtnService.register_ven, ven)

    @RPC.export(topics.VtnRpc.UPDATE_VEN)
    def update_ven(self, ven_id: str, changes: dict[str, Any]) -> Any:
        """Change a registered VEN."""
        return self._call(VtnService.update_ven, ven_id, changes)

    @RPC.export(topics.VtnRpc.LIST_VENS)
    def list_vens(self, status: str | None = None, group: str | None = None, site: str | None = None,
                  transport: str | None = None) -> Any:
        """Registered VENs, filtered by status, group, site or transport."""
        return self._call(VtnService.list_vens, status=status, group=group, site=site, transport=transport)

    @RPC.export(topics.VtnRpc.GET_VEN)
    def get_ven(self, ven_id: str) -> Any:
        """One VEN, with the event it serves."""
        return self._call(VtnService.get_ven, ven_id)

    @RPC.export(topics.VtnRpc.CREATE_EVENT)
    def create_event(self, event: dict[str, Any]) -> Any:
        """Create an event."""
        return self._call(VtnService.create_event, event)

    @RPC.export(topics.VtnRpc.UPDATE_EVENT)
    def update_event(self, event_id: str, changes: dict[str, Any]) -> Any:
        """Change an open event (modificationNumber + 1)."""
        return self._call(VtnService.update_event, event_id, changes)

    @RPC.export(topics.VtnRpc.STOP_EVENT)
    def stop_event(self, event_id: str) -> Any:
        """End an event now (active: completed, else cancelled)."""
        return self._call(VtnService.stop_event, event_id)

    @RPC.export(topics.VtnRpc.CANCEL_EVENT)
    def cancel_event(self, event_id: str) -> Any:
        """Cancel an event; VENs already dispatched are restored."""
        return self._call(VtnService.cancel_event, event_id)

    @RPC.export(topics.VtnRpc.GET_EVENT)
    def get_event(self, event_id: str) -> Any:
        """One event."""
        return self._call(VtnService.get_event, event_id)

    @RPC.export(topics.VtnRpc.LIST_EVENTS)
    def list_events(self, status: str | None = None, limit: int = 100, offset: int = 0) -> Any:
        """Events, latest start first."""
        return self._call(VtnService.list_events, status=status, limit=limit, offset=offset)

    @RPC.export(topics.VtnRpc.EVENT_METRICS)
    def event_metrics(self, event_id: str) -> Any:
        """Per-event metrics with per-VEN detail."""
        return self._call(VtnService.event_metrics, event_id)

    @RPC.export(topics.VtnRpc.OADR_SEARCH)
    def oadr_search(self, kind: str, principal: dict[str, Any], query: dict[str, Any] | None = None) -> Any:
        """OpenADR objects of a kind the principal may see, by the spec's query parameters."""
        return self._call(VtnService.oadr_search, kind, principal, query)

    @RPC.export(topics.VtnRpc.OADR_GET)
    def oadr_get(self, kind: str, object_id: str, principal: dict[str, Any]) -> Any:
        """One OpenADR object the principal may see."""
        return self._call(VtnService.oadr_get, kind, object_id, principal)

    @RPC.export(topics.VtnRpc.OADR_CREATE)
    def oadr_create(self, kind: str, body: Any, principal: dict[str, Any]) -> Any:
        """Create an OpenADR object."""
        return self._call(VtnService.oadr_create, kind, body, principal)

    @RPC.export(topics.VtnRpc.OADR_UPDATE)
    def oadr_update(self, kind: str, object_id: str, body: Any, principal: dict[str, Any]) -> Any:
        """Replace an OpenADR object."""
        return self._call(VtnService.oadr_update, kind, object_id, body, principal)

    @RPC.export(topics.VtnRpc.OADR_DELETE)
    def oadr_delete(self, kind: str, object_id: str, principal: dict[str, Any]) -> Any:
        """Delete an OpenADR object (an event is cancelled)."""
        return self._call(VtnService.oadr_delete, kind, object_id, principal)

    @RPC.export(topics.VtnRpc.OADR_NOTIFIERS)
    def oadr_notifiers(self, principal: dict[str, Any]) -> Any:
        """The notifier bindings (webhooks, MQTT when configured)."""
        return self._call(VtnService.oadr_notifiers, principal)

    @RPC.export(topics.VtnRpc.OADR_MQTT_TOPICS)
    def oadr_mqtt_topics(self, path: str, principal: dict[str, Any]) -> Any:
        """The MQTT topic names of notifiers/mqtt/topics/{path} the principal may read."""
        return self._call(VtnService.oadr_mqtt_topics, path, principal)

    @RPC.export(topics.VtnRpc.OADR_CLIENTS)
    def oadr_clients(self, clients: list[dict[str, Any]]) -> Any:
        """dr.web's OpenADR clients (no secrets), kept in dr.vtn's store."""
        return self._call(VtnService.oadr_clients, clients)

    @RPC.export(topics.VtnRpc.HEALTH)
    def health(self) -> dict[str, Any]:
        """Configuration error, counts, pending commands, counters."""
        base = {"identity": self.core.identity, "version": __version__, "configError": self.config_error,
                "droppedWhileStopped": self.dropped, "rssKb": _rss_kb()}
        if self.service is None:
            return {**base, "ok": False, "status": "not running"}
        service_health = api_call(self.service.health)
        ok = self.config_error is None and "error" not in service_health
        if self.link is not None:
            link = self.link.health()
            base["commandLink"] = {**link, "details": self.link.status()}
            ok = ok and link["status"] == "GOOD"
        return {**base, "ok": ok, **service_health}


def main() -> None:
    """Run the agent (VOLTTRON entry point)."""
    bound_message_repr()  # VOLTTRON 11 renders every VIP message for its debug log
    vip_main(VtnAgent, version=__version__)


if __name__ == "__main__":
    sys.exit(main())
