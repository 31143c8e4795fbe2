"""JSON out of dr.web is always valid JSON: no NaN, no Infinity, no number a client cannot read.

Flask's JSON provider renders with `allow_nan=False` (C speed); when that refuses a value (NaN, Infinity, an
integer too long to render), or the text holds an integer beyond float range (309 digits or more, which a
browser reads as Infinity), it renders a cleaned copy instead: each such value becomes null and is counted.
Values from upstream (dr.vtn, the historian) thus reach the client as null, never as a 500 or invalid JSON.
"""

from __future__ import annotations

import copy
import json
import logging
import math
from typing import Any

from flask.json.provider import DefaultJSONProvider

from dr_common.rejects import RateLimitedLog, RejectCounter

_log = logging.getLogger(__name__)
_rlog = RateLimitedLog(_log)

INT_LIMIT = 10**308
_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_RUN = b"0" * 309


def has_long_digit_run(text: str) -> bool:
    """True when `text` holds 309 digits in a row (bytes.translate and a substring search: about 2 ns a
    character, where a regular expression takes ten times that)."""
    return _LONG_RUN in text.encode("utf-8", "replace").translate(_DIGITS_TO_ZERO)
DEPTH_MAX = 64


def clean(value: Any, counter: RejectCounter | None = None, source: str = "response") -> Any:
    """`value` with every non-finite float and out-of-range integer replaced by None (in place for dicts and
    lists); each replacement is counted under `source` and logged at most once a minute."""
    dropped = _clean(value, 0)
    if isinstance(value, float) and not math.isfinite(value) or _bad_int(value):
        value, dropped = None, dropped + 1
    if dropped:
        if counter is not None:
            for _ in range(dropped):
                counter.count(source)
        _rlog.warning(source, "dr.web: %d value(s) from %s were not finite JSON numbers; sent as null",
                      dropped, source)
    return value


def _bad_int(value: Any) -> bool:
    return type(value) is int and not -INT_LIMIT <= value <= INT_LIMIT


def _bad(value: Any) -> bool:
    return (type(value) is float and not math.isfinite(value)) or _bad_int(value)


def _clean(value: Any, depth: int) -> int:
    dropped = 0
    if depth > DEPTH_MAX:
        return 0
    if isinstance(value, dict):
        for key, item in value.items():
            if _bad(item):
                value[key] = None
                dropped += 1
            elif isinstance(item, (dict, list)):
                dropped += _clean(item, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if _bad(item):
                value[index] = None
                dropped += 1
            elif isinstance(item, (dict, list)):
                dropped += _clean(item, depth + 1)
    return dropped


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider with `allow_nan=False`; a value JSON cannot carry is sent as null and counted."""

    counter: RejectCounter | None = None

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """JSON text of `obj`; never NaN or Infinity."""
        kwargs.setdefault("default", self.default)
        kwargs.setdefault("ensure_ascii", self.ensure_ascii)
        kwargs.setdefault("sort_keys", self.sort_keys)
        kwargs["allow_nan"] = False
        try:
            text = json.dumps(obj, **kwargs)
        except ValueError:  # NaN / Infinity, or an integer too long to render
            text = None
        if text is None or has_long_digit_run(text):
            safe = clean(copy.deepcopy(obj), self.counter, "response")
            text = json.dumps(safe, **kwargs)
        return text
