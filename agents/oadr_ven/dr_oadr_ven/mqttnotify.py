"""The VTN's MQTT notifier, as a VEN listens to it (OpenADR 3.1 `notifiers` MQTT binding).

`GET notifiers` gives the broker URIs and the authentication (`ANONYMOUS`, or `OAUTH2_BEARER_TOKEN` with a
username: a literal or `{clientID}`, the password being the VEN's bearer token); `GET notifiers/mqtt/topics/
vens/{venID}/events` gives this VEN's event topics, of which `ALL` is subscribed (QoS 1). paho runs its own
network thread (`loop_start`) with the interpreter's own sockets whatever gevent has patched; each message is
handed to `on_notification(operation, object)` in that thread, each (re)connection to `on_connect()` so the
link polls and misses nothing sent while it was away. TLS (`mqtts://`) uses the system's CA store.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from dr_common.rejects import RateLimitedLog, RejectCounter

try:
    from gevent import monkey as _monkey
    _connect = _monkey.get_original("socket", "create_connection")
except ImportError:  # pragma: no cover - gevent comes with the platform
    import socket
    _connect = socket.create_connection

_log = logging.getLogger(__name__)
MAX_PAYLOAD = 1_000_000


class NotifierUnusable(ValueError):
    """The VTN's MQTT binding cannot be used by this VEN (said once, then the link polls)."""


class _Client(mqtt.Client):
    def _create_socket_connection(self):  # paho 2 hook: plain TCP on the interpreter's own socket module
        if self._ssl:
            return super()._create_socket_connection()
        return _connect((self._host, self._port), timeout=self._connect_timeout)


def binding(notifiers: dict[str, Any]) -> tuple[str, int, bool, str | None]:
    """(host, port, tls, username template or None) of the VTN's MQTT binding, or NotifierUnusable."""
    mqtt_binding = notifiers.get("MQTT")
    if not isinstance(mqtt_binding, dict):
        raise NotifierUnusable("the VTN offers no MQTT notifier")
    if mqtt_binding.get("serialization", "JSON") != "JSON":
        raise NotifierUnusable(f"serialization {mqtt_binding.get('serialization')!r} is not JSON")
    auth = mqtt_binding.get("authentication") or {}
    method = auth.get("method")
    if method not in ("ANONYMOUS", "OAUTH2_BEARER_TOKEN"):
        raise NotifierUnusable(f"authentication {method!r} is not supported (ANONYMOUS, OAUTH2_BEARER_TOKEN)")
    for uri in mqtt_binding.get("URIS") or []:
        parsed = urlparse(str(uri))
        if parsed.scheme in ("mqtt", "mqtts", "tcp", "ssl") and parsed.hostname:
            tls = parsed.scheme in ("mqtts", "ssl")
            return parsed.hostname, parsed.port or (8883 if tls else 1883), tls, \
                str(auth["username"]) if method == "OAUTH2_BEARER_TOKEN" else None
    raise NotifierUnusable("no mqtt:// or mqtts:// URI in the binding")


class MqttListener:
    def __init__(self, host: str, port: int, tls: bool, topic: str, client_id: str,
                 credentials: tuple[str, str] | None, on_notification: Callable[[str, dict[str, Any]], None],
                 on_connect: Callable[[], None]) -> None:
        self.topic = topic
        self.received = 0
        self.connects = 0
        self.connected = False
        self.rejects = RejectCounter()
        self._errors = RateLimitedLog(_log)
        self._on_notification = on_notification
        self._on_connect = on_connect
        self._host, self._port = host, port
        self._client = _Client(CallbackAPIVersion.VERSION2, client_id=client_id[:64], clean_session=True)
        if credentials is not None:
            self._client.username_pw_set(*credentials)
        if tls:
            self._client.tls_set_context(ssl.create_default_context())
        self._client.reconnect_delay_set(1, 30)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_message = self._message

    def start(self) -> None:
        self._client.connect_async(self._host, self._port, keepalive=30)
        self._client.loop_start()

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def status(self) -> dict[str, Any]:
        return {"topic": self.topic, "connected": self.connected, "connects": self.connects,
                "received": self.received, "rejects": self.rejects.snapshot()}

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._errors.warning("connect", "MQTT notifier %s:%s refused the connection: %s", self._host,
                                 self._port, reason)
            return
        self.connected = True
        self.connects += 1
        client.subscribe(self.topic, qos=1)
        self._on_connect()

    def _disconnected(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self.connected = False

    def _message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        if len(message.payload) > MAX_PAYLOAD:
            self.rejects.count("size")
            return
        try:
            body = json.loads(message.payload)
        except ValueError:
            self.rejects.count("json")
            self._errors.warning("json", "MQTT notification on %s is not JSON", message.topic[:200])
            return
        if not isinstance(body, dict) or not isinstance(body.get("object"), dict) or \
                not isinstance(body.get("operation"), str):
            self.rejects.count("notification")
            return
        self.received += 1
        if body.get("objectType", "EVENT") == "EVENT":
            self._on_notification(body["operation"], body["object"])
