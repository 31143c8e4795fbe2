"""The bridge's configuration: validated once into typed pydantic models (`dr_common.config`).

Two modes share one agent: `vtn` (the aggregator side: batched commands out to every VEN, acks, telemetry and
status in from all of them) and `ven` (a building: one venId, commands in, acks and telemetry out, an
online/offline last will). Every topic map is configurable with `{venId}` templates; the defaults are the
seeds' contract from `dr_common.topics`. Keys are snake_case as shipped; camelCase is accepted too.

Secrets (`broker.password`, `broker.tls.key_password`) are `SecretStr`: never rendered in errors, logs or
status. TLS files are checked when the configuration is parsed, so a bad reconfiguration is refused before the
running link is touched.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ConfigDict, Field, SecretStr, field_validator, model_validator

from dr_common import topics
from dr_common.config import ConfigError, ConfigModel, is_loopback_host, load_model
from dr_common.schema import check_id
from dr_common.mqtt.topicmap import TemplateError, TopicTemplate

MODE_VTN = "vtn"
MODE_VEN = "ven"
MODES = (MODE_VTN, MODE_VEN)

KIND_COMMAND = "command"
KIND_ACK = "ack"
KIND_TELEMETRY = "telemetry"
KIND_STATUS = "status"
KIND_JSON = "json"
KINDS = (KIND_COMMAND, KIND_ACK, KIND_TELEMETRY, KIND_STATUS, KIND_JSON)

# Outbox classes: when the store is full, a message may push out older messages of a lower class only.
PRIORITY_TELEMETRY = "telemetry"  # shed first, expires after store.telemetry_ttl_s
PRIORITY_NORMAL = "normal"        # event commands and anything not classified otherwise
PRIORITY_HIGH = "high"            # restores and acks: never dropped to make room
PRIORITIES = (PRIORITY_TELEMETRY, PRIORITY_NORMAL, PRIORITY_HIGH)

_STRICT = ConfigDict(**ConfigModel.model_config, strict=True)

__all__ = ["ConfigError", "parse_config", "BridgeConfig", "BrokerConfig", "TlsConfig", "OutboundRoute",
           "InboundRoute", "default_routes"]


def _file_problem(path: str | None) -> str | None:
    """Why a configured file cannot be used now (None when it can, or when none is configured)."""
    if path is None:
        return None
    if not path.strip():
        return "must not be empty"
    if not os.path.isfile(path):
        return f"no such file {path}"
    if not os.access(path, os.R_OK):
        return f"file {path} is not readable by the agent"
    return None


class TlsConfig(ConfigModel):
    """TLS to the broker: server verification, an optional client certificate (mutual TLS), ALPN."""

    model_config = _STRICT
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    key_password: SecretStr | None = None
    alpn: list[str] = []
    insecure: bool = False

    @field_validator("alpn", mode="before")
    @classmethod
    def _alpn_list(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        return self


class BrokerConfig(ConfigModel):
    """Where and how the bridge connects."""

    model_config = _STRICT
    host: str = Field("127.0.0.1", min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    client_id: str = Field("", max_length=65535)
    keepalive_s: int = Field(30, ge=5, le=65535)
    clean_session: bool = False
    username: str | None = Field(None, min_length=1)
    password: SecretStr | None = None
    tls: TlsConfig | None = None
    reconnect_min_s: float = Field(0.5, ge=0.05, le=3600)
    reconnect_max_s: float = Field(30.0, ge=0.05, le=3600)
    connect_timeout_s: float = Field(10.0, ge=0.1, le=600)
    max_inflight: int = Field(0, ge=0, le=65535)
    refused_topic_chars: str = Field("", max_length=16, pattern=r"^[^#+/\x00]*$")

    @field_validator("tls", mode="before")
    @classmethod
    def _tls_flag(cls, value: object) -> object:
        if value is False:
            return None
        return {} if value is True else value

    @model_validator(mode="after")
    def _check(self) -> BrokerConfig:
        if self.password is not None and self.username is None:
            raise ValueError("broker.password is given without broker.username")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be >= reconnect_min_s")
        return self

    @property
    def effective_port(self) -> int:
        """The port, or the MQTT default for the transport (8883 with TLS, 1883 without)."""
        return self.port if self.port is not None else (8883 if self.tls is not None else 1883)


class _OutboundModel(ConfigModel):
    model_config = _STRICT
    bus: str
    mqtt: str | list[str]
    items_key: str | None = Field(None, min_length=1)
    retain: bool = False
    priority: Literal["telemetry", "normal", "high"] | None = None


class _InboundModel(ConfigModel):
    model_config = _STRICT
    mqtt: str
    bus: str
    kind: Literal["command", "ack", "telemetry", "status", "json"] = "json"
    batch: bool = False


class _BatchModel(ConfigModel):
    model_config = _STRICT
    max_items: int = Field(500, ge=1, le=100_000)
    max_delay_ms: float = Field(50, ge=0, le=60_000)


class _StoreModel(ConfigModel):
    model_config = _STRICT
    path: str | None = Field(None, min_length=1)
    max_messages: int = Field(100_000, ge=1, le=100_000_000)
    telemetry_ttl_s: float = Field(600, ge=0, le=7 * 86400)


class _DedupModel(ConfigModel):
    model_config = _STRICT
    window_s: float = Field(600, ge=0, le=7 * 86400)
    max_entries: int = Field(200_000, ge=0, le=10_000_000)


class _BridgeModel(ConfigModel):
    model_config = _STRICT
    mode: Literal["vtn", "ven"] = "vtn"
    ven_id: str | None = None
    broker: BrokerConfig = BrokerConfig()
    qos: int = Field(1, ge=0, le=2)
    outbound: list[_OutboundModel] | None = None
    inbound: list[_InboundModel] | None = None
    batch: _BatchModel = _BatchModel()
    store: _StoreModel = _StoreModel()
    dedup: _DedupModel = _DedupModel()
    max_payload_bytes: int = Field(65_536, ge=64, le=256 * 1024 * 1024)
    status_topic: str | None = None
    status_retain: bool = True
    publish_chunk: int = Field(500, ge=1, le=100_000)
    log_mqtt_packets: bool = False
    share_group: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_:-]{0,63}$")


@dataclass(frozen=True)
class OutboundRoute:
    """Bus topic(s) -> MQTT topic(s). With `items_key`, one bus message carries many payloads, each with a venId.
    `priority` is the outbox class of its messages (commands with op restore are always high)."""

    bus: TopicTemplate
    mqtt: tuple[TopicTemplate, ...]
    items_key: str | None = None
    retain: bool = False
    priority: str = PRIORITY_NORMAL


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
    """The validated configuration the bridge runs on (`warnings` are said in the log and in health)."""

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
    telemetry_ttl_s: float = 600.0
    dedup_window_s: float = 600.0
    dedup_max_entries: int = 200_000
    max_payload_bytes: int = 65_536
    status_topic: TopicTemplate | None = None
    status_retain: bool = True
    publish_chunk: int = 500
    log_mqtt_packets: bool = False
    share_group: str | None = None
    warnings: tuple[str, ...] = ()


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
            {"bus": topics.BUS_ACK, "mqtt": [topics.MQTT_ACK], "priority": PRIORITY_HIGH},
            {"bus": topics.BUS_TELEMETRY, "mqtt": [topics.MQTT_TELEMETRY, topics.MQTT_METER],
             "priority": PRIORITY_TELEMETRY},
        ]
        inbound = [{"mqtt": topics.MQTT_CMD, "kind": KIND_COMMAND, "bus": topics.BUS_CMD, "batch": False}]
    return outbound, inbound


def parse_config(raw: Mapping[str, Any] | None, check_files: bool = True) -> BridgeConfig:
    """Validate a config-store / file mapping into a BridgeConfig; raises ConfigError naming the key (never a
    secret's value). With `check_files`, TLS files must exist and be readable now."""
    model = load_model(_BridgeModel, raw)
    mode, ven_id = model.mode, model.ven_id
    if mode == MODE_VEN:
        try:
            check_id(ven_id, "ven_id")
        except ValueError:
            raise ConfigError("ven_id", "mode 'ven' needs the venId this bridge serves (1-64 letters, digits, "
                                        "_ . : -, starting with a letter or digit)") from None
    elif ven_id is not None:
        raise ConfigError("ven_id", "only used in mode 'ven'")
    if mode == MODE_VEN and model.share_group is not None:
        raise ConfigError("share_group", "only used in mode 'vtn' (several bridge instances sharing the fleet)")

    broker = model.broker
    updates: dict[str, Any] = {"port": broker.effective_port}
    if not broker.client_id:
        updates["client_id"] = f"dr-ven-{ven_id}" if mode == MODE_VEN else "dr-vtn-bridge"
    broker = broker.model_copy(update=updates)
    if check_files and broker.tls is not None:
        for name in ("ca_file", "cert_file", "key_file"):
            problem = _file_problem(getattr(broker.tls, name))
            if problem:
                raise ConfigError(f"broker.tls.{name}", problem)

    refused = broker.refused_topic_chars
    if mode == MODE_VEN and refused and any(c in (ven_id or "") for c in refused):
        raise ConfigError("ven_id", f"has a character of broker.refused_topic_chars {refused!r}: "
                                    "the broker refuses it in topics")
    default_out, default_in = default_routes(mode)
    bind = ven_id if mode == MODE_VEN else None
    out_models = model.outbound if model.outbound is not None else [
        load_model(_OutboundModel, r) for r in default_out]
    in_models = model.inbound if model.inbound is not None else [load_model(_InboundModel, r) for r in default_in]
    outbound = tuple(_outbound(f"outbound.{i}", r, bind) for i, r in enumerate(out_models))
    inbound = tuple(_inbound(f"inbound.{i}", r, bind) for i, r in enumerate(in_models))
    if not outbound and not inbound:
        raise ConfigError("outbound", "at least one route (outbound or inbound) is needed")

    status_raw = model.status_topic if "status_topic" in model.model_fields_set else (
        topics.MQTT_STATUS if mode == MODE_VEN else None)
    status_topic = None
    if status_raw is not None:
        status_topic = _template("status_topic", status_raw).bind(bind)
        if status_topic.has_ven_id:
            raise ConfigError("status_topic", "a {venId} placeholder needs mode 'ven' (the bridge's own venId)")
    _check_refused_chars(refused, outbound, inbound, status_topic)

    return BridgeConfig(
        mode=mode,
        ven_id=ven_id,
        broker=broker,
        qos=model.qos,
        outbound=outbound,
        inbound=inbound,
        batch_max_items=model.batch.max_items,
        batch_max_delay_s=model.batch.max_delay_ms / 1000.0,
        store_path=model.store.path or f"mqtt-bridge-{broker.client_id}.sqlite",
        store_max_messages=model.store.max_messages,
        telemetry_ttl_s=model.store.telemetry_ttl_s,
        dedup_window_s=model.dedup.window_s,
        dedup_max_entries=model.dedup.max_entries,
        max_payload_bytes=model.max_payload_bytes,
        status_topic=status_topic,
        status_retain=model.status_retain,
        publish_chunk=model.publish_chunk,
        log_mqtt_packets=model.log_mqtt_packets,
        share_group=model.share_group,
        warnings=security_warnings(broker),
    )


def _check_refused_chars(refused: str, outbound: tuple[OutboundRoute, ...], inbound: tuple[InboundRoute, ...],
                         status_topic: TopicTemplate | None) -> None:
    """No configured topic may hold a character the broker refuses (`broker.refused_topic_chars`)."""
    if not refused:
        return
    named = [(f"outbound.{i}.mqtt", t) for i, r in enumerate(outbound) for t in r.mqtt]
    named += [(f"inbound.{i}.mqtt", r.mqtt) for i, r in enumerate(inbound)]
    named += [("status_topic", status_topic)] if status_topic is not None else []
    for key, template in named:
        if any(c in template.text for c in refused):
            raise ConfigError(key, f"has a character of broker.refused_topic_chars {refused!r}")


def security_warnings(broker: BrokerConfig) -> tuple[str, ...]:
    """What in a broker configuration weakens the link's security (said loudly, not refused)."""
    out = []
    if broker.tls is not None and broker.tls.insecure:
        out.append("broker.tls.insecure is true: the broker's certificate and host name are NOT verified "
                   "(anyone on the path can impersonate the broker)")
    if broker.password is not None and broker.tls is None and not is_loopback_host(broker.host):
        out.append(f"broker.password is sent in clear over plain TCP to {broker.host}: configure broker.tls")
    return tuple(out)


def _outbound(key: str, r: _OutboundModel, bind: str | None) -> OutboundRoute:
    bus = _template(f"{key}.bus", r.bus).bind(bind)
    mqtt_list = [r.mqtt] if isinstance(r.mqtt, str) else list(r.mqtt)
    if not mqtt_list:
        raise ConfigError(f"{key}.mqtt", "at least one MQTT topic template is needed")
    mqtt = tuple(_template(f"{key}.mqtt", m).bind(bind) for m in mqtt_list)
    if r.items_key is not None and bus.has_ven_id:
        raise ConfigError(f"{key}.bus", "a batch route (items_key) takes one bus topic without {venId}")
    if r.items_key is None and not bus.has_ven_id and any(m.has_ven_id for m in mqtt):
        raise ConfigError(f"{key}.mqtt", "{venId} in the MQTT topic needs it in the bus topic or an items_key")
    priority = r.priority or _default_priority(bus.text)
    return OutboundRoute(bus=bus, mqtt=mqtt, items_key=r.items_key, retain=r.retain, priority=priority)


def _default_priority(bus_text: str) -> str:
    if bus_text.startswith(topics.BUS_TELEMETRY_PREFIX):
        return PRIORITY_TELEMETRY
    if bus_text.startswith(topics.BUS_ACK_PREFIX):
        return PRIORITY_HIGH
    return PRIORITY_NORMAL


def _inbound(key: str, r: _InboundModel, bind: str | None) -> InboundRoute:
    mqtt = _template(f"{key}.mqtt", r.mqtt).bind(bind)
    bus = _template(f"{key}.bus", r.bus).bind(bind)
    if r.batch and bus.has_ven_id:
        raise ConfigError(f"{key}.bus", "a batched route publishes on one bus topic without {venId}")
    if bus.has_ven_id and not mqtt.has_ven_id:
        raise ConfigError(f"{key}.bus", "{venId} in the bus topic needs it in the MQTT topic")
    return InboundRoute(mqtt=mqtt, bus=bus, kind=r.kind, batch=r.batch)


def _template(key: str, value: object) -> TopicTemplate:
    try:
        return TopicTemplate(value)  # type: ignore[arg-type]
    except TemplateError as exc:
        raise ConfigError(key, str(exc)) from None
