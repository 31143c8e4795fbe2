"""One way to read agent configuration: one `ConfigError`, and pydantic models validated once.

Every agent validates its configuration into a typed model here. A bad value raises `ConfigError` naming
the key (dotted for nested keys); the agent logs it as one clear line, reports it in its health status and
keeps its previous configuration. Keys are camelCase; snake_case variants are accepted (`populate_by_name`).

Secrets (`SecretStr` fields) are never rendered: `ConfigError` messages carry the key and the reason, never
the value that was given.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from dr_common.schema import PayloadError

M = TypeVar("M", bound=BaseModel)

# Values that ship in example configs and must never guard a server reachable from the network.
PLACEHOLDER_MARKERS = ("change-me", "changeme", "placeholder", "example")


class ConfigError(ValueError):
    """A configuration value that cannot be used; `key` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config '{key}': {message}")
        self.key = key
        self.reason = message


class ConfigModel(BaseModel):
    """Base of every agent's configuration model: camelCase keys with snake_case accepted, unknown keys
    refused, immutable once built."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True,
                              hide_input_in_errors=True)


def _loc(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-"))]
    return ".".join(parts) or "<config>"


def config_error_from(exc: ValidationError) -> ConfigError:
    """The first error of a pydantic ValidationError as a ConfigError naming its key (values left out)."""
    first = exc.errors(include_url=False, include_input=False)[0]
    message = first.get("msg", "invalid value")
    if first.get("type") == "extra_forbidden":
        message = "is not a known key"
    return ConfigError(_loc(tuple(first.get("loc", ()))), message)


def load_model(model: type[M], raw: object) -> M:
    """Validate `raw` (a mapping, usually from the config store) into `model`, or raise ConfigError."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError("<config>", f"expected an object, got {type(raw).__name__}")
    try:
        return model.model_validate(dict(raw))
    except ValidationError as exc:
        raise config_error_from(exc) from None
    except PayloadError as exc:
        raise ConfigError(exc.field, exc.reason) from None


def is_loopback_host(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host.strip().lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def is_placeholder_secret(value: str) -> bool:
    """True for a secret that is one of the shipped examples (contains 'change-me' or similar) or empty."""
    lowered = value.strip().lower()
    return not lowered or any(marker in lowered for marker in PLACEHOLDER_MARKERS)


def check_secret_binding(key: str, secret: str, host: str) -> None:
    """Refuse a placeholder secret on a server bound beyond loopback (ConfigError naming `key`)."""
    if is_placeholder_secret(secret) and not is_loopback_host(host):
        raise ConfigError(key, f"is a placeholder; set a real secret to serve on {host} "
                               "(placeholders are accepted only on a loopback address)")


__all__ = ["ConfigError", "ConfigModel", "load_model", "config_error_from", "is_loopback_host",
           "is_placeholder_secret", "check_secret_binding", "PLACEHOLDER_MARKERS"]
