"""The historian's configuration, validated once into a typed model (`dr_common.config`).

Accepted shapes of `connection` (the first two are VOLTTRON's SQL historian shapes, so stock configs work):

    {"type": "sqlite", "params": {"database": "/path/historian.sqlite"}}
    {"type": "postgresql", "params": {"host": ..., "port": ..., "dbname": ..., "user": ..., "password": ...}}
    {"url": "sqlite:////path/historian.sqlite"}  or  {"url": "postgresql+psycopg2://user@host:5432/db"}

`~` and `$VARS` are expanded in a SQLite path. Without a connection the database is `./data/historian.sqlite`
relative to the agent's working folder. Keys are snake_case as in VOLTTRON's historian configs; the camelCase
spelling is accepted too. A bad value raises `dr_common.config.ConfigError` naming the key, never the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, PrivateAttr, SecretStr, StrictBool, ValidationError, field_validator, model_validator

from dr_common.config import ConfigError, ConfigModel, load_model
from dr_common.topics import DEVICES_PREFIX

DEFAULT_SQLITE_PATH = "./data/historian.sqlite"
DEFAULT_METHODS = ("meter-before", "caiso-10in10", "pjm-high4of5", "ven-reported")

__all__ = ["ConfigError", "ConnectionConfig", "HistorianConfig", "MvConfig", "QueryLimits", "mask_password",
           "parse_config"]


def _number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError("expected a number")
    return value


def _integer(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ValueError("expected an integer")
    return int(value)


def _expand(path: str) -> str:
    expanded = os.path.expandvars(os.path.expanduser(path))
    if "$" in expanded:
        raise ValueError("names an unset environment variable")
    return os.path.abspath(expanded)


class ConnectionParams(ConfigModel):
    """`connection.params` of VOLTTRON's SQL historian shapes (SQLite: database; PostgreSQL: the rest)."""

    database: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(5432, ge=1, le=65535)
    dbname: str | None = None
    user: str = "postgres"
    password: SecretStr | None = None


class ConnectionConfig(ConfigModel):
    """Where the historian stores: a SQLAlchemy `url`, or a VOLTTRON `type` with `params`."""

    type: Literal["sqlite", "postgresql", "postgres"] = "sqlite"
    params: ConnectionParams = Field(default_factory=ConnectionParams)
    url: SecretStr | None = None
    _url: str = PrivateAttr("")
    _backend: str = PrivateAttr("sqlite")

    @field_validator("url", mode="before")
    @classmethod
    def _check_url(cls, value: Any) -> Any:
        if not isinstance(value, str) or "://" not in value:
            raise ValueError("must be a SQLAlchemy URL")
        scheme = value.split(":", 1)[0]
        if not scheme.startswith(("sqlite", "postgresql", "postgres")):
            raise ValueError(f"only sqlite and postgresql are supported, got {scheme!r}")
        if scheme.startswith("sqlite"):
            path = value.split(":///", 1)[1] if ":///" in value else ""
            if not path:
                raise ValueError("a SQLite URL needs a file path (sqlite:////abs/path.sqlite)")
            return f"sqlite:///{_expand(path)}"
        return value

    @field_validator("params", mode="before")
    @classmethod
    def _params(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            raise ValueError("must be an object")
        params = dict(value)
        if "database" in params:
            path = params["database"]
            if not isinstance(path, str) or not path or path == ":memory:":
                raise ConfigError("connection.params.database", "must be a file path")
        return params

    @model_validator(mode="after")
    def _resolve(self) -> ConnectionConfig:
        if self.url is not None:
            url = self.url.get_secret_value()
            if url.startswith("postgres:"):
                url = "postgresql" + url[len("postgres"):]
            if url.startswith("postgresql:"):
                url = "postgresql+psycopg2:" + url[len("postgresql:"):]
            self._url, self._backend = url, "sqlite" if url.startswith("sqlite") else "postgresql"
            return self
        params = self.params
        if self.type == "sqlite":
            try:
                self._url = f"sqlite:///{_expand(params.database or DEFAULT_SQLITE_PATH)}"
            except ValueError as exc:
                raise ConfigError("connection.params.database", str(exc)) from None
            self._backend = "sqlite"
            return self
        if not params.dbname:
            raise ConfigError("connection.params.dbname", "is required for postgresql")
        password = params.password.get_secret_value() if params.password is not None else ""
        auth = quote(params.user, safe="") + (f":{quote(password, safe='')}" if password else "")
        self._url = f"postgresql+psycopg2://{auth}@{params.host}:{params.port}/{quote(params.dbname, safe='')}"
        self._backend = "postgresql"
        return self


class MvConfig(ConfigModel):
    """Defaults of the M&V calculations (each RPC call may override them)."""

    timezone: str = "UTC"
    interval_minutes: int = Field(15, ge=1, le=1440)
    meter_before_minutes: int = Field(30, ge=1, le=24 * 60)
    lookback_days: int = Field(45, ge=1, le=400)
    meter_topics: tuple[str, ...] = ()
    holidays: tuple[date, ...] = ()
    methods: tuple[str, ...] = DEFAULT_METHODS

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown time zone") from None
        return value

    @field_validator("interval_minutes", "meter_before_minutes", "lookback_days", mode="before")
    @classmethod
    def _int(cls, value: Any) -> Any:
        return _integer(value)

    @field_validator("interval_minutes")
    @classmethod
    def _interval(cls, value: int) -> int:
        if 60 % value and value % 60:
            raise ValueError("must divide an hour or be whole hours")
        return value

    @field_validator("meter_topics", mode="before")
    @classmethod
    def _topics(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) and t for t in value):
            raise ValueError("must be a list of topic names")
        return tuple(t.removeprefix(DEVICES_PREFIX) for t in value)

    @field_validator("holidays", mode="before")
    @classmethod
    def _holidays(cls, value: Any) -> Any:
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, str) for item in value):
            raise ValueError("must be a list of YYYY-MM-DD dates")
        try:
            return tuple(date.fromisoformat(item) for item in value)
        except ValueError:
            raise ValueError("expected YYYY-MM-DD dates") from None

    @field_validator("methods", mode="before")
    @classmethod
    def _methods(cls, value: Any) -> Any:
        from dr_historian.mv.baselines import METHODS  # local: keeps config importable on its own

        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value:
            raise ValueError("must be a non-empty list")
        for method in value:
            if method not in METHODS:
                raise ValueError(f"unknown method; known: {', '.join(METHODS)}")
        return tuple(value)


class QueryLimits(ConfigModel):
    """Bounds of the query RPCs (a query without `count` gets `default_count` rows per topic)."""

    default_count: int = Field(1000, ge=1, le=1_000_000)
    max_count: int = Field(10_000, ge=1, le=1_000_000)
    max_topics: int = Field(100, ge=1, le=10_000)
    max_topic_results: int = Field(1000, ge=1, le=1_000_000)

    @field_validator("default_count", "max_count", "max_topics", "max_topic_results", mode="before")
    @classmethod
    def _int(cls, value: Any) -> Any:
        return _integer(value)

    @model_validator(mode="after")
    def _order(self) -> QueryLimits:
        if self.default_count > self.max_count:
            raise ConfigError("query.default_count", "must not exceed query.max_count")
        return self


class HistorianConfig(ConfigModel):
    """The historian's own keys (VOLTTRON's base-historian keys are validated by the base class)."""

    connection: ConnectionConfig = Field(default_factory=ConnectionConfig)
    connect_timeout_s: float = Field(5.0, ge=0.5, le=120)
    record_dr: StrictBool = True
    mv: MvConfig = Field(default_factory=MvConfig)
    query: QueryLimits = Field(default_factory=QueryLimits)

    @field_validator("connection", mode="before")
    @classmethod
    def _connection(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("connect_timeout_s", mode="before")
    @classmethod
    def _timeout(cls, value: Any) -> Any:
        return _number(value)

    @property
    def url(self) -> str:
        """The SQLAlchemy URL (it may hold the password: never log it, use display_url)."""
        return self.connection._url

    @property
    def backend(self) -> str:
        """'sqlite' or 'postgresql'."""
        return self.connection._backend

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for logs and health."""
        return mask_password(self.url)


OWN_KEYS = frozenset(name for field, info in HistorianConfig.model_fields.items()
                     for name in (field, info.alias) if name)


def mask_password(url: str) -> str:
    """The URL with the password of its user part replaced by ***."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def parse_config(raw: Mapping[str, Any]) -> HistorianConfig:
    """The historian's own keys of a configuration as a HistorianConfig, or ConfigError naming the key.

    Every other key belongs to VOLTTRON's base historian (validated there) and is left out here."""
    if not isinstance(raw, Mapping):
        raise ConfigError("<config>", f"expected an object, got {type(raw).__name__}")
    own = {k: v for k, v in raw.items() if k in OWN_KEYS}
    try:
        return HistorianConfig.model_validate(own)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        cause = (first.get("ctx") or {}).get("error")
        if isinstance(cause, ConfigError):  # a check that names a nested key itself
            raise ConfigError(cause.key, cause.reason) from None
    return load_model(HistorianConfig, own)  # raises ConfigError naming the key
