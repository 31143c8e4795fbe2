"""The historian's configuration, validated once into a typed model.

Accepted shapes of `connection` (the first two are VOLTTRON's SQL historian shapes, so stock configs work):

    {"type": "sqlite", "params": {"database": "/path/historian.sqlite"}}
    {"type": "postgresql", "params": {"host": ..., "port": ..., "dbname": ..., "user": ..., "password": ...}}
    {"url": "sqlite:////path/historian.sqlite"}  or  {"url": "postgresql+psycopg2://user@host:5432/db"}

`~` and `$VARS` are expanded in a SQLite path. Without a connection the database is `./data/historian.sqlite`
relative to the agent's working folder.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DEFAULT_SQLITE_PATH = "./data/historian.sqlite"


class ConfigError(ValueError):
    """A configuration value that cannot be used; `key` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config '{key}': {message}")
        self.key = key


@dataclass(frozen=True)
class MvConfig:
    """Defaults of the M&V calculations (each RPC call may override them)."""

    timezone: str = "UTC"
    interval_minutes: int = 15
    meter_before_minutes: int = 30
    lookback_days: int = 45
    meter_topics: tuple[str, ...] = ()
    holidays: tuple[date, ...] = ()
    methods: tuple[str, ...] = ("meter-before", "caiso-10in10", "pjm-high4of5", "ven-reported")


@dataclass(frozen=True)
class HistorianConfig:
    url: str
    backend: str  # "sqlite" or "postgresql"
    connect_timeout_s: float = 5.0
    record_dr: bool = True
    mv: MvConfig = field(default_factory=MvConfig)

    @property
    def display_url(self) -> str:
        """The URL with any password masked, for logs and health."""
        return mask_password(self.url)


def mask_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user, colon, _ = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def _connection_url(raw: object) -> tuple[str, str]:
    if raw is None:
        raw = {"type": "sqlite", "params": {"database": DEFAULT_SQLITE_PATH}}
    if not isinstance(raw, Mapping):
        raise ConfigError("connection", f"must be an object, got {type(raw).__name__}")
    if "url" in raw:
        url = raw["url"]
        if not isinstance(url, str) or "://" not in url:
            raise ConfigError("connection.url", f"must be a SQLAlchemy URL, got {url!r}")
        if url.startswith("sqlite:"):
            path = url.split(":///", 1)[1] if ":///" in url else ""
            if not path:
                raise ConfigError("connection.url", "a SQLite URL needs a file path (sqlite:////abs/path.sqlite)")
            return f"sqlite:///{_expand(path)}", "sqlite"
        if url.startswith(("postgresql:", "postgresql+psycopg2:", "postgres:")):
            if url.startswith("postgres:"):
                url = "postgresql" + url[len("postgres"):]
            if url.startswith("postgresql:"):
                url = "postgresql+psycopg2:" + url[len("postgresql:"):]
            return url, "postgresql"
        raise ConfigError("connection.url", f"only sqlite and postgresql are supported, got {url.split(':')[0]!r}")
    kind = raw.get("type", "sqlite")
    params = raw.get("params", {})
    if not isinstance(params, Mapping):
        raise ConfigError("connection.params", "must be an object")
    if kind == "sqlite":
        path = params.get("database", DEFAULT_SQLITE_PATH)
        if not isinstance(path, str) or not path or path == ":memory:":
            raise ConfigError("connection.params.database", f"must be a file path, got {path!r}")
        return f"sqlite:///{_expand(path)}", "sqlite"
    if kind in ("postgresql", "postgres"):
        host = str(params.get("host", "127.0.0.1"))
        port = params.get("port", 5432)
        try:
            port = int(port)
        except (TypeError, ValueError):
            raise ConfigError("connection.params.port", f"must be an integer, got {port!r}") from None
        dbname = params.get("dbname") or params.get("database")
        if not dbname or not isinstance(dbname, str):
            raise ConfigError("connection.params.dbname", "is required for postgresql")
        user = str(params.get("user", "postgres"))
        password = params.get("password")
        auth = quote(user, safe="") + (f":{quote(str(password), safe='')}" if password else "")
        return f"postgresql+psycopg2://{auth}@{host}:{port}/{quote(dbname, safe='')}", "postgresql"
    raise ConfigError("connection.type", f"must be sqlite or postgresql, got {kind!r}")


def _expand(path: str) -> str:
    expanded = os.path.expandvars(os.path.expanduser(path))
    if "$" in expanded:
        raise ConfigError("connection.params.database", f"{path!r} names an unset environment variable")
    return os.path.abspath(expanded)


def _positive_int(raw: Mapping[str, Any], key: str, default: int, prefix: str, maximum: int) -> int:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise ConfigError(prefix + key, f"must be an integer, got {value!r}")
    if not 1 <= int(value) <= maximum:
        raise ConfigError(prefix + key, f"must be between 1 and {maximum}, got {value!r}")
    return int(value)


def parse_mv(raw: object) -> MvConfig:
    if raw is None:
        return MvConfig()
    if not isinstance(raw, Mapping):
        raise ConfigError("mv", "must be an object")
    tz = raw.get("timezone", "UTC")
    try:
        ZoneInfo(str(tz))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError("mv.timezone", f"unknown time zone {tz!r}") from None
    interval = _positive_int(raw, "interval_minutes", 15, "mv.", 1440)
    if 60 % interval and interval % 60:
        raise ConfigError("mv.interval_minutes", f"must divide an hour or be whole hours, got {interval}")
    topics = raw.get("meter_topics", [])
    if isinstance(topics, str):
        topics = [topics]
    if not isinstance(topics, list) or not all(isinstance(t, str) and t for t in topics):
        raise ConfigError("mv.meter_topics", "must be a list of topic names")
    holidays = []
    for item in raw.get("holidays", []):
        try:
            holidays.append(date.fromisoformat(str(item)))
        except ValueError:
            raise ConfigError("mv.holidays", f"expected YYYY-MM-DD dates, got {item!r}") from None
    from dr_historian.mv.baselines import METHODS  # local: keeps config importable on its own

    methods = raw.get("methods", list(MvConfig.methods))
    if not isinstance(methods, list) or not methods:
        raise ConfigError("mv.methods", "must be a non-empty list")
    for method in methods:
        if method not in METHODS:
            raise ConfigError("mv.methods", f"unknown method {method!r}; known: {', '.join(METHODS)}")
    return MvConfig(timezone=str(tz), interval_minutes=interval,
                    meter_before_minutes=_positive_int(raw, "meter_before_minutes", 30, "mv.", 24 * 60),
                    lookback_days=_positive_int(raw, "lookback_days", 45, "mv.", 400),
                    meter_topics=tuple(t.removeprefix("devices/") for t in topics), holidays=tuple(holidays),
                    methods=tuple(methods))


def parse_config(raw: Mapping[str, Any]) -> HistorianConfig:
    """Validate the historian's own keys (VOLTTRON's base-historian keys are validated by the base class)."""
    url, backend = _connection_url(raw.get("connection"))
    timeout = raw.get("connect_timeout_s", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0.5 <= timeout <= 120:
        raise ConfigError("connect_timeout_s", f"must be a number of seconds between 0.5 and 120, got {timeout!r}")
    record_dr = raw.get("record_dr", True)
    if not isinstance(record_dr, bool):
        raise ConfigError("record_dr", f"must be true or false, got {record_dr!r}")
    return HistorianConfig(url=url, backend=backend, connect_timeout_s=float(timeout), record_dr=record_dr,
                           mv=parse_mv(raw.get("mv")))
