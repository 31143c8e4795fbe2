"""The dr.vtn configuration, validated once into a typed model (pydantic, on `dr_common.config.ConfigModel`).

Keys (camelCase; snake_case variants accepted):
  databaseUrl          SQLAlchemy URL (e.g. postgresql+psycopg2://postgres@127.0.0.1/volttron_dr); when absent,
                       SQLite at sqlitePath, or `vtn.sqlite` in the agent's data directory.
                       Also read as `database`, `dbUrl` or `url`.
  sqlitePath           path of the SQLite file when no databaseUrl is given (also `sqlite`, `dbPath`).
  allocation           default allocation rule: "equal" or "weighted" (by available capacity).
  simpleLevelsKw       kW requested for SIMPLE levels 0, 1, 2, 3 (a list of four numbers; also `levelsKw`).
  programs             {programId: {"allocation": ..., "simpleLevelsKw": [...]}} overriding the defaults.
  offlineTimeoutS      a VEN not heard from for this long is offline (default 30 s = six telemetry periods).
  dispatchToOffline    also allocate to VENs known to be offline (default false).
  retryInitialS, retryFactor, retryMaxS
                       backoff of command retries until acked or the event ends.
  restoreRetryWindowS  how long restore commands are retried after an event ends.
  randomizeGranularityS  randomized start offsets are multiples of this (VENs sharing an instant share a round).
  flushIntervalS       how often telemetry, acks, last-seen times and command states are written to the store.
  batchSize            most commands per batch handed to the bridge (default 2000): a round of 10,000 goes out as
                       five bus messages, rendered and sent one after another, so the bridge and the broker
                       start on the first while the rest are rendered.
  maxEventDurationS    longest event accepted (default 86400 s = 24 h).
  maxRequestedKw       largest requestedReductionKw accepted (default 10000 kW; SIMPLE levels are bounded too).
  maxStartAheadS       how far in the future an event may start (default 2592000 s = 30 days).
  trustedBridges       bus identities allowed to speak for remote VENs on dr/batch/* and dr/ack/<venId>
                       (default ["dr.mqtt"]).
  commandLink          dr.vtn's own MQTT link, in place of a vtn-mode dr.mqtt (default null: commands go on the
                       bus to dr.mqtt). Holds dr.mqtt's configuration keys in `vtn` mode (broker, tls, qos,
                       outbound, inbound, store, dedup, max_payload_bytes, share_group, ...; see dr.mqtt's
                       README): commands go from dr.vtn to the broker and acks, telemetry and status come back
                       without a bus hop, with the same guarantees (QoS 1, store-and-forward outbox, validation,
                       dedup). A relative store.path is in dr.vtn's data folder. What the link carries is also
                       published on the bus for the historian and the status page: commands on dr/sent/cmd,
                       acks, telemetry and status on dr/batch/*, at most every `echoIntervalS`.
  echoIntervalS        how often what the command link carried is published on the bus (default 0.5 s).
  prepareLeadS         with the command link: how far ahead of its start an event's first round is prepared
                       (claimed, allocated, rendered, encoded, handed to paho as of the start instant) and held
                       back, to be written at the start instant (default 1 s; 0: prepared at the start).
  openadr3.mqtt        the OpenADR MQTT notifier's broker: host, port, username, password, tls, caFile,
                       certFile, keyFile, clientId, topicPrefix (default OpenADR/3.1.0), uris and
                       authentication (what `GET notifiers` tells clients), keepaliveS, maxPending.
  openadr3.callbackPolicy  which webhook callback URLs may be subscribed and called (oadr_callbacks):
                       schemes (default ["http", "https"]), allowedHosts (names or IP addresses),
                       allowedNetworks (CIDRs), allowPublic (default true: any public address), vtnHttpPort
                       (default 8080; null for none). Link-local/metadata addresses (169.254.0.0/16, fe80::/10)
                       and the VTN's own HTTP port on this machine are refused whatever is allowed; loopback and
                       private addresses only when allowed.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AliasChoices, BaseModel, Field, PrivateAttr, SecretStr, field_validator, model_validator

from dr_common import topics
from dr_common.config import ConfigError, ConfigModel, is_loopback_host, is_placeholder_secret, load_model
from dr_common.mqtt.config import MODE_VTN, BridgeConfig
from dr_common.mqtt.config import parse_config as parse_link_config
from dr_common.schema import check_id

ALLOCATION_EQUAL = "equal"
ALLOCATION_WEIGHTED = "weighted"
ALLOCATION_RULES = (ALLOCATION_EQUAL, ALLOCATION_WEIGHTED)

DEFAULT_LEVELS_KW = (0.0, 1.0, 2.0, 3.0)

Levels = Annotated[tuple[float, ...], Field(min_length=4, max_length=4)]


def _check_levels(value: tuple[float, ...] | None) -> tuple[float, ...] | None:
    if value is not None and any(level < 0 for level in value):
        raise ValueError("expected non-negative numbers (kW for SIMPLE levels 0-3)")
    return value


def _check_rule(value: str | None) -> str | None:
    if value is not None and value not in ALLOCATION_RULES:
        raise ValueError(f"must be one of {', '.join(ALLOCATION_RULES)}")
    return value


class ProgramConfig(BaseModel):
    """The allocation rule and SIMPLE levels of one program (resolved: every value set)."""

    model_config = {"frozen": True}

    allocation: str = ALLOCATION_EQUAL
    simple_levels_kw: tuple[float, ...] = DEFAULT_LEVELS_KW


class ProgramOverride(ConfigModel):
    """A program's entry in `programs`: what it overrides of the defaults."""

    allocation: str | None = None
    simple_levels_kw: Levels | None = Field(default=None,
                                            validation_alias=AliasChoices("simpleLevelsKw", "simple_levels_kw",
                                                                          "levelsKw"))

    _rule = field_validator("allocation")(_check_rule)
    _levels = field_validator("simple_levels_kw")(_check_levels)


MQTT_AUTH_METHODS = ("ANONYMOUS", "OAUTH2_BEARER_TOKEN")
MQTT_URI_SCHEMES = ("mqtt", "mqtts", "ws", "wss")
_TOPIC_LEVEL = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class MqttAuthentication(ConfigModel):
    """How OpenADR clients authenticate to the broker, as `GET notifiers` announces it (the spec's
    `mqttNotifierAuthentication*`). CERTIFICATE is refused: it would hand a client key out over the API."""

    method: str = "ANONYMOUS"
    username: str | None = Field(default=None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _known(self) -> MqttAuthentication:
        if self.method not in MQTT_AUTH_METHODS:
            raise ValueError(f"method must be one of {', '.join(MQTT_AUTH_METHODS)} (CERTIFICATE would hand a "
                             "client key out over the API)")
        if self.method == "OAUTH2_BEARER_TOKEN" and not self.username:
            raise ValueError("OAUTH2_BEARER_TOKEN needs a username (a literal, or {clientID})")
        return self


class MqttNotifierConfig(ConfigModel):
    """`openadr3.mqtt`: the broker dr.vtn publishes OpenADR notifications to, and what clients are told."""

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(default=1883, ge=1, le=65535)
    username: str | None = Field(default=None, min_length=1, max_length=128)
    password: SecretStr | None = Field(default=None, max_length=512)
    tls: bool = False
    ca_file: str | None = Field(default=None, max_length=2000)
    cert_file: str | None = Field(default=None, max_length=2000)
    key_file: str | None = Field(default=None, max_length=2000)
    client_id: str = Field(default="dr-vtn-oadr", min_length=1, max_length=64)
    topic_prefix: str = Field(default="OpenADR/3.1.0", min_length=1, max_length=200)
    uris: tuple[str, ...] = Field(default=(), max_length=16)
    authentication: MqttAuthentication = Field(default_factory=MqttAuthentication)
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    max_pending: int = Field(default=10_000, ge=1, le=1_000_000)

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not all(_TOPIC_LEVEL.fullmatch(level) for level in value.split("/")):
            raise ValueError("levels of 1-64 letters, digits or _ . : - separated by / (no wildcards, no empty "
                             "level)")
        return value

    @field_validator("uris")
    @classmethod
    def _uris(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for uri in value:
            scheme, sep, rest = uri.partition("://")
            if not sep or scheme not in MQTT_URI_SCHEMES or not rest or len(uri) > 500 or " " in uri:
                raise ValueError(f"each URI is {'|'.join(MQTT_URI_SCHEMES)}://host[:port]")
        return value

    @model_validator(mode="after")
    def _secrets(self) -> MqttNotifierConfig:
        if self.password is not None and is_placeholder_secret(self.password.get_secret_value()) and \
                not is_loopback_host(self.host):
            raise ValueError("password is a placeholder; set a real one for a broker beyond loopback")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("certFile and keyFile go together")
        return self

    @property
    def announced_uris(self) -> list[str]:
        """The broker URIs clients are given: `uris`, else this broker's address."""
        if self.uris:
            return list(self.uris)
        host = f"[{self.host}]" if ":" in self.host else self.host
        return [f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"]


class CallbackPolicyConfig(ConfigModel):
    """`openadr3.callbackPolicy`: the webhook callback URL rules (see the module docstring)."""

    schemes: tuple[str, ...] = Field(default=("http", "https"), min_length=1, max_length=2)
    allowed_hosts: tuple[Annotated[str, Field(min_length=1, max_length=253)], ...] = Field(default=(),
                                                                                           max_length=256)
    allowed_networks: tuple[str, ...] = Field(default=(), max_length=256)
    allow_public: bool = True
    vtn_http_port: int | None = Field(default=8080, ge=1, le=65535)

    @field_validator("schemes")
    @classmethod
    def _schemes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(s.lower() not in ("http", "https") for s in value):
            raise ValueError("schemes must be among http, https")
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for text in value:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(f"{text!r} is not a network (CIDR such as 10.1.0.0/16)") from None
        return value


class Oadr3VtnConfig(ConfigModel):
    """`openadr3`: dr.vtn's side of the OpenADR 3.1 VTN (the MQTT notifier)."""

    mqtt: MqttNotifierConfig | None = None
    callback_policy: CallbackPolicyConfig = Field(default_factory=CallbackPolicyConfig)


class VtnConfig(ConfigModel):
    """The validated dr.vtn configuration (see the module docstring for every key)."""

    # a URL may carry the database password: kept as a secret, never rendered
    database_url: SecretStr | None = Field(default=None, max_length=2000, validation_alias=AliasChoices(
        "databaseUrl", "database_url", "database", "dbUrl", "url"))
    sqlite_path: str | None = Field(default=None, max_length=2000, validation_alias=AliasChoices(
        "sqlitePath", "sqlite_path", "sqlite", "dbPath"))
    allocation: str = ALLOCATION_EQUAL
    simple_levels_kw: Levels = Field(default=DEFAULT_LEVELS_KW, validation_alias=AliasChoices(
        "simpleLevelsKw", "simple_levels_kw", "levelsKw"))
    programs: dict[str, ProgramOverride] = Field(default_factory=dict)
    offline_timeout_s: float = Field(default=30.0, ge=1.0, le=86400.0)
    dispatch_to_offline: bool = False
    retry_initial_s: float = Field(default=1.0, ge=0.05, le=3600.0)
    retry_factor: float = Field(default=2.0, ge=1.0, le=10.0)
    retry_max_s: float = Field(default=30.0, ge=0.05, le=86400.0)
    restore_retry_window_s: float = Field(default=600.0, ge=0.0, le=7 * 86400.0)
    randomize_granularity_s: float = Field(default=0.1, ge=0.001, le=60.0)
    flush_interval_s: float = Field(default=1.0, ge=0.05, le=60.0)
    batch_size: int = Field(default=2000, ge=1, le=1_000_000)
    max_event_duration_s: float = Field(default=86400.0, ge=1.0, le=7 * 86400.0)
    max_requested_kw: float = Field(default=10_000.0, gt=0.0, le=1e9)
    max_start_ahead_s: float = Field(default=30 * 86400.0, ge=0.0, le=366 * 86400.0)
    trusted_bridges: tuple[str, ...] = Field(default=(topics.MQTT_BRIDGE_IDENTITY,), max_length=16)
    openadr3: Oadr3VtnConfig = Field(default_factory=Oadr3VtnConfig)
    # may hold the broker's password: never rendered; read through `link`
    command_link: dict[str, Any] | None = Field(default=None, repr=False, exclude=True)
    echo_interval_s: float = Field(default=0.5, ge=0.01, le=60.0)
    prepare_lead_s: float = Field(default=1.0, ge=0.0, le=60.0)

    _link: BridgeConfig | None = PrivateAttr(default=None)
    _default: ProgramConfig = PrivateAttr(default_factory=ProgramConfig)
    _resolved: dict[str, ProgramConfig] = PrivateAttr(default_factory=dict)

    _rule = field_validator("allocation")(_check_rule)
    _levels = field_validator("simple_levels_kw")(_check_levels)

    @field_validator("programs")
    @classmethod
    def _program_ids(cls, value: dict[str, ProgramOverride]) -> dict[str, ProgramOverride]:
        for program_id in value:
            check_id(program_id, "programs")
        return value

    @field_validator("trusted_bridges")
    @classmethod
    def _bridge_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for identity in value:
            check_id(identity, "trustedBridges")
        return value

    @model_validator(mode="after")
    def _retry_bounds(self) -> VtnConfig:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError("retryMaxS must be >= retryInitialS")
        return self

    def model_post_init(self, context: Any) -> None:
        """Resolve every program against the defaults once."""
        self._default = ProgramConfig(allocation=self.allocation, simple_levels_kw=tuple(self.simple_levels_kw))
        self._resolved = {
            pid: ProgramConfig(allocation=o.allocation or self.allocation,
                               simple_levels_kw=tuple(o.simple_levels_kw or self.simple_levels_kw))
            for pid, o in self.programs.items()}

    @property
    def link(self) -> BridgeConfig | None:
        """The command link's validated configuration (None: commands go on the bus to dr.mqtt)."""
        return self._link

    @property
    def default_program(self) -> ProgramConfig:
        """The allocation rule and levels of events without a configured program."""
        return self._default

    def program(self, program_id: str | None) -> ProgramConfig:
        """The resolved settings of a program (the defaults for an unknown or absent one)."""
        if program_id is not None and program_id in self._resolved:
            return self._resolved[program_id]
        return self._default

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th send before the next one."""
        delay = self.retry_initial_s * (self.retry_factor ** max(0, attempts - 1))
        return min(delay, self.retry_max_s)


def parse_config(raw: object) -> VtnConfig:
    """Validate a config mapping; raises `dr_common.config.ConfigError` naming the key on anything unusable."""
    try:
        config = load_model(VtnConfig, raw)
    except ConfigError as exc:
        if exc.key == "<config>" and "retryMaxS" in exc.reason:
            raise ConfigError("retryMaxS", "must be >= retryInitialS") from None
        raise
    if config.command_link is not None:
        link = dict(config.command_link)
        if link.setdefault("mode", MODE_VTN) != MODE_VTN:
            raise ConfigError("commandLink.mode", "dr.vtn's link runs in mode 'vtn' only")
        try:
            config._link = parse_link_config(link)
        except ConfigError as exc:
            raise ConfigError(f"commandLink.{exc.key}", exc.reason) from None
    return config


__all__ = ["ALLOCATION_RULES", "ConfigError", "MqttNotifierConfig", "Oadr3VtnConfig", "ProgramConfig", "VtnConfig",
           "parse_config"]
