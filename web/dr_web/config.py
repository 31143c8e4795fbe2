"""Configuration of dr.web, validated once into a typed model."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Mapping


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    api_token: str | None = None
    telemetry_history: int = 720

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> "WebConfig":
        raw = dict(raw or {})
        unknown = set(raw) - {"host", "port", "api_token", "telemetry_history"}
        if unknown:
            raise ConfigError(f"unknown key(s): {', '.join(sorted(unknown))}")
        host = raw.get("host", cls.host)
        try:
            ipaddress.ip_address(host)
        except (TypeError, ValueError):
            if host != "localhost":
                raise ConfigError(f"host: expected an IP address or 'localhost', got {host!r}") from None
        port = raw.get("port", cls.port)
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise ConfigError(f"port: expected an integer 0-65535, got {port!r}")
        token = raw.get("api_token")
        if token is not None and (not isinstance(token, str) or len(token) < 8):
            raise ConfigError("api_token: expected a string of at least 8 characters")
        history = raw.get("telemetry_history", cls.telemetry_history)
        if not isinstance(history, int) or isinstance(history, bool) or not 1 <= history <= 100_000:
            raise ConfigError(f"telemetry_history: expected an integer 1-100000, got {history!r}")
        return cls(host=host, port=port, api_token=token, telemetry_history=history)
