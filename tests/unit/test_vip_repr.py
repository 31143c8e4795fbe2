"""VOLTTRON's VIP Message classes render bounded debug text, whatever the payload's size."""

from __future__ import annotations

import time

import pytest

from dr_common.vip_repr import MESSAGE_CLASSES, bound_message_repr, message_repr


class _Message:  # the shape of VOLTTRON's Message: attributes set from keyword arguments
    def __init__(self, **kwargs):
        self.__dict__ = kwargs


def _batch(n: int) -> dict:
    return {"items": [{"venId": f"v-{i:05d}", "correlationId": f"ev:m0:r0:event:v-{i:05d}"} for i in range(n)],
            "shared": {"op": "event", "requestedReductionKw": 0.5}}


def test_repr_is_bounded_and_keeps_the_head():
    small = message_repr(_Message(peer="pubsub", subsystem="pubsub", args=["publish", "dr/batch/cmd", _batch(3)]))
    assert small.startswith("_Message(**{")
    assert "'dr/batch/cmd'" in small and "v-00000" in small
    big = message_repr(_Message(peer="pubsub", subsystem="pubsub", args=["publish", "dr/batch/cmd", _batch(10_000)],
                                frames=[b"x" * 1_000_000, bytearray(b"y" * 50_000)]))
    assert len(big) < 4000
    assert "v-00000" in big and "v-09999" not in big
    assert "...(1000000 bytes)" in big and "...(50000 bytes)" in big


def test_repr_cost_does_not_grow_with_the_payload():
    message = _Message(args=["publish", "t", _batch(10_000)], frames=[b"x" * 2_000_000])
    start = time.perf_counter()
    for _ in range(100):
        message_repr(message)
    per_call = (time.perf_counter() - start) / 100
    full = time.perf_counter()
    repr(message.__dict__)
    full = time.perf_counter() - full
    assert per_call < full / 20


def test_installed_on_volttrons_message_classes():
    pytest.importorskip("volttron.types.message")
    changed = bound_message_repr()
    import importlib

    for name in MESSAGE_CLASSES:
        cls = importlib.import_module(name).Message
        assert cls.__repr__ is message_repr
    assert bound_message_repr() == []  # idempotent
    assert len(changed) in (0, len(MESSAGE_CLASSES))
