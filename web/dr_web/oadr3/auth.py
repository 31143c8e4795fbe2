"""OpenADR 3.1 clients, their roles and scopes, and the OAuth2 client-credentials tokens dr.web issues.

Clients and secrets come from the site config (`openadr3.clients`); a placeholder secret (`...-change-me`) is
accepted only when dr.web listens on a loopback address. Tokens are random, opaque, expire after `tokenTtlS`,
and live in memory only (at most `maxTokens`; the oldest goes first). No secret or token is ever logged or
returned except the token to the client that asked for it.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from dr_common.config import ConfigError, ConfigModel, check_secret_binding

_log = logging.getLogger(__name__)

BL_SCOPES = ("read_all", "write_programs", "write_events", "write_subscriptions", "write_vens")
VEN_SCOPES = ("read_targets", "read_ven_objects", "write_reports", "write_subscriptions", "write_vens")
ALL_SCOPES = frozenset(BL_SCOPES + VEN_SCOPES)
ROLE_SCOPES = {"bl": BL_SCOPES, "ven": VEN_SCOPES}


class ClientConfig(ConfigModel):
    """One OpenADR client: `clientId`, `clientSecret`, `role` (`bl` business logic or `ven`), a VEN's
    `venName`, and optionally fewer `scopes` than its role's."""

    client_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
    client_secret: SecretStr
    role: Literal["bl", "ven"]
    ven_name: str | None = Field(default=None, min_length=1, max_length=128)
    scopes: tuple[str, ...] | None = None

    @field_validator("client_secret")
    @classmethod
    def _secret(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if len(text) < 8 or len(text) > 4096 or text != text.strip():
            raise ValueError("expected 8-4096 characters without surrounding spaces")
        return value

    @model_validator(mode="after")
    def _role(self) -> "ClientConfig":
        if self.role == "ven" and not self.ven_name:
            raise ValueError("a ven client needs its venName")
        if self.scopes is not None and not set(self.scopes) <= set(ROLE_SCOPES[self.role]):
            raise ValueError(f"scopes of a {self.role} client are among {', '.join(ROLE_SCOPES[self.role])}")
        return self

    def granted(self) -> frozenset[str]:
        """The scopes this client may hold."""
        return frozenset(self.scopes if self.scopes is not None else ROLE_SCOPES[self.role])


class Oadr3Config(ConfigModel):
    """The `openadr3` section of dr.web's config."""

    clients: tuple[ClientConfig, ...] = ()
    token_ttl_s: int = Field(3600, ge=60, le=86400, strict=True)
    max_tokens: int = Field(10_000, ge=1, le=1_000_000, strict=True)

    @model_validator(mode="after")
    def _unique(self) -> "Oadr3Config":
        ids = [c.client_id for c in self.clients]
        if len(ids) != len(set(ids)):
            raise ValueError("clientId values must be unique")
        return self

    def check_binding(self, host: str) -> None:
        """Refuse placeholder secrets unless `host` is loopback (ConfigError naming the client's key)."""
        for index, client in enumerate(self.clients):
            check_secret_binding(f"openadr3.clients.{index}.clientSecret", client.client_secret.get_secret_value(),
                                 host)


@dataclass(frozen=True)
class Principal:
    """An authenticated client as the API and dr.vtn see it."""
    client_id: str
    role: str
    ven_name: str | None
    scopes: frozenset[str]

    def to_rpc(self) -> dict[str, str | None]:
        """The principal dr.vtn's OpenADR RPCs take."""
        return {"clientId": self.client_id, "role": self.role, "venName": self.ven_name}


class AuthFailure(Exception):
    """An OAuth2 error (RFC 6749 section 5.2): `error` code, HTTP status, description."""

    def __init__(self, error: str, status: int, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.status = status
        self.description = description


class TokenIssuer:
    """Client credentials in, bearer tokens out; bearer tokens in, principals out."""

    def __init__(self, config: Oadr3Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.clients = {c.client_id: c for c in config.clients}
        self._tokens: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self.issued = 0
        self.refused = 0

    def issue(self, form: Mapping[str, str]) -> dict[str, object]:
        """The token response of a client-credentials request (form fields, snake_case), or AuthFailure."""
        grant = form.get("grant_type")
        client_id, secret = form.get("client_id"), form.get("client_secret")
        if not grant or not client_id or not secret:
            missing = next(k for k in ("grant_type", "client_id", "client_secret") if not form.get(k))
            raise AuthFailure("invalid_request", 400, f"{missing} is required")
        if grant != "client_credentials":
            raise AuthFailure("unsupported_grant_type", 400, "only client_credentials is supported")
        if len(client_id) > 4096 or len(secret) > 4096:
            raise AuthFailure("invalid_request", 400, "client_id and client_secret are at most 4096 characters")
        client = self.clients.get(client_id)
        expected = client.client_secret.get_secret_value() if client else secrets.token_hex(16)
        if not hmac.compare_digest(secret.encode(), expected.encode()) or client is None:
            self.refused += 1
            raise AuthFailure("invalid_client", 401, "unknown client or wrong secret")
        granted = client.granted()
        asked = form.get("scope")
        scopes = granted
        if asked:
            wanted = frozenset(asked.split())
            if not wanted <= granted:
                raise AuthFailure("invalid_scope", 400, "a scope asked for is not granted to this client")
            scopes = wanted
        token = secrets.token_urlsafe(32)
        expires = self.clock() + self.config.token_ttl_s
        self._tokens[token] = (Principal(client.client_id, client.role, client.ven_name, scopes), expires)
        while len(self._tokens) > self.config.max_tokens:
            self._tokens.popitem(last=False)
        self.issued += 1
        return {"access_token": token, "token_type": "Bearer", "expires_in": self.config.token_ttl_s,
                "scope": " ".join(sorted(scopes))}

    def verify(self, header: str | None) -> Principal | None:
        """The principal of an `Authorization: Bearer <token>` header, or None (missing, unknown, expired)."""
        if not header or not header.startswith("Bearer "):
            return None
        token = header[len("Bearer "):].strip()
        entry = self._tokens.get(token)
        if entry is None:
            return None
        principal, expires = entry
        if self.clock() >= expires:
            del self._tokens[token]
            return None
        return principal

    def counters(self) -> dict[str, int]:
        """Tokens issued, refused and held."""
        return {"tokensIssued": self.issued, "tokensRefused": self.refused, "tokensHeld": len(self._tokens)}


__all__ = ["AuthFailure", "ClientConfig", "ConfigError", "Oadr3Config", "Principal", "TokenIssuer", "ALL_SCOPES"]
