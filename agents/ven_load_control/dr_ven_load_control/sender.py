"""Sends one round of point writes: a device's ops in order, different devices side by side.

A device that does not answer holds only its own writes: the round takes as long as its slowest device, not the
sum of every device's timeouts, so a silent EV charger does not delay the thermostat's restore written in the
same round. Ops on one device path keep their order (a revert after a set stays after it). No platform import:
`send` is the agent's driver call, which returns None on success or the error text and never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import gevent

from dr_ven_load_control.state import Op

_log = logging.getLogger(__name__)

Send = Callable[[Op], "str | None"]
Result = tuple[Op, "str | None"]


def by_device(ops: Sequence[Op]) -> list[list[int]]:
    """Indices of `ops` grouped by device path, each group in the order given, groups in first-seen order."""
    groups: dict[str, list[int]] = {}
    for index, op in enumerate(ops):
        groups.setdefault(op.path, []).append(index)
    return list(groups.values())


def send_round(ops: Sequence[Op], send: Send) -> list[Result]:
    """Every op's result, in the order of `ops`. An op whose sender greenlet died unexpectedly is reported as
    failed with the reason, so the engine retries it like any other failed write."""
    results: list[Result | None] = [None] * len(ops)

    def run(indices: list[int]) -> None:
        for index in indices:
            results[index] = (ops[index], send(ops[index]))

    groups = by_device(ops)
    if len(groups) <= 1:
        for indices in groups:
            run(indices)
    else:
        workers = [gevent.spawn(run, indices) for indices in groups]
        try:
            gevent.joinall(workers)
        finally:
            gevent.killall([w for w in workers if not w.dead], block=False)
        for worker in workers:
            if worker.exception is not None:
                _log.error("a write sender failed: %r", worker.exception)
    return [result if result is not None else (op, "write not sent: its sender stopped")
            for op, result in zip(ops, results)]
