"""OpenADR 3.1 clients, their roles and scopes, and the OAuth2 client-credentials tokens dr.web issues.

Clients and secrets come from the site config (`openadr3.clients`); a placeholder secret (`...-change-me`) is
accepted only when dr.web listens on a loopback address. Tokens are random, opaque, expire after `tokenTtlS`,
and live in memory only (at most `maxTokens`; the oldest goes first). No secret or token is ever logged or
returned except the token to the client that asked for it.

`auth/token` is rate limited (`openadr3.tokenLimits`, `TokenLimiter`): each remote address has a request budget
(a token bucket) and a failure budget, each configured client id a failure budget; past a failure budget the
address or client is locked out for `lockoutS` (a locked client is refused even with the right secret, so a
guessed secret cannot be confirmed meanwhile). Refusals are 429 with RFC 6749's `temporarily_unavailable` and
the seconds to wait. Failures of unknown client ids count against the address only, so the per-client state
holds configured clients only; the per-address state is bounded (`maxTrackedAddresses`, the least recently
seen forgotten first). Secrets are compared in constant time (HMAC compare of their SHA-256 digests).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from flask import has_request_context, request
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


class TokenLimits(ConfigModel):
    """`openadr3.tokenLimits`: the budgets of `auth/token` (see the module docstring)."""

    requests_per_s: float = Field(10.0, gt=0, le=10_000)
    burst: int = Field(60, ge=1, le=100_000)
    max_client_failures: int = Field(5, ge=1, le=1000)
    max_address_failures: int = Field(20, ge=1, le=100_000)
    failure_window_s: float = Field(300.0, ge=1, le=86400)
    lockout_s: float = Field(300.0, ge=1, le=86400)
    max_tracked_addresses: int = Field(10_000, ge=1, le=1_000_000)


class Oadr3Config(ConfigModel):
    """The `openadr3` section of dr.web's config."""

    clients: tuple[ClientConfig, ...] = ()
    token_ttl_s: int = Field(3600, ge=60, le=86400, strict=True)
    max_tokens: int = Field(10_000, ge=1, le=1_000_000, strict=True)
    token_limits: TokenLimits = Field(default_factory=TokenLimits)

    def public_clients(self) -> list[dict[str, Any]]:
        """The clients as dr.vtn keeps them: id, role, venName and granted scopes, never a secret."""
        return [{"clientId": c.client_id, "role": c.role, "venName": c.ven_name, "scopes": sorted(c.granted())}
                for c in self.clients]

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

    def __init__(self, error: str, status: int, description: str, retry_after_s: int | None = None) -> None:
        super().__init__(description)
        self.error = error
        self.status = status
        self.description = description
        self.retry_after_s = retry_after_s


@dataclass
class _Budget:
    """One address's or client's state: request tokens, recent failure times, locked until."""
    tokens: float
    refilled: float
    failures: list[float]
    locked_until: float = 0.0


class TokenLimiter:
    """Request and failure budgets of `auth/token` per remote address and per configured client id (bounded)."""

    def __init__(self, limits: TokenLimits, clients: frozenset[str], clock: Callable[[], float]) -> None:
        self.limits = limits
        self.clients = clients
        self.clock = clock
        self._addresses: OrderedDict[str, _Budget] = OrderedDict()
        self._clients: dict[str, _Budget] = {}
        self.throttled = 0
        self.lockouts = 0

    def _budget(self, table: dict[str, _Budget], key: str) -> _Budget:
        budget = table.get(key)
        if budget is None:
            budget = table[key] = _Budget(float(self.limits.burst), self.clock(), [])
        if isinstance(table, OrderedDict):
            table.move_to_end(key)
            while len(table) > self.limits.max_tracked_addresses:
                table.popitem(last=False)
        return budget

    def _refuse(self, until: float, what: str) -> AuthFailure:
        self.throttled += 1
        wait = max(1, math.ceil(until - self.clock()))
        return AuthFailure("temporarily_unavailable", 429, f"{what}; retry in {wait} s", retry_after_s=wait)

    def admit(self, address: str, client_id: str | None) -> None:
        """Spend one request of the address's budget; AuthFailure (429) when it is spent or the address or the
        client is locked out."""
        now = self.clock()
        budget = self._budget(self._addresses, address)
        if budget.locked_until > now:
            raise self._refuse(budget.locked_until, "too many failed token requests from this address")
        budget.tokens = min(float(self.limits.burst),
                            budget.tokens + (now - budget.refilled) * self.limits.requests_per_s)
        budget.refilled = now
        if budget.tokens < 1.0:
            raise self._refuse(now + (1.0 - budget.tokens) / self.limits.requests_per_s,
                               "too many token requests from this address")
        budget.tokens -= 1.0
        client = self._clients.get(client_id) if client_id else None
        if client is not None and client.locked_until > now:
            raise self._refuse(client.locked_until, "this client is locked after repeated wrong secrets")

    def failed(self, address: str, client_id: str | None) -> None:
        """Count a failed request against the address, and against the client id when it is a configured one."""
        now = self.clock()
        pairs = [(self._budget(self._addresses, address), self.limits.max_address_failures)]
        if client_id in self.clients:
            pairs.append((self._budget(self._clients, client_id), self.limits.max_client_failures))
        for budget, most in pairs:
            budget.failures = [t for t in budget.failures if t > now - self.limits.failure_window_s][-most:]
            budget.failures.append(now)
            if len(budget.failures) >= most:
                budget.locked_until = now + self.limits.lockout_s
                budget.failures.clear()
                self.lockouts += 1

    def succeeded(self, client_id: str) -> None:
        """A right secret: the client's failures are forgotten."""
        self._clients.pop(client_id, None)


def _same_secret(given: str, expected: str) -> bool:
    """Constant time in the secrets' content and length."""
    return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), hashlib.sha256(expected.encode()).digest())


class TokenIssuer:
    """Client credentials in, bearer tokens out; bearer tokens in, principals out."""

    def __init__(self, config: Oadr3Config, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.clients = {c.client_id: c for c in config.clients}
        self._tokens: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self.limiter = TokenLimiter(config.token_limits, frozenset(self.clients), clock)
        self.issued = 0
        self.refused = 0

    def issue(self, form: Mapping[str, str], remote: str | None = None) -> dict[str, object]:
        """The token response of a client-credentials request (form fields, snake_case) from the `remote` address
        (the current Flask request's when not given), or AuthFailure."""
        address = remote if remote is not None else _request_address()
        client_id = form.get("client_id")
        self.limiter.admit(address, client_id if isinstance(client_id, str) else None)
        try:
            answer = self._issue(form)
        except AuthFailure:
            self.limiter.failed(address, client_id if isinstance(client_id, str) else None)
            raise
        self.limiter.succeeded(str(client_id))
        return answer

    def _issue(self, form: Mapping[str, str]) -> dict[str, object]:
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
        if not _same_secret(secret, expected) or client is None:
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
        return {"tokensIssued": self.issued, "tokensRefused": self.refused, "tokensHeld": len(self._tokens),
                "tokenRequestsThrottled": self.limiter.throttled, "tokenLockouts": self.limiter.lockouts}


def _request_address() -> str:
    """The remote address of the Flask request being served ("-" outside one)."""
    if has_request_context():
        return str(request.remote_addr or "-")
    return "-"


__all__ = ["AuthFailure", "ClientConfig", "ConfigError", "Oadr3Config", "Principal", "TokenIssuer", "TokenLimiter",
           "TokenLimits", "ALL_SCOPES"]
