"""Configuration of dr.web, validated once into a typed model."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Mapping

from dr_common import topics

_IDENTITY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
KEYS = ("host", "port", "api_token", "telemetry_history", "ven_history", "rpc_timeout_s", "refresh_s",
        "vtn_identity", "historian_identity")


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


@dataclass(frozen=True)
class WebConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    api_token: str | None = None       # bearer token for writes; without one every write is refused
    telemetry_history: int = 720       # points of the site power series kept for the live chart
    ven_history: int = 180             # points kept per VEN
    rpc_timeout_s: float = 10.0        # how long a request waits for dr.vtn or the historian
    refresh_s: float = 2.0             # how often the status page polls
    vtn_identity: str = topics.VTN_IDENTITY
    historian_identity: str = topics.HISTORIAN_IDENTITY

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any] | None) -> "WebConfig":
        if raw is not None and not isinstance(raw, Mapping):
            raise ConfigError(f"expected a JSON object, got {type(raw).__name__}")
        raw = dict(raw or {})
        unknown = set(raw) - set(KEYS)
        if unknown:
            raise ConfigError(f"unknown key(s): {', '.join(sorted(map(str, unknown)))}; known: {', '.join(KEYS)}")
        host = raw.get("host", cls.host)
        try:
            ipaddress.ip_address(host)
        except (TypeError, ValueError):
            if host != "localhost":
                raise ConfigError(f"host: expected an IP address or 'localhost', got {host!r}") from None
        port = _int(raw, "port", cls.port, 0, 65535)
        token = raw.get("api_token")
        if token is not None and (not isinstance(token, str) or len(token) < 8 or token != token.strip()):
            raise ConfigError("api_token: expected a string of at least 8 characters without surrounding spaces")
        identities = {}
        for key in ("vtn_identity", "historian_identity"):
            value = raw.get(key, getattr(cls, key))
            if not isinstance(value, str) or not _IDENTITY_RE.match(value):
                raise ConfigError(f"{key}: expected a VIP identity, got {value!r}")
            identities[key] = value
        return cls(host=host, port=port, api_token=token,
                   telemetry_history=_int(raw, "telemetry_history", cls.telemetry_history, 1, 100_000),
                   ven_history=_int(raw, "ven_history", cls.ven_history, 1, 10_000),
                   rpc_timeout_s=_float(raw, "rpc_timeout_s", cls.rpc_timeout_s, 0.1, 300.0),
                   refresh_s=_float(raw, "refresh_s", cls.refresh_s, 0.5, 60.0), **identities)


def _int(raw: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    value = raw.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{key}: expected an integer {low}-{high}, got {value!r}")
    return value


def _float(raw: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = raw.get(key, default)
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise ConfigError(f"{key}: expected a number {low:g}-{high:g}, got {value!r}")
    return float(value)
