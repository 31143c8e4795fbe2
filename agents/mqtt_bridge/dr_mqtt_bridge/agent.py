"""dr.mqtt: the VOLTTRON agent around `BridgeCore` (lifecycle, config store, subscriptions, RPC)."""

from __future__ import annotations

import logging
import sys
from typing import Any

import gevent
from volttron.client.vip.agent import RPC, Agent, Core
from volttron.utils import load_config
from volttron.utils.commands import vip_main

from dr_common.payloads import BridgeStatus
from dr_common.rejects import RateLimitedLog
from dr_common.topics import BridgeRpc
from dr_common.vip_repr import bound_message_repr
from dr_common.mqtt.core import BridgeCore
from dr_mqtt_bridge.lifecycle import BridgeSlot

_log = logging.getLogger(__name__)

BUS_PUBLISH_TIMEOUT_S = 10.0


class BusPublishError(RuntimeError):
    """A bus publish that did not complete."""


class VipBus:
    """The `BusPort` of the core on the agent's VOLTTRON connection."""

    def __init__(self, agent: Agent) -> None:
        self._agent = agent

    def publish(self, topic: str, message: Any) -> None:
        """Publish on the bus and wait for it (BusPublishError after BUS_PUBLISH_TIMEOUT_S)."""
        try:
            self._agent.vip.pubsub.publish("pubsub", topic, headers={}, message=message).get(
                timeout=BUS_PUBLISH_TIMEOUT_S)
        except gevent.Timeout as exc:
            raise BusPublishError(f"publish on {topic} timed out after {BUS_PUBLISH_TIMEOUT_S:g} s") from exc


class MqttBridgeAgent(Agent):
    """dr.mqtt: one `BridgeCore` per valid configuration; a refused one leaves the running bridge as it is."""

    def __init__(self, config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._initial: dict[str, Any] = dict(load_config(config_path) or {}) if config_path else {}
        self._subscribed: list[str] = []
        self._bus_errors = RateLimitedLog(_log)
        self._slot = BridgeSlot(VipBus(self), before_stop=self._unsubscribe, after_start=self._subscribe)
        self.vip.config.set_default("config", self._initial)
        self.vip.config.subscribe(self._on_config, actions=["NEW", "UPDATE"], pattern="config")

    @property
    def _core(self) -> BridgeCore | None:
        return self._slot.core

    @property
    def _config_error(self) -> str | None:
        return self._slot.config_error

    def _on_config(self, config_name: str, action: str, contents: Any) -> None:
        self._slot.apply(contents)

    def _subscribe(self, core: BridgeCore) -> None:
        for prefix in core.bus_prefixes():
            self.vip.pubsub.subscribe("pubsub", prefix, self._on_bus).get(timeout=10)
            self._subscribed.append(prefix)

    def _unsubscribe(self, core: BridgeCore) -> None:
        for prefix in self._subscribed:
            try:
                self.vip.pubsub.unsubscribe("pubsub", prefix, self._on_bus).get(timeout=10)
            except gevent.Timeout:
                _log.warning("unsubscribing from %s timed out", prefix)
        self._subscribed = []

    def _on_bus(self, peer: str, sender: str, bus: str, topic: str, headers: Any, message: Any) -> None:
        core = self._core
        if core is None:
            return
        try:
            core.on_bus_message(topic, message)
        except Exception as exc:  # one bad bus message must not stop the bridge
            core.stats.reject("bus_error")
            self._bus_errors.error(topic.split("/", 2)[0], "bus message on %s could not be bridged: %s: %s",
                                   topic[:200], exc.__class__.__name__, str(exc)[:300])

    @Core.receiver("onstop")
    def onstop(self, sender: Any, **kwargs: Any) -> None:
        """Stop the bridge: what the broker has not acknowledged stays in the outbox."""
        self._slot.stop()

    @RPC.export(BridgeRpc.SEND_BATCH)
    def send_batch(self, commands: list[dict[str, Any]], shared: dict[str, Any] | None = None) -> dict[str, int]:
        """Fan out command payloads (each with its venId, `shared` fields common to all); sent/queued/refused."""
        if self._core is None:
            raise RuntimeError(f"the bridge is not running: {self._config_error or 'no configuration'}")
        return self._core.send_batch(commands, shared)

    @RPC.export(BridgeRpc.STATUS)
    def status(self) -> dict[str, Any]:
        """Link, outbox, counts, rejects and hand-off latency (`dr_common.payloads.BridgeStatus`)."""
        if self._core is None:
            return BridgeStatus.not_running(self._config_error)
        out = self._core.status()
        out["configError"] = self._config_error
        return out

    @RPC.export(BridgeRpc.HEALTH)
    def health(self) -> dict[str, Any]:
        """GOOD or BAD with the reason; insecure-link warnings and a refused configuration are said."""
        if self._core is None:
            return {"status": "BAD", "context": self._config_error or "no configuration"}
        health = self._core.health()
        if self._config_error:
            health["context"] += f"; last configuration rejected: {self._config_error}"
        return health


def main(argv: list[str] | None = None) -> None:
    """Run the agent (the `volttron-dr-mqtt-bridge` entry point)."""
    try:
        bound_message_repr()  # VOLTTRON 11 renders every VIP message for its debug log
        vip_main(MqttBridgeAgent, version="0.1.0")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
