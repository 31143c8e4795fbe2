"""What a failed point write says about the device: clearly refused, or possibly written.

A write the device or the driver clearly refused (a Modbus exception response, a BACnet error or reject, a point
the driver will not write) changed nothing. Any other failure - no answer in time from platform.driver or from
the device, a dropped connection, an error text not known here - may hide a write the device applied late, so
the VEN treats the point as possibly written and restores it like a written one.

`RestoreChecks` then watches every point restored by a driver revert: a driver's revert may go back to a value
the VEN wrote. The stock interfaces keep, as the value to revert to, the last scraped value of a point not marked
dirty, and mark a point dirty only once its write has answered: a scrape that completes while a write is on its
way (a device behind a busy Modbus proxy) keeps the written value, a write seen to fail never makes the point
dirty, and a timed-out attempt may land after the revert. So every reading that surely shows the point after the
revert is compared with the pre-event value. A point that reads a value of the VEN's (one it wrote, or one a
reading showed while its write held the point: the device's rendering of it) is corrected: first
by reverting again (a BACnet priority slot a late write took is relinquished again), then, when that did not
take, by writing the pre-event value; a point whose revert once needed that write is corrected by writing at
once, whatever it reads, at every later event. A value the VEN never wrote is the site's own (a schedule moved
the setpoint during the event): it is left as it is. A check ends once a reading later than `window_s`
(`lateWriteWindowS`) after the last write shows the pre-event value. Imports only `loads` and `state`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from dr_ven_load_control.loads import as_bool, as_float
from dr_ven_load_control.state import CORRECT, REVERT, SET, Op

_log = logging.getLogger(__name__)

AMBIGUITY_S = 0.25  # as SiteView: how precisely the instant a reading shows is known
MAX_CORRECTIONS = 5  # writes of the pre-event value after one restore before the VEN gives up (and says so)

# No answer in time: the request may have reached the device (checked first, whatever else the text says).
_UNANSWERED = ("timeout", "timed out", "no answer", "no response", "no-response", "noresponse",
               "connection", "not acknowledged")

# The device or the driver answered that it did not take the write.
_REFUSED = (
    "exception_code=",            # pymodbus ExceptionResponse: ILLEGAL DATA VALUE / ADDRESS, DEVICE FAILURE...
    "illegal",                    # Modbus exception names
    "write-access-denied", "writeaccessdenied",
    "value-out-of-range", "valueoutofrange",
    "invalid-data-type", "invaliddatatype",
    "invalid-parameter-data-type", "parameter-out-of-range", "inconsistent-parameters",
    "invalid-array-index", "unknown-object", "unknown-property", "unknownobject", "unknownproperty",
    "configured read only", "read only", "point not configured", "is not valid for this point",
    "priority lower than the minimum",
    "pointerror", "outside [", "cannot be switched off", "not a point of", "expected a boolean",  # drivers/
)


def refused(error: str) -> bool:
    """True when `error` (a failed set_point/revert_point) shows the device or driver refused the write."""
    text = error.lower()
    if any(marker in text for marker in _UNANSWERED):
        return False
    return any(marker in text for marker in _REFUSED)


def same_value(a: Any, b: Any) -> bool:
    """Do two point values agree (numbers within 0.1 %, or 0.001 absolute; booleans in any spelling)?"""
    box = {"a": a, "b": b}
    fa, fb = as_float(box, "a"), as_float(box, "b")
    if fa is not None and fb is not None:
        return math.isclose(fa, fb, rel_tol=1e-3, abs_tol=1e-3)
    ba, bb = as_bool(box, "a"), as_bool(box, "b")
    if ba is not None and bb is not None:
        return ba == bb
    return bool(a == b)


@dataclass
class _Check:
    original: Any
    load_id: str
    after: float
    ours: tuple[Any, ...] = ()  # values the VEN wrote to the point during the action
    strict: bool = False        # any value but the pre-event one is corrected
    corrections: int = 0


class RestoreChecks:
    """Points restored by a driver revert: checked at their next readings, corrected when a write of ours shows."""

    def __init__(self, counters: Any, problem: Any, window_s: float = 15.0) -> None:
        self.counters = counters
        self.problem = problem
        self.window_s = window_s  # how late a timed-out write may still be applied
        self.checks: dict[tuple[str, str], _Check] = {}
        self.tainted: set[tuple[str, str]] = set()  # points whose revert once needed a write of the pre-event value

    def watch(self, path: str, point: str, original: Any, load_id: str, now: float,
              ours: tuple[Any, ...] = ()) -> None:
        """A revert of `path/point` succeeded now: check the readings that surely show it. `ours` are the values
        the VEN wrote (or possibly wrote) to the point during the action."""
        key = (path, point)
        self.checks[key] = _Check(original, load_id, now, ours=tuple(ours), strict=key in self.tainted)

    def original(self, path: str, point: str) -> tuple[bool, Any]:
        """The pre-event value of a point still being checked, if any: (True, value), else (False, None)."""
        check = self.checks.get((path, point))
        return (False, None) if check is None else (True, check.original)

    def drop(self, path: str, point: str) -> None:
        """A new shed write goes to the point: stop checking it."""
        self.checks.pop((path, point), None)

    def reading(self, path: str, values: Mapping[str, Any], shows: float, now: float) -> list[Op]:
        """A reading of `path` showing instant `shows`: checks settled, or the writes that correct them."""
        ops: list[Op] = []
        for (cpath, point), check in list(self.checks.items()):
            if cpath != path or point not in values or shows <= check.after + AMBIGUITY_S:
                continue
            value = values[point]
            if same_value(value, check.original):
                if shows > check.after + self.window_s:  # no write still in flight can land after this
                    del self.checks[(cpath, point)]
                    self.counters["restores_checked"] += 1
                continue
            if check.corrections >= MAX_CORRECTIONS:
                del self.checks[(cpath, point)]
                self.counters["restore_checks_given_up"] += 1
                self.problem(f"{check.load_id} ({path}/{point}) still reads {value!r} after {MAX_CORRECTIONS} "
                             f"corrections toward its pre-event value {check.original!r}; left as it is")
                continue
            if not check.strict and not any(same_value(value, mine) for mine in check.ours):
                del self.checks[(cpath, point)]  # not a value of ours: the site's own, left as it is
                self.counters["restores_left_to_site"] += 1
                _log.info("%s (%s/%s) reads %r after its restore, not its pre-event %r nor a value the VEN wrote "
                          "(%s): the site's own, left as it is", check.load_id, path, point, value, check.original,
                          ", ".join(repr(v) for v in check.ours) or "none")
                continue
            revert = check.corrections == 0 and not check.strict
            check.corrections += 1
            check.after = now
            self.counters["restore_corrections"] += 1
            if revert:
                self.problem(f"{check.load_id} ({path}/{point}) reads {value!r} after its restore, not its pre-event "
                             f"{check.original!r}: a write of the VEN is still in effect; reverting again")
                ops.append(Op(REVERT, path, point, check.original, check.load_id, CORRECT))
                continue
            self.tainted.add((cpath, point))
            self.problem(f"{check.load_id} ({path}/{point}) reads {value!r} after its restore, not its pre-event "
                         f"{check.original!r} (the driver reverts it to a value of the VEN): writing "
                         f"{check.original!r}")
            ops.append(Op(SET, path, point, check.original, check.load_id, CORRECT))
        return ops

    def booked(self, op: Op, error: str | None, now: float) -> None:
        """The result of a correcting write: on failure the next reading tries again."""
        check = self.checks.get((op.path, op.point))
        if check is not None:
            check.after = now
        if error is not None:
            self.counters["restore_failures"] += 1
            self.problem(f"restore of {op.load_id} ({op.path}/{op.point}) failed: {error}")
