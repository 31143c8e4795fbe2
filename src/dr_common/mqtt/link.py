"""The MQTT side of the bridge: one paho-mqtt 2 client with its network thread.

Everything paho reports (connected, disconnected, message, PUBACK) is handed to the hub through a `HubInbox`;
the only work done in paho's thread is re-subscribing and the birth message right after each CONNACK, which
are paho's own calls. Publishing from the hub thread is paho's documented thread-safe path (the packet is
queued and paho's thread is woken to write it), so the hub never waits on the socket; a fan-out queues its
packets in blocks (`coalesced`), so paho's thread is woken and writes once per block, not once per message.

Inside a VOLTTRON agent gevent has patched `socket` and `ssl`; paho's thread is a real OS thread: plain TCP
connections use the unpatched socket module there; TLS connections use gevent's SSL objects (the original
ones break once `ssl` is patched), which wait on a gevent hub of paho's own thread, never the agent's.
"""

from __future__ import annotations

import json
import logging
import socket as _socket_module
import ssl as _ssl_module
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from gevent import monkey
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from dr_common.mqtt.config import BrokerConfig, TlsConfig

_log = logging.getLogger(__name__)

_native_create_connection = monkey.get_original("socket", "create_connection")
_os_thread_ident = monkey.get_original("_thread", "get_ident")
_PUBLISH = 0x30
_PUBACK = 0x40
COALESCE_BYTES = 64 * 1024
RECV_BYTES = 64 * 1024
MAX_READS_PER_WAKE = 100_000  # packets handled per wake-up of paho's loop before it looks at writes again

EV_CONNECTED = "connected"
EV_CONNECT_FAILED = "connect_failed"
EV_DISCONNECTED = "disconnected"
EV_MESSAGE = "message"
EV_PUBACK = "puback"
EV_SUBSCRIBE_FAILED = "subscribe_failed"
EV_BATCH = "batch"  # (EV_BATCH, [event, ...]): everything paho reported while handling one read, in order


class Inbox(Protocol):
    """Where paho's thread hands events to the hub (`handoff.HubInbox`)."""

    def put(self, item: Any) -> None:
        """Hand one event over (any thread, never blocks)."""


@dataclass(frozen=True)
class Birth:
    """A retained status message: `online` payload published at each connect, `offline` as the last will."""

    topic: str
    online: bytes
    offline: bytes
    qos: int
    retain: bool


class _NativeSocketClient(mqtt.Client):
    """A paho client whose plain TCP sockets are the interpreter's own, whatever gevent has patched.

    With TLS the socket and SSL objects are the `ssl` module's current ones: once gevent has patched `ssl`,
    the original SSL classes no longer work (their methods look themselves up by module-level name), so a
    TLS connection runs on gevent's SSL objects, which in paho's thread use a gevent hub of that thread."""

    def _create_socket_connection(self) -> _socket_module.socket:  # paho 2.x hook
        self._rbuf, self._rpos = b"", 0
        if self._get_proxy() or self._ssl:
            return super()._create_socket_connection()
        return _native_create_connection((self._host, self._port), timeout=self._connect_timeout)

    # --- buffered reading -------------------------------------------------------------------------
    # paho reads a packet with several recv() calls (the type byte, each length byte, the rest) and, with
    # nothing of its own in flight, only one packet per wake-up of its loop. Here one recv() takes up to
    # RECV_BYTES and loop_read goes on until every whole packet read so far has been handled.
    _rbuf: bytes = b""
    _rpos: int = 0

    def _sock_recv(self, bufsize: int) -> bytes:
        buf, pos = self._rbuf, self._rpos
        if pos >= len(buf):
            data = super()._sock_recv(RECV_BYTES)
            if not data:
                return data
            self._rbuf, buf, pos = data, data, 0
        end = min(pos + bufsize, len(buf))
        self._rpos = end
        return buf[pos:end]

    def _sock_close(self) -> None:
        self._rbuf, self._rpos = b"", 0
        super()._sock_close()

    # --- the common packets without paho's per-packet objects ---------------------------------------
    # With MQTT 3.1.1, a whole PUBACK or QoS 0/1 PUBLISH waiting in the read buffer is handled here: the PUBACK
    # with paho's own bookkeeping (_do_on_publish) but without decoding a reason code and properties that 3.1.1
    # does not have, the PUBLISH handed to `message_sink(topic, payload)` and acknowledged as paho does
    # (_send_puback), without an MQTTMessage. Anything else (QoS 2, MQTT 5, a packet split across reads, one
    # that does not parse) takes paho's own path, which reports errors as it always does.
    message_sink: Callable[[str, bytes], None] | None = None
    fast_packets = 0  # packets handled on the fast path (for tests and status)
    _puback_reason = ReasonCode(PacketTypes.PUBACK)
    _puback_properties = Properties(PacketTypes.PUBACK)

    def _packet_read(self) -> MQTTErrorCode:
        buf, pos = self._rbuf, self._rpos
        if self._in_packet["command"] == 0 and len(buf) - pos >= 4 and self._protocol != mqtt.MQTTv5:
            rc = self._fast_packet(buf, pos)
            if rc is not None:
                self.fast_packets += 1
                with self._msgtime_mutex:
                    self._last_bytes_received = mqtt.time_func()
                return rc
        return super()._packet_read()

    def _fast_packet(self, buf: bytes, pos: int) -> MQTTErrorCode | None:
        header = buf[pos]
        kind = header & 0xF0
        if kind == _PUBACK:
            if header != _PUBACK or buf[pos + 1] != 2:
                return None
            self._rpos = pos + 4
            mid = (buf[pos + 2] << 8) | buf[pos + 3]
            with self._out_message_mutex:
                if mid in self._out_messages:
                    return self._do_on_publish(mid, self._puback_reason, self._puback_properties)
            return MQTTErrorCode.MQTT_ERR_SUCCESS
        sink = self.message_sink
        qos = (header & 0x06) >> 1
        if kind != _PUBLISH or qos == 2 or sink is None or self._manual_ack:
            return None
        length, shift, i, end_of_buf = 0, 0, pos + 1, len(buf)
        while True:  # the remaining length, 1 to 4 bytes
            if i >= end_of_buf or shift > 21:
                return None
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            shift += 7
            i += 1
            if not byte & 0x80:
                break
        end = i + length
        topic_end = i + 2 + ((buf[i] << 8) | buf[i + 1]) if i + 1 < end_of_buf else end + 1
        body = topic_end + (2 if qos else 0)
        if end > end_of_buf or body > end:
            return None
        try:
            topic = buf[i + 2:topic_end].decode("utf-8")
        except UnicodeDecodeError:
            return None
        self._rpos = end
        sink(topic, buf[body:end])
        if qos:
            return self._send_puback((buf[topic_end] << 8) | buf[topic_end + 1])
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    # Packets are joined into blocks in two places, each queued (one wake-up of paho's thread, one send) as a
    # single entry where paho queues every packet on its own and wakes its thread through the socket pair each
    # time: the PUBACKs paho answers QoS 1 messages with during one read, and, inside `coalesced()`, the QoS>0
    # PUBLISH packets of a fan-out. paho's bookkeeping is untouched: each message keeps its mid in
    # _out_messages and is sent again as DUP after a reconnect, as without blocks.
    after_read: Callable[[], None] | None = None  # called in paho's thread at the end of every loop_read
    _acks: _Block | None = None  # open while loop_read runs
    _bulk: _Block | None = None  # open inside coalesced()

    @property
    def reading(self) -> bool:
        """True while loop_read runs (in paho's thread): callbacks may hold events back."""
        return self._acks is not None

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's read step, repeated until every whole packet of the buffer is handled."""
        self._acks = _Block(_PUBACK, 0, self._sock)
        try:
            for _ in range(MAX_READS_PER_WAKE):
                rc = super().loop_read(max_packets)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._sock is None or self._rpos >= len(self._rbuf):
                    return rc
            return rc
        finally:
            block, self._acks = self._acks, None
            self._queue_block(block)
            if self.after_read is not None:
                self.after_read()

    @contextmanager
    def coalesced(self) -> Iterator[None]:
        """This thread's QoS>0 PUBLISH packets are queued in blocks of up to COALESCE_BYTES."""
        self._bulk = _Block(_PUBLISH, 1, self._sock)
        try:
            yield
        finally:
            block, self._bulk = self._bulk, None
            self._queue_block(block)

    def _queue_block(self, block: _Block) -> None:
        data = block.take()
        if data and self._sock is not None and self._sock is block.sock:
            # a block of a connection lost meanwhile is dropped: paho resends its messages, and the broker
            # redelivers what was not acked
            if self._corked is not None and block.kind == _PUBLISH:
                self._corked.append((block.kind | (block.qos << 1), data, block.qos, block.sock))
                return
            super()._packet_queue(block.kind | (block.qos << 1), data, 0, block.qos, None)

    # Corked, the PUBLISH blocks of `coalesced()` are built (each message with its mid in _out_messages, as
    # always) but kept back from the socket until `uncork()`: a round prepared ahead of its start instant goes
    # out at that instant as a handful of writes. A block of a connection lost meanwhile is dropped at uncork;
    # paho sends its messages again after the reconnect, as for any message in flight.
    _corked: list[tuple[int, bytes, int, Any]] | None = None

    def cork(self) -> None:
        """Keep this thread's coalesced PUBLISH blocks back until `uncork` (same thread)."""
        if self._corked is None:
            self._corked = []

    def uncork(self) -> int:
        """Queue what was kept back, in order; returns how many blocks."""
        corked, self._corked = self._corked, None
        queued = 0
        for command, data, qos, sock in corked or ():
            if self._sock is not None and self._sock is sock:
                super()._packet_queue(command, data, 0, qos, None)
                queued += 1
        return queued

    def _packet_queue(self, command: int, packet: bytes | bytearray, mid: int, qos: int,
                      info: mqtt.MQTTMessageInfo | None = None) -> MQTTErrorCode:
        for block in (self._acks, self._bulk):
            if block is not None and block.takes(command, qos):
                if block.add(packet) >= COALESCE_BYTES:
                    self._queue_block(block)
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_queue(command, packet, mid, qos, info)


class PublicApiClient(mqtt.Client):
    """paho's client through its public API only (no private overrides): one packet per read, one queue entry
    and one wake-up of paho's thread per message. Kept to compare against `_NativeSocketClient`
    (bench/mqtt_link_variants.py) and as the fallback should the pinned paho's internals change. Under gevent it
    needs the interpreter's own socket module, which only paho's private hook can give, so the agent does not
    use it; the bench runs it unpatched."""

    after_read: Callable[[], None] | None = None
    message_sink: Callable[[str, bytes], None] | None = None
    fast_packets = 0
    reading = False

    def coalesced(self) -> Any:
        """No blocks: every message is queued on its own."""
        return nullcontext()


class _Block:
    """Packets of one kind (`kind`, the packet type bits) that one thread queues on one connection."""

    __slots__ = ("kind", "qos", "sock", "owner", "buf")

    def __init__(self, kind: int, qos: int, sock: Any) -> None:
        self.kind, self.qos, self.sock = kind, qos, sock
        self.owner = _os_thread_ident()
        self.buf = bytearray()

    def takes(self, command: int, qos: int) -> bool:
        """True for a packet of this block's kind queued by the thread that opened it."""
        return (command & 0xF0 == self.kind and (self.kind != _PUBLISH or qos > 0)
                and self.owner == _os_thread_ident())

    def add(self, packet: bytes | bytearray) -> int:
        """Append a packet; returns the block's size."""
        self.buf += packet
        return len(self.buf)

    def take(self) -> bytes:
        """The block's bytes, emptying it."""
        data, self.buf = bytes(self.buf), bytearray()
        return data


def build_ssl_context(tls: TlsConfig) -> _ssl_module.SSLContext:
    """Server verification against `ca_file` (or the system store), optional client certificate (mutual TLS)
    and optional ALPN protocols (AWS IoT Core on port 443 wants `x-amzn-mqtt-ca`)."""
    ctx = _ssl_module.SSLContext(_ssl_module.PROTOCOL_TLS_CLIENT)
    _set_ctx(ctx, "minimum_version", _ssl_module.TLSVersion.TLSv1_2)
    if tls.ca_file:
        ctx.load_verify_locations(cafile=tls.ca_file)
    else:
        ctx.load_default_certs()
    if tls.cert_file and tls.key_file:
        key_password = tls.key_password.get_secret_value() if tls.key_password is not None else None
        ctx.load_cert_chain(tls.cert_file, tls.key_file, password=key_password)
    if tls.alpn:
        ctx.set_alpn_protocols(list(tls.alpn))
    if tls.insecure:
        ctx.check_hostname = False
        _set_ctx(ctx, "verify_mode", _ssl_module.CERT_NONE)
    return ctx


def _set_ctx(ctx: _ssl_module.SSLContext, name: str, value: Any) -> None:
    """Set an SSLContext property through the C base class: once gevent has patched `ssl`, the pure-Python
    setters of the original class recurse (they look the class up by its module-level name)."""
    import _ssl

    getattr(_ssl._SSLContext, name).__set__(ctx, value)


class MqttLink:
    """One paho client with its network thread; reports connection changes, messages and PUBACKs."""

    def __init__(self, broker: BrokerConfig, inbox: Inbox, subscriptions: list[tuple[str, int]],
                 birth: Birth | None = None, log_packets: bool = False,
                 client_class: type[mqtt.Client] | None = None) -> None:
        self.broker = broker
        self._inbox = inbox
        self._subscriptions = list(subscriptions)
        self._birth = birth
        client = (client_class or _NativeSocketClient)(CallbackAPIVersion.VERSION2, client_id=broker.client_id,
                                     clean_session=broker.clean_session, protocol=mqtt.MQTTv311,
                                     reconnect_on_failure=True)
        if log_packets:  # paho logs every packet at DEBUG: costly at thousands of messages per second
            client.enable_logger(logging.getLogger("dr_common.mqtt.paho"))
        client.max_inflight_messages_set(broker.max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(broker.reconnect_min_s, broker.reconnect_max_s)  # type: ignore[arg-type]
        client.connect_timeout = broker.connect_timeout_s
        if broker.username is not None:
            password = broker.password.get_secret_value() if broker.password is not None else None
            client.username_pw_set(broker.username, password)
        if broker.tls is not None:
            client.tls_set_context(build_ssl_context(broker.tls))
            if broker.tls.insecure:
                client.tls_insecure_set(True)
        if birth is not None:
            client.will_set(birth.topic, birth.offline, qos=birth.qos, retain=birth.retain)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        self._held: list[tuple[Any, ...]] = []
        client.after_read = self._release_held  # type: ignore[attr-defined]
        if not isinstance(client, PublicApiClient):
            client.message_sink = self._on_message_fast  # type: ignore[attr-defined]
        self._client = client
        self._started = False

    # --- hub thread ------------------------------------------------------------------------------
    def start(self) -> None:
        """Connect in the background (paho's thread retries with capped backoff until stopped)."""
        self._client.connect_async(self.broker.host, self.broker.effective_port, keepalive=self.broker.keepalive_s)
        self._client.loop_start()
        self._started = True

    def stop(self) -> None:
        """Disconnect and join paho's thread (call it off the hub: it blocks)."""
        if not self._started:
            return
        self._started = False
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> tuple[int, int]:
        """Queue one message with paho; returns (rc, mid). QoS>0 messages stay with paho until acknowledged,
        across reconnects, even when the connection is down right now (rc MQTT_ERR_NO_CONN)."""
        info = self._client.publish(topic, payload, qos=qos, retain=retain)
        return int(info.rc), info.mid

    def coalesced(self) -> Any:
        """A context in which this thread's QoS>0 publishes are written to the socket in large blocks."""
        return self._client.coalesced()

    def cork(self) -> bool:
        """Keep the blocks of `coalesced()` back from the socket until `uncork()`; False when this client cannot
        (paho's public API only)."""
        cork = getattr(self._client, "cork", None)
        if cork is None:
            return False
        cork()
        return True

    def uncork(self) -> int:
        """Write what `cork` kept back; the number of blocks."""
        uncork = getattr(self._client, "uncork", None)
        return uncork() if uncork is not None else 0

    def is_connected(self) -> bool:
        """paho's view of the connection."""
        return self._client.is_connected()

    # --- paho's thread ---------------------------------------------------------------------------
    def _emit(self, event: tuple[Any, ...]) -> None:
        """Hand an event to the hub; during a read, collected and handed over in one batch at its end."""
        if self._client.reading:
            self._held.append(event)
        else:
            self._inbox.put(event)

    def _release_held(self) -> None:
        if self._held:
            events, self._held = self._held, []
            self._inbox.put((EV_BATCH, events))

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            self._emit((EV_CONNECT_FAILED, str(reason)))
            return
        if self._subscriptions:
            client.subscribe(self._subscriptions)
        if self._birth is not None:
            client.publish(self._birth.topic, self._birth.online, qos=self._birth.qos, retain=self._birth.retain)
        self._emit((EV_CONNECTED, bool(flags.session_present)))

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._emit((EV_CONNECT_FAILED, "cannot reach the broker"))

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._emit((EV_DISCONNECTED, str(reason)))

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        self._emit((EV_MESSAGE, message.topic, message.payload))

    def _on_message_fast(self, topic: str, payload: bytes) -> None:
        self._emit((EV_MESSAGE, topic, payload))

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        self._emit((EV_PUBACK, mid))

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        refused = [f for (f, _), rc in zip(self._subscriptions, reasons, strict=False) if rc.is_failure]
        if refused:  # e.g. a broker policy (AWS IoT) that does not allow the filter
            self._emit((EV_SUBSCRIBE_FAILED, refused))


def status_payload(ven_id: str, online: bool) -> bytes:
    """The seeds' `ven/status/<venId>` payload (the receiver stamps the time)."""
    return json.dumps({"venId": ven_id, "online": online}, separators=(",", ":")).encode()


NO_CONN = int(MQTTErrorCode.MQTT_ERR_NO_CONN)
SUCCESS = int(MQTTErrorCode.MQTT_ERR_SUCCESS)
