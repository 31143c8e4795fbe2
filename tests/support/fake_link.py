"""`dr_common.mqtt.link.MqttLink`'s interface without a broker, for tests of the link's core: connects at once,
records what is published (each with the next mid), and the test plays paho's events into `inbox`."""

from __future__ import annotations

import contextlib

from dr_common.mqtt import link as link_mod


class FakeLink:
    def __init__(self, broker, inbox, subscriptions, birth=None, log_packets=False) -> None:
        self.inbox = inbox
        self.subscriptions = subscriptions
        self.published: list[tuple[str, bytes]] = []

    def start(self) -> None:
        self.inbox.put((link_mod.EV_CONNECTED, False))

    def stop(self) -> None:
        pass

    def publish(self, topic, payload, qos, retain=False):
        self.published.append((topic, payload))
        return link_mod.SUCCESS, len(self.published)

    def coalesced(self):
        return contextlib.nullcontext()

    def is_connected(self) -> bool:
        return True
