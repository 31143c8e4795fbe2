"""dr.mqtt's inbound dedup window: repeats within the window are recognised, anything else is not, and what it
remembers per key is a compact digest, not the key's strings."""

import tracemalloc

from dr_common.mqtt.dedup import Deduplicator, compact_key


def _ack_key(i: int) -> tuple[str, str, str, str]:
    ven = f"ven-{i % 1000:05d}"
    return ("ack", ven, f"evt-3f2a9c1d:m0:r0:event:{ven}:{i:016x}", f"2026-12-05T16:00:{i % 60:02d}.123456+00:00")


def test_a_repeat_within_the_window_is_recognised_and_distinct_keys_are_not():
    d = Deduplicator(window_s=10, max_entries=100)
    assert not d.is_repeat(("ack", "v1", "c1", "t1"), 0.0)
    assert d.is_repeat(("ack", "v1", "c1", "t1"), 5.0)
    assert not d.is_repeat(("ack", "v1", "c1", "t2"), 5.0)
    # the same characters split differently, and None against the text "None", are different keys
    assert not d.is_repeat(("ack", "v1c", "1", "t1"), 5.0)
    assert not d.is_repeat(("ack", "v1", "c1", None), 5.0)
    assert not d.is_repeat(("ack", "v1", "c1", "None"), 5.0)
    assert not d.is_repeat(None, 5.0) and not d.is_repeat(None, 5.0)


def test_keys_leave_after_the_window_and_beyond_max_entries():
    d = Deduplicator(window_s=10, max_entries=3)
    assert not d.is_repeat(("k", "1"), 0.0)
    assert not d.is_repeat(("k", "1"), 10.5)  # forgotten after the window: recorded again
    for n in ("2", "3", "4"):
        assert not d.is_repeat(("k", n), 11.0)
    assert len(d) == 3
    assert not d.is_repeat(("k", "1"), 11.0)  # the oldest went first
    assert d.is_repeat(("k", "4"), 11.0)


def test_the_window_remembers_a_digest_per_key():
    assert compact_key(_ack_key(1)) == compact_key(_ack_key(1)) and len(compact_key(_ack_key(1))) == 16
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        d = Deduplicator(window_s=600, max_entries=200_000)
        for i in range(20_000):  # each key built per message, as the inbound path does: the window keeps what it keeps
            assert not d.is_repeat(_ack_key(i), 1.0)
        held = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(d) == 20_000
    assert held / 20_000 < 200, f"{held / 20_000:.0f} B per key"
