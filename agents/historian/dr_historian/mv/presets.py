"""Named baseline presets: the programs' customer-baseline rules as `BaselineSpec`s of the one engine.

Each preset cites the program document it follows. `unverified` says where the rule could not be read in its
primary document when the preset was written (the parameters then follow the program's published summaries;
check them against the program's current document before settling on them). Any parameter can be overridden
per site or call with `with_overrides(spec, {...})` (nested keys for `weekday`, `weekend`, `sunday_holiday`,
`adjustment`).

The three methods that existed before the engine (`meter-before`, `caiso-10in10`, `pjm-high4of5`) give exactly
their former numbers (tests/unit/test_mv_baselines.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from dr_historian.mv import regression
from dr_historian.mv.engine import (
    ADJ_ADDITIVE,
    ADJ_MULTIPLICATIVE,
    ADJ_NONE,
    ADJUSTMENTS,
    ANCHOR_EVENT,
    ANCHOR_NOTIFICATION,
    ANCHORS,
    DAY_TYPES,
    DAYS_BUSINESS,
    DAYS_THREE,
    KIND_DAYS,
    KIND_METER,
    KIND_REGRESSION,
    POOL_HIGH,
    POOL_LIKE,
    POOL_MIDDLE,
    POOL_RECENT,
    POOLS,
    Adjustment,
    BaselineSpec,
    DayRule,
)
from dr_historian.mv.series import MvError

_NOT_READ = ("primary document not read when this preset was written: parameters from the program's published "
             "summaries")
_SAA = Adjustment(ADJ_ADDITIVE, offset_minutes=-240, length_minutes=180)

PRESETS: dict[str, BaselineSpec] = {spec.name: spec for spec in (
    BaselineSpec(
        "meter-before", kind=KIND_METER, before_minutes=30,
        source="NAESB WEQ-015 (Measurement and Verification of Wholesale Electricity Demand Response), "
               "'Meter Before / Meter After'; ERCOT Emergency Response Service / Load Resource M&V"),
    BaselineSpec(
        "meter-after", kind=KIND_METER, after_minutes=30,
        source="NAESB WEQ-015 'Meter Before / Meter After' (ERCOT style: the demand after release)",
        unverified=_NOT_READ + "; the 30-minute after-window is this product's choice"),
    BaselineSpec(
        "caiso-10in10",
        source="CAISO Business Practice Manual for Metering, Proxy Demand Resource performance evaluation: "
               "10 in 10 non-event days with load point adjustment (weekend/holiday 4 in 4)",
        weekday=DayRule(POOL_RECENT, 10, 10, minimum=5, label="10-in-10 weekday"),
        weekend=DayRule(POOL_RECENT, 4, 4, minimum=4, label="4-in-4 weekend/holiday"),
        adjustment=Adjustment(ADJ_MULTIPLICATIVE, offset_minutes=-240, length_minutes=180, cap=0.20)),
    BaselineSpec(
        "pjm-high4of5",
        source="PJM Manual 11 (Energy & Ancillary Services Market Operations), section 10, Customer Baseline "
               "Load: High 4 of 5 weekday, High 2 of 3 weekend/holiday, symmetric additive adjustment",
        day_types=DAYS_THREE, low_usage=0.25,
        weekday=DayRule(POOL_HIGH, 4, 5, minimum=5, label="high-4-of-5 weekday"),
        weekend=DayRule(POOL_HIGH, 2, 3, minimum=3, label="high-2-of-3 {kind}"),
        adjustment=_SAA),
    BaselineSpec(
        "pjm-same-day", kind=KIND_METER, before_minutes=180, before_skip_minutes=60, after_minutes=120,
        after_skip_minutes=60,
        source="PJM Manual 11 section 10, alternative CBL 'Same Day (3 + 2)': the average of the 3 hours before "
               "the event after skipping 1 and the 2 hours after it after skipping 1 (an event in hours ending "
               "13-17 averages hours ending 9-11 and 19-20; RTO Insider on PJM's MIC briefing, 2025-02-25)",
        unverified=_NOT_READ + "; the hours are averaged weighted by their length"),
    BaselineSpec(
        "pjm-match-day", day_types=DAYS_THREE, like_skip_minutes=60,
        source="PJM Manual 11 section 10, alternative CBL 'Match Day' (3-day average): the 3 non-event days with "
               "the most similar load in the event day's non-event hours, the hour before and after the event "
               "excluded (as summarised by RTO Insider on PJM's MIC briefing, 2025-02-25)",
        unverified=_NOT_READ + "; similarity is the RMS difference over those hours; the symmetric additive "
                               "adjustment of the other PJM CBLs is applied",
        weekday=DayRule(POOL_LIKE, 3, 3, label="match-day 3 most similar {kind}"),
        weekend=DayRule(POOL_LIKE, 3, 3, label="match-day 3 most similar {kind}"),
        adjustment=_SAA),
    BaselineSpec(
        "nyiso-high5of10",
        source="NYISO Emergency Demand Response Program / ICAP SCR Manual, Average-Day CBL (Con Edison CBL): "
               "highest 5 of the 10 most recent weekdays, weekend highest 2 of 3, weather-sensitive in-day "
               "adjustment from the 2 hours starting 4 hours before the event, capped at +-20 %",
        unverified=_NOT_READ,
        day_types=DAYS_THREE, low_usage=0.25,
        weekday=DayRule(POOL_HIGH, 5, 10, minimum=5, label="high-5-of-10 weekday"),
        weekend=DayRule(POOL_HIGH, 2, 3, minimum=2, label="high-2-of-3 {kind}"),
        adjustment=Adjustment(ADJ_MULTIPLICATIVE, offset_minutes=-240, length_minutes=120, cap=0.20)),
    BaselineSpec(
        "ieso-15of20",
        source="IESO Market Manual 12 (Capacity Auction), demand response baseline: 15 highest of the 20 most "
               "recent business days with an in-day adjustment from hours 4 to 1 before the event, capped at +-20 %",
        unverified=_NOT_READ + "; the in-day adjustment is taken as additive, capped at 20 % of the baseline",
        weekday=DayRule(POOL_HIGH, 15, 20, minimum=15, label="high-15-of-20 business days"),
        weekend=DayRule(POOL_HIGH, 4, 5, minimum=4, label="high-4-of-5 weekend/holiday"),
        adjustment=Adjustment(ADJ_ADDITIVE, offset_minutes=-240, length_minutes=180, cap=0.20)),
    BaselineSpec(
        "isone-10weekday",
        source="ISO New England Market Rule 1 / Manual M-RPA, demand response baseline: the average of the 10 "
               "most recent non-event weekdays ('mean 10 of 10', which replaced the 90/10 baseline in ISO-NE and "
               "NEPOOL's 2015 filing, as summarised by the Troutman Energy Report, 2015-11), additive adjustment "
               "from the demand in the 15 minutes before the dispatch notification",
        unverified=_NOT_READ + "; the adjustment window is from the program summary; weekends use the 10 most "
                               "recent weekend days/holidays",
        weekday=DayRule(POOL_RECENT, 10, 10, minimum=5, label="10 recent weekdays"),
        weekend=DayRule(POOL_RECENT, 10, 10, minimum=4, label="10 recent weekend days/holidays"),
        adjustment=Adjustment(ADJ_ADDITIVE, anchor=ANCHOR_NOTIFICATION, offset_minutes=-15, length_minutes=15)),
    BaselineSpec(
        "ercot-middle8of10",
        source="ERCOT Emergency Response Service Technical Requirements & Scope of Work, default baseline "
               "'Middle 8 of 10' like days (highest and lowest of the 10 most recent dropped)",
        unverified=_NOT_READ + "; no day-of adjustment",
        weekday=DayRule(POOL_MIDDLE, 8, 10, label="middle-8-of-10 weekday"),
        weekend=DayRule(POOL_MIDDLE, 8, 10, label="middle-8-of-10 weekend/holiday")),
    BaselineSpec(
        "pge-top5of10",
        source="PG&E residential demand response baseline (SmartAC / residential PDR): top 5 of the 10 most "
               "recent weekdays, top 3 of the 5 most recent weekend days",
        unverified=_NOT_READ + "; no day-of adjustment",
        weekday=DayRule(POOL_HIGH, 5, 10, label="top-5-of-10 weekday"),
        weekend=DayRule(POOL_HIGH, 3, 5, label="top-3-of-5 weekend/holiday")),
)}

# offered everywhere so that a site's mv_presets naming it stay valid; without opendsm it answers an error
PRESETS[regression.OPENDSM_CALTRACK_DR] = regression.OPENDSM_SPEC

_RULE_KEYS = {"weekday", "weekend", "sunday_holiday"}
_CHOICES = {"pool": POOLS, "anchor": ANCHORS, "day_types": DAY_TYPES}


def _snake(key: str) -> str:
    return "".join("_" + c.lower() if c.isupper() else c for c in key)


def _checked(obj: Any, raw: Mapping[str, Any], prefix: str) -> Any:
    known = {f.name: f for f in fields(obj)}
    changes: dict[str, Any] = {}
    for key, value in raw.items():
        name = _snake(str(key))
        where = f"{prefix}{key}"
        if name not in known or name in ("name", "source", "unverified"):
            raise MvError(f"{where}: unknown baseline parameter")
        current = getattr(obj, name)
        if name in _RULE_KEYS or name == "adjustment":
            if not isinstance(value, Mapping):
                raise MvError(f"{where}: must be an object")
            base = current if current is not None else obj.weekend
            changes[name] = _checked(base, value, where + ".")
            continue
        choices = _CHOICES.get(name) or ((ADJUSTMENTS if isinstance(obj, Adjustment) else
                                          (KIND_DAYS, KIND_METER, KIND_REGRESSION)) if name == "kind" else None)
        if choices is not None:
            if value not in choices:
                raise MvError(f"{where}: must be one of {', '.join(choices)}")
        elif name in ("cap", "low_usage"):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value <= 10):
                raise MvError(f"{where}: must be null or a number between 0 and 10")
        elif isinstance(current, bool):
            if not isinstance(value, bool):
                raise MvError(f"{where}: must be true or false")
        elif isinstance(current, int):
            if isinstance(value, bool) or not isinstance(value, int) or not -100_000 <= value <= 100_000:
                raise MvError(f"{where}: must be an integer")
            if name in ("keep", "of", "lookback_days") and value < 1:
                raise MvError(f"{where}: must be at least 1")
        elif isinstance(current, str) and not isinstance(value, str):
            raise MvError(f"{where}: must be a string")
        changes[name] = float(value) if name in ("cap", "low_usage") and value is not None else value
    result = replace(obj, **changes)
    if isinstance(result, DayRule) and result.keep > result.of and result.pool != POOL_LIKE:
        raise MvError(f"{prefix}keep: must not exceed 'of'")
    if isinstance(result, BaselineSpec) and result.lookback_days > 400:
        raise MvError(f"{prefix}lookbackDays: must be at most 400")
    return result


def with_overrides(spec: BaselineSpec, overrides: Mapping[str, Any] | None) -> BaselineSpec:
    """The preset with a site's or call's parameters replaced (snake_case or camelCase; MvError names a bad key)."""
    if not overrides:
        return spec
    if not isinstance(overrides, Mapping):
        raise MvError("overrides: must be an object")
    return _checked(spec, overrides, "")


def preset(name: str, overrides: Mapping[str, Any] | None = None) -> BaselineSpec:
    """A named preset, optionally with overridden parameters."""
    try:
        spec = PRESETS[name]
    except KeyError:
        raise MvError(f"unknown baseline method {name!r}; known: {', '.join(PRESETS)}") from None
    return with_overrides(spec, overrides)


def describe(spec: BaselineSpec) -> dict[str, Any]:
    """A preset's parameters and source as JSON (for reports and the presets RPC)."""
    def plain(obj: Any) -> Any:
        if hasattr(obj, "__dataclass_fields__"):
            return {f.name: plain(getattr(obj, f.name)) for f in fields(obj)}
        return obj
    return plain(spec)


__all__ = ["PRESETS", "preset", "with_overrides", "describe", "ADJ_NONE", "ANCHOR_EVENT", "DAYS_BUSINESS"]
