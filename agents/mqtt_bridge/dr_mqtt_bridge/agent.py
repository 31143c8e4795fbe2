"""dr.mqtt: the VOLTTRON agent around `BridgeCore` (lifecycle, config store, subscriptions, RPC)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import gevent
from volttron.client.vip.agent import RPC, Agent, Core
from volttron.utils import load_config
from volttron.utils.commands import vip_main

from dr_common.topics import BridgeRpc
from dr_common.vip_repr import bound_message_repr
from dr_mqtt_bridge.config import ConfigError, parse_config
from dr_mqtt_bridge.core import BridgeCore
from dr_mqtt_bridge.outbox import OutboxError

_log = logging.getLogger(__name__)

BUS_PUBLISH_TIMEOUT_S = 10.0


class BusPublishError(RuntimeError):
    """A bus publish that did not complete."""


class VipBus:
    """The `BusPort` of the core on the agent's VOLTTRON connection."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def publish(self, topic: str, message: Any) -> None:
        try:
            self._agent.vip.pubsub.publish("pubsub", topic, headers={}, message=message).get(
                timeout=BUS_PUBLISH_TIMEOUT_S)
        except gevent.Timeout as exc:
            raise BusPublishError(f"publish on {topic} timed out after {BUS_PUBLISH_TIMEOUT_S:g} s") from exc


class MqttBridgeAgent(Agent):
    def __init__(self, config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._initial: dict[str, Any] = dict(load_config(config_path) or {}) if config_path else {}
        self._core: BridgeCore | None = None
        self._subscribed: list[str] = []
        self._config_error: str | None = None
        self.vip.config.set_default("config", self._initial)
        self.vip.config.subscribe(self._on_config, actions=["NEW", "UPDATE"], pattern="config")

    def _on_config(self, config_name: str, action: str, contents: Any) -> None:
        try:
            config = parse_config(contents if isinstance(contents, dict) else {})
        except ConfigError as exc:
            self._config_error = str(exc)
            _log.error("configuration rejected, bridge %s: %s",
                       "keeps its previous configuration" if self._core else "not started", exc)
            return
        self._stop_core()
        core = BridgeCore(config, VipBus(self))
        try:
            core.start()
        except OutboxError as exc:
            self._config_error = str(exc)
            _log.error("bridge not started: %s", exc)
            return
        self._config_error = None
        self._core = core
        for prefix in core.bus_prefixes():
            self.vip.pubsub.subscribe("pubsub", prefix, self._on_bus).get(timeout=10)
            self._subscribed.append(prefix)

    def _stop_core(self) -> None:
        for prefix in self._subscribed:
            try:
                self.vip.pubsub.unsubscribe("pubsub", prefix, self._on_bus).get(timeout=10)
            except gevent.Timeout:
                _log.warning("unsubscribing from %s timed out", prefix)
        self._subscribed = []
        if self._core is not None:
            self._core.stop()
            self._core = None

    def _on_bus(self, peer: str, sender: str, bus: str, topic: str, headers: Any, message: Any) -> None:
        core = self._core
        if core is None:
            return
        try:
            core.on_bus_message(topic, message)
        except Exception:  # one bad bus message must not stop the bridge
            _log.exception("bus message on %s could not be bridged", topic)

    @Core.receiver("onstop")
    def onstop(self, sender: Any, **kwargs: Any) -> None:
        self._stop_core()

    @RPC.export(BridgeRpc.SEND_BATCH)
    def send_batch(self, commands: list[dict[str, Any]], shared: dict[str, Any] | None = None) -> dict[str, int]:
        """Fan out many command payloads (each with its venId) to MQTT, `shared` holding the fields common to
        all of them; returns sent/queued/refused/rejected."""
        if self._core is None:
            raise RuntimeError(f"the bridge is not running: {self._config_error or 'no configuration'}")
        return self._core.send_batch(commands, shared)

    @RPC.export(BridgeRpc.STATUS)
    def status(self) -> dict[str, Any]:
        if self._core is None:
            return {"connected": False, "configError": self._config_error, "backlog": 0}
        out = self._core.status()
        out["configError"] = self._config_error
        return out

    @RPC.export(BridgeRpc.HEALTH)
    def health(self) -> dict[str, Any]:
        if self._core is None:
            return {"status": "BAD", "context": self._config_error or "no configuration"}
        health = self._core.health()
        if self._config_error:
            health["context"] += f"; last configuration rejected: {self._config_error}"
        return health


def main(argv: list[str] | None = None) -> None:
    try:
        bound_message_repr()  # VOLTTRON 11 renders every VIP message for its debug log
        vip_main(MqttBridgeAgent, version="0.1.0")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
