"""A collecting MQTT client for tests and benchmarks (paho with its own thread, the interpreter's own sockets
even where gevent has patched them)."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from gevent import monkey
from paho.mqtt.enums import CallbackAPIVersion

_native_create_connection = monkey.get_original("socket", "create_connection")


class NativeClient(mqtt.Client):
    """paho's client with unpatched plain TCP sockets (safe in a paho thread of a gevent-patched process);
    TLS keeps the `ssl` module's current objects (gevent's original SSL classes break once patched)."""

    def _create_socket_connection(self):
        if self._ssl:
            return super()._create_socket_connection()
        return _native_create_connection((self._host, self._port), timeout=self._connect_timeout)


def tls_context(ca: str | None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca:
        ctx.load_verify_locations(cafile=ca)
    if cert and key:
        ctx.load_cert_chain(cert, key)
    return ctx


class Probe:
    """Subscribes to filters and records `(topic, payload, monotonic time)`; publishes QoS 1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 1883, client_id: str = "",
                 subscriptions: list[str] | None = None, tls: ssl.SSLContext | None = None,
                 clean_session: bool = True, on_message: Callable[[str, bytes], None] | None = None,
                 keep: bool = True) -> None:
        self.messages: list[tuple[str, bytes, float]] = []
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._subs = list(subscriptions or [])
        self._callback = on_message
        self._keep = keep
        self.connect_result: Any = None
        self.client = NativeClient(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session)
        self.client.max_inflight_messages_set(0)
        if tls is not None:
            self.client.tls_set_context(tls)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self._subscribed.set()
        self.host, self.port = host, port

    def _on_connect(self, client, userdata, flags, reason, properties):
        self.connect_result = reason
        if reason.is_failure:
            return
        if self._subs:
            client.subscribe([(s, 1) for s in self._subs])
        else:
            self._subscribed.set()
        self._connected.set()

    def _on_message(self, client, userdata, msg):
        now = time.monotonic()
        if self._keep:
            with self._lock:
                self.messages.append((msg.topic, msg.payload, now))
        if self._callback is not None:
            self._callback(msg.topic, msg.payload)

    def start(self, timeout: float = 10.0) -> Probe:
        self.client.connect(self.host, self.port, keepalive=30)
        self.client.loop_start()
        if not (self._connected.wait(timeout) and self._subscribed.wait(timeout)):
            raise TimeoutError(f"probe did not connect/subscribe to {self.host}:{self.port}: {self.connect_result}")
        return self

    def publish(self, topic: str, payload: bytes | str, qos: int = 1, retain: bool = False) -> None:
        self.client.publish(topic, payload, qos=qos, retain=retain)

    def snapshot(self, topic_prefix: str = "") -> list[tuple[str, bytes, float]]:
        with self._lock:
            return [m for m in self.messages if m[0].startswith(topic_prefix)]

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
