"""The OpenADR 3.1 MQTT notifier of dr.vtn: topic names, privacy routing and the publisher.

Topic names (under `topicPrefix`, default `OpenADR/3.1.0`; `{op}` is `create`, `update` or `delete`, the
spec's `ALL` is `.../+`):

  programs/{op}                      every program              business logic only
  programs/{programID}/{op}          one program (no create)    business logic only
  events/{op}                        every event                business logic only
  programs/{programID}/events/{op}   the events of a program    business logic only
  reports/{op}, subscriptions/{op}, vens/{op}, resources/{op}   business logic only
  vens/{venID}/{op}                  the VEN object (no create) that VEN
  vens/{venID}/programs/{op}         programs the VEN may read  that VEN
  vens/{venID}/events/{op}           events the VEN may read    that VEN
  vens/{venID}/resources/{op}        the VEN's resources        that VEN

A VEN may read a program or event without targets, or one with a target that is its venName or one of the
targets the business logic gave its VEN object (the API's rule). The broker's ACL keeps each VEN client to
`vens/{venID}/#`; the other topics are for business-logic clients. A subscription's callback bearer tokens
are never published.

`MqttNotifier` publishes each notification `{objectType, operation, object, targets}` (JSON, QoS 1, never
retained) from a thread of its own through paho's network thread (`loop_start`): `submit` only queues, so the
caller (the dispatch path) never waits on the broker. At most `maxPending` submissions wait; more are dropped
and counted. paho keeps at most 100,000 messages the broker has not acknowledged (across a broker outage too);
more are refused and counted as failed. Counts for `health`: queued, published (acknowledged by the broker),
failed, dropped.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from dr_common.rejects import RateLimitedLog
from dr_vtn_dispatcher.config import MqttNotifierConfig
from dr_vtn_dispatcher.errors import ApiError, invalid, not_found
from dr_vtn_dispatcher.oadr_objects import PROGRAM, VEN, ObjectBook

try:  # inside a VOLTTRON agent gevent has patched `socket`; paho's thread is an OS thread of its own
    from gevent import monkey as _monkey
    _create_connection = _monkey.get_original("socket", "create_connection")
except ImportError:  # pragma: no cover - gevent always comes with the platform
    _create_connection = socket.create_connection

_log = logging.getLogger(__name__)

OPERATIONS = ("CREATE", "UPDATE", "DELETE")
FORBIDDEN = "forbidden"
BROAD = ("programs", "events", "reports", "subscriptions", "vens", "resources")
VEN_SCOPED = ("events", "programs", "resources")
PAHO_MAX_QUEUED = 100_000
_STOP = object()


@dataclass(frozen=True)
class VenView:
    """A VEN object as the routing sees it: its id and the names it answers to (venName and its targets)."""
    ven_id: str
    names: frozenset[str]

    @classmethod
    def of(cls, ven_id: str, body: Mapping[str, Any]) -> VenView:
        """From a VEN object's body."""
        names = {str(t) for t in body.get("targets") or []}
        if body.get("venName"):
            names.add(str(body["venName"]))
        return cls(ven_id, frozenset(names))

    def may_read(self, obj: Mapping[str, Any]) -> bool:
        """True when this VEN may read the (program or event) object."""
        targets = obj.get("targets") or []
        return not targets or bool(self.names.intersection(str(t) for t in targets))


def _topic(prefix: str, *levels: str) -> str:
    return "/".join((prefix, *levels))


def operation_topics(prefix: str, *levels: str, create: bool = True) -> dict[str, str]:
    """The spec's `notifierOperationsTopics` for a collection (`create`) or one object (no CREATE)."""
    out = {op: _topic(prefix, *levels, op.lower()) for op in OPERATIONS if create or op != "CREATE"}
    out["ALL"] = _topic(prefix, *levels, "+")
    return out


def _collection_and_object(prefix: str, plural: str, operation: str, obj: Mapping[str, Any]) -> list[str]:
    """The collection's topic and, but for a creation, the object's own."""
    out = [_topic(prefix, plural, operation.lower())]
    if operation != "CREATE" and obj.get("id"):
        out.append(_topic(prefix, plural, str(obj["id"]), operation.lower()))
    return out


def route(prefix: str, kind: str, operation: str, obj: Mapping[str, Any], vens: Iterable[VenView]) -> list[str]:
    """The topics a notification of `operation` on `obj` (object type `kind`) goes to."""
    op = operation.lower()
    if kind == "PROGRAM":
        return _collection_and_object(prefix, "programs", operation, obj) + \
            [_topic(prefix, "vens", v.ven_id, "programs", op) for v in vens if v.may_read(obj)]
    if kind == "EVENT":
        out = [_topic(prefix, "events", op)]
        if obj.get("programID"):
            out.append(_topic(prefix, "programs", str(obj["programID"]), "events", op))
        out += [_topic(prefix, "vens", v.ven_id, "events", op) for v in vens if v.may_read(obj)]
        return out
    if kind == "VEN":
        return _collection_and_object(prefix, "vens", operation, obj)
    if kind == "RESOURCE":
        out = [_topic(prefix, "resources", op)]
        if obj.get("venID"):
            out.append(_topic(prefix, "vens", str(obj["venID"]), "resources", op))
        return out
    if kind in ("REPORT", "SUBSCRIPTION"):
        return [_topic(prefix, kind.lower() + "s", op)]
    return []


def notification(kind: str, operation: str, obj: Mapping[str, Any]) -> dict[str, Any]:
    """The spec's `notification`; a subscription's callback bearer tokens are left out."""
    if kind == "SUBSCRIPTION":
        obj = {**obj, "objectOperations": [{**op, "bearerToken": None} if op.get("bearerToken") else op
                                           for op in obj.get("objectOperations") or []]}
    return {"objectType": kind, "operation": operation, "object": dict(obj), "targets": obj.get("targets")}


def topics_for(prefix: str, path: str, is_ven: bool, owns_ven: Callable[[str], bool],
               ven_exists: Callable[[str], bool], program_exists: Callable[[str], bool]) -> dict[str, Any]:
    """The answer of `GET notifiers/mqtt/topics/{path}` (`{"topics": {...}}`) for a client. A VEN client asks
    only for its own VEN objects (another's is not found) and not for the broad topics (forbidden; not found for
    the programs topics, where the spec has no 403)."""
    if not isinstance(path, str) or len(path) > 300:
        raise invalid("<path>", "must be a topics path")
    levels = path.strip("/").split("/")
    if is_ven and levels[0] == "programs":   # the spec lists no 403 here: answered like an object not seen
        raise not_found("<path>", "the programs topics are for business logic clients (a VEN's are "
                                  "vens/{venID}/programs)")
    if len(levels) == 1 and levels[0] in BROAD:
        if is_ven:
            raise ApiError(FORBIDDEN, "<path>", f"the {levels[0]} topics are for business logic clients")
        return {"topics": operation_topics(prefix, levels[0])}
    if levels[0] == "programs" and len(levels) in (2, 3) and levels[1] and (len(levels) == 2 or levels[2] == "events"):
        if not program_exists(levels[1]):
            raise not_found("programID", f"no program {levels[1]!r}")
        return {"topics": operation_topics(prefix, *levels, create=len(levels) == 3)}
    if levels[0] == "vens" and len(levels) in (2, 3) and levels[1] and (len(levels) == 2 or levels[2] in VEN_SCOPED):
        ven_id = levels[1]
        if not ven_exists(ven_id) or (is_ven and not owns_ven(ven_id)):
            raise not_found("venID", f"no VEN {ven_id!r}")
        return {"topics": operation_topics(prefix, *levels, create=len(levels) == 3)}
    raise not_found("<path>", f"no MQTT topics for {path[:100]!r}")


def binding(config: MqttNotifierConfig) -> dict[str, Any]:
    """The spec's `mqttNotifierBindingObject` for `GET notifiers`."""
    auth: dict[str, Any] = {"method": config.authentication.method}
    if config.authentication.username is not None:
        auth["username"] = config.authentication.username
    return {"URIS": config.announced_uris, "serialization": "JSON", "authentication": auth}


class _Client(mqtt.Client):
    """paho's client; a plain TCP connection uses the interpreter's own socket module (not gevent's)."""

    def _create_socket_connection(self) -> socket.socket:
        if self._get_proxy() or self._ssl:
            return super()._create_socket_connection()
        return _create_connection((self._host, self._port), timeout=self._connect_timeout)


def _ssl_context(config: MqttNotifierConfig) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=config.ca_file)
    if config.cert_file and config.key_file:
        context.load_cert_chain(config.cert_file, config.key_file)
    return context


class MqttNotifier:
    """Publishes notifications to the broker of `openadr3.mqtt` from a thread of its own."""

    def __init__(self, config: MqttNotifierConfig) -> None:
        self.config = config
        self.prefix = config.topic_prefix
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=config.max_pending)
        self._lock = threading.Lock()
        self._client: mqtt.Client | None = None
        self._thread: threading.Thread | None = None
        self._connected = False
        self._left_at_stop = 0
        self._refusals = RateLimitedLog(_log)
        self.counts = {"mqttQueued": 0, "mqttPublished": 0, "mqttFailed": 0, "mqttDropped": 0}

    # --------------------------------------------------------------------------- lifecycle ------
    def start(self) -> None:
        """Connect in the background (paho retries until stopped) and start the publishing thread."""
        if self._client is not None:
            return
        client = _Client(CallbackAPIVersion.VERSION2, client_id=self.config.client_id, protocol=mqtt.MQTTv311,
                         reconnect_on_failure=True)
        client.max_inflight_messages_set(1000)
        client.max_queued_messages_set(PAHO_MAX_QUEUED)
        client.reconnect_delay_set(1, 30)
        if self.config.username is not None:
            password = self.config.password.get_secret_value() if self.config.password is not None else None
            client.username_pw_set(self.config.username, password)
        if self.config.tls:
            client.tls_set_context(_ssl_context(self.config))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_publish = self._on_publish
        client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive_s)
        client.loop_start()
        self._client = client
        self._thread = threading.Thread(target=self._work, name="oadr-mqtt", daemon=True)
        self._thread.start()
        _log.info("dr.vtn: OpenADR MQTT notifier publishing to %s:%d under %s", self.config.host, self.config.port,
                  self.prefix)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop publishing and disconnect (what still waits is dropped and counted)."""
        client, thread = self._client, self._thread
        if client is None:
            return
        self._client = self._thread = None
        dropped = 0
        while True:
            try:
                dropped += len(self._queue.get_nowait()[0])
            except queue.Empty:
                break
        with self._lock:
            self.counts["mqttDropped"] += dropped
            self._left_at_stop += dropped
        try:
            self._queue.put_nowait(_STOP)
        except queue.Full:  # a submit raced the drain: the thread sees the client gone after its job
            pass
        if thread is not None:
            thread.join(timeout)
        client.disconnect()
        client.loop_stop()

    # --------------------------------------------------------------------------- publishing -----
    def submit(self, topics: list[str], note: Mapping[str, Any]) -> bool:
        """Queue one notification for these topics (serialized once); False (counted) when full or stopped."""
        if not topics:
            return True
        payload = json.dumps(note, separators=(",", ":"), allow_nan=False).encode()
        try:
            if self._client is None:
                raise queue.Full
            self._queue.put_nowait((topics, payload))
        except queue.Full:
            with self._lock:
                self.counts["mqttDropped"] += len(topics)
            return False
        with self._lock:
            self.counts["mqttQueued"] += len(topics)
        return True

    def _work(self) -> None:
        while True:
            try:
                job = self._queue.get(timeout=0.5)
            except queue.Empty:
                if self._client is None:
                    return
                continue
            client = self._client
            if job is _STOP or client is None:
                return
            topics, payload = job
            for topic in topics:
                self._publish(client, topic, payload)

    def _publish(self, client: mqtt.Client, topic: str, payload: bytes) -> None:
        try:
            rc: Any = client.publish(topic, payload, qos=1, retain=False).rc
        except (ValueError, OSError) as exc:
            rc = type(exc).__name__
        # NO_CONN: paho keeps a QoS 1 message and sends it when the connection is back
        if rc in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            return
        with self._lock:
            self.counts["mqttFailed"] += 1
        self._refusals.warning("publish", "dr.vtn: OpenADR MQTT notification on %s refused: %s", topic[:200], rc)

    # --------------------------------------------------------------------------- paho's thread --
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected = not reason.is_failure
        if reason.is_failure:
            self._refusals.warning("connect", "dr.vtn: OpenADR MQTT broker %s:%d refused the connection: %s",
                                   self.config.host, self.config.port, reason)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._refusals.warning("connect", "dr.vtn: OpenADR MQTT broker %s:%d not reachable; retrying",
                               self.config.host, self.config.port)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        self._connected = False

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any, properties: Any) -> None:
        with self._lock:
            self.counts["mqttPublished"] += 1

    # --------------------------------------------------------------------------- status ---------
    def counters(self) -> dict[str, Any]:
        """Counts, what waits (here or for the broker's acknowledgement), and whether the broker is connected."""
        with self._lock:
            c = self.counts
            pending = c["mqttQueued"] - c["mqttPublished"] - c["mqttFailed"] - self._left_at_stop
            return {**c, "mqttPending": max(0, pending), "mqttConnected": self._connected}

    def idle(self) -> bool:
        """True when every notification queued was acknowledged by the broker or refused."""
        return self.counters()["mqttPending"] == 0


class MqttRoom:
    """dr.vtn's MQTT notifications over its OpenADR objects: what `GET notifiers` and the topics endpoints
    answer, and the routing of each object operation (no notifier configured: nothing is published)."""

    def __init__(self, book: ObjectBook, notifier: MqttNotifier | None) -> None:
        self.book = book
        self.notifier = notifier

    def changed(self, kind: str, operation: str, obj: Mapping[str, Any]) -> None:
        """Publish one object operation on its topics; a failure is logged, never raised to the caller."""
        if self.notifier is None:
            return
        try:
            vens = [VenView.of(v.object_id, v.body) for v in self.book.all(VEN)] if kind in ("PROGRAM", "EVENT") else []
            self.notifier.submit(route(self.notifier.prefix, kind, operation, obj, vens),
                                 notification(kind, operation, obj))
        except Exception:  # the object changed whatever happens to its notification
            _log.exception("dr.vtn: OpenADR MQTT notification of %s %s failed", kind, obj.get("id"))

    def notifiers(self) -> dict[str, Any]:
        """The spec's `notifiersResponse`."""
        if self.notifier is None:
            return {"WEBHOOK": True}
        return {"WEBHOOK": True, "MQTT": binding(self.notifier.config)}

    def topics(self, path: str, is_ven: bool, client_id: str) -> dict[str, Any]:
        """The spec's `notifierTopicsResponse` for `notifiers/mqtt/topics/{path}`."""
        if self.notifier is None:
            raise not_found("<path>", "this VTN has no MQTT notifier")

        def ven_exists(ven_id: str) -> bool:
            return self.book.get(VEN, ven_id) is not None

        def owns_ven(ven_id: str) -> bool:
            ven = self.book.get(VEN, ven_id)
            return ven is not None and ven.body.get("clientID") == client_id

        return topics_for(self.notifier.prefix, path, is_ven, owns_ven, ven_exists,
                          lambda pid: self.book.get(PROGRAM, pid) is not None)

    def counters(self) -> dict[str, Any] | None:
        """The notifier's counts for health (None without one)."""
        return self.notifier.counters() if self.notifier is not None else None
