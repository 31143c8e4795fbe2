"""Bounded debug text for VOLTTRON 11's VIP messages.

VOLTTRON 11 logs every pubsub message an agent sends and receives with f-strings (`_log.debug(f"... {message}")`
in its pubsub subsystem and ZMQ core), so the whole message is rendered as text at every hop even when DEBUG is
off: about 0.4 ms for a batch of 1,000 commands, several times per message, and ten times that at 10,000.
`bound_message_repr()` gives both of its VIP `Message` classes a `__repr__` that renders a bounded prefix of
each container and string (`reprlib`), so those log lines cost microseconds whatever the payload's size.
"""

from __future__ import annotations

import importlib
import logging
import reprlib
from typing import Any

_log = logging.getLogger(__name__)

MESSAGE_CLASSES = ("volttron.types.message", "volttron.messagebus.zmq.socket")


class BoundRepr(reprlib.Repr):
    """reprlib with bytes cut before they are rendered (reprlib renders unknown types whole, then cuts)."""

    def __init__(self) -> None:
        super().__init__()
        self.maxlevel = 6
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = 10
        self.maxstring = self.maxother = 160
        self.maxlong = 40

    def repr_bytes(self, x: bytes | bytearray, level: int) -> str:
        if len(x) <= self.maxstring:
            return repr(x)
        return f"{x[:self.maxstring]!r}...({len(x)} bytes)"

    repr_bytearray = repr_bytes


_BOUND = BoundRepr()


def message_repr(message: Any) -> str:
    """`Message(**{...})` as VOLTTRON renders it, with every container and string cut to a bounded prefix."""
    return f"{type(message).__name__}(**{_BOUND.repr(vars(message))})"


def bound_message_repr() -> list[str]:
    """Install `message_repr` on VOLTTRON's VIP Message classes; returns the classes changed (none when the
    platform's modules are not importable)."""
    changed = []
    for module_name in MESSAGE_CLASSES:
        try:
            cls = getattr(importlib.import_module(module_name), "Message", None)
        except ImportError as exc:
            _log.debug("VIP message class of %s not found: %s", module_name, exc)
            continue
        if cls is not None and cls.__repr__ is not message_repr:
            cls.__repr__ = message_repr
            changed.append(f"{module_name}.Message")
    return changed
