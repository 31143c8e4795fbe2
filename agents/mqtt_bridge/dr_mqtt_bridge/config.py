"""The bridge's configuration: parsed once into a typed, validated model.

Two modes share one agent: `vtn` (the aggregator side: batched commands out to every VEN, acks, telemetry and
status in from all of them) and `ven` (a building: one venId, commands in, acks and telemetry out, an
online/offline last will). Every topic map is configurable with `{venId}` templates; the defaults are the
seeds' contract from `dr_common.topics`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dr_common import topics
from dr_common.payloads import VEN_ID_RE
from dr_mqtt_bridge.topicmap import TemplateError, TopicTemplate

MODE_VTN = "vtn"
MODE_VEN = "ven"
MODES = (MODE_VTN, MODE_VEN)

KIND_COMMAND = "command"
KIND_ACK = "ack"
KIND_TELEMETRY = "telemetry"
KIND_STATUS = "status"
KIND_JSON = "json"
KINDS = (KIND_COMMAND, KIND_ACK, KIND_TELEMETRY, KIND_STATUS, KIND_JSON)


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class TlsConfig:
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: str | None = None
    alpn: tuple[str, ...] = ()
    insecure: bool = False


@dataclass(frozen=True)
class BrokerConfig:
    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = ""
    keepalive_s: int = 30
    clean_session: bool = False
    username: str | None = None
    password: str | None = None
    tls: TlsConfig | None = None
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 30.0
    connect_timeout_s: float = 10.0
    max_inflight: int = 0


@dataclass(frozen=True)
class OutboundRoute:
    """Bus topic(s) -> MQTT topic(s). With `items_key`, one bus message carries many payloads, each with a venId."""

    bus: TopicTemplate
    mqtt: tuple[TopicTemplate, ...]
    items_key: str | None = None
    retain: bool = False


@dataclass(frozen=True)
class InboundRoute:
    """MQTT topic(s) -> bus. Each payload is validated as `kind`; with `batch` they are coalesced into
    `{"items": [...]}` bus messages on one topic, otherwise each goes to the bus topic on its own."""

    mqtt: TopicTemplate
    bus: TopicTemplate
    kind: str
    batch: bool


@dataclass(frozen=True)
class BridgeConfig:
    mode: str = MODE_VTN
    ven_id: str | None = None
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    qos: int = 1
    outbound: tuple[OutboundRoute, ...] = ()
    inbound: tuple[InboundRoute, ...] = ()
    batch_max_items: int = 500
    batch_max_delay_s: float = 0.05
    store_path: str = "mqtt-bridge-outbox.sqlite"
    store_max_messages: int = 100_000
    dedup_window_s: float = 600.0
    dedup_max_entries: int = 200_000
    max_payload_bytes: int = 65_536
    status_topic: TopicTemplate | None = None
    status_retain: bool = True
    publish_chunk: int = 500
    log_mqtt_packets: bool = False


def default_routes(mode: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(outbound, inbound) route definitions of a mode, in config-file form."""
    if mode == MODE_VTN:
        outbound = [{"bus": topics.BUS_CMD_BATCH, "mqtt": [topics.MQTT_CMD], "items_key": "commands"}]
        inbound = [
            {"mqtt": topics.MQTT_ACK, "kind": KIND_ACK, "bus": topics.BUS_ACK_BATCH, "batch": True},
            {"mqtt": topics.MQTT_TELEMETRY, "kind": KIND_TELEMETRY, "bus": topics.BUS_TELEMETRY_BATCH, "batch": True},
            {"mqtt": topics.MQTT_METER, "kind": KIND_TELEMETRY, "bus": topics.BUS_TELEMETRY_BATCH, "batch": True},
            {"mqtt": topics.MQTT_STATUS, "kind": KIND_STATUS, "bus": topics.BUS_STATUS_BATCH, "batch": True},
        ]
    else:
        outbound = [
            {"bus": topics.BUS_ACK, "mqtt": [topics.MQTT_ACK]},
            {"bus": topics.BUS_TELEMETRY, "mqtt": [topics.MQTT_TELEMETRY, topics.MQTT_METER]},
        ]
        inbound = [{"mqtt": topics.MQTT_CMD, "kind": KIND_COMMAND, "bus": topics.BUS_CMD, "batch": False}]
    return outbound, inbound


_TOP_KEYS = {"mode", "ven_id", "broker", "qos", "outbound", "inbound", "batch", "store", "dedup",
             "max_payload_bytes", "status_topic", "status_retain", "publish_chunk", "log_mqtt_packets"}
_BROKER_KEYS = {"host", "port", "client_id", "keepalive_s", "clean_session", "username", "password", "tls",
                "reconnect_min_s", "reconnect_max_s", "connect_timeout_s", "max_inflight"}
_TLS_KEYS = {"ca_file", "cert_file", "key_file", "key_password", "alpn", "insecure"}


def parse_config(raw: Mapping[str, Any] | None) -> BridgeConfig:
    """Validate a config-store / file mapping into a BridgeConfig; raises ConfigError naming the key."""
    raw = dict(raw or {})
    _no_unknown("", raw, _TOP_KEYS)
    mode = _choice("mode", raw.get("mode", MODE_VTN), MODES)
    ven_id = raw.get("ven_id")
    if mode == MODE_VEN:
        if not isinstance(ven_id, str) or not VEN_ID_RE.match(ven_id):
            raise ConfigError(f"ven_id: mode 'ven' needs the venId this bridge serves (1-64 letters, digits, "
                              f"_ . : -); got {ven_id!r}")
    elif ven_id is not None:
        raise ConfigError("ven_id: only used in mode 'ven'")

    default_client = f"dr-ven-{ven_id}" if mode == MODE_VEN else "dr-vtn-bridge"
    broker = _broker(raw.get("broker") or {}, default_client)
    qos = _int("qos", raw.get("qos", 1), 0, 2)

    default_out, default_in = default_routes(mode)
    bind = ven_id if mode == MODE_VEN else None
    outbound = tuple(_outbound(f"outbound[{i}]", r, bind)
                     for i, r in enumerate(_list("outbound", raw.get("outbound", default_out))))
    inbound = tuple(_inbound(f"inbound[{i}]", r, bind)
                    for i, r in enumerate(_list("inbound", raw.get("inbound", default_in))))
    if not outbound and not inbound:
        raise ConfigError("outbound/inbound: at least one route is needed")

    batch = _mapping("batch", raw.get("batch") or {})
    _no_unknown("batch.", batch, {"max_items", "max_delay_ms"})
    store = _mapping("store", raw.get("store") or {})
    _no_unknown("store.", store, {"path", "max_messages"})
    dedup = _mapping("dedup", raw.get("dedup") or {})
    _no_unknown("dedup.", dedup, {"window_s", "max_entries"})

    status_default = topics.MQTT_STATUS if mode == MODE_VEN else None
    status_raw = raw.get("status_topic", status_default)
    status_topic = None
    if status_raw is not None:
        status_topic = _template("status_topic", status_raw).bind(bind)
        if status_topic.has_ven_id:
            raise ConfigError("status_topic: a {venId} placeholder needs mode 'ven' (the bridge's own venId)")

    return BridgeConfig(
        mode=mode,
        ven_id=ven_id,
        broker=broker,
        qos=qos,
        outbound=outbound,
        inbound=inbound,
        batch_max_items=_int("batch.max_items", batch.get("max_items", 500), 1, 100_000),
        batch_max_delay_s=_num("batch.max_delay_ms", batch.get("max_delay_ms", 50), 0, 60_000) / 1000.0,
        store_path=_str("store.path", store.get("path", f"mqtt-bridge-{broker.client_id}.sqlite")),
        store_max_messages=_int("store.max_messages", store.get("max_messages", 100_000), 1, 100_000_000),
        dedup_window_s=_num("dedup.window_s", dedup.get("window_s", 600), 0, 7 * 86400),
        dedup_max_entries=_int("dedup.max_entries", dedup.get("max_entries", 200_000), 0, 10_000_000),
        max_payload_bytes=_int("max_payload_bytes", raw.get("max_payload_bytes", 65_536), 64, 256 * 1024 * 1024),
        status_topic=status_topic,
        status_retain=_bool("status_retain", raw.get("status_retain", True)),
        publish_chunk=_int("publish_chunk", raw.get("publish_chunk", 500), 1, 100_000),
        log_mqtt_packets=_bool("log_mqtt_packets", raw.get("log_mqtt_packets", False)),
    )


def _broker(raw: object, default_client: str) -> BrokerConfig:
    b = _mapping("broker", raw)
    _no_unknown("broker.", b, _BROKER_KEYS)
    tls = None
    if b.get("tls") not in (None, False):
        t = _mapping("broker.tls", {} if b["tls"] is True else b["tls"])
        _no_unknown("broker.tls.", t, _TLS_KEYS)
        cert, key = t.get("cert_file"), t.get("key_file")
        if (cert is None) != (key is None):
            raise ConfigError("broker.tls: cert_file and key_file go together (mutual TLS needs both)")
        alpn = t.get("alpn", [])
        if isinstance(alpn, str):
            alpn = [alpn]
        tls = TlsConfig(
            ca_file=_opt_str("broker.tls.ca_file", t.get("ca_file")),
            cert_file=_opt_str("broker.tls.cert_file", cert),
            key_file=_opt_str("broker.tls.key_file", key),
            key_password=_opt_str("broker.tls.key_password", t.get("key_password")),
            alpn=tuple(_str("broker.tls.alpn", a) for a in _list("broker.tls.alpn", alpn)),
            insecure=_bool("broker.tls.insecure", t.get("insecure", False)),
        )
    default_port = 8883 if tls else 1883
    username = _opt_str("broker.username", b.get("username"))
    password = _opt_str("broker.password", b.get("password"))
    if password is not None and username is None:
        raise ConfigError("broker.password: given without broker.username")
    rmin = _num("broker.reconnect_min_s", b.get("reconnect_min_s", 0.5), 0.05, 3600)
    rmax = _num("broker.reconnect_max_s", b.get("reconnect_max_s", 30), 0.05, 3600)
    if rmax < rmin:
        raise ConfigError("broker.reconnect_max_s: must be >= reconnect_min_s")
    client_id = _str("broker.client_id", b.get("client_id", default_client))
    if len(client_id.encode()) > 65535:
        raise ConfigError("broker.client_id: too long")
    return BrokerConfig(
        host=_str("broker.host", b.get("host", "127.0.0.1")),
        port=_int("broker.port", b.get("port", default_port), 1, 65535),
        client_id=client_id,
        keepalive_s=_int("broker.keepalive_s", b.get("keepalive_s", 30), 5, 65535),
        clean_session=_bool("broker.clean_session", b.get("clean_session", False)),
        username=username,
        password=password,
        tls=tls,
        reconnect_min_s=rmin,
        reconnect_max_s=rmax,
        connect_timeout_s=_num("broker.connect_timeout_s", b.get("connect_timeout_s", 10), 0.1, 600),
        max_inflight=_int("broker.max_inflight", b.get("max_inflight", 0), 0, 65535),
    )


def _outbound(key: str, raw: object, bind: str | None) -> OutboundRoute:
    r = _mapping(key, raw)
    _no_unknown(key + ".", r, {"bus", "mqtt", "items_key", "retain"})
    bus = _template(f"{key}.bus", r.get("bus")).bind(bind)
    mqtt_raw = r.get("mqtt")
    mqtt_list = [mqtt_raw] if isinstance(mqtt_raw, str) else _list(f"{key}.mqtt", mqtt_raw)
    if not mqtt_list:
        raise ConfigError(f"{key}.mqtt: at least one MQTT topic template is needed")
    mqtt = tuple(_template(f"{key}.mqtt", m).bind(bind) for m in mqtt_list)
    items_key = _opt_str(f"{key}.items_key", r.get("items_key"))
    if items_key is not None and bus.has_ven_id:
        raise ConfigError(f"{key}.bus: a batch route (items_key) takes one bus topic without {{venId}}")
    if items_key is None and not bus.has_ven_id and any(m.has_ven_id for m in mqtt):
        raise ConfigError(f"{key}.mqtt: {{venId}} in the MQTT topic needs it in the bus topic or an items_key")
    return OutboundRoute(bus=bus, mqtt=mqtt, items_key=items_key, retain=_bool(f"{key}.retain", r.get("retain", False)))


def _inbound(key: str, raw: object, bind: str | None) -> InboundRoute:
    r = _mapping(key, raw)
    _no_unknown(key + ".", r, {"mqtt", "bus", "kind", "batch"})
    mqtt = _template(f"{key}.mqtt", r.get("mqtt")).bind(bind)
    bus = _template(f"{key}.bus", r.get("bus")).bind(bind)
    kind = _choice(f"{key}.kind", r.get("kind", KIND_JSON), KINDS)
    batch = _bool(f"{key}.batch", r.get("batch", False))
    if batch and bus.has_ven_id:
        raise ConfigError(f"{key}.bus: a batched route publishes on one bus topic without {{venId}}")
    if bus.has_ven_id and not mqtt.has_ven_id:
        raise ConfigError(f"{key}.bus: {{venId}} in the bus topic needs it in the MQTT topic")
    return InboundRoute(mqtt=mqtt, bus=bus, kind=kind, batch=batch)


def _no_unknown(prefix: str, raw: Mapping[str, Any], known: set[str]) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")


def _mapping(key: str, value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key}: expected an object, got {type(value).__name__}")
    return dict(value)


def _list(key: str, value: object) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
    return list(value)


def _str(key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key}: expected a non-empty string, got {value!r}")
    return value.strip()


def _opt_str(key: str, value: object) -> str | None:
    return None if value is None else _str(key, value)


def _bool(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def _num(key: str, value: object, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low:g} and {high:g}, got {value!r}")
    return float(value)


def _int(key: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{key}: expected a whole number, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"{key}: must be between {low} and {high}, got {value!r}")
    return value


def _choice(key: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{key}: must be one of {', '.join(choices)}; got {value!r}")
    return str(value)


def _template(key: str, value: object) -> TopicTemplate:
    try:
        return TopicTemplate(value)  # type: ignore[arg-type]
    except TemplateError as exc:
        raise ConfigError(f"{key}: {exc}") from None
