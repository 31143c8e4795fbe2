"""A minimal contract-following VEN: takes commands on dr/cmd/<venId>, applies each correlationId once,
acks on dr/ack/<venId> and reports telemetry on dr/telemetry/<venId>.

Config: {"venId": str, "baseKw": float (load without shedding), "maxShedKw": float (what it can shed;
an ack accepts at most this), "telemetryPeriodS": float}.
RPC `received()` lists every command that arrived with its wall-clock arrival time.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from volttron.client.vip.agent import RPC, Agent, Core
from volttron.utils import load_config
from volttron.utils.commands import vip_main

from dr_common import topics
from dr_common.payloads import OP_EVENT, OP_RESTORE, OP_SHED_PANEL, Ack, Command, Telemetry
from dr_common.schema import PayloadError

RECEIVED_COMMANDS = "received_commands"  # this test agent's one RPC

_log = logging.getLogger(__name__)


class ContractVen(Agent):
    def __init__(self, config_path: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        config = load_config(config_path) if config_path else {}
        self.ven_id: str = config["venId"]
        self.base_kw = float(config.get("baseKw", 5.0))
        self.max_shed_kw = float(config.get("maxShedKw", 10.0))
        self.period_s = float(config.get("telemetryPeriodS", 1.0))
        self.shed_kw = 0.0
        self.requested_kw = 0.0
        self.event_id: str | None = None
        self.received: list[dict[str, Any]] = []
        self.acks: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.bad = 0

    @Core.receiver("onstart")
    def onstart(self, sender: Any, **kwargs: Any) -> None:
        self.vip.pubsub.subscribe("pubsub", topics.bus_cmd(self.ven_id), self._on_command)
        self.core.periodic(self.period_s, self._telemetry)

    def _on_command(self, peer: str, sender: str, bus: str, topic: str, headers: Any, message: Any) -> None:
        arrived = time.time()
        if topic != topics.bus_cmd(self.ven_id):
            return
        self.received.append({"receivedAt": arrived, "payload": message})
        try:
            command = Command.from_payload(message)
        except PayloadError as exc:
            self.bad += 1
            _log.warning("test VEN %s: bad command: %s", self.ven_id, exc)
            return
        known = self.acks.get(command.correlation_id)
        if known is not None:
            self.duplicates += 1
            self._publish(topics.bus_ack(self.ven_id), known)
            return
        if command.op in (OP_EVENT, OP_SHED_PANEL):
            accepted = min(command.requested_reduction_kw, self.max_shed_kw)
            self.shed_kw, self.requested_kw, self.event_id = accepted, command.requested_reduction_kw, command.event_id
        elif command.op == OP_RESTORE:
            accepted = 0.0
            self.shed_kw, self.requested_kw, self.event_id = 0.0, 0.0, None
        else:
            accepted = 0.0
        ack = Ack(correlation_id=command.correlation_id, ok=True, op=command.op, ven_id=self.ven_id,
                  event_id=command.event_id, target_kw=command.requested_reduction_kw,
                  accepted_reduce_kw=accepted, until=command.until).to_payload()
        self.acks[command.correlation_id] = ack
        self._publish(topics.bus_ack(self.ven_id), ack)
        self._telemetry()

    def _telemetry(self) -> None:
        payload = Telemetry(ven_id=self.ven_id, used_power_kw=self.base_kw - self.shed_kw, shed_power_kw=self.shed_kw,
                            requested_reduction_kw=self.requested_kw, event_id=self.event_id,
                            baseline_power_kw=self.base_kw,
                            available_shed_kw=self.max_shed_kw).to_payload()
        self._publish(topics.bus_telemetry(self.ven_id), payload)

    def _publish(self, topic: str, message: Any) -> None:
        self.vip.pubsub.publish("pubsub", topic, headers={"source": self.core.identity}, message=message)

    @RPC.export(RECEIVED_COMMANDS)
    def received_commands(self) -> dict[str, Any]:
        """What the contract VEN received: commands, duplicates, bad ones, its shed and event."""
        return {"venId": self.ven_id, "received": self.received, "duplicates": self.duplicates, "bad": self.bad,
                "shedKw": self.shed_kw, "eventId": self.event_id}


def main() -> None:
    vip_main(ContractVen, version="0.1.0")


if __name__ == "__main__":
    sys.exit(main())
