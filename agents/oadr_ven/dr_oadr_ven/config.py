"""dr.oadr.<venId>'s configuration, validated once into a typed model (`dr_common.config`).

A placeholder client secret (`...-change-me`) is refused unless the VTN is on a loopback address; the webhook
receiver listens on loopback unless configured otherwise. Secrets are `SecretStr`: never rendered.
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import Field, SecretStr, field_validator

from dr_common.config import ConfigError, ConfigModel, check_secret_binding, load_model
from dr_common.schema import check_id

PROTOCOL_31 = "oadr31"
PROTOCOL_20B = "oadr20b"
NOTIFY_MQTT = "mqtt"
NOTIFY_WEBHOOK = "webhook"
NOTIFY_POLL = "poll"
REPORT_TYPES = ("USAGE", "BASELINE", "DELTA_USAGE", "OPERATING_STATE", "DEMAND")

__all__ = ["ConfigError", "OadrVenConfig", "VtnConfig", "WebhookConfig", "Limits", "ReportDefaults",
           "parse_config"]


class WebhookConfig(ConfigModel):
    """The webhook receiver this agent serves for the VTN's notifications."""

    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535)          # 0: a free port
    public_url: str | None = None                  # the callback URL the VTN is given (default from host/port)
    path: str = "/oadr/notify"


class VtnConfig(ConfigModel):
    protocol: Literal["oadr31", "oadr20b"] = PROTOCOL_31
    base_url: str = ""                             # OpenADR 3.1: the VTN's base URL (.../openadr3/3.1.0)
    client_id: str = Field("", max_length=128)
    client_secret: SecretStr = SecretStr("")
    ven_name: str | None = None                    # default: the venId
    poll_s: float = Field(10.0, ge=0.2, le=3600.0)
    notify: Literal["mqtt", "webhook", "poll"] = NOTIFY_POLL
    webhook: WebhookConfig = WebhookConfig()
    timeout_s: float = Field(10.0, gt=0.0, le=120.0)
    backoff_max_s: float = Field(60.0, ge=1.0, le=3600.0)
    token_refresh_margin_s: float = Field(60.0, ge=0.0, le=3600.0)

    @field_validator("base_url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value:
            return value
        parsed = urlparse(value)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise ValueError("must be an http or https URL with a host")
        return value.rstrip("/")

    @property
    def host(self) -> str:
        return urlparse(self.base_url).hostname or ""


class Limits(ConfigModel):
    """What this VEN accepts from a VTN; an event beyond them gets no command (dr.ven bounds them too)."""

    max_kw: float = Field(100.0, gt=0.0, le=1_000_000.0)
    max_duration_s: float = Field(14_400.0, gt=0.0, le=366 * 86400.0)
    max_start_ahead_s: float = Field(86_400.0, ge=0.0, le=366 * 86400.0)
    max_events: int = Field(100, ge=1, le=10_000)
    max_intervals: int = Field(96, ge=1, le=10_000)


class ReportDefaults(ConfigModel):
    """Reports sent for an event that asks for none (`reportDescriptors` absent)."""

    types: list[str] = list(REPORT_TYPES[:4])
    interval_s: float = Field(60.0, ge=1.0, le=86_400.0)
    min_interval_s: float = Field(5.0, ge=1.0, le=3600.0)
    resource_name: str = "AGGREGATED_REPORT"
    max_pending: int = Field(1000, ge=1, le=100_000)


class OadrVenConfig(ConfigModel):
    ven_id: str
    vtn: VtnConfig
    programs: list[str] = []                       # names or ids enrolled; empty: every program the VTN shows
    simple_levels_kw: list[float] = [0.0, 1.0, 2.0, 3.0]
    limits: Limits = Limits()
    reports: ReportDefaults = ReportDefaults()
    resource_name: str = "site"
    state_path: str | None = None
    oadr20b: dict[str, Any] | None = None          # the OpenADR 2.0b link's settings (dr_oadr_ven.oadr20b)
    capacity_reeval_kw: float = Field(0.1, ge=0.0, le=1000.0)  # IMPORT_CAPACITY_LIMIT: re-send when it moves more

    @field_validator("ven_id")
    @classmethod
    def _ven(cls, value: str) -> str:
        return check_id(value, "venId")

    @field_validator("simple_levels_kw")
    @classmethod
    def _levels(cls, value: list[float]) -> list[float]:
        if len(value) != 4 or any(v < 0 for v in value):
            raise ValueError("must be four kW figures >= 0 (levels 0, 1, 2, 3)")
        return value

    @property
    def ven_name(self) -> str:
        return self.vtn.ven_name or self.ven_id


def parse_config(raw: object) -> OadrVenConfig:
    """The validated config, or ConfigError naming the key."""
    config = load_model(OadrVenConfig, raw)
    if config.vtn.protocol == PROTOCOL_20B:
        if config.oadr20b is None:
            raise ConfigError("oadr20b", "is required with vtn.protocol oadr20b")
        return config
    for key, value in (("vtn.baseUrl", config.vtn.base_url), ("vtn.clientId", config.vtn.client_id),
                       ("vtn.clientSecret", config.vtn.client_secret.get_secret_value())):
        if not value:
            raise ConfigError(key, "is required with vtn.protocol oadr31")
    check_secret_binding("vtn.clientSecret", config.vtn.client_secret.get_secret_value(), config.vtn.host)
    return config
