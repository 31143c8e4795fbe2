"""Configuration of dr.web, validated once into a typed model (`dr_common.config`).

Keys are camelCase (`apiToken`, `rpcTimeoutS`); the snake_case spelling of the site files (`api_token`) is
accepted. A bad value raises `dr_common.config.ConfigError` naming the key, never the value.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from pydantic import Field, SecretStr, field_validator

from dr_common import topics
from dr_common.config import ConfigError, ConfigModel, check_secret_binding, load_model
from dr_web.oadr3.auth import Oadr3Config

_IDENTITY_RE = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")

__all__ = ["ConfigError", "WebConfig", "parse_config"]


class WebConfig(ConfigModel):
    """dr.web's configuration (config store entry `config`)."""

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535, strict=True)
    api_token: SecretStr | None = None                  # bearer token for writes; without one writes are refused
    telemetry_history: int = Field(720, ge=1, le=100_000, strict=True)  # site points kept for the live chart
    ven_history: int = Field(180, ge=1, le=10_000, strict=True)        # points kept per VEN
    rpc_timeout_s: float = Field(10.0, ge=0.1, le=300.0)  # how long a request waits for dr.vtn or the historian
    refresh_s: float = Field(2.0, ge=0.5, le=60.0)        # how often the status page polls
    vtn_identity: str = topics.VTN_IDENTITY
    historian_identity: str = topics.HISTORIAN_IDENTITY
    max_vens: int = Field(10_000, ge=1, le=1_000_000, strict=True)     # VENs the live state holds at most
    ven_evict_s: float = Field(3600.0, ge=10.0, le=30 * 86400.0)      # a VEN not heard from this long is dropped
    registry_refresh_s: float = Field(10.0, ge=1.0, le=3600.0)         # how often the VEN registry is re-read
    openadr3: Oadr3Config | None = None   # the OpenADR 3.1 API's clients (web/dr_web/oadr3/README.md); none: not served
    trusted_bridges: tuple[str, ...] = (topics.MQTT_BRIDGE_IDENTITY,)  # bus identities that may publish for any VEN

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if value != "localhost":
            try:
                ipaddress.ip_address(value)
            except ValueError:
                raise ValueError("expected an IP address or 'localhost'") from None
        return value

    @field_validator("api_token")
    @classmethod
    def _token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            text = value.get_secret_value()
            if len(text) < 8 or text != text.strip():
                raise ValueError("expected a string of at least 8 characters without surrounding spaces")
        return value

    @field_validator("vtn_identity", "historian_identity")
    @classmethod
    def _identity(cls, value: str) -> str:
        if not _IDENTITY_RE.match(value):
            raise ValueError("expected a VIP identity")
        return value

    @field_validator("trusted_bridges")
    @classmethod
    def _bridges(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(value) > 16 or not all(_IDENTITY_RE.match(v) for v in value):
            raise ValueError("expected at most 16 VIP identities")
        return value

    @field_validator("rpc_timeout_s", "refresh_s", "ven_evict_s", "registry_refresh_s", mode="before")
    @classmethod
    def _number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("expected a number")
        return value

    def token(self) -> str | None:
        """The bearer token's value, or None when writes are disabled."""
        return self.api_token.get_secret_value() if self.api_token is not None else None

    @property
    def writes_enabled(self) -> bool:
        """True when a bearer token is configured."""
        return self.api_token is not None

    @classmethod
    def from_mapping(cls, raw: object) -> "WebConfig":
        """Same as parse_config."""
        return parse_config(raw)


def parse_config(raw: object) -> WebConfig:
    """The config store entry as a WebConfig, or ConfigError naming the key.

    A placeholder token (`...-change-me`) is refused unless the server is bound to a loopback address.
    """
    config = load_model(WebConfig, raw)
    token = config.token()
    if token is not None:
        check_secret_binding("apiToken", token, config.host)
    if config.openadr3 is not None:
        config.openadr3.check_binding(config.host)
    return config
