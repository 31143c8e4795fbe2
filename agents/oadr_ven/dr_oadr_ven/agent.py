"""dr.oadr.<venId>: the VOLTTRON agent around `VenCore` (config store, subscriptions, the link, RPC).

The link (OpenADR 3.1 `Oadr31Link` or 2.0b `Oadr20bLink`) runs in threads of its own; what it finds comes
to this agent's gevent loop through a `Handoff`, drained by one greenlet that also ticks the core once a
second. Commands go out on dr/cmd/<venId>; dr/ack/<venId> and dr/telemetry/<venId> come in (the topic is the
identity: a message for another venId is refused).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import gevent
from volttron.client.vip.agent import RPC, Agent, Core
from volttron.utils import load_config
from volttron.utils.commands import vip_main

from dr_common import topics
from dr_common.config import ConfigError, load_model
from dr_common.rejects import RateLimitedLog
from dr_common.topics import OadrVenRpc
from dr_common.vip_repr import bound_message_repr
from dr_oadr_ven.config import PROTOCOL_20B, OadrVenConfig, parse_config
from dr_oadr_ven.core import VenCore
from dr_oadr_ven.handoff import Handoff
from dr_oadr_ven.oadr31 import Oadr31Link
from dr_oadr_ven.state import StateFile

_log = logging.getLogger(__name__)
__version__ = "0.1.0"
STATE_FILE = "oadr_ven_state.json"
PUBLISH_TIMEOUT_S = 10.0
TICK_S = 1.0


class OadrVenAgent(Agent):
    def __init__(self, config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        initial = dict(load_config(config_path) or {}) if config_path else {}
        self._core: VenCore | None = None
        self._link: Any = None
        self._handoff: Handoff | None = None
        self._loop: gevent.Greenlet | None = None
        self._subscribed: list[str] = []
        self._config_error: str | None = None
        self._errors = RateLimitedLog(_log)
        self.vip.config.set_default("config", initial)
        self.vip.config.subscribe(self._on_config, actions=["NEW", "UPDATE"], pattern="config")

    # --- configuration ------------------------------------------------------------------------------------
    def _on_config(self, config_name: str, action: str, contents: Any) -> None:
        try:
            config = parse_config(contents)
            if config.vtn.protocol == PROTOCOL_20B:
                self._settings_20b(config)
        except ConfigError as exc:
            self._config_error = str(exc)
            _log.error("configuration refused, %s: %s", "keeping the running one" if self._core else
                       "not running", exc)
            return
        self._config_error = None
        if self._core is not None and self._core.config == config:
            return
        self._stop()
        self._start(config)

    @staticmethod
    def _settings_20b(config: OadrVenConfig) -> Any:
        try:
            from dr_oadr_ven.oadr20b import Oadr20bSettings
        except ImportError as exc:
            raise ConfigError("vtn.protocol", f"the OpenADR 2.0b link cannot be loaded: {exc}") from None
        return load_model(Oadr20bSettings, config.oadr20b)

    def _state_path(self, config: OadrVenConfig) -> Path:
        if config.state_path:
            return Path(config.state_path)
        home = os.environ.get("VOLTTRON_HOME")
        identity = self.core.identity or topics.oadr_ven_identity(config.ven_id)
        return (Path(home) / "agents" / identity / "data" if home else Path.cwd() / "data") / STATE_FILE

    def _start(self, config: OadrVenConfig) -> None:
        for name in ("httpx", "httpcore"):  # one line per request otherwise
            logging.getLogger(name).setLevel(logging.WARNING)
        state = StateFile(self._state_path(config)).load()
        handoff = Handoff()
        if config.vtn.protocol == PROTOCOL_20B:
            link = self._link_20b(config, handoff, dict(state.section("enrolment")))
        else:
            link = Oadr31Link(config, dict(state.section("enrolment")))
        core = VenCore(config, state, self._publish, link, reports=config.vtn.protocol != PROTOCOL_20B)
        self._core, self._link, self._handoff = core, link, handoff
        for topic, callback in ((topics.bus_ack(config.ven_id), self._on_ack),
                                (topics.bus_telemetry(config.ven_id), self._on_telemetry)):
            self.vip.pubsub.subscribe("pubsub", topic, callback).get(timeout=10)
            self._subscribed.append(topic)
        self._loop = gevent.spawn(self._run, core, handoff)
        if config.vtn.protocol == PROTOCOL_20B:
            link.start(lambda fn: handoff.put(("call", fn)))
        else:
            link.start(handoff)
        _log.info("OpenADR VEN %s (%s) started for %s", config.ven_id, config.vtn.protocol,
                  config.vtn.base_url or "the OpenADR 2.0b VTN")

    def _link_20b(self, config: OadrVenConfig, handoff: Handoff, enrolment: dict[str, Any]) -> Any:
        from dr_oadr_ven.oadr20b import OPT_IN, OPT_OUT, Oadr20bLink, Telemetry20b

        def on_event(event: Any) -> None:
            if self._core is not None:
                self._core.on_item(("event", event))

        def decide(event: Any) -> str:  # the link thread: reads the last telemetry only
            telemetry = self._core.telemetry if self._core is not None else None
            return OPT_OUT if telemetry and telemetry.get("optOut") else OPT_IN

        def telemetry() -> Any:
            core = self._core
            snapshot = core.telemetry if core is not None else None
            if not snapshot:
                return None
            return Telemetry20b(float(snapshot["usedPowerKw"]), snapshot.get("baselinePowerKw"))

        def on_enrolled(found: dict[str, Any]) -> None:  # the agent's loop: kept in the state file
            if self._core is not None:
                self._core.on_item(("enrolled", found))

        return Oadr20bLink(self._settings_20b(config), on_event, decide, telemetry, enrolment=enrolment,
                           on_enrolled=on_enrolled)

    def _stop(self) -> None:
        for topic in self._subscribed:
            try:
                self.vip.pubsub.unsubscribe("pubsub", topic, None).get(timeout=10)
            except gevent.Timeout:
                _log.warning("unsubscribing from %s timed out", topic)
        self._subscribed = []
        if self._loop is not None:
            self._loop.kill(block=True, timeout=5)
            self._loop = None
        if self._link is not None:
            gevent.get_hub().threadpool.apply(self._link.stop)
            self._link = None
        if self._handoff is not None:
            self._handoff.close()
            self._handoff = None
        if self._core is not None:
            self._core.tick()
            self._core = None

    # --- the loop -------------------------------------------------------------------------------------------
    def _run(self, core: VenCore, handoff: Handoff) -> None:
        next_tick = 0.0
        while True:
            for item in handoff.take(TICK_S):
                try:
                    item[1]() if item[0] == "call" else core.on_item(item)
                except Exception as exc:  # one bad finding must not stop the agent
                    core.rejects.count("link_item")
                    self._errors.error("item", "link finding %s could not be handled: %s: %s", item[0],
                                       exc.__class__.__name__, str(exc)[:300])
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + TICK_S
                try:
                    core.tick()
                except Exception as exc:  # the tick runs again in a second
                    self._errors.error("tick", "tick failed: %s: %s", exc.__class__.__name__, str(exc)[:300])

    def _publish(self, command: dict[str, Any]) -> None:
        core = self._core
        if core is None:
            return
        try:
            self.vip.pubsub.publish("pubsub", topics.bus_cmd(core.config.ven_id), headers={},
                                    message=command).get(timeout=PUBLISH_TIMEOUT_S)
        except gevent.Timeout:
            self._errors.error("publish", "command %s not published within %g s", command.get("correlationId"),
                               PUBLISH_TIMEOUT_S)

    def _from_ven(self, core: VenCore, sender: str, topic: str, expected: str) -> bool:
        """Only dr.ven.<venId> speaks for this VEN (a copy that dr.vtn republishes from a report is not)."""
        if topic != expected:
            return False
        if sender != topics.ven_identity(core.config.ven_id):
            core.rejects.count("bus.sender")
            self._errors.warning("sender", "%s from %s ignored: only %s speaks for this VEN", topic, sender[:100],
                                 topics.ven_identity(core.config.ven_id))
            return False
        return True

    def _on_ack(self, peer: str, sender: str, bus: str, topic: str, headers: Any, message: Any) -> None:
        core = self._core
        if core is not None and self._from_ven(core, sender, topic, topics.bus_ack(core.config.ven_id)):
            core.on_ack(message)

    def _on_telemetry(self, peer: str, sender: str, bus: str, topic: str, headers: Any, message: Any) -> None:
        core = self._core
        if core is None or not self._from_ven(core, sender, topic, topics.bus_telemetry(core.config.ven_id)):
            return
        if core.on_telemetry(message) and hasattr(self._link, "report_opt"):
            opt = "optOut" if core.telemetry and core.telemetry.get("optOut") else "optIn"
            for event_id in core.planner.active():
                self._link.report_opt(event_id, opt)

    # --- RPC --------------------------------------------------------------------------------------------------
    @Core.receiver("onstop")
    def onstop(self, sender: Any, **kwargs: Any) -> None:
        self._stop()

    @RPC.export(OadrVenRpc.STATUS)
    def status(self) -> dict[str, Any]:
        """Link, enrolment, event plans, counts, refusals, pending reports and the hand-off latency."""
        if self._core is None:
            return {"running": False, "configError": self._config_error}
        out = self._core.status()
        out.update(running=True, configError=self._config_error,
                   handoff=self._handoff.latency() if self._handoff else None)
        return out

    @RPC.export(OadrVenRpc.HEALTH)
    def health(self) -> dict[str, Any]:
        """GOOD when configured and the VTN link is up, else BAD with the reason."""
        if self._core is None:
            return {"status": "BAD", "context": self._config_error or "no configuration"}
        problems = []
        if not self._core.link_up and self._core.config.vtn.protocol != PROTOCOL_20B:
            problems.append(f"VTN link down: {self._core.link_error or 'not connected yet'}")
        if self._core.config.vtn.protocol == PROTOCOL_20B and not self._link.status().get("up"):
            problems.append("OpenADR 2.0b VTN link down: not registered, or no answer within 3 poll periods")
        if self._config_error:
            problems.append(f"last configuration refused: {self._config_error}")
        return {"status": "BAD" if problems else "GOOD", "context": "; ".join(problems) or "ok",
                "rejects": self._core.rejects.snapshot()}

    @RPC.export(OadrVenRpc.POLL_NOW)
    def poll_now(self) -> bool:
        """Ask the link to read the VTN's events now (OpenADR 3.1); False when there is no such link."""
        if hasattr(self._link, "wake"):
            self._link.wake()
            return True
        return False


def main(argv: list[str] | None = None) -> None:
    """Run the agent (the `volttron-dr-oadr-ven` entry point)."""
    try:
        bound_message_repr()
        vip_main(OadrVenAgent, version=__version__)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
