"""The dr.vtn configuration, validated once into a typed model.

Keys (camelCase; snake_case variants accepted):
  databaseUrl          SQLAlchemy URL (e.g. postgresql+psycopg2://postgres@127.0.0.1/volttron_dr); when absent,
                       SQLite at sqlitePath, or `vtn.sqlite` in the agent's data directory.
  sqlitePath           path of the SQLite file when no databaseUrl is given.
  allocation           default allocation rule: "equal" or "weighted" (by available capacity).
  simpleLevelsKw       kW requested for SIMPLE levels 0, 1, 2, 3 (a list of four numbers).
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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from dr_common.schema import Field, PayloadError, parse_fields

ALLOCATION_EQUAL = "equal"
ALLOCATION_WEIGHTED = "weighted"
ALLOCATION_RULES = (ALLOCATION_EQUAL, ALLOCATION_WEIGHTED)

DEFAULT_LEVELS_KW = (0.0, 1.0, 2.0, 3.0)


class ConfigError(ValueError):
    """A configuration value that cannot be used; `key` names it."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"config '{key}': {message}")
        self.key = key


@dataclass(frozen=True)
class ProgramConfig:
    allocation: str = ALLOCATION_EQUAL
    simple_levels_kw: tuple[float, ...] = DEFAULT_LEVELS_KW


@dataclass(frozen=True)
class VtnConfig:
    database_url: str | None = None
    sqlite_path: str | None = None
    default_program: ProgramConfig = field(default_factory=ProgramConfig)
    programs: dict[str, ProgramConfig] = field(default_factory=dict)
    offline_timeout_s: float = 30.0
    dispatch_to_offline: bool = False
    retry_initial_s: float = 1.0
    retry_factor: float = 2.0
    retry_max_s: float = 30.0
    restore_retry_window_s: float = 600.0
    randomize_granularity_s: float = 0.1
    flush_interval_s: float = 1.0
    batch_size: int = 2000

    def program(self, program_id: str | None) -> ProgramConfig:
        if program_id is not None and program_id in self.programs:
            return self.programs[program_id]
        return self.default_program

    def retry_delay(self, attempts: int) -> float:
        """Seconds to wait after the `attempts`-th send before the next one."""
        delay = self.retry_initial_s * (self.retry_factor ** max(0, attempts - 1))
        return min(delay, self.retry_max_s)


_FIELDS = (
    Field("databaseUrl", "str", aliases=("database", "dbUrl", "url"), max_length=2000),
    Field("sqlitePath", "str", aliases=("sqlite", "dbPath"), max_length=2000),
    Field("allocation", "str", choices=ALLOCATION_RULES),
    Field("simpleLevelsKw", "list", aliases=("levelsKw",)),
    Field("programs", "dict"),
    Field("offlineTimeoutS", "float", minimum=1.0, maximum=86400.0),
    Field("dispatchToOffline", "bool"),
    Field("retryInitialS", "float", minimum=0.05, maximum=3600.0),
    Field("retryFactor", "float", minimum=1.0, maximum=10.0),
    Field("retryMaxS", "float", minimum=0.05, maximum=86400.0),
    Field("restoreRetryWindowS", "float", minimum=0.0, maximum=7 * 86400.0),
    Field("randomizeGranularityS", "float", minimum=0.001, maximum=60.0),
    Field("flushIntervalS", "float", minimum=0.05, maximum=60.0),
    Field("batchSize", "int", minimum=1, maximum=1_000_000),
)
_PROGRAM_FIELDS = (
    Field("allocation", "str", choices=ALLOCATION_RULES),
    Field("simpleLevelsKw", "list", aliases=("levelsKw",)),
)


def _levels(key: str, raw: list[Any]) -> tuple[float, ...]:
    if len(raw) != 4:
        raise ConfigError(key, f"expected 4 numbers (kW for SIMPLE levels 0-3), got {len(raw)}")
    out = []
    for item in raw:
        if isinstance(item, bool) or not isinstance(item, (int, float)) or item < 0:
            raise ConfigError(key, f"expected non-negative numbers, got {item!r}")
        out.append(float(item))
    return tuple(out)


def _program(key: str, raw: Mapping[str, Any], base: ProgramConfig) -> ProgramConfig:
    try:
        values, extra = parse_fields(_PROGRAM_FIELDS, raw)
    except PayloadError as exc:
        raise ConfigError(f"{key}.{exc.field}", exc.reason) from None
    if extra:
        raise ConfigError(f"{key}.{sorted(extra)[0]}", "unknown key")
    levels = _levels(f"{key}.simpleLevelsKw", values["simpleLevelsKw"]) if "simpleLevelsKw" in values \
        else base.simple_levels_kw
    return ProgramConfig(allocation=values.get("allocation", base.allocation), simple_levels_kw=levels)


def parse_config(raw: Mapping[str, Any] | None) -> VtnConfig:
    """Validate a config mapping; raises ConfigError naming the key on anything unusable."""
    raw = dict(raw or {})
    try:
        values, extra = parse_fields(_FIELDS, raw)
    except PayloadError as exc:
        raise ConfigError(exc.field, exc.reason) from None
    if extra:
        raise ConfigError(sorted(extra)[0], "unknown key")
    default = ProgramConfig(
        allocation=values.get("allocation", ALLOCATION_EQUAL),
        simple_levels_kw=_levels("simpleLevelsKw", values["simpleLevelsKw"]) if "simpleLevelsKw" in values
        else DEFAULT_LEVELS_KW)
    programs: dict[str, ProgramConfig] = {}
    for program_id, program_raw in values.get("programs", {}).items():
        if not isinstance(program_raw, Mapping):
            raise ConfigError(f"programs.{program_id}", "expected an object")
        programs[str(program_id)] = _program(f"programs.{program_id}", program_raw, default)
    retry_initial = values.get("retryInitialS", 1.0)
    retry_max = values.get("retryMaxS", 30.0)
    if retry_max < retry_initial:
        raise ConfigError("retryMaxS", "must be >= retryInitialS")
    return VtnConfig(database_url=values.get("databaseUrl"), sqlite_path=values.get("sqlitePath"),
                     default_program=default, programs=programs,
                     offline_timeout_s=values.get("offlineTimeoutS", 30.0),
                     dispatch_to_offline=values.get("dispatchToOffline", False),
                     retry_initial_s=retry_initial, retry_factor=values.get("retryFactor", 2.0),
                     retry_max_s=retry_max, restore_retry_window_s=values.get("restoreRetryWindowS", 600.0),
                     randomize_granularity_s=values.get("randomizeGranularityS", 0.1),
                     flush_interval_s=values.get("flushIntervalS", 1.0),
                     batch_size=values.get("batchSize", 2000))
